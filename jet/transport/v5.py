"""One MQTT 5 connection: the ``mqtt5`` codec on an asyncio protocol.

:class:`V5Connection` has the surface of :class:`jet.transport.connection.Connection`
(paho under aiomqtt) and is what a :class:`~jet.transport.link.Link` uses first.
Why a second one: paho reads and decodes one packet at a time in Python (its
packet state machine, locks and logging checks per packet) and writes each packet
with its own ``send``; that, not JET's code, was most of a pack's CPU per message
(docs/performance.md, issue 10).  Here a socket read is decoded in one pass by
``mqtt5`` (Rust, by aiomqtt's author), every message in it is handed to the sink
in the same turn, and whatever the handlers queued (outputs, acknowledgements) is
written with one ``transport.write``.  The framing and encoding are ``mqtt5``'s;
this module keeps the session's state: packet ids, QoS 1 and 2 in flight and sent
again after a reconnect, the server's receive maximum, keepalive, and manual
acknowledgement.

A server that does not speak MQTT 5 (NATS speaks 3.1.1) answers the CONNECT with
something other than an MQTT 5 CONNACK; :class:`ProtocolRefused` then tells the
link to use the paho connection instead, from then on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
import zlib
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Self

import aiomqtt
import mqtt5

from jet.transport.broker import Broker
from jet.transport.connection import (
    DISCONNECT_TIMEOUT,
    PUBLISH_NO_CONN,
    PUBLISH_OK,
    SESSION_EXPIRY,
    Will,
)

#: s: TCP (and TLS) up and an MQTT 5 CONNACK back, or the link falls back to MQTT 3.1.1
#: (a server that does not answer MQTT 5 may also just wait: amqtt does)
CONNECT_TIMEOUT = 4.0
COMMAND_TIMEOUT = 30.0  # s: a SUBACK or UNSUBACK, or the connection is called lost

KEEPERS_LIMIT = 1024  # topics whose kept subscription is remembered (as the link's routes)

_PING = mqtt5.PingReqPacket().write()
_QOS = (mqtt5.QoS.AT_MOST_ONCE, mqtt5.QoS.AT_LEAST_ONCE, mqtt5.QoS.EXACTLY_ONCE)
_SUCCESS = 0x80  # reason codes below this are successes (MQTT 5, 2.4)
_MAX_SUBSCRIPTION_ID = 268_435_455  # a variable byte integer's largest (MQTT 5, 3.8.2.1.2)


class ProtocolRefused(aiomqtt.MqttError):
    """The server took the connection but gave no MQTT 5 CONNACK (an MQTT 3.1.1
    server, or a TLS or proxy problem that the paho connection reports in detail)."""


class Sent:
    """What :meth:`V5Connection.publish_nowait` returns (paho's ``MQTTMessageInfo`` subset)."""

    __slots__ = ("_done", "mid", "rc")

    def __init__(self, mid: int, rc: int, done: bool) -> None:
        self.mid = mid
        self.rc = rc
        self._done = done

    def is_published(self) -> bool:
        return self._done


_SENT = Sent(0, PUBLISH_OK, True)  # (QoS 0: one answer for all, no allocation)
_NOT_SENT = Sent(0, PUBLISH_NO_CONN, False)


class _InFlight:
    """A QoS>0 publish not completed yet: its packet and how far its handshake got."""

    __slots__ = ("packet", "released")

    def __init__(self, packet: mqtt5.PublishPacket) -> None:
        self.packet = packet
        self.released = False  # QoS 2: PUBREC received, PUBREL sent


class V5Connection:
    """An MQTT 5 session over asyncio, with :class:`~jet.transport.connection.Connection`'s
    surface; no reconnecting (that is the link's).

    ``async with connection:`` is one session, from CONNECT to DISCONNECT
    (``aiomqtt.MqttError`` when it fails or breaks; :class:`ProtocolRefused`
    when the server does not speak MQTT 5); enter it again to reconnect.  QoS>0
    publishes not completed when a session ends are sent again (DUP) in the
    next one, unless the session is clean; packet ids of received messages
    belong to their session.  Everything runs on the loop that entered it.
    """

    def __init__(
        self,
        broker: Broker,
        client_id: str,
        *,
        will: Will | None,
        clean_session: bool,
        keepalive: int,
        echo: bool = True,
    ) -> None:
        self.last_error = ""
        self._broker = broker
        self._host, self._port = broker.host, broker.port
        self._client_id = client_id
        self._will = will
        self._clean = clean_session
        self._keepalive = keepalive
        self._no_local = not echo
        self._manual_ack = False
        self._sink: Callable[[str, bytes | bytearray, int, int, bool], None] | None = None
        self._on_published: Callable[[int], None] | None = None
        self._arrived: collections.deque[aiomqtt.Message] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._lost: asyncio.Future[None] | None = None
        self._connack: asyncio.Future[mqtt5.ConnAckPacket] | None = None
        self._answers: dict[int, asyncio.Future[Any]] = {}  # SUBACK/UNSUBACK by packet id
        self._inflight: dict[int, _InFlight] = {}  # our QoS>0 publishes, by packet id
        self._held: collections.deque[int] = collections.deque()  # over the receive maximum
        self._receive_max = 65535
        self._qos2_in: set[int] = set()  # received QoS 2 ids: PUBREC sent, PUBREL awaited
        self._next_id = 0
        # Overlapping subscriptions: an MQTT 5 broker (mosquitto) sends one copy of a
        # message per subscription it matches, where 3.1.1 sent one; the link routes a
        # message to every matching handler itself, so it gets one copy (see _message).
        # filter -> (subscription id, QoS, age).  An id is the filter's own
        # (_subscription_id): a session resumed by another process gets copies queued
        # for the last one, which carry its ids.
        self._subscribed: dict[str, tuple[int, int, int]] = {}
        self._wildcards: dict[str, tuple[int, int, int]] = {}  # those with + or #, not shared
        self._ids: set[int] = set()  # the ids in _subscribed
        self._subscriptions_made = 0  # (the next one's age)
        # SUBSCRIBEs sent, by packet id: the filter and what _subscribed gets at its SUBACK
        self._subscribing: dict[int, tuple[str, tuple[int, int, int]]] = {}
        self._keepers: dict[str, int] = {}  # topic -> the subscription id whose copy is kept
        # Shared subscriptions' copies are always delivered: whether one comes to this
        # client at all is the broker's choice, made per message.
        self._shared: set[int] = set()
        # Copies to sort out only with two filters or more, one of them a wildcard.
        self._overlap = False
        self._out: list[bytes] = []  # packets to write at the end of this turn or read
        self._flush_due = False
        self._reading = False
        self._buffer = bytearray()
        self._last_in = self._last_out = 0.0
        self._ping_sent = 0.0  # when the PINGREQ now unanswered went, or 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Acknowledge a received message (manual acknowledgement), by packet id.
        self.ack = self._ack

    # -- the surface Link uses ---------------------------------------------------

    def use_server(self, host: str, port: int) -> None:
        self._host, self._port = host, port

    def on_published(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(mid)`` as each QoS>0 publish is acknowledged (QoS 0
        publishes are complete when queued: ``Sent.is_published()``)."""
        self._on_published = callback

    def manual_ack(self, on: bool) -> None:
        self._manual_ack = on

    def deliver_to(
        self, sink: Callable[[str, bytes | bytearray, int, int, bool], None] | None
    ) -> None:
        self._sink = sink

    def none_arrived(self) -> bool:
        return not self._arrived

    def take_arrived(self) -> aiomqtt.Message:
        return self._arrived.popleft()

    def forget_arrived(self) -> None:
        self._arrived.clear()

    async def messages(self) -> AsyncIterator[aiomqtt.Message]:
        """Never yields (messages go to the sink); raises when the session ends."""
        lost = self._lost
        if lost is None:
            raise aiomqtt.MqttError("not connected")
        await asyncio.shield(lost)
        raise aiomqtt.MqttError(self.last_error or "connection lost")
        yield  # (an async generator)

    # -- session -----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        loop = self._loop = asyncio.get_running_loop()
        kwargs = self._broker.client_kwargs()
        context = kwargs.get("tls_context")
        self.last_error = ""
        self._buffer.clear()
        self._qos2_in.clear()
        self._ping_sent = 0.0
        self._lost = loop.create_future()
        self._connack = loop.create_future()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await loop.create_connection(
                    lambda: _Protocol(self), self._host, self._port, ssl=context,
                    server_hostname=self._host if context is not None else None,
                )
        except (OSError, TimeoutError) as exc:  # (ssl.SSLError is an OSError)
            self.last_error = str(exc) or f"no connection in {CONNECT_TIMEOUT:.0f} s"
            self._end_session("")
            raise aiomqtt.MqttError(self.last_error) from None
        self._write_now(self._connect_packet())
        waits: list[asyncio.Future[Any]] = [self._connack, self._lost]
        await asyncio.wait(waits, timeout=CONNECT_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if not self._connack.done():
            self._end_session("")
            raise ProtocolRefused(self.last_error or "closed before an MQTT 5 CONNACK")
        connack = self._connack.result()
        code = int(connack.reason_code)
        if code >= _SUCCESS:
            self.last_error = f"connection refused: {_reason(connack.reason_code)}"
            self._end_session("")
            if code == 0x84:  # unsupported protocol version
                raise ProtocolRefused(self.last_error)
            raise aiomqtt.MqttError(self.last_error)
        if connack.receive_max:
            self._receive_max = connack.receive_max
        self._resume(connack.session_present)
        self._tick()
        return self

    def _connect_packet(self) -> bytes:
        will = self._will
        broker = self._broker
        return mqtt5.ConnectPacket(
            self._client_id,
            username=broker.username,
            password=broker.password.encode() if broker.password is not None else None,
            clean_start=self._clean,
            will=mqtt5.Will(will.topic, payload=will.payload, qos=_QOS[will.qos],
                            retain=will.retain) if will else None,
            keep_alive=self._keepalive,
            # MQTT 5 ends a session at disconnect unless told otherwise.
            session_expiry_interval=0 if self._clean else SESSION_EXPIRY,
        ).write()

    def _resume(self, session_present: bool) -> None:
        """Send again what the last session left unfinished, oldest first."""
        self._held.clear()
        out = self._out
        for sent, (mid, flight) in enumerate(self._inflight.items()):
            if sent >= self._receive_max:
                self._held.append(mid)
            elif flight.released:
                out.append(mqtt5.PubRelPacket(mid).write())
            else:
                packet = flight.packet
                flight.packet = packet = mqtt5.PublishPacket(
                    packet.topic, packet.payload, qos=packet.qos, retain=packet.retain,
                    packet_id=mid, duplicate=True)
                out.append(packet.write())
        self._flush()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        transport, lost = self._transport, self._lost
        if transport is None or lost is None or lost.done():
            self._stop_timer()
            return
        self._flush()
        transport.write(mqtt5.DisconnectPacket().write())  # a clean end: no will
        transport.close()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(lost), DISCONNECT_TIMEOUT)
        self._end_session("disconnected")

    def drop(self) -> bool:
        """End the session with a clean DISCONNECT (no will), as :meth:`__aexit__` does
        but without waiting: ``messages()`` ends with ``aiomqtt.MqttError`` as for any
        end, and the next ``async with`` resumes the session (the broker resends what
        was not acknowledged).  False when there was no session to end."""
        transport, lost = self._transport, self._lost
        if transport is None or lost is None or lost.done():
            return False
        self._flush()
        transport.write(mqtt5.DisconnectPacket().write())  # a clean end: no will
        self.last_error = "disconnected, to have what was not acknowledged sent again"
        transport.close()  # (written first; connection_lost then ends the session)
        return True

    def _end_session(self, reason: str) -> None:
        """The session is over: close the socket, fail what waits on it."""
        if reason and not self.last_error:
            self.last_error = reason
        self._stop_timer()
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        for answer in self._answers.values():
            if not answer.done():
                answer.set_exception(aiomqtt.MqttError(self.last_error or reason))
        self._answers.clear()
        self._out.clear()
        if self._clean:  # a clean session starts with nothing in flight (the link resends)
            self._inflight.clear()

    # -- keepalive ---------------------------------------------------------------

    def _tick(self) -> None:
        """Every quarter keepalive: a PINGREQ when nothing went or came for a
        keepalive, and the session called lost when one goes unanswered for a
        keepalive (as paho does)."""
        keepalive = self._keepalive
        if not keepalive or self._loop is None:
            return
        now = time.monotonic()
        unanswered = self._ping_sent and now - self._ping_sent >= keepalive
        if unanswered and now - self._last_in >= keepalive:
            self.last_error = "the broker stopped answering (keepalive)"
            self._end_session("")
            return
        if not self._ping_sent and now - max(self._last_out, self._last_in) >= keepalive:
            self._ping_sent = now
            self._write_now(_PING)
        self._timer = self._loop.call_later(keepalive / 4, self._tick)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def keep_alive_now(self) -> None:
        """Send a PINGREQ at once (the event-loop watchdog, jet/transport/watchdog.py,
        while a gadget holds the loop); its answer is not awaited."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            self._last_out = time.monotonic()
            transport.write(_PING)

    # -- subscribing -------------------------------------------------------------

    async def subscribe(self, topic: str, qos: int, retained: bool = True) -> None:
        topic_filter = mqtt5.TopicFilter(
            topic, max_qos=_QOS[qos],
            # As MQTT 3.1.1: a message's retain flag says "stored, sent because you
            # subscribed", never "was retained when published".
            retain_as_published=False,
            no_local=self._no_local,
            retain_handling=(mqtt5.RetainHandling.SEND_NEVER
                             if self._no_local and not retained
                             else mqtt5.RetainHandling.SEND_ALWAYS),
        )
        known = self._subscribed.get(topic)
        if known is None:
            number = self._subscription_id(topic)
            self._subscriptions_made += 1
            age = self._subscriptions_made
        else:
            number, _, age = known
        mid = self._packet_id()
        self._subscribing[mid] = (topic, (number, qos, age))
        try:
            answer = await self._request(
                mid, mqtt5.SubscribePacket(mid, [topic_filter], subscription_id=number).write())
        finally:
            self._subscribing.pop(mid, None)  # (no SUBACK: not connected, or timed out)
        code = answer.reason_codes[0] if answer.reason_codes else None
        if code is not None and int(code) >= _SUCCESS:
            raise aiomqtt.MqttError(f"subscribe {topic!r} refused: {_reason(code)}")

    def _granted(self, suback: mqtt5.SubAckPacket) -> None:
        """Count a subscription from its SUBACK, read before any copy sent for it: one
        of a higher QoS must not become the keeper of messages sent before it existed."""
        pending = self._subscribing.pop(suback.packet_id, None)
        codes = suback.reason_codes
        if pending is None or (codes and int(codes[0]) >= _SUCCESS):
            return
        self._record(*pending)

    async def unsubscribe(self, topic: str) -> None:
        self._record(topic, None)
        mid = self._packet_id()
        await self._request(mid, mqtt5.UnsubscribePacket(mid, [topic]).write())

    def _subscription_id(self, topic: str) -> int:
        """The filter's id: the same in every process (a hash), unless taken here."""
        number = zlib.crc32(topic.encode()) % _MAX_SUBSCRIPTION_ID + 1
        while number in self._ids:  # two filters, one hash: the later one moves on
            number = number % _MAX_SUBSCRIPTION_ID + 1
        return number

    def _record(self, topic: str, subscription: tuple[int, int, int] | None) -> None:
        """Enter a filter's subscription in _subscribed and the indexes beside it, or
        (None) take it out of them."""
        old = self._subscribed.pop(topic, None)
        if old is not None:
            self._ids.discard(old[0])
            self._shared.discard(old[0])
            self._wildcards.pop(topic, None)
        if subscription is not None:
            number = subscription[0]
            self._subscribed[topic] = subscription
            self._ids.add(number)
            if topic.startswith("$share/"):
                self._shared.add(number)
            elif "+" in topic or "#" in topic:
                self._wildcards[topic] = subscription
        self._keepers.clear()
        self._overlap = len(self._subscribed) > 1 and bool(self._wildcards)

    async def _request(self, mid: int, packet: bytes) -> Any:
        lost = self._lost
        if self._transport is None or lost is None or lost.done():
            raise aiomqtt.MqttError("not connected")
        answer = self._answers[mid] = asyncio.get_running_loop().create_future()
        self._queue(packet)
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                return await answer
        except TimeoutError:
            raise aiomqtt.MqttError(f"no answer from the broker in {COMMAND_TIMEOUT:.0f} s") \
                from None
        finally:
            self._answers.pop(mid, None)

    # -- publishing and acknowledging --------------------------------------------

    def _packet_id(self) -> int:
        inflight, answers = self._inflight, self._answers
        mid = self._next_id
        for _ in range(65535):
            mid = mid % 65535 + 1
            if mid not in inflight and mid not in answers:
                self._next_id = mid
                return mid
        raise aiomqtt.MqttError("no free packet id (65,535 in flight)")

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 0,
                       retain: bool = False) -> Sent:
        """Queue a PUBLISH (written at the end of this turn, or of the read being
        handled).  QoS 0 is complete when queued (``rc`` is :data:`PUBLISH_NO_CONN`
        while disconnected); QoS>0 is kept until acknowledged, and sent at the
        next session when there is none now."""
        live = self._transport is not None
        if not qos:
            if not live:
                return _NOT_SENT
            self._queue(mqtt5.PublishPacket(topic, payload, retain=retain).write())
            return _SENT
        mid = self._packet_id()
        packet = mqtt5.PublishPacket(topic, payload, qos=_QOS[qos], retain=retain, packet_id=mid)
        self._inflight[mid] = _InFlight(packet)
        if not live:
            return Sent(mid, PUBLISH_NO_CONN, False)
        if len(self._inflight) - len(self._held) > self._receive_max:
            self._held.append(mid)
        else:
            self._queue(packet.write())
        return Sent(mid, PUBLISH_OK, False)

    def _ack(self, mid: int, qos: int) -> None:
        if self._transport is None:
            return  # that session's ids are gone: the broker sends the message again
        if qos == 1:
            self._queue(mqtt5.PubAckPacket(mid).write())
        elif qos == 2:
            self._qos2_in.add(mid)
            self._queue(mqtt5.PubRecPacket(mid).write())

    def _completed(self, mid: int) -> None:
        if self._inflight.pop(mid, None) is None:
            return
        held = self._held
        while held and len(self._inflight) - len(held) < self._receive_max:
            flight = self._inflight.get(held.popleft())
            if flight is not None:
                self._queue(flight.packet.write())
        if self._on_published is not None:
            self._on_published(mid)

    # -- writing -----------------------------------------------------------------

    def _queue(self, packet: bytes) -> None:
        self._out.append(packet)
        if not self._reading and not self._flush_due and self._loop is not None:
            self._flush_due = True
            self._loop.call_soon(self._flush)

    def _write_now(self, packet: bytes) -> None:
        self._out.append(packet)
        self._flush()

    def _flush(self) -> None:
        self._flush_due = False
        out, transport = self._out, self._transport
        if not out or transport is None:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self._last_out = time.monotonic()
        transport.write(data)

    # -- reading (called by _Protocol) -------------------------------------------

    def _received(self, data: bytes) -> None:
        """Decode every whole packet ``data`` completes; hand messages over in this
        turn; write what that queued in one go."""
        self._last_in = time.monotonic()
        buffer = self._buffer
        if buffer:
            buffer += data
            view = memoryview(buffer)
        else:
            view = memoryview(data)
        offset = 0
        end = len(view)
        read = mqtt5.read
        publish = mqtt5.PublishPacket
        self._reading = True
        try:
            while offset < end:
                try:
                    packet, size = read(view[offset:])
                except IndexError:  # a packet not whole yet
                    break
                offset += size
                if type(packet) is publish:
                    self._message(packet)
                else:
                    self._control(packet)
        except ValueError as exc:  # the codec refused what the broker sent
            self.last_error = f"malformed packet from the broker: {exc}"
            self._end_session("")
            return
        finally:
            self._reading = False
            view.release()
        if offset < end:
            if buffer:
                del buffer[:offset]
            else:
                buffer += data[offset:]
        elif buffer:
            buffer.clear()
        self._flush()

    def _message(self, packet: mqtt5.PublishPacket) -> None:
        qos = int(packet.qos)
        mid = packet.packet_id or 0
        if qos == 2 and mid in self._qos2_in:
            return  # a PUBLISH sent again before our PUBREC arrived: had it
        if self._overlap and not packet.retain:
            # (A retained copy answers one subscribe: the link sorts those out.)
            numbers = packet.subscription_ids
            if numbers:
                topic = packet.topic
                keeper = self._keepers.get(topic)
                if keeper is None:
                    keeper = self._keeper(topic)
                if (keeper and keeper not in numbers and self._shared.isdisjoint(numbers)
                        and self._ids.issuperset(numbers)):
                    # (A copy for a subscription not ours, left by the session's last
                    # process, is kept: whether the keeper's copy comes is not known.)
                    if qos:  # another copy carries the message: this one is done
                        self._ack(mid, qos)
                    return
        if qos and not self._manual_ack:
            self._ack(mid, qos)
        sink = self._sink
        if sink is None:
            self._arrived.append(
                aiomqtt.Message(packet.topic, packet.payload, qos, packet.retain, mid, None))
        else:
            sink(packet.topic, packet.payload, qos, mid, packet.retain)

    def _keeper(self, topic: str) -> int:
        """Of the (not shared) subscriptions ``topic`` matches, the one whose copies are
        kept: the highest QoS, then the oldest (0: none matches).  The oldest, so that a
        new subscription never takes over from one whose copies are already on the way."""
        matches = aiomqtt.Topic(topic).matches
        # (Only the wildcards are scanned: a pack has thousands of exact filters.)
        candidates = [s for pattern, s in self._wildcards.items() if matches(pattern)]
        exact = self._subscribed.get(topic)
        if exact is not None and exact[0] not in self._shared:
            candidates.append(exact)
        best = max(candidates, key=lambda s: (s[1], -s[2]), default=None)  # (id, QoS, age)
        keeper = best[0] if best is not None else 0
        if len(self._keepers) >= KEEPERS_LIMIT:
            self._keepers.clear()
        self._keepers[topic] = keeper
        return keeper

    def _control(self, packet: Any) -> None:
        kind = type(packet)
        if kind is mqtt5.PubAckPacket or kind is mqtt5.PubCompPacket:
            self._completed(packet.packet_id)
        elif kind is mqtt5.PubRecPacket:
            flight = self._inflight.get(packet.packet_id)
            if flight is not None:
                if int(packet.reason_code) >= _SUCCESS:
                    self._completed(packet.packet_id)  # refused: the exchange ends here
                else:
                    flight.released = True
                    self._queue(mqtt5.PubRelPacket(packet.packet_id).write())
        elif kind is mqtt5.PubRelPacket:
            self._qos2_in.discard(packet.packet_id)
            self._queue(mqtt5.PubCompPacket(packet.packet_id).write())
        elif kind is mqtt5.PingRespPacket:
            self._ping_sent = 0.0
        elif kind is mqtt5.SubAckPacket or kind is mqtt5.UnsubAckPacket:
            if kind is mqtt5.SubAckPacket:
                self._granted(packet)
            answer = self._answers.get(packet.packet_id)
            if answer is not None and not answer.done():
                answer.set_result(packet)
        elif kind is mqtt5.ConnAckPacket:
            if self._connack is not None and not self._connack.done():
                self._connack.set_result(packet)
        elif kind is mqtt5.DisconnectPacket:
            self.last_error = f"the broker disconnected: {_reason(packet.reason_code)}" + (
                f" ({packet.reason_str})" if packet.reason_str else "")
            self._end_session("")


class _Protocol(asyncio.Protocol):
    """The socket's side: bytes in to the connection, the end of the socket reported."""

    def __init__(self, connection: V5Connection) -> None:
        self._connection = connection
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._connection._transport = transport
        self.data_received = self._connection._received  # type: ignore[method-assign]

    def data_received(self, data: bytes) -> None:  # replaced in connection_made
        self._connection._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        connection = self._connection
        # (Only this socket's session: an earlier one's end is reported after
        # the link may have connected again.)
        if connection._transport is self._transport and connection._lost is not None:
            reason = str(exc) if exc is not None else "the broker closed the connection"
            connection._transport = None
            connection._end_session(reason)


def _reason(code: Any) -> str:
    name = getattr(code, "name", None)
    return name.lower().replace("_", " ") if name else f"reason code {int(code):#x}"
