"""One MQTT connection shared by everything in a process, kept alive for it.

:class:`Link` wraps a :class:`~jet.transport.connection.Connection` (aiomqtt and paho)
with what a container needs and aiomqtt leaves to its users: reconnect
with backoff, a persistent session re-established after every reconnect,
subscriptions counted per topic (two circuits wired to the same output share
one MQTT subscription), dispatch of each message to every handler whose
filter matches, acknowledgement after handling, and a bounded, pipelined
:class:`Outbox` so that gadgets can publish from synchronous code without
waiting on the network.  Nothing is dropped silently: a full outbox counts what it refuses.

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
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

import aiomqtt
import attrs

from jet import address
from jet.tasks import cancel_all
from jet.transport.broker import Broker
from jet.transport.connection import PUBLISH_NO_CONN, PUBLISH_OK, Connection, Will

__all__ = [
    "OUTBOX_LIMIT",
    "PUBLISH_WINDOW",
    "Handler",
    "Link",
    "LinkStats",
    "Subscription",
    "Will",
    "is_filter",
]

log = logging.getLogger("jet.mqtt")

#: ``handler(topic, payload)``, called on the event loop for every matching
#: message.  A handler that cannot take the message yet returns an awaitable;
#: the link waits on it before dispatching (and acknowledging) anything else.
Handler = Callable[[str, bytes], Awaitable[None] | None]

OUTBOX_LIMIT = 100_000
PUBLISH_WINDOW = 256  # publishes handed to paho and not yet completed, at most
BACKOFF_START = 0.1
BACKOFF_MAX = 5.0


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


def is_filter(topic: str) -> bool:
    return "+" in topic or "#" in topic


class Outbox:
    """The link's messages on their way to the broker: bounded, in order, pipelined.

    :meth:`put` numbers each message (``seq``) and never waits; :meth:`run`
    hands messages to paho, at most :data:`PUBLISH_WINDOW` not yet completed,
    while ``connected`` is set.  A message paho cannot take, or one lost with
    a connection (:meth:`connection_lost`), is sent again before anything
    newer.  ``confirmed`` is the highest ``seq`` such that every message up
    to it has been handed over (QoS 0) or acknowledged (QoS 1);
    :meth:`ack_when_sent` acknowledges a received message only then.
    """

    def __init__(
        self,
        connection: Connection,
        stats: LinkStats,
        connected: asyncio.Event,
        *,
        clean_session: bool,
    ) -> None:
        self._connection = connection
        self._stats = stats
        self._connected = connected
        self._clean_session = clean_session
        self._waiting: collections.deque[Outgoing] = collections.deque()
        self._retry: list[Outgoing] = []  # a heap, by sequence number
        self._awaiting: dict[int, Outgoing] = {}  # by paho message id
        self._seq = 0
        self._confirmed = 0
        self._done: set[int] = set()
        self._acks_due: collections.deque[tuple[int, int, int]] = collections.deque()
        self._ready = asyncio.Event()
        self._window_free = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        connection.on_published(self._on_publish)

    def put(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        """Queue a message for sending; False (and counted) when the outbox is full."""
        if len(self._waiting) >= OUTBOX_LIMIT:
            stats = self._stats
            stats.outbox_dropped += 1
            if stats.outbox_dropped == 1 or stats.outbox_dropped % 1000 == 0:
                log.warning(
                    "outbox full (%d): %d messages refused so far",
                    OUTBOX_LIMIT,
                    stats.outbox_dropped,
                )
            return False
        self._seq += 1
        self._waiting.append(Outgoing(self._seq, topic, payload, qos, retain))
        self._idle.clear()
        self._ready.set()
        return True

    async def flush(self) -> None:
        """Wait until the outbox is empty and every QoS>0 publish is acknowledged."""
        await self._idle.wait()

    def wake(self) -> None:
        """Look at the queue again (call once connected)."""
        self._ready.set()

    def ack_when_sent(self, mid: int, qos: int) -> None:
        """Acknowledge received message ``mid`` once everything queued so far
        (what its handlers published) is confirmed, so a crash before then
        leaves the message with the broker."""
        if self._seq <= self._confirmed:
            self._connection.ack(mid, qos)
        else:
            self._acks_due.append((self._seq, mid, qos))

    def connection_lost(self) -> None:
        """Send again what the connection took with it; forget acknowledgements
        due (the broker redelivers those messages, under new ids)."""
        # At a disconnect paho drops QoS 0 messages it has not written, and a
        # clean session drops the QoS 1 ones too: send them again, in order.
        for mid, message in list(self._awaiting.items()):
            if message.qos == 0 or self._clean_session:
                del self._awaiting[mid]
                heapq.heappush(self._retry, message)
        self._window_free.set()
        self._acks_due.clear()

    def _confirm(self, seq: int) -> None:
        self._done.add(seq)
        while self._confirmed + 1 in self._done:
            self._confirmed += 1
            self._done.discard(self._confirmed)
        while self._acks_due and self._acks_due[0][0] <= self._confirmed:
            _, mid, qos = self._acks_due.popleft()
            self._connection.ack(mid, qos)

    def _check_idle(self) -> None:
        if not self._waiting and not self._retry and not self._awaiting:
            self._idle.set()

    def _next(self) -> Outgoing | None:
        # Messages that failed go first, in their original order.
        if self._retry:
            return heapq.heappop(self._retry)
        return self._waiting.popleft() if self._waiting else None

    async def run(self) -> None:
        # paho's on_publish callback tells when each message is written
        # (QoS 0) or acknowledged (QoS 1): see _on_publish.
        publish = self._connection.publish_nowait
        while True:
            await self._ready.wait()
            self._ready.clear()
            while (self._waiting or self._retry) and self._connected.is_set():
                if len(self._awaiting) >= PUBLISH_WINDOW:
                    self._window_free.clear()
                    await self._window_free.wait()
                    continue
                message = self._next()
                if message is None:
                    break
                try:
                    info = publish(message.topic, message.payload, message.qos, message.retain)
                except ValueError as exc:
                    # A topic or QoS paho refuses: that message cannot ever be
                    # sent; count it, and keep the others flowing.
                    self._stats.refused += 1
                    log.error("publish to %r refused: %s", message.topic[:200], exc)
                    self._confirm(message.seq)
                    self._check_idle()
                    continue
                if info.rc == PUBLISH_OK or (info.rc == PUBLISH_NO_CONN and message.qos > 0):
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
        self._stats.published += 1
        self._confirm(message.seq)
        self._check_idle()


class Link:
    """The process's MQTT connection: kept up, shared, and routed.

    ``async with Link(...)`` connects (``ConnectionError`` after
    ``connect_timeout``; with None it waits as long as it takes) and, on
    leaving, sends what is queued (bounded wait) and disconnects cleanly.  In
    between it reconnects with backoff on its own, subscribing again to every
    topic.  :meth:`subscribe` routes messages to handlers (one broker
    subscription per topic, however many handlers); ``publish_nowait`` queues
    in the :class:`Outbox`, which never waits; :meth:`flush` waits for it.
    """

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
        self._connection = Connection(
            broker, client_id, will=will, clean_session=clean_session, keepalive=keepalive
        )
        if ack_after_handling:
            self._connection.manual_ack(True)
        self._connected = asyncio.Event()
        self._outbox = Outbox(
            self._connection, self.stats, self._connected, clean_session=clean_session
        )
        #: ``publish_nowait(topic, payload, qos=0, retain=False) -> bool``: see
        #: :meth:`Outbox.put` (bound here: no call layer per message).
        self.publish_nowait = self._outbox.put
        self._exact: dict[str, list[Subscription]] = {}
        self._filters: dict[str, list[Subscription]] = {}
        self._closing = False
        self._live = False
        self._tasks: list[asyncio.Task[None]] = []
        self._last_error = "no answer (wrong port, or a TLS handshake or login refused?)"

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._tasks = [
            asyncio.create_task(self._maintain(), name=f"mqtt-{self.client_id}"),
            asyncio.create_task(self._outbox.run(), name=f"mqtt-out-{self.client_id}"),
        ]
        if self._connect_timeout is None:
            await self._connected.wait()  # a daemon waits for its broker as long as it takes
        else:
            try:
                await asyncio.wait_for(self._connected.wait(), self._connect_timeout)
            except TimeoutError:
                await self.close()
                reason = self._connection.last_error or self._last_error
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

    async def _maintain(self) -> None:
        """Connect, (re)subscribe, dispatch; on loss, back off and do it again."""
        connection = self._connection
        dispatch = self._dispatch
        none_arrived = connection.none_arrived
        take_arrived = connection.take_arrived
        backoff = BACKOFF_START
        first = True
        while True:
            try:
                async with connection:
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
                    self._outbox.wake()
                    async for message in connection.messages():
                        await dispatch(message)
                        # Take what has already arrived without aiomqtt's
                        # per-message task and wait: bursts are the common case.
                        while not none_arrived():
                            await dispatch(take_arrived())
            except aiomqtt.MqttError as exc:
                self._live = False
                self._outbox.connection_lost()
                if self._manual_ack:
                    # What is still queued locally was never acknowledged, so
                    # the broker redelivers it on the next connection, and its
                    # packet ids belong to the dead one (acking them later would
                    # be wrong).  Done here, not after reconnecting, where
                    # redelivered messages may already be queued and would then
                    # never be acknowledged.
                    connection.forget_arrived()
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
            await self._connection.subscribe(topic, max(s.qos for s in subs))

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
                await self._connection.subscribe(topic, qos)
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
                    await self._connection.unsubscribe(sub.topic)

    def subscribed_topics(self) -> set[str]:
        return set(self._exact) | set(self._filters)

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
            self._outbox.ack_when_sent(message.mid, message.qos)

    # -- publishing ----------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Queue a message and wait until everything queued before it has been handed over."""
        if not self.publish_nowait(topic, payload, qos, retain):
            raise OverflowError("MQTT outbox full")
        await self.flush()

    async def flush(self) -> None:
        """Wait until the outbox is empty and every QoS>0 publish is acknowledged."""
        await self._outbox.flush()
