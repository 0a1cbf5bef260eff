"""Brokers with TLS, passwords and an ACL for the security tests.

Certificates come from ``trustme`` (a throw-away CA made in the test); the
password file from ``mosquitto_passwd -b``.  Each broker is a real mosquitto
on a free loopback port, started by the test and stopped at its end.
"""

from __future__ import annotations

import getpass
import shutil
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote, urlencode

import attrs
import trustme
from conftest import free_port, wait_port


@attrs.frozen
class Certs:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: trusting it must not be enough

    @classmethod
    def make(cls, folder: Path) -> Certs:
        folder.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        client = ca.issue_cert("jet-client", common_name="jet-client")
        certs = cls(
            ca=folder / "ca.pem",
            server_cert=folder / "server.pem",
            server_key=folder / "server.key",
            client_cert=folder / "client.pem",
            client_key=folder / "client.key",
            other_ca=folder / "other-ca.pem",
        )
        ca.cert_pem.write_to_path(str(certs.ca))
        server.cert_chain_pems[0].write_to_path(str(certs.server_cert))
        server.private_key_pem.write_to_path(str(certs.server_key))
        client.cert_chain_pems[0].write_to_path(str(certs.client_cert))
        client.private_key_pem.write_to_path(str(certs.client_key))
        trustme.CA().cert_pem.write_to_path(str(certs.other_ca))
        return certs

    def query(self, *, ca: Path | None = None, client: bool = True) -> str:
        """The ``?ca=&cert=&key=`` part of an ``mqtts://`` URL."""
        options = {"ca": str(ca or self.ca)}
        if client:
            options |= {"cert": str(self.client_cert), "key": str(self.client_key)}
        return "?" + urlencode(options)


def password_file(path: Path, users: dict[str, str]) -> Path:
    """A mosquitto password file made with ``mosquitto_passwd -b`` (hashed passwords)."""
    exe = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    path.write_text("")
    for user, password in users.items():
        subprocess.run([exe, "-b", str(path), user, password], check=True, timeout=10,
                       capture_output=True)
    return path


class SecureMosquitto:
    """A mosquitto with the given configuration lines on one loopback listener.

    ``listener`` is added first; every other option (TLS files, password file,
    ACL) comes from ``options``.  The broker logs to ``mosquitto.log`` in
    ``workdir`` (read it when a test fails).
    """

    def __init__(self, workdir: Path, options: list[str]) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.log = workdir / "mosquitto.log"
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            "\n".join(
                [
                    # Started as root, mosquitto drops to its own user before it
                    # reads the password and ACL files; stay who we are instead.
                    f"user {getpass.getuser()}",
                    "persistence false",
                    f"log_dest file {self.log}",
                    "log_type all",
                    f"listener {self.port} 127.0.0.1",
                    *options,
                    "",
                ]
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen(
            [exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {self.log_text()[-2000:]}") from None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def log_text(self) -> str:
        parts = [self.log.read_text(errors="replace") if self.log.exists() else ""]
        if self.proc is not None and self.proc.stderr is not None and self.proc.poll() is not None:
            parts.append(self.proc.stderr.read().decode(errors="replace"))
        return "\n".join(parts)

    def url(
        self,
        *,
        tls: bool = False,
        user: str | None = None,
        password: str | None = None,
        query: str = "",
    ) -> str:
        """A broker URL for this listener; user and password are percent-encoded."""
        auth = ""
        if user is not None:
            auth = quote(user, safe="")
            if password is not None:
                auth += ":" + quote(password, safe="")
            auth += "@"
        scheme = "mqtts" if tls else "mqtt"
        return f"{scheme}://{auth}127.0.0.1:{self.port}{query}"
