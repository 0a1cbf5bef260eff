"""The MQTT connection under every link: MQTT 5 on the mqtt5 codec, MQTT 3.1.1 when refused.

Real brokers throughout: mosquitto (MQTT 5), the embedded amqtt (MQTT 3.1.1 only),
a proxy that hands the broker's bytes over one at a time, and a server that
answers with garbage.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import mqtt5
import pytest
from conftest import Mosquitto, free_port, wait_port
from helpers import Collector, run

from jet.embedded import embedded_broker
from jet.transport import broker
from jet.transport.link import Link


@pytest.fixture
def logged_mosquitto(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    """A mosquitto whose log a test reads (who connected with which protocol), with a
    receive maximum of 3 (``max_inflight_messages``) that a client must respect."""
    port = free_port()
    log = tmp_path / "mosquitto.log"
    conf = tmp_path / "mosquitto.conf"
    stay_root = "user root\n" if os.geteuid() == 0 else ""  # (to write its log here)
    conf.write_text(
        f"{stay_root}listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        f"log_dest file {log}\nlog_type all\nmax_inflight_messages 3\n"
        "max_queued_messages 100000\nset_tcp_nodelay true\n"
    )
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield f"mqtt://127.0.0.1:{port}", log, proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
            proc.wait(5)


def test_a_link_speaks_mqtt5_and_respects_the_brokers_receive_maximum(
    logged_mosquitto: tuple[str, Path, subprocess.Popen[bytes]],
) -> None:
    url, log, _ = logged_mosquitto
    upstream = int(url.rpartition(":")[2])
    watch = InFlight()

    async def go() -> None:
        server, port = await _proxy(upstream, 65536, watch)
        async with (server,
                    Link(broker.parse(f"mqtt://127.0.0.1:{port}"), "v5-sender") as sender,
                    Link(broker.parse(url), "v5-receiver") as receiver):
            got = await Collector(receiver, raw=True).watch("burst/#", qos=1)
            for i in range(2000):
                sender.publish_nowait(f"burst/{i % 7}", b"%d" % i, qos=1)
            await asyncio.wait_for(sender.flush(), 30)
            await got.wait_for(lambda c: len(c.messages) >= 2000, timeout=30)
            assert sorted(int(v) for v in got.values()) == list(range(2000))

    run(go(), timeout=60)
    text = log.read_text()
    assert "as v5-sender (p5," in text and "as v5-receiver (p5," in text
    # mosquitto's CONNACK says 3 (max_inflight_messages): never more unacknowledged.
    assert watch.most == 3


def test_qos2_goes_both_ways_once(mosquitto: Mosquitto) -> None:
    async def go() -> None:
        async with (Link(broker.parse(mosquitto.url), "q2-sender") as sender,
                    Link(broker.parse(mosquitto.url), "q2-receiver",
                         ack_after_handling=True) as receiver):
            got = await Collector(receiver, raw=True).watch("q2/#", qos=2)
            for i in range(300):
                sender.publish_nowait(f"q2/{i % 5}", b"%d" % i, qos=2)
            await asyncio.wait_for(sender.flush(), 20)
            await got.wait_for(lambda c: len(c.messages) >= 300, timeout=20)
            assert sorted(int(v) for v in got.values()) == list(range(300))
            assert sender.stats.published == 300

    run(go(), timeout=60)


def test_a_server_without_mqtt5_gets_mqtt_3_1_1() -> None:
    """amqtt takes the connection and never answers an MQTT 5 CONNECT: the link moves
    to MQTT 3.1.1 within its connect timeout; with ``?mqtt=3.1.1`` it starts there."""

    async def go() -> tuple[float, float]:
        async with embedded_broker(flavour="amqtt") as url:
            assert url.endswith("?mqtt=3.1.1")
            plain = url.partition("?")[0]
            timings = []
            for target in (plain, url):
                start = time.monotonic()
                async with Link(broker.parse(target), f"old-{len(timings)}",
                                clean_session=True) as one:
                    timings.append(time.monotonic() - start)
                    got = await Collector(one, raw=True).watch("old/#", qos=1)
                    for qos in (0, 1, 2):
                        one.publish_nowait(f"old/{qos}", b"q%d" % qos, qos=qos)
                    await got.wait_for(lambda c: len(c.messages) >= 3, timeout=10)
                    assert sorted(got.values()) == [b"q0", b"q1", b"q2"]
            return timings[0], timings[1]

    refused, told = run(go(), timeout=60)
    assert refused < 9.0, "fell back within the link's 10 s connect timeout"
    assert told < 2.0, "with ?mqtt=3.1.1 no MQTT 5 attempt is made"


class InFlight:
    """Counts the QoS>0 PUBLISH packets a client has sent and the broker not yet
    acknowledged, as the broker sees them (decoded with the mqtt5 codec)."""

    def __init__(self) -> None:
        self.open: set[int] = set()
        self.most = 0
        self._up = bytearray()
        self._down = bytearray()

    def _packets(self, buffer: bytearray, data: bytes) -> list[object]:
        buffer += data
        found = []
        while buffer:
            try:
                packet, size = mqtt5.read(memoryview(buffer))
            except IndexError:
                break
            del buffer[:size]
            found.append(packet)
        return found

    def from_client(self, data: bytes) -> None:
        for packet in self._packets(self._up, data):
            if isinstance(packet, mqtt5.PublishPacket) and packet.packet_id:
                self.open.add(packet.packet_id)
                self.most = max(self.most, len(self.open))

    def from_broker(self, data: bytes) -> None:
        for packet in self._packets(self._down, data):
            if isinstance(packet, mqtt5.PubAckPacket):
                self.open.discard(packet.packet_id)


async def _proxy(upstream_port: int, chunk: int,
                 watch: InFlight | None = None) -> tuple[asyncio.Server, int]:
    """Forwards a client's connection to ``upstream_port``; the broker's bytes reach
    the client ``chunk`` at a time, each in its own write (packets cut anywhere)."""

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   size: int, seen: Callable[[bytes], None] | None) -> None:
        try:
            while data := await reader.read(65536):
                if seen is not None:
                    seen(data)
                for i in range(0, len(data), size):
                    writer.write(data[i:i + size])
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        await asyncio.gather(
            pump(reader, up_writer, 65536, watch.from_client if watch else None),
            pump(up_reader, writer, chunk, watch.from_broker if watch else None))

    port = free_port()
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    return server, port


def test_packets_cut_anywhere_by_the_network_arrive_whole(mosquitto: Mosquitto) -> None:
    upstream = mosquitto.port

    async def go() -> None:
        server, port = await _proxy(upstream, 3)
        async with server, Link(broker.parse(f"mqtt://127.0.0.1:{port}"), "cut",
                                clean_session=True) as one:
            got = await Collector(one, raw=True).watch("cut/#", qos=1)
            payloads = [bytes([i % 256]) * (i * 37 % 300) for i in range(300)]
            for i, payload in enumerate(payloads):
                one.publish_nowait(f"cut/{i}", payload, qos=i % 2)
            await got.wait_for(lambda c: len(c.messages) >= 300, timeout=30)
            assert dict(got.messages) == {f"cut/{i}": p for i, p in enumerate(payloads)}

    run(go(), timeout=60)


def test_garbage_from_a_server_is_one_clear_line() -> None:
    async def go() -> str:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1024)
            writer.write(b"\xf0\xff\xff\xff\xff\x01garbage")
            await writer.drain()
            await reader.read(1024)
            writer.close()

        port = free_port()
        async with await asyncio.start_server(answer, "127.0.0.1", port):
            try:
                async with Link(broker.parse(f"mqtt://127.0.0.1:{port}"), "junk",
                                clean_session=True, connect_timeout=6):
                    pass
            except ConnectionError as exc:
                return str(exc)
        raise AssertionError("connected to a server that speaks no MQTT")

    message = run(go(), timeout=30)
    assert message.startswith("cannot reach MQTT broker mqtt://127.0.0.1:")
    assert "\n" not in message


def test_a_broker_that_stops_answering_is_seen_and_the_link_comes_back(
    logged_mosquitto: tuple[str, Path, subprocess.Popen[bytes]],
) -> None:
    url, _, proc = logged_mosquitto

    async def go() -> float:
        lost = asyncio.Event()
        async with Link(broker.parse(url), "pinger", keepalive=1,
                        on_lost=lambda reason: lost.set()) as one:
            got = await Collector(one, raw=True).watch("ping/#", qos=1)
            os.kill(proc.pid, signal.SIGSTOP)
            start = time.monotonic()
            await asyncio.wait_for(lost.wait(), 10)
            seen = time.monotonic() - start
            os.kill(proc.pid, signal.SIGCONT)
            one.publish_nowait("ping/after", b"back", qos=1)
            await got.wait_for(lambda c: c.values("ping/after") == [b"back"], timeout=15)
            assert one.stats.reconnects >= 1
            return seen

    seen = run(go(), timeout=40)
    assert seen < 4.0, "an unanswered PINGREQ ends the connection after about 2 keepalives"


def test_overlapping_subscriptions_give_each_handler_a_message_once(mosquitto: Mosquitto) -> None:
    """mosquitto sends an MQTT 5 client one copy per matching subscription (3.1.1: one in
    all); every handler still sees each message once, and a retained value reaches a
    subscription made later."""

    async def go() -> None:
        async with (Link(broker.parse(mosquitto.url), "overlap-pub") as sender,
                    Link(broker.parse(mosquitto.url), "overlap-sub") as receiver):
            sender.publish_nowait("o/b", b"kept", qos=1, retain=True)
            await sender.flush()
            wide = await Collector(receiver, raw=True).watch("o/+", qos=0)
            deep = await Collector(receiver, raw=True).watch("o/#", qos=1)
            exact = await Collector(receiver, raw=True).watch("o/b", qos=1)
            for c in (wide, deep, exact):
                await c.wait_for(lambda c: c.values("o/b") == [b"kept"])
            for i in range(100):
                sender.publish_nowait("o/b", b"%d" % i, qos=1)
                sender.publish_nowait("o/c", b"%d" % i, qos=0)
            await sender.flush()
            for c in (wide, deep):
                await c.wait_for(lambda c: len(c.values("o/b")) >= 101
                                 and len(c.values("o/c")) >= 100)
            await exact.wait_for(lambda c: len(c.values("o/b")) >= 101)
            # A last message on each: nothing doubled arrived before it.
            sender.publish_nowait("o/b", b"end", qos=1)
            await sender.flush()
            for c in (wide, deep, exact):
                await c.wait_for(lambda c: c.values("o/b")[-1:] == [b"end"])
                assert c.values("o/b") == [b"kept", *(b"%d" % i for i in range(100)), b"end"]
            assert wide.values("o/c") == deep.values("o/c") == [b"%d" % i for i in range(100)]

    run(go(), timeout=60)


def test_a_subscription_made_mid_stream_takes_over_without_a_gap(mosquitto: Mosquitto) -> None:
    """An overlapping subscription of a higher QoS, made while messages flow, keeps the
    copies of messages sent after it exists; those sent before still come through the
    subscription already there: its handler sees every message once, in order."""
    total = 3000

    async def go() -> None:
        async with (Link(broker.parse(mosquitto.url), "mid-pub") as sender,
                    Link(broker.parse(mosquitto.url), "mid-sub") as receiver):
            wide = await Collector(receiver, raw=True).watch("m/#", qos=0)
            other = await Collector(receiver, raw=True).watch("n/x", qos=0)  # (2 filters)

            async def stream() -> None:
                for i in range(total):
                    sender.publish_nowait("m/x", b"%d" % i, qos=1)
                    if i % 20 == 19:
                        await sender.flush()

            flowing = asyncio.create_task(stream())
            await wide.wait_for(lambda c: len(c.values("m/x")) >= 300, timeout=20)
            exact = await Collector(receiver, raw=True).watch("m/x", qos=1)
            assert not flowing.done(), "the stream ended before the subscription: no race"
            await flowing
            await wide.wait_for(lambda c: len(c.values("m/x")) >= total, timeout=20)
            await exact.wait_for(lambda c: c.values("m/x")[-1:] == [b"%d" % (total - 1)])
            assert wide.values("m/x") == [b"%d" % i for i in range(total)]
            assert other.values("n/x") == []

    run(go(), timeout=60)
