"""One MQTT connection shared by everything in a process, kept alive for it.

:class:`Link` wraps a connection: :class:`~jet.transport.v5.V5Connection` (MQTT 5 on
the ``mqtt5`` codec) or, for a server that does not speak MQTT 5,
:class:`~jet.transport.connection.Connection` (aiomqtt and paho, MQTT 3.1.1),
with what a container needs and aiomqtt leaves to its users: reconnect
with backoff (to the next server, when the broker URL lists a cluster's
servers), a persistent session re-established after every reconnect,
subscriptions counted per topic (two circuits wired to the same output share
one MQTT subscription), dispatch of each message to every handler whose
filter matches, acknowledgement after handling, and a bounded, pipelined
:class:`Outbox` so that gadgets can publish from synchronous code without
waiting on the network.  Nothing is dropped silently: a full outbox counts what it refuses.

One slow consumer never makes the link deaf.  A handler that cannot take a
message yet (a full queue under the ``block`` policy) holds back only its own
subscription: that subscription's later messages wait in it, in order and
bounded (:data:`HOLD_LIMIT`), while every other message (commands, other
circuits) is dispatched as usual.  A message whose handling outlasts the
connection itself (a handler slower than the keepalive, when the connection
could not be kept alive: see :mod:`jet.transport.watchdog`) is counted; after
:data:`POISON_ATTEMPTS` such deliveries the broker's next redelivery is
acknowledged without handling and reported, instead of coming back forever.

A handler of a link that acknowledges after handling may refuse a message it
could not handle (a database that cannot write) by raising :class:`Redeliver`:
the message is not acknowledged, and :data:`REDELIVERY_PAUSE` later the link
reconnects (a clean disconnect: no will), so the broker sends it again on the
persistent session.  At least once: the other handlers of that message, and the
refusing one if it had done part of its work, see it again.

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
import time
from collections.abc import Awaitable, Callable
from types import FrameType, TracebackType
from typing import Self

import aiomqtt
import attrs

from jet import address
from jet.tasks import cancel_all, worth_logging
from jet.transport import watchdog
from jet.transport.broker import Broker
from jet.transport.connection import PUBLISH_NO_CONN, PUBLISH_OK, Connection, Will
from jet.transport.v5 import ProtocolRefused, V5Connection

#: Either connection: the same surface (see jet/transport/v5.py).
AnyConnection = Connection | V5Connection

__all__ = [
    "HOLD_LIMIT",
    "OUTBOX_LIMIT",
    "POISON_ATTEMPTS",
    "PUBLISH_WINDOW",
    "REDELIVERY_PAUSE",
    "STUCK_LIMIT",
    "Handler",
    "Link",
    "LinkStats",
    "Redeliver",
    "Subscription",
    "Will",
    "is_filter",
]

log = logging.getLogger("jet.mqtt")

#: ``handler(topic, payload)``, called on the event loop for every matching
#: message.  A handler that cannot take the message yet returns an awaitable
#: that completes once it has: until then the link holds that subscription's
#: later messages (and only that subscription's).
Handler = Callable[[str, bytes], Awaitable[None] | None]

OUTBOX_LIMIT = 100_000
PUBLISH_WINDOW = 256  # publishes handed to paho and not yet completed, at most
ROUTES_LIMIT = 1024  # topics whose handlers are remembered (Link._route): ~300 KB at most
SEEN_LIMIT = 10_000  # topics a subscription remembers having had a message on (Subscription.seen)
BACKOFF_START = 0.1
BACKOFF_MAX = 5.0
#: Messages one subscription holds while its handler cannot take them, at most;
#: past that they are refused and counted (for a wire: in its circuit's drops).
HOLD_LIMIT = 10_000
#: Deliveries of one message whose handling outlasted the connection; the next
#: one is acknowledged unhandled and reported (it would come back forever).
POISON_ATTEMPTS = 2
#: How long a container's connection is kept alive for a gadget holding the
#: event loop (see jet.transport.watchdog); past it the container is let go offline.
STUCK_LIMIT = 60.0
#: Poison candidates remembered, at most.
SUSPECTS_KEPT = 100
#: Seconds from a handler's first :class:`Redeliver` to the reconnection that has
#: the broker send the refused messages again (the pause between two attempts).
REDELIVERY_PAUSE = 1.0

#: A received message, as told apart from others: (topic, hash of payload, size).
Fingerprint = tuple[str, int, int]


class Redeliver(Exception):
    """Raised by a handler, in the call that hands it a QoS>0 message, on a link with
    ``ack_after_handling``: the message was not handled and must not be acknowledged.
    The link reconnects :data:`REDELIVERY_PAUSE` later, and the broker sends it again
    (an MQTT broker resends unacknowledged messages only to a new connection of the
    session).  The handler says why, once, itself: the link logs no error for it.
    Anywhere else (a link that acknowledges on receipt, QoS 0, a held message) nothing
    can send it again: it counts as a handler's failure."""


