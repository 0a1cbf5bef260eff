"""Broker URLs: ``mqtt://[user[:password]@]host[:port]`` and ``mqtts://...`` (TLS).

TLS options ride in the query string: ``?ca=/path/ca.pem&cert=/path/c.pem&key=/path/k.pem``.
"""

from __future__ import annotations

import os
import ssl
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import attrs

DEFAULT_URL = "mqtt://127.0.0.1:1883"
ENV_VAR = "JET_BROKER"


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

    @property
    def url(self) -> str:
        """The URL without the password (safe to print)."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"

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
    parts = urlsplit(text)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise BrokerUrlError(f"broker URL {text!r}: scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise BrokerUrlError(f"broker URL {text!r}: no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise BrokerUrlError(f"broker URL {text!r}: {exc}") from exc
    tls = parts.scheme == "mqtts"
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"ca", "cert", "key"}
    if unknown:
        raise BrokerUrlError(f"broker URL {text!r}: unknown option {sorted(unknown)[0]!r}")
    return Broker(
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        ca=query.get("ca"),
        cert=query.get("cert"),
        key=query.get("key"),
    )
