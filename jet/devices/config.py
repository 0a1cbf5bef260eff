"""``jet devices serve --config FILE``: a registry server's brokers, layouts and settings.

    # registry.yaml (paths are relative to this file)
    name: reg1                       # its persistent sessions: jet-devices-reg1
    db: registry.sqlite              # or postgresql://user@host/db
    group: plant                     # share the work with the servers of this group
    partition: false                 # true: the broker has no shared subscriptions (NATS)
    classes: classes/                # device classes (plug-n-process)
    silence: 300
    keepalive: 3                     # seconds: a dead server's share is taken in ~1.5x this
    brokers:
      - url: mqtt://127.0.0.1:1883   # anonymous
      - url: mqtts://broker.example:8883
        username: registry           # or in the URL: mqtts://user:password@host
        password_env: REGISTRY_PASSWORD   # or password: ... (in the file)
        ca: ca.pem                   # the broker's CA; cert + key: a client certificate
        cert: registry.pem
        key: registry.key
        topics: ["plant/#", "homie/#"]    # what to subscribe to (default: every layout's)
    layouts:                         # patterns of one's own, tried before the built-in ones
      - name: acme
        pattern: "acme/{zone}/{type}/{id}/{post_type}/{data...}"

Every mistake is one line naming ``file:line`` (:class:`ConfigError`), found before
anything connects.  docs/devices.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs

from jet.definition.files import CircuitFileError, check_schema, load_yaml
from jet.devices.layouts import BUILT_IN, Layout, LayoutError
from jet.transport import broker
from jet.transport.broker import Broker, BrokerUrlError

_PATH = {"type": "string", "minLength": 1}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["brokers"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]+$"},
        "db": _PATH,
        "group": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]+$"},
        "partition": {"type": "boolean"},
        "classes": _PATH,
        "silence": {"type": "number", "minimum": 0.001, "maximum": 31_536_000},
        "keepalive": {"type": "integer", "minimum": 1, "maximum": 600},
        "brokers": {
            "type": "array", "minItems": 1, "maxItems": 64,
            "items": {
                "type": "object",
                "required": ["url"],
                "additionalProperties": False,
                "properties": {
                    "url": _PATH,
                    "username": {"type": "string"},
                    "password": {"type": "string"},
                    "password_env": {"type": "string", "minLength": 1},
                    "ca": _PATH, "cert": _PATH, "key": _PATH,
                    "topics": {"type": "array", "minItems": 1,
                               "items": {"type": "string", "minLength": 1}},
                },
            },
        },
        "layouts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "pattern"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]+$"},
                    "pattern": _PATH,
                },
            },
        },
    },
}


class ConfigError(ValueError):
    """A registry configuration that cannot be used: ``file:line: what``."""


@attrs.frozen
class Source:
    """One broker the registry listens to, and what it subscribes to there (None: the
    layouts' own filters)."""

    broker: Broker
    topics: tuple[str, ...] | None = None


@attrs.frozen
class RegistryConfig:
    sources: tuple[Source, ...]
    layouts: tuple[Layout, ...] = tuple(BUILT_IN.values())
    name: str | None = None
    db: str | None = None
    group: str | None = None
    partition: bool = False
    classes: str | None = None
    silence: float | None = None
    keepalive: int | None = None


def load_config(path: str | Path) -> RegistryConfig:
    """Read and check a registry configuration file (see the module doc)."""
    source = str(path)
    try:
        data, lines = load_yaml(path)
        if data is None:
            raise CircuitFileError(source, 1, "the file is empty")
        check_schema(source, data, lines, SCHEMA)
    except CircuitFileError as exc:
        raise ConfigError(str(exc)) from None
    here = Path(path).parent

    def line(*at: str | int) -> int:
        while at and at not in lines:
            at = at[:-1]
        return lines.get(at, 1)

    def relative(value: str) -> str:
        return value if "://" in value else str(here / value)

    sources = []
    for n, entry in enumerate(data["brokers"]):
        try:
            where = broker.parse(entry["url"])
        except BrokerUrlError as exc:
            raise ConfigError(f"{source}:{line('brokers', n, 'url')}: {exc}") from None
        password = entry.get("password", where.password)
        if "password_env" in entry:
            password = os.environ.get(entry["password_env"])
            if password is None:
                raise ConfigError(f"{source}:{line('brokers', n, 'password_env')}: environment"
                                  f" variable {entry['password_env']} is not set")
        tls_file = {k: relative(entry[k]) for k in ("ca", "cert", "key") if k in entry}
        if tls_file and not where.tls:
            raise ConfigError(f"{source}:{line('brokers', n, next(iter(tls_file)))}: "
                              f"{next(iter(tls_file))} needs an mqtts:// URL")
        if "key" in tls_file and "cert" not in tls_file:
            raise ConfigError(f"{source}:{line('brokers', n, 'key')}: a key needs its cert")
        for name, file in tls_file.items():
            if not Path(file).is_file():
                raise ConfigError(f"{source}:{line('brokers', n, name)}: {name} {file}: no"
                                  " such file")
        where = attrs.evolve(where, username=entry.get("username", where.username),
                             password=password, ca=tls_file.get("ca", where.ca),
                             cert=tls_file.get("cert", where.cert),
                             key=tls_file.get("key", where.key))
        topics = entry.get("topics")
        sources.append(Source(where, tuple(topics) if topics is not None else None))
    layouts: list[Layout] = []
    for n, entry in enumerate(data.get("layouts", [])):
        try:
            layouts.append(Layout.custom(entry["name"], entry["pattern"]))
        except LayoutError as exc:
            raise ConfigError(f"{source}:{line('layouts', n, 'pattern')}: {exc}") from None
        if entry["name"] in BUILT_IN:
            raise ConfigError(f"{source}:{line('layouts', n, 'name')}: {entry['name']} is a"
                              " built-in layout's name")
    return RegistryConfig(
        sources=tuple(sources), layouts=(*layouts, *BUILT_IN.values()),
        name=data.get("name"), db=relative(data["db"]) if "db" in data else None,
        group=data.get("group"), partition=bool(data.get("partition", False)),
        classes=relative(data["classes"]) if "classes" in data else None,
        silence=data.get("silence"), keepalive=data.get("keepalive"))
