// Node-RED for tools/bench: headless (no editor, no admin API, no HTTP nodes), on loopback.
module.exports = {
    flowFile: "flows.json",
    credentialSecret: false,
    uiHost: "127.0.0.1",
    uiPort: parseInt(process.env.NR_PORT || "1880"),
    httpAdminRoot: false,
    httpNodeRoot: false,
    httpStatic: false,
    logging: { console: { level: "info", metrics: false, audit: false } },
    functionExternalModules: false,
    contextStorage: { default: { module: "memory" } },
};
