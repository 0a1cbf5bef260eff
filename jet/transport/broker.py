"""Broker URLs: ``mqtt://[user[:password]@]host[:port]`` and ``mqtts://...`` (TLS).

TLS options ride in the query string: ``?ca=/path/ca.pem&cert=/path/c.pem&key=/path/k.pem``.

A clustered broker's servers are listed with commas,
``mqtt://host1:1883,host2:1883,host3:1883`` (IPv6 in brackets, ``[::1]:1883``): the
client connects to the first and, whenever it cannot connect or loses the
connection, tries the next one in turn (:class:`jet.transport.link.Link`).  The
credentials and TLS options are the same for every server.
"""

from __future__ import annotations

import os
import ssl
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import attrs

DEFAULT_URL = "mqtt://127.0.0.1:1883"
ENV_VAR = "JET_BROKER"
#: What a ``--broker`` option takes, for every command's help.
URL_HELP = (
    "broker URL: mqtt://[user[:password]@]host[:port] (mqtts:// for TLS); a cluster's servers"
    " with commas, mqtt://host1:1883,host2:1883,host3:1883, tried in turn when one fails"
    f" (default ${ENV_VAR} or {DEFAULT_URL})"
)


class BrokerUrlError(ValueError):
    """The broker URL cannot be used."""


@attrs.frozen
class Broker:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    #: the cluster's other servers, (host, port), tried in turn after ``host:port``
    others: tuple[tuple[str, int], ...] = ()
    #: ``?mqtt=3.1.1``: the server speaks only MQTT 3.1.1 (amqtt), so JET does not
    #: try MQTT 5 first (None: MQTT 5, falling back to 3.1.1 when refused)
    mqtt: str | None = None

    @property
    def servers(self) -> tuple[tuple[str, int], ...]:
        """Every server the URL names, (host, port), in order."""
        return ((self.host, self.port), *self.others)

    def server(self, index: int) -> Broker:
        """The same broker with only its ``index``-th server (modulo their number)."""
        host, port = self.servers[index % len(self.servers)]
        return attrs.evolve(self, host=host, port=port, others=())

    @property
    def url(self) -> str:
        """The URL without the password (safe to print)."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.servers)
        return f"{scheme}://{user}{hosts}" + (f"?mqtt={self.mqtt}" if self.mqtt else "")

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``aiomqtt.Client``."""
        kwargs: dict[str, Any] = {"hostname": self.host, "port": self.port}
        if self.username is not None:
            kwargs["username"] = self.username
            kwargs["password"] = self.password
        if self.tls:
            context = ssl.create_default_context(cafile=self.ca)
            if self.cert:
                context.load_cert_chain(self.cert, self.key)
            kwargs["tls_context"] = context
        return kwargs


def parse(url: str | None = None) -> Broker:
    """Parse a broker URL; None means ``$JET_BROKER`` or the local default."""
    text = url or os.environ.get(ENV_VAR) or DEFAULT_URL
    scheme, has_scheme, rest = text.partition("://")
    if not has_scheme or scheme not in ("mqtt", "mqtts"):
        raise BrokerUrlError(f"broker URL {text!r}: scheme must be mqtt:// or mqtts://")
    tls = scheme == "mqtts"
    # The server list is split here, not by urlsplit: some Pythons (Debian's 3.11) refuse
    # a netloc with anything before a bracketed IPv6 address ("h1,[::1]:1886").
    netloc, query_text = _netloc_and_query(rest)
    userinfo, _, hosts = netloc.rpartition("@")
    try:
        parts = urlsplit(f"{scheme}://{userinfo}@x" if userinfo else f"{scheme}://x")
    except ValueError as exc:
        raise BrokerUrlError(f"broker URL {text!r}: {exc}") from exc
    servers = _servers(text, hosts, 8883 if tls else 1883)
    query = {k: v[-1] for k, v in parse_qs(query_text).items()}
    unknown = set(query) - {"ca", "cert", "key", "mqtt"}
    if unknown:
        raise BrokerUrlError(f"broker URL {text!r}: unknown option {sorted(unknown)[0]!r}")
    if query.get("mqtt", "3.1.1") != "3.1.1":
        raise BrokerUrlError(f"broker URL {text!r}: mqtt= takes only 3.1.1 (MQTT 5 is tried"
                             " first without it)")
    (host, port), *others = servers
    return Broker(
        host=host,
        port=port,
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        ca=query.get("ca"),
        cert=query.get("cert"),
        key=query.get("key"),
        others=tuple(others),
        mqtt=query.get("mqtt"),
    )


def _netloc_and_query(rest: str) -> tuple[str, str]:
    """What follows ``scheme://``: (the servers with their user, the query string)."""
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    after = rest[end:].partition("#")[0]
    return rest[:end], after.partition("?")[2]


def _servers(text: str, hosts: str, default_port: int) -> list[tuple[str, int]]:
    """``host[:port],host[:port],...`` -> [(host, port), ...]."""
    servers: list[tuple[str, int]] = []
    for one in hosts.split(","):
        try:
            parts = urlsplit(f"//{one}")
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise BrokerUrlError(f"broker URL {text!r}: {exc}") from exc
        if not host:
            raise BrokerUrlError(f"broker URL {text!r}: no host" + (
                f" in {one!r}" if "," in hosts else ""))
        servers.append((host, port or default_port))
    return servers