@attrs.define(eq=False)
class Subscription:
    """One handler's interest in one topic filter; give it back to unsubscribe.

    ``held``: messages that arrived while the handler could not take one, in
    order (see :meth:`Link.pending`); ``refused``: those refused for want of room.
    """

    topic: str
    qos: int
    handler: Handler
    retained: bool = True  # False: no retained messages at (re)subscription (MQTT 5 links)
    #: topics it has had a message on since its broker subscription was made: a broker
    #: replays retained messages to everyone on a topic when a newcomer subscribes again,
    #: and a subscription that has the topic's value already skips them (Link._dispatch)
    seen: set[str] = attrs.field(factory=set, repr=False)
    held: collections.deque[tuple[str, bytes]] = attrs.field(
        factory=collections.deque, repr=False
    )
    refused: int = 0
    waiter: asyncio.Task[None] | None = attrs.field(default=None, repr=False)

    @property
    def pending(self) -> int:
        """Messages not yet taken by the handler (held, and the one it waits to take)."""
        return len(self.held) + (self.waiter is not None)


@attrs.define
class LinkStats:
    received: int = 0
    published: int = 0
    outbox_dropped: int = 0
    handler_errors: int = 0
    reconnects: int = 0
    refused: int = 0
    held_refused: int = 0
    poisoned: int = 0
    redeliveries: int = 0  # messages refused by a handler (Redeliver), not acknowledged


@attrs.frozen(order=True)
class Outgoing:
    """A message waiting to be published; ``seq`` keeps retries in order."""

    seq: int
    topic: str = attrs.field(order=False)
    payload: bytes = attrs.field(order=False, repr=False)
    qos: int = attrs.field(order=False)
    retain: bool = attrs.field(order=False)


