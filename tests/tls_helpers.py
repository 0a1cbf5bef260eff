"""Brokers with TLS, passwords and an ACL for the security tests.

Certificates come from ``trustme`` (a throw-away CA made in the test); the
password file from ``mosquitto_passwd -b``.  Each broker is a real mosquitto
on a free loopback port, started by the test and stopped at its end.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from collections.abc import Sequence
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
    #: the CA itself, to issue more client certificates (:meth:`issue`)
    authority: trustme.CA = attrs.field(repr=False, eq=False)

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
            authority=ca,
        )
        ca.cert_pem.write_to_path(str(certs.ca))
        server.cert_chain_pems[0].write_to_path(str(certs.server_cert))
        server.private_key_pem.write_to_path(str(certs.server_key))
        client.cert_chain_pems[0].write_to_path(str(certs.client_cert))
        client.private_key_pem.write_to_path(str(certs.client_key))
        trustme.CA().cert_pem.write_to_path(str(certs.other_ca))
        return certs

    def issue(self, name: str) -> tuple[Path, Path]:
        """A client certificate whose common name is ``name`` (with
        ``use_identity_as_username true``, the MQTT user name): its PEM and key files."""
        issued = self.authority.issue_cert(name, common_name=name)
        cert, key = self.ca.with_name(f"{name}.pem"), self.ca.with_name(f"{name}.key")
        issued.cert_chain_pems[0].write_to_path(str(cert))
        issued.private_key_pem.write_to_path(str(key))
        return cert, key

    def query(
        self, *, ca: Path | None = None, client: bool = True, name: str | None = None
    ) -> str:
        """The ``?ca=&cert=&key=`` part of an ``mqtts://`` URL (``name``: a certificate
        of its own, from :meth:`issue`)."""
        options = {"ca": str(ca or self.ca)}
        if client:
            cert, key = self.issue(name) if name else (self.client_cert, self.client_key)
            options |= {"cert": str(cert), "key": str(key)}
        return "?" + urlencode(options)


def password_file(path: Path, users: dict[str, str]) -> Path:
    """A mosquitto password file made with ``mosquitto_passwd -b`` (hashed passwords)."""
    exe = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    path.write_text("")
    for user, password in users.items():
        subprocess.run([exe, "-b", str(path), user, password], check=True, timeout=10,
                       capture_output=True)
    return path


def bridge(
    name: str,
    remote_port: int,
    topics: Sequence[str],
    *,
    ca: Path,
    cert: tuple[Path, Path] | None = None,
    login: tuple[str, str] | None = None,
    restart: str = "1 2",
) -> list[str]:
    """A mosquitto bridge section: a connection to 127.0.0.1:``remote_port`` over TLS
    (``ca`` signed the remote broker's certificate), logging in with a client
    certificate (``cert``: PEM and key) or a user name and password (``login``),
    carrying each of ``topics`` in both directions at QoS 1.

    A persistent session on the remote side (``cleansession false``) and mosquitto's
    private bridge flag (``try_private true``: the remote broker knows the bridge,
    keeps the retain flag of what it forwards and does not send a message back to the
    bridge it came from); ``restart`` is ``restart_timeout`` (base and cap, seconds).
    """
    lines = [
        f"connection {name}",
        f"address 127.0.0.1:{remote_port}",
        *(f"topic {t} both 1 \"\" \"\"" for t in topics),
        "bridge_protocol_version mqttv311",
        "try_private true",
        "cleansession false",
        f"remote_clientid bridge-{name}",
        f"local_clientid local-bridge-{name}",
        f"restart_timeout {restart}",
        "keepalive_interval 10",
        "notifications false",
        f"bridge_cafile {ca}",
    ]
    if cert is not None:
        lines += [f"bridge_certfile {cert[0]}", f"bridge_keyfile {cert[1]}"]
    if login is not None:
        lines += [f"remote_username {login[0]}", f"remote_password {login[1]}"]
    return lines


class SecureMosquitto:
    """A mosquitto with the given configuration lines on one loopback listener.

    ``listener`` is added first; every other option (TLS files, password file,
    ACL) comes from ``options``.  The broker logs to ``mosquitto.log`` in
    ``workdir`` (read it when a test fails).

    For a site's brokers (tests/test_bridges.py): ``listeners`` adds more loopback
    listeners, each with its own lines (its port in :attr:`ports`; say
    ``per_listener_settings true`` in ``head``, the global lines written before any
    listener, when they differ in authentication); ``bridges`` are written last
    (``connection`` sections); ``persistent`` keeps sessions and queued messages in
    ``workdir`` across a kill -9 (saved at every change); :meth:`kill` and
    :meth:`start` stop and start the same broker on the same ports.
    """

    def __init__(
        self,
        workdir: Path,
        options: list[str],
        *,
        listeners: Sequence[Sequence[str]] = (),
        head: Sequence[str] = (),
        bridges: Sequence[str] = (),
        persistent: bool = False,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.ports = [self.port] + [free_port() for _ in listeners]
        self.workdir = workdir
        self.log = workdir / "mosquitto.log"
        self.conf = workdir / "mosquitto.conf"
        persistence = (
            ["persistence true", f"persistence_location {workdir}/", "autosave_interval 1",
             "autosave_on_changes true"]
            if persistent else ["persistence false"]
        )
        more: list[str] = []
        for port, lines in zip(self.ports[1:], listeners, strict=True):
            more += [f"listener {port} 127.0.0.1", *lines]
        self.conf.write_text(
            "\n".join(
                [
                    # Started as root, mosquitto drops to its own user before it
                    # reads the password and ACL files; stay who we are instead.
                    f"user {getpass.getuser()}",
                    *persistence,
                    f"log_dest file {self.log}",
                    "log_type all",
                    *head,
                    f"listener {self.port} 127.0.0.1",
                    *options,
                    *more,
                    *bridges,
                    "",
                ]
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        """Start (or start again) this broker; return once every listener accepts."""
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen(
            [exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            for port in self.ports:
                wait_port(port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {self.log_text()[-2000:]}") from None
        return self

    def kill(self) -> None:
        """kill -9: no will of its own clients is sent, nothing is saved beyond what was."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, 9)
            self.proc.wait(5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def __enter__(self) -> Self:
        return self.start()

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
        proc = self.proc
        if proc and proc.stderr and not proc.stderr.closed and proc.poll() is not None:
            parts.append(proc.stderr.read().decode(errors="replace"))
        return "\n".join(parts)

    def url(
        self,
        *,
        tls: bool = False,
        user: str | None = None,
        password: str | None = None,
        query: str = "",
        port: int | None = None,
    ) -> str:
        """A broker URL for this listener (or the one on ``port``); user and password
        are percent-encoded."""
        auth = ""
        if user is not None:
            auth = quote(user, safe="")
            if password is not None:
                auth += ":" + quote(password, safe="")
            auth += "@"
        scheme = "mqtts" if tls else "mqtt"
        return f"{scheme}://{auth}127.0.0.1:{port or self.port}{query}"
