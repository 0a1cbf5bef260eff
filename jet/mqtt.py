"""One MQTT connection shared by everything in a process, kept alive for it.

:class:`Link` wraps an ``aiomqtt.Client`` with what a container needs and
aiomqtt leaves to its users: reconnect with backoff, a persistent session
re-established after every reconnect, subscriptions counted per topic (two
circuits wired to the same output share one MQTT subscription), dispatch of
each message to every handler whose filter matches, and a bounded outbox so
that gadgets can publish from synchronous code without waiting on the
network.  Nothing is dropped silently: a full outbox counts what it refuses.

    async with Link(broker.parse(url), "jet-pack-default") as link:
        sub = await link.subscribe("pack/a/g/0", 1, handler)
        link.publish_nowait("pack/b/g/0", payload, qos=1)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import logging
import socket
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self

import aiomqtt
import attrs
import paho.mqtt.client as mqtt

from . import address
from .broker import Broker
from .tasks import cancel_all

log = logging.getLogger("jet.mqtt")

#: ``handler(topic, payload)``, called on the event loop for every matching
#: message.  A handler that cannot take the message yet returns an awaitable;
#: the link waits on it before dispatching (and acknowledging) anything else.
Handler = Callable[[str, bytes], Awaitable[None] | None]

OUTBOX_LIMIT = 100_000
PUBLISH_WINDOW = 256  # publishes handed to paho and not yet completed, at most
READ_BURST = 64  # packets read per socket wake-up, at most
BACKOFF_START = 0.1
BACKOFF_MAX = 5.0


class LinkClosed(RuntimeError):
    """The link was closed while an operation waited on it."""


@attrs.define(eq=False)
class Subscription:
    """One handler's interest in one topic filter; give it back to unsubscribe."""

    topic: str
    qos: int
    handler: Handler


@attrs.define
class LinkStats:
    received: int = 0
    published: int = 0
    outbox_dropped: int = 0
    handler_errors: int = 0
    reconnects: int = 0
    refused: int = 0


@attrs.frozen(order=True)
class Outgoing:
    """A message waiting to be published; ``seq`` keeps retries in order."""

    seq: int
    topic: str = attrs.field(order=False)
    payload: bytes = attrs.field(order=False, repr=False)
    qos: int = attrs.field(order=False)
    retain: bool = attrs.field(order=False)


@attrs.frozen
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def is_filter(topic: str) -> bool:
    return "+" in topic or "#" in topic