def is_filter(topic: str) -> bool:
    """A filter (wildcards, or an MQTT 5 shared subscription ``$share/<group>/...``),
    routed by matching, not by the exact topic."""
    return "+" in topic or "#" in topic or topic.startswith("$share/")


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
        connection: AnyConnection,
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
        self._window_full = False  # run() waits for room: put() leaves it to run()
        self._idle = asyncio.Event()
        self._idle.set()
        self.use(connection)

    def use(self, connection: AnyConnection) -> None:
        """Hand messages to ``connection`` from now on (the link changed protocol:
        what the old one held, it sends again, in order)."""
        self._connection = connection
        # (paho completes a QoS 0 publish only once written: it goes through the window)
        self._immediate = isinstance(connection, V5Connection)
        connection.on_published(self._on_publish)
        for message in self._awaiting.values():
            heapq.heappush(self._retry, message)
        self._awaiting.clear()

    def put(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        """Queue a message for sending; False (and counted) when the outbox is full."""
        if len(self._waiting) >= OUTBOX_LIMIT:
            stats = self._stats
            stats.outbox_dropped += 1
            if worth_logging(stats.outbox_dropped):
                log.warning(
                    "outbox full (%d): %d messages refused so far",
                    OUTBOX_LIMIT,
                    stats.outbox_dropped,
                )
            return False
        self._seq += 1
        if (not qos and self._immediate and not self._waiting and not self._retry
                and self._connected.is_set()):
            # A QoS 0 publish that the connection completes as it queues it (MQTT 5:
            # see V5Connection.publish_nowait) needs no Outgoing and no window.
            try:
                sent = self._connection.publish_nowait(topic, payload, 0, retain)
            except ValueError as exc:
                self._stats.refused += 1
                log.error("publish to %r refused: %s", topic[:200], exc)
                self._confirm(self._seq)
                return True
            if sent.rc == PUBLISH_OK:
                self._stats.published += 1
                self._confirm(self._seq)
                return True
        self._waiting.append(Outgoing(self._seq, topic, payload, qos, retain))
        self._idle.clear()
        # Handed to paho at once while the window has room (written at the end
        # of this turn: see Connection); the task takes over when it is full.
        if self._window_full or not self._pump():
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
        if seq == self._confirmed + 1 and not self._done:  # in order: nothing to sort out
            self._confirmed = seq
            if self._acks_due:
                self._acks_now()
            return
        self._done.add(seq)
        while self._confirmed + 1 in self._done:
            self._confirmed += 1
            self._done.discard(self._confirmed)
        self._acks_now()

    def _acks_now(self) -> None:
        """Acknowledge the received messages whose outputs are all confirmed now."""
        acks_due = self._acks_due
        while acks_due and acks_due[0][0] <= self._confirmed:
            _, mid, qos = acks_due.popleft()
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
        while True:
            await self._ready.wait()
            self._ready.clear()
            while not self._pump():
                self._window_full = True
                self._window_free.clear()
                await self._window_free.wait()
                self._window_full = False

    def _pump(self) -> bool:
        """Hand paho what may go now, in order; False when the window is full."""
        publish = self._connection.publish_nowait
        while (self._waiting or self._retry) and self._connected.is_set():
            if len(self._awaiting) >= PUBLISH_WINDOW:
                return False
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
                # with paho, which sends it after the reconnect; asking
                # paho whether it is published would raise.)
                if info.rc == PUBLISH_OK and info.is_published():
                    self._published(message)
                else:
                    self._awaiting[info.mid] = message
            else:
                heapq.heappush(self._retry, message)
                break
        return True

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
    topic; with several servers in ``broker`` (``mqtt://h1:p1,h2:p2``) it moves
    to the next one whenever one fails, the only place that does.
    :meth:`subscribe` routes messages to handlers (one broker subscription per
    topic, however many handlers); ``publish_nowait`` queues in the
    :class:`Outbox`, which never waits; :meth:`flush` waits for it.
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
        on_lost: Callable[[str], None] | None = None,
        connect_timeout: float | None = 10.0,
        ack_after_handling: bool = False,
        blocked_by: Callable[[FrameType | None], str | None] | None = None,
        stuck_limit: float = STUCK_LIMIT,
        echo: bool = True,
    ) -> None:
        """``on_connect`` runs after each (re)connection and resubscription;
        ``on_lost(reason)`` when a live connection drops.

        ``echo=False``: the link speaks MQTT 5 and the broker never sends it
        its own publishes (no-local subscriptions): for relays between brokers.

        ``ack_after_handling``: acknowledge a QoS>0 message only once every
        handler has taken it, so a crash leaves it with the broker
        (redelivered on the persistent session) instead of losing it; a
        handler raising :class:`Redeliver` has it not acknowledged at all,
        and sent again after a reconnection.

        ``blocked_by``: keep the connection alive while code holds the event
        loop, for up to ``stuck_limit`` seconds, and name that code in the log
        with this function of the loop thread's stack (None: it cannot say).
        See :mod:`jet.transport.watchdog`.
        """
        if ack_after_handling and clean_session:
            raise ValueError("ack_after_handling needs a persistent session")
        self._manual_ack = ack_after_handling
        self.broker = broker
        self._server = 0  # index in broker.servers: the one connected to, or tried next
        self.client_id = client_id
        self.stats = LinkStats()
        self.keepalive = keepalive
        self._on_connect = on_connect
        self._on_lost = on_lost  # called with the reason when a live connection drops
        self._connect_timeout = connect_timeout
        self._session = {"will": will, "clean_session": clean_session, "keepalive": keepalive,
                         "echo": echo}
        # MQTT 5 first; a server that refuses it gets paho's MQTT 3.1.1 (_fall_back).
        self._connection: AnyConnection = (
            Connection(broker, client_id, **self._session)  # type: ignore[arg-type]
            if broker.mqtt == "3.1.1" else
            V5Connection(broker, client_id, will=will, clean_session=clean_session,
                         keepalive=keepalive, echo=echo))
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
        # Who gets a topic's messages, worked out once per topic (filters are
        # matched then, not per message); emptied whenever a subscription changes.
        self._routes: dict[str, tuple[Subscription, ...]] = {}
        self._closing = False
        self._live = False
        self._tasks: list[asyncio.Task[None]] = []
        self._last_error = "no answer (wrong port, or a TLS handshake or login refused?)"
        self._keeper = (
            watchdog.Keeper(client_id, keepalive, stuck_limit,
                            lambda: self._connection.keep_alive_now(), blocked_by)
            if blocked_by is not None
            else None
        )
        self._watchdog: watchdog.LoopWatchdog | None = None
        # Poison messages: those whose handling took a keepalive or more on this
        # connection (when it ended), and how often such a message's handling
        # has outlasted a connection.
        self._slow_now: dict[Fingerprint, tuple[float, str]] = {}  # (when, culprit)
        self._outlasted: dict[Fingerprint, tuple[int, str]] = {}  # (how often, culprit)
        # Messages a handler refused (Redeliver): the connection they came on (its
        # number), dropped REDELIVERY_PAUSE after the first so the broker resends them.
        self._sessions = 0  # connections made so far
        self._refused_on = 0  # the connection whose drop is due (0: none)
        self._redelivery: asyncio.Task[None] | None = None
        self._dropping = False  # that drop is ours: a reconnection, not a loss

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._keeper is not None:
            self._watchdog = watchdog.watch(self._keeper)
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
        redelivery = [self._redelivery] if self._redelivery is not None else []
        await cancel_all([*redelivery, *self._tasks], aiomqtt.MqttError)
        if self._keeper is not None:
            watchdog.unwatch(self._keeper)
            self._watchdog = None
        for sub in [*self._all_subscriptions()]:
            self.discard_held(sub)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def server(self) -> Broker:
        """The server connected to (or tried next): one of ``broker.servers``."""
        return self.broker.server(self._server)

    async def _maintain(self) -> None:
        """Connect, (re)subscribe, dispatch; on loss, back off and do it again.

        With several servers in the broker URL (a cluster), a failed attempt
        or a lost connection moves on to the next server at once; the backoff
        grows only once every server has been tried (see :meth:`_next_server`)."""
        dispatch = self._dispatch

        def dispatch_queued(message: aiomqtt.Message) -> None:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                payload = b"" if payload is None else str(payload).encode()
            dispatch(message.topic.value, payload, message.qos, message.mid, message.retain)

        backoff = BACKOFF_START
        first = True
        failed = 0  # servers that failed in a row (each tried once before backing off)
        while True:
            connection = self._connection
            none_arrived = connection.none_arrived
            take_arrived = connection.take_arrived
            try:
                async with connection:
                    if not first:
                        self.stats.reconnects += 1
                        log.info("reconnected to %s", self.server.url)
                    first = False
                    self._sessions += 1
                    self._dropping = False
                    # From here on a new subscribe() goes straight to the broker;
                    # set before resubscribing so none falls between the two.
                    self._live = True
                    await self._resubscribe()
                    if self._on_connect is not None:
                        try:
                            await self._on_connect()
                        except Exception:  # the owner's hook must not end the connection
                            log.exception("%s: on_connect failed", self.client_id)
                    self._connected.set()
                    # (A server that takes the connection and drops it while the
                    # session is set up, as a cluster's server may until it has
                    # a quorum, counts as failed: the next is tried, then backoff.)
                    backoff = BACKOFF_START
                    failed = 0
                    self._outbox.wake()
                    # What arrived while (re)subscribing, then the rest handed
                    # over in the turn it is read; the iterator only waits for
                    # the end of the connection (it raises then).
                    while not none_arrived():
                        dispatch_queued(take_arrived())
                    connection.deliver_to(dispatch)
                    try:
                        async for message in connection.messages():
                            dispatch_queued(message)
                    finally:
                        connection.deliver_to(None)
            except ProtocolRefused as exc:
                if isinstance(connection, V5Connection):
                    self._fall_back(str(exc))
                    continue
                raise  # (paho's connection never raises it)
            except aiomqtt.MqttError as exc:
                self._live = False
                self._outbox.connection_lost()
                held_by = self._count_outlasted()
                if self._manual_ack:
                    # What is still queued locally was never acknowledged, so
                    # the broker redelivers it on the next connection, and its
                    # packet ids belong to the dead one (acking them later would
                    # be wrong).  Done here, not after reconnecting, where
                    # redelivered messages may already be queued and would then
                    # never be acknowledged.
                    connection.forget_arrived()
                self._last_error = str(exc)
                if self._dropping:  # ours, for a redelivery: back at once, same server
                    self._dropping = False
                    self._connected.clear()
                    await asyncio.sleep(BACKOFF_START)
                    continue
                if self._connected.is_set():
                    log.warning("lost MQTT broker %s: %s%s", self.server.url, exc, held_by)
                    if self._on_lost is not None:
                        try:
                            self._on_lost(str(exc))
                        except Exception:  # (as on_connect: logged, the link goes on)
                            log.exception("%s: on_lost failed", self.client_id)
                elif backoff == BACKOFF_START and self._connect_timeout is None:
                    # (a command-line client reports the failure itself, once)
                    log.warning("cannot reach MQTT broker %s: %s (retrying)", self.server.url, exc)
                self._connected.clear()
            failed += 1
            servers = len(self.broker.servers)
            if servers > 1:
                self._server = (self._server + 1) % servers
                connection.use_server(*self.broker.servers[self._server])
                if failed < servers:  # another server of the cluster, at once
                    await asyncio.sleep(BACKOFF_START)
                    continue
                failed = 0
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _fall_back(self, reason: str) -> None:
        """The server took the connection but not MQTT 5: paho's MQTT 3.1.1 from now
        on (the session's QoS>0 publishes not sent yet go with it, through the outbox)."""
        log.info("%s: %s does not answer MQTT 5 (%s): using MQTT 3.1.1", self.client_id,
                 self.server.url, reason)
        old = self._connection
        connection = Connection(self.broker, self.client_id, **self._session)  # type: ignore[arg-type]
        connection.use_server(*self.broker.servers[self._server])
        if self._manual_ack:
            connection.manual_ack(True)
        self._connection = connection
        self._outbox.use(connection)
        if isinstance(old, V5Connection):
            old.forget_arrived()

    async def _resubscribe(self) -> None:
        # A persistent session usually still has them, but a broker that
        # restarted without persistence does not: subscribing again is idempotent.
        wanted = {**self._exact, **self._filters}
        for topic, subs in wanted.items():
            for sub in subs:  # each takes what the broker replays for the new session
                sub.seen.clear()
            await self._subscribe_broker(topic, subs)

    async def _subscribe_broker(self, topic: str, subs: list[Subscription]) -> None:
        """The one broker subscription behind a topic's handlers: the highest QoS
        any asks for, retained messages if any wants them."""
        await self._connection.subscribe(topic, max(s.qos for s in subs),
                                         retained=any(s.retained for s in subs))

    # -- subscriptions -----------------------------------------------------------

    async def subscribe(
        self, topic: str, qos: int, handler: Handler, *, retained: bool = True
    ) -> Subscription:
        """Deliver messages on ``topic`` (a filter may use + and #) to ``handler``.

        Returns once the broker has acknowledged the subscription, or at once
        while disconnected (the subscription is made on reconnect).
        ``retained=False`` (a link with ``echo=False``: MQTT 5): only messages
        published from now on, not the retained ones at each (re)subscription,
        as a relay wants (it would carry them again on every reconnect).
        """
        address.check(topic, filter_ok=True)  # before it can reach the table or the broker
        sub = Subscription(topic, qos, handler, retained)
        table = self._filters if is_filter(topic) else self._exact
        existing = table.setdefault(topic, [])
        # Subscribing again also makes the broker send the retained messages again
        # (MQTT 3.1.1 3.8.4, MQTT 5 retain handling 0), for a newcomer that wants them;
        # _dispatch gives them only to subscriptions that have no value of the topic yet.
        again = not existing or qos > max(s.qos for s in existing) or retained
        existing.append(sub)
        self._routes.clear()
        if again and self._live:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._subscribe_broker(topic, existing)
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        """Stop routing to ``sub``.  Messages it holds are still handed to its
        handler, in order (see :meth:`discard_held` to drop them)."""
        table = self._filters if is_filter(sub.topic) else self._exact
        subs = table.get(sub.topic, [])
        if sub in subs:
            subs.remove(sub)
            self._routes.clear()
        if not subs and sub.topic in table:
            del table[sub.topic]
            if self._live:
                with contextlib.suppress(aiomqtt.MqttError):
                    await self._connection.unsubscribe(sub.topic)

    def subscribed_topics(self) -> set[str]:
        return set(self._exact) | set(self._filters)

    def _all_subscriptions(self) -> list[Subscription]:
        return [s for subs in (*self._exact.values(), *self._filters.values()) for s in subs]

    def _dispatch(
        self, topic: str, payload: bytes | bytearray, qos: int, mid: int, retain: bool = False
    ) -> None:
        # Never waits: a handler that cannot take a message holds back only its
        # own subscription (_hold), so commands and other wires keep flowing.
        self.stats.received += 1
        subs = self._routes.get(topic)
        if subs is None:
            subs = self._route(topic)
        data = payload if type(payload) is bytes else bytes(payload)
        ack = self._manual_ack and qos > 0
        if self._outlasted and self._refuse_poison(topic, data):
            if ack:
                self._outbox.ack_when_sent(mid, qos)
            return
        started = time.monotonic()
        refused = False
        for sub in subs:
            seen = sub.seen
            if topic not in seen:
                if len(seen) >= SEEN_LIMIT:  # (a filter over endless topics)
                    seen.clear()
                seen.add(topic)
            elif retain:  # replayed for a newcomer: this one has the value (or a newer one)
                continue
            if retain and not sub.retained:  # (a relay: only what is published from now on)
                continue
            if sub.waiter is not None:
                self._hold(sub, topic, data)
                continue
            try:
                pending = sub.handler(topic, data)
            except Redeliver as exc:
                if ack:
                    refused = True
                else:  # (nothing would send it again)
                    self._handler_failed(topic, exc)
                continue
            except BaseException as exc:  # one handler must not stop the rest
                self._handler_failed(topic, exc)
                continue
            if pending is not None:
                sub.waiter = asyncio.create_task(
                    self._release(sub, pending), name=f"hold-{sub.topic}"
                )
        took = time.monotonic() - started
        if took >= self.keepalive:
            self._note_slow(topic, data, took)
        elif self._outlasted:
            self._outlasted.pop((topic, hash(data), len(data)), None)  # handled in time now
        # Held messages are acknowledged too: the broker sends a client only a
        # few unacknowledged messages at a time (mosquitto: 20), so holding
        # them unacknowledged would stop every other message of this link.
        if refused:
            self._redeliver_later()
        elif ack:
            self._outbox.ack_when_sent(mid, qos)

    def _route(self, topic: str) -> tuple[Subscription, ...]:
        found = list(self._exact.get(topic, ()))
        if self._filters:
            matches = aiomqtt.Topic(topic).matches
            for pattern, filtered in self._filters.items():
                if matches(pattern):
                    found.extend(filtered)
        if len(self._routes) >= ROUTES_LIMIT:  # (wildcards can name endless topics)
            self._routes.clear()
        route = self._routes[topic] = tuple(found)
        return route

    def _handler_failed(self, topic: str, exc: BaseException) -> None:
        self.stats.handler_errors += 1
        if self.stats.handler_errors == 1:
            log.error("handler for %s failed on a message", topic, exc_info=exc)
        elif worth_logging(self.stats.handler_errors):
            log.error("handler for %s failed on a message: %s: %s (%d failures so far)",
                      topic, type(exc).__name__, exc, self.stats.handler_errors)

    # -- messages a handler refused: sent again after a reconnection ---------------------

    def _redeliver_later(self) -> None:
        self.stats.redeliveries += 1
        if self._refused_on != self._sessions:
            self._refused_on = self._sessions
            self._redelivery = asyncio.create_task(
                self._drop_for_redelivery(self._sessions), name=f"redeliver-{self.client_id}"
            )

    async def _drop_for_redelivery(self, session: int) -> None:
        """Disconnect cleanly (no will) ``REDELIVERY_PAUSE`` after a handler refused a
        message on connection ``session``, unless that connection is gone already: the
        next one has the broker send the refused messages again."""
        await asyncio.sleep(REDELIVERY_PAUSE)
        if self._sessions != session or not self._live or self._closing:
            return
        if worth_logging(self.stats.redeliveries):
            log.info("%s: reconnecting so that the broker sends again what was not"
                     " handled (%d messages refused so far)", self.client_id,
                     self.stats.redeliveries)
        self._dropping = self._connection.drop()

    # -- holding a subscription whose handler cannot take more ---------------------------

    def _hold(self, sub: Subscription, topic: str, data: bytes) -> None:
        if len(sub.held) >= HOLD_LIMIT:
            sub.refused += 1
            self.stats.held_refused += 1
            if worth_logging(sub.refused):
                log.warning(
                    "%s: %d messages already wait for a full queue; %d refused so far",
                    sub.topic, HOLD_LIMIT, sub.refused,
                )
            return
        sub.held.append((topic, data))

    async def _release(self, sub: Subscription, pending: Awaitable[None]) -> None:
        """Wait until ``sub``'s handler has taken its message, then hand it the
        held ones in order (waiting again whenever it cannot take one)."""
        try:
            waiting: Awaitable[None] | None = pending
            while waiting is not None:
                try:
                    await waiting
                except Exception as exc:  # a bug in a handler, not ours to end
                    self._handler_failed(sub.topic, exc)
                waiting = None
                while waiting is None and sub.held:
                    topic, data = sub.held.popleft()
                    try:
                        waiting = sub.handler(topic, data)
                    except BaseException as exc:
                        self._handler_failed(topic, exc)
        finally:
            sub.waiter = None

    async def released(self, subs: list[Subscription], timeout: float) -> bool:
        """Wait (at most ``timeout``) until ``subs`` hold nothing; True if they do not."""
        deadline = time.monotonic() + timeout
        for sub in subs:
            while sub.waiter is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(sub.waiter), remaining)
        return True

    def discard_held(self, sub: Subscription) -> int:
        """Drop what ``sub`` holds (its handler is going away); returns how many."""
        count = sub.pending
        sub.held.clear()
        if sub.waiter is not None:
            sub.waiter.cancel()
            sub.waiter = None
        return count

    # -- messages whose handling outlasts the connection ---------------------------------

    def _note_slow(self, topic: str, data: bytes, took: float) -> None:
        now = time.monotonic()
        self._slow_now = {
            fp: seen for fp, seen in self._slow_now.items() if now - seen[0] < 2 * self.keepalive
        }
        culprit = self._culprit(since=now - took)
        self._slow_now[(topic, hash(data), len(data))] = (now, culprit)
        log.warning("%s: a message took %.1f s to handle (keepalive %d s)%s",
                    topic, took, self.keepalive, culprit)

    def _culprit(self, since: float) -> str:
        """``" (held by …)"`` when the watchdog saw the loop held since then, else ""."""
        block = self._watchdog.last_block if self._watchdog is not None else None
        if block is None or block.since < since - 1.0:  # (it detects a hold within 1 s)
            return ""
        return f" (held by {block.culprit})"

    def _count_outlasted(self) -> str:
        """The connection is lost: a message handled slowly just before may
        never have been acknowledged, and comes back; count it.  Returns what
        to add to the log line."""
        now = time.monotonic()
        recent = {
            fp: seen for fp, seen in self._slow_now.items() if now - seen[0] < 2 * self.keepalive
        }
        self._slow_now = {}
        for fp, (_, culprit) in recent.items():
            self._outlasted[fp] = (self._outlasted.get(fp, (0, ""))[0] + 1, culprit)
        while len(self._outlasted) > SUSPECTS_KEPT:
            del self._outlasted[next(iter(self._outlasted))]
        if not recent:
            return ""
        topics = ", ".join(sorted({fp[0] for fp in recent}))
        culprits = "".join(sorted({culprit for _, culprit in recent.values()}))
        return f"; it came right after a message on {topics} took longer than the keepalive" \
            f"{culprits}"

    def _refuse_poison(self, topic: str, data: bytes) -> bool:
        fp = (topic, hash(data), len(data))
        attempts, culprit = self._outlasted.get(fp, (0, ""))
        if attempts < POISON_ATTEMPTS:
            return False
        del self._outlasted[fp]
        self.stats.poisoned += 1
        log.error(
            "%s: message of %d bytes dropped unhandled: its handling outlasted the MQTT"
            " connection %d times%s, and it would come back forever",
            topic, len(data), attempts, culprit,
        )
        return True

    # -- publishing ----------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Queue a message and wait until everything queued before it has been handed over."""
        if not self.publish_nowait(topic, payload, qos, retain):
            raise OverflowError("MQTT outbox full")
        await self.flush()

    async def flush(self) -> None:
        """Wait until the outbox is empty and every QoS>0 publish is acknowledged."""
        await self._outbox.flush()
