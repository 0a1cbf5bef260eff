"""An MQTT broker for `jet run`, so the demo needs nothing else installed.

Leaving :func:`embedded_broker`'s block (``jet run`` ending, by ``--for``, Ctrl-C,
SIGTERM or SIGHUP: see :func:`jet.tasks.run_until_signalled`) stops the broker
and removes its temp dir; a mosquitto child is also told to stop if `jet run`
is killed outright.

mosquitto is used when it is on the machine (it keeps QoS 1 messages for
persistent sessions while a client is away); otherwise amqtt, a maintained
pure-Python broker, runs inside the process.  Either one listens on
127.0.0.1 only, on a free port unless one is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Literal

log = logging.getLogger("jet.embedded")

Flavour = Literal["auto", "mosquitto", "amqtt"]

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> Callable[[], None] | None:
    """What the broker child runs before exec (Linux): SIGTERM it when `jet run`
    dies, even by SIGKILL, which leaves no chance to stop it in an orderly way.
    (prctl is looked up here, in the parent: the child only calls it.)"""
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def in_child() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))

    return in_child


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )


async def _wait_listening(port: int, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if loop.time() > deadline:
                raise TimeoutError(f"embedded broker did not listen on port {port}") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return


@contextlib.asynccontextmanager
async def embedded_broker(port: int = 0, flavour: Flavour = "auto") -> AsyncIterator[str]:
    """Run a broker for the duration of the block; yields its ``mqtt://`` URL."""
    port = port or free_port()
    exe = mosquitto_path()
    if flavour == "mosquitto" and exe is None:
        raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
    if flavour != "amqtt" and exe is not None:
        async with _mosquitto(exe, port) as url:
            yield url
    else:
        async with _amqtt(port) as url:
            yield url


@contextlib.asynccontextmanager
async def _mosquitto(exe: str, port: int) -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="jet-broker-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        # As root, mosquitto would switch to its own user, and a change of user clears
        # the parent-death signal (prctl(2)): killed with SIGKILL, `jet run` would leave
        # its broker running.  Staying root keeps it (and it only listens on 127.0.0.1).
        stay_root = "user root\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "set_tcp_nodelay true\n"  # no Nagle delay on the broker's side either
            f"{stay_root}"
        )
        proc = await asyncio.create_subprocess_exec(
            exe,
            "-c",
            str(conf),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            # Its own session: Ctrl-C reaches `jet run`, which then shuts the
            # broker down last, instead of the broker dying under the pack.
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )
        try:
            await _wait_listening(port)
            log.info("embedded mosquitto on 127.0.0.1:%d", port)
            yield f"mqtt://127.0.0.1:{port}"
        finally:
            if proc.returncode is None:
                proc.terminate()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 5)
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()


@contextlib.asynccontextmanager
async def _amqtt(port: int) -> AsyncIterator[str]:
    from amqtt.broker import Broker  # imported late: heavy, and unused when mosquitto runs

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    # Our readiness probe opens and closes a bare TCP connection, which amqtt
    # reports as a failed session; that and its per-connection chatter is noise.
    logging.getLogger("amqtt").setLevel(logging.ERROR)
    broker = Broker(config)
    await broker.start()
    try:
        await _wait_listening(port)
        log.info("embedded amqtt broker on 127.0.0.1:%d", port)
        yield f"mqtt://127.0.0.1:{port}?mqtt=3.1.1"  # amqtt does not answer MQTT 5
    finally:
        await broker.shutdown()