class Link:
    def __init__(
        self,
        broker: Broker,
        client_id: str,
        *,
        will: Will | None = None,
        clean_session: bool = False,
        keepalive: int = 10,
        on_connect: Callable[[], Awaitable[None]] | None = None,
        connect_timeout: float | None = 10.0,
        ack_after_handling: bool = False,
    ) -> None:
        """``ack_after_handling``: acknowledge a QoS>0 message only once every
        handler has taken it, so a crash or a full queue leaves it with the
        broker (redelivered on the persistent session) instead of losing it.
        """
        if ack_after_handling and clean_session:
            raise ValueError("ack_after_handling needs a persistent session")
        self._manual_ack = ack_after_handling
        self.broker = broker
        self.client_id = client_id
        self.stats = LinkStats()
        self._on_connect = on_connect
        self._connect_timeout = connect_timeout
        self._client = aiomqtt.Client(
            **broker.client_kwargs(),
            identifier=client_id,
            clean_session=clean_session,
            keepalive=keepalive,
            will=aiomqtt.Will(will.topic, will.payload, will.qos, will.retain) if will else None,
            timeout=30,
            logger=self._paho_logger(client_id),
            # Small MQTT packets must not wait for Nagle's algorithm: without
            # this a QoS 1 round trip can take 40 ms on an idle connection.
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        # Up to PUBLISH_WINDOW publishes are in flight by design; aiomqtt warns
        # on every call past its default threshold (10) otherwise.
        self._client.pending_calls_threshold = PUBLISH_WINDOW + 16
        self._clean_session = clean_session
        aiomqtt_on_publish: Any = self._client._client.on_publish

        def on_publish(client: Any, userdata: Any, mid: int, *rest: Any) -> None:
            if aiomqtt_on_publish is not None:
                aiomqtt_on_publish(client, userdata, mid, *rest)
            self._on_publish(mid)

        self._client._client.on_publish = on_publish
        self._read_in_bursts()
        if ack_after_handling:
            # aiomqtt does not expose paho's manual acknowledgement; its
            # underlying paho client is the documented escape hatch.
            self._client._client.manual_ack_set(True)
        self._exact: dict[str, list[Subscription]] = {}
        self._filters: dict[str, list[Subscription]] = {}
        self._outbox: collections.deque[Outgoing] = collections.deque()
        self._retry: list[Outgoing] = []  # a heap, by sequence number
        self._seq = 0
        # Acknowledging an input only once what it caused is safely with the
        # broker: _confirmed is the highest sequence number such that every
        # message up to it has been handed over (QoS 0) or acknowledged (QoS 1).
        self._confirmed = 0
        self._done: set[int] = set()
        self._acks_due: collections.deque[tuple[int, int, int]] = collections.deque()
        self._outbox_ready = asyncio.Event()
        self._connected = asyncio.Event()
        self._closing = False
        self._live = False
        self._awaiting: dict[int, Outgoing] = {}  # by paho message id
        self._window_free = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_error = "no answer (wrong port, or a TLS handshake or login refused?)"
        self._paho_error = ""  # paho's own last complaint: more precise than aiomqtt's

    def _read_in_bursts(self) -> None:
        """Read every packet that has arrived per socket wake-up, not one.

        aiomqtt registers paho's ``loop_read()`` as the socket's reader, and
        paho reads at most one packet per call when nothing is in flight (all
        QoS 0 traffic): each message then costs a trip through the event loop.
        This reader, installed right after aiomqtt's, calls it again while
        calls keep producing messages (bounded, so other tasks still run).
        """
        client = self._client
        paho = client._client
        aiomqtt_on_socket_open: Any = paho.on_socket_open

        def read_burst() -> None:
            queue = client._queue
            try:
                for _ in range(READ_BURST):
                    before = queue.qsize()
                    paho.loop_read()
                    sock: Any = paho._sock
                    if sock is not None and hasattr(sock, "pending") and sock.pending() > 0:
                        continue  # TLS: decrypted bytes wait inside the SSL object
                    if queue.qsize() == before:
                        break
            except Exception as exc:  # as aiomqtt's reader does: the connection broke
                if not client._disconnected.done():
                    client._disconnected.set_exception(exc)

        def on_socket_open(mqttc: Any, userdata: Any, sock: Any) -> None:
            aiomqtt_on_socket_open(mqttc, userdata, sock)
            # paho writes a byte to a socket pair on every packet it queues, to
            # wake its own thread loop; aiomqtt never runs that loop, so the
            # syscall per message is pure cost.
            wake, paho._sockpairW = paho._sockpairW, None
            if wake is not None:
                wake.close()
            # Called from aiomqtt's connect thread; this runs after its add_reader,
            # unless the socket was closed meanwhile (a refused TLS handshake).
            loop = client._loop
            fileno = sock.fileno()

            def take_over_reading() -> None:
                current: Any = paho._sock
                if current is sock and current.fileno() == fileno:
                    with contextlib.suppress(OSError, ValueError):
                        loop.add_reader(fileno, read_burst)

            loop.call_soon_threadsafe(take_over_reading)

        paho.on_socket_open = on_socket_open

    def _paho_logger(self, client_id: str) -> logging.Logger:
        """paho's messages for this link: its last error becomes ours (a TLS
        alert, a refused login), and the rest is passed on at debug level."""
        logger = logging.getLogger(f"jet.mqtt.paho.{client_id}")
        logger.setLevel(logging.WARNING)
        logger.propagate = False
        link = self

        class LastError(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                link._paho_error = record.getMessage().splitlines()[0][:300]
                logging.getLogger("jet.mqtt.paho").debug("%s: %s", client_id, link._paho_error)

        logger.handlers[:] = [LastError()]
        return logger

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._tasks = [
            asyncio.create_task(self._maintain(), name=f"mqtt-{self.client_id}"),
            asyncio.create_task(self._drain_outbox(), name=f"mqtt-out-{self.client_id}"),
        ]
        if self._connect_timeout is None:
            await self._connected.wait()  # a daemon waits for its broker as long as it takes
        else:
            try:
                await asyncio.wait_for(self._connected.wait(), self._connect_timeout)
            except TimeoutError:
                await self.close()
                reason = self._paho_error or self._last_error
                raise ConnectionError(
                    f"cannot reach MQTT broker {self.broker.url}: {reason}"
                ) from None
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self, flush_timeout: float = 2.0) -> None:
        """Send what is queued (bounded wait), then disconnect cleanly (no will)."""
        if self._closing:
            return
        if self._connected.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), flush_timeout)
        self._closing = True
        await cancel_all(self._tasks, aiomqtt.MqttError)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def _maintain(self) -> None:
        """Connect, (re)subscribe, dispatch; on loss, back off and do it again."""
        backoff = BACKOFF_START
        first = True
        while True:
            try:
                async with self._client:
                    if not first:
                        self.stats.reconnects += 1
                        log.info("reconnected to %s", self.broker.url)
                    first = False
                    backoff = BACKOFF_START
                    # From here on a new subscribe() goes straight to the broker;
                    # set before resubscribing so none falls between the two.
                    self._live = True
                    await self._resubscribe()
                    if self._on_connect is not None:
                        await self._on_connect()
                    self._connected.set()
                    self._outbox_ready.set()
                    queue = self._client._queue
                    async for message in self._client.messages:
                        await self._dispatch(message)
                        # Take what has already arrived without aiomqtt's
                        # per-message task and wait: bursts are the common case.
                        while not queue.empty():
                            await self._dispatch(queue.get_nowait())
            except aiomqtt.MqttError as exc:
                self._live = False
                self._requeue_unsent()
                if self._manual_ack:
                    self._forget_unacked()
                self._last_error = str(exc)
                if self._connected.is_set():
                    log.warning("lost MQTT broker %s: %s", self.broker.url, exc)
                elif backoff == BACKOFF_START and self._connect_timeout is None:
                    # (a command-line client reports the failure itself, once)
                    log.warning("cannot reach MQTT broker %s: %s (retrying)", self.broker.url, exc)
                self._connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _resubscribe(self) -> None:
        # A persistent session usually still has them, but a broker that
        # restarted without persistence does not: subscribing again is idempotent.
        wanted = {**self._exact, **self._filters}
        for topic, subs in wanted.items():
            await self._client.subscribe(topic, qos=max(s.qos for s in subs))

    # -- subscriptions -----------------------------------------------------------

    async def subscribe(self, topic: str, qos: int, handler: Handler) -> Subscription:
        """Deliver messages on ``topic`` (a filter may use + and #) to ``handler``.

        Returns once the broker has acknowledged the subscription, or at once
        while disconnected (the subscription is made on reconnect).
        """
        address.check(topic, filter_ok=True)  # before it can reach the table or the broker
        sub = Subscription(topic, qos, handler)
        table = self._filters if is_filter(topic) else self._exact
        existing = table.setdefault(topic, [])
        raise_qos = not existing or qos > max(s.qos for s in existing)
        existing.append(sub)
        if raise_qos and self._live:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.subscribe(topic, qos=qos)
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        table = self._filters if is_filter(sub.topic) else self._exact
        subs = table.get(sub.topic, [])
        if sub in subs:
            subs.remove(sub)
        if not subs and sub.topic in table:
            del table[sub.topic]
            if self._live:
                with contextlib.suppress(aiomqtt.MqttError):
                    await self._client.unsubscribe(sub.topic)

    def subscribed_topics(self) -> set[str]:
        return set(self._exact) | set(self._filters)

    def _forget_unacked(self) -> None:
        # Called as the connection dies: what is still queued locally was never
        # acknowledged, so the broker redelivers it on the next connection, and
        # its packet ids belong to the dead one (acking them later would be
        # wrong).  Done here, not after reconnecting, where redelivered messages
        # may already be queued and would then never be acknowledged.
        queue = self._client._queue
        while not queue.empty():
            queue.get_nowait()
        self._acks_due.clear()

    async def _dispatch(self, message: aiomqtt.Message) -> None:
        self.stats.received += 1
        topic = message.topic.value
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            payload = b"" if payload is None else str(payload).encode()
        subs = list(self._exact.get(topic, ()))
        for pattern, filtered in self._filters.items():
            if message.topic.matches(pattern):
                subs.extend(filtered)
        data = bytes(payload)
        for sub in subs:
            try:
                pending = sub.handler(topic, data)
                if pending is not None:
                    await pending
            except Exception:
                # One bad handler must not stop delivery to the others.
                self.stats.handler_errors += 1
                log.exception("handler for %s failed on a message", topic)
        if self._manual_ack and message.qos > 0:
            # Whatever the handlers published for this message has a sequence
            # number up to self._seq; acknowledge once all of it is confirmed,
            # so a crash before then leaves the message with the broker.
            if self._seq <= self._confirmed:
                self._client._client.ack(message.mid, message.qos)
            else:
                self._acks_due.append((self._seq, message.mid, message.qos))

    def _confirm(self, seq: int) -> None:
        self._done.add(seq)
        while self._confirmed + 1 in self._done:
            self._confirmed += 1
            self._done.discard(self._confirmed)
        while self._acks_due and self._acks_due[0][0] <= self._confirmed:
            _, mid, qos = self._acks_due.popleft()
            if self._live:
                self._client._client.ack(mid, qos)

    # -- publishing ----------------------------------------------------------------

    def publish_nowait(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False
    ) -> bool:
        """Queue a message for sending; False (and counted) when the outbox is full."""
        if len(self._outbox) >= OUTBOX_LIMIT:
            self.stats.outbox_dropped += 1
            if self.stats.outbox_dropped == 1 or self.stats.outbox_dropped % 1000 == 0:
                log.warning(
                    "outbox full (%d): %d messages refused so far",
                    OUTBOX_LIMIT,
                    self.stats.outbox_dropped,
                )
            return False
        self._seq += 1
        self._outbox.append(Outgoing(self._seq, topic, payload, qos, retain))
        self._idle.clear()
        self._outbox_ready.set()
        return True

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Queue a message and wait until everything queued before it has been handed over."""
        if not self.publish_nowait(topic, payload, qos, retain):
            raise OverflowError("MQTT outbox full")
        await self.flush()

    async def flush(self) -> None:
        """Wait until the outbox is empty and every QoS>0 publish is acknowledged."""
        await self._idle.wait()

    def _check_idle(self) -> None:
        if not self._outbox and not self._retry and not self._awaiting:
            self._idle.set()

    def _next(self) -> Outgoing | None:
        # Messages that failed go first, in their original order.
        if self._retry:
            return heapq.heappop(self._retry)
        return self._outbox.popleft() if self._outbox else None

    async def _drain_outbox(self) -> None:
        # Publishing goes straight to paho (aiomqtt's publish() costs a task
        # and an event per message); paho's on_publish callback, chained
        # below, tells when each is written (QoS 0) or acknowledged (QoS 1).
        paho = self._client._client
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            while (self._outbox or self._retry) and self._connected.is_set():
                if len(self._awaiting) >= PUBLISH_WINDOW:
                    self._window_free.clear()
                    await self._window_free.wait()
                    continue
                message = self._next()
                if message is None:
                    break
                try:
                    info = paho.publish(
                        message.topic, message.payload, message.qos, message.retain
                    )
                except ValueError as exc:
                    # A topic or QoS paho refuses: that message cannot ever be
                    # sent; count it, and keep the others flowing.
                    self.stats.refused += 1
                    log.error("publish to %r refused: %s", message.topic[:200], exc)
                    self._confirm(message.seq)
                    self._check_idle()
                    continue
                if info.rc == mqtt.MQTT_ERR_SUCCESS or (
                    info.rc == mqtt.MQTT_ERR_NO_CONN and message.qos > 0
                ):
                    # (A QoS>0 message refused for want of a connection stays
                    # with paho, which sends it after the reconnect.)
                    if info.is_published():
                        self._published(message)
                    else:
                        self._awaiting[info.mid] = message
                else:
                    heapq.heappush(self._retry, message)
                    break

    def _on_publish(self, mid: int) -> None:
        message = self._awaiting.pop(mid, None)
        if message is not None:
            self._published(message)
            self._window_free.set()

    def _published(self, message: Outgoing) -> None:
        self.stats.published += 1
        self._confirm(message.seq)
        self._check_idle()

    def _requeue_unsent(self) -> None:
        # At a disconnect paho drops QoS 0 messages it has not written, and a
        # clean session drops the QoS 1 ones too: send them again, in order.
        for mid, message in list(self._awaiting.items()):
            if message.qos == 0 or self._clean_session:
                del self._awaiting[mid]
                heapq.heappush(self._retry, message)
        self._window_free.set()
