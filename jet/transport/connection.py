"""One MQTT connection to a broker: aiomqtt and paho behind a small surface.

:class:`Connection` is the only code in JET that reaches into aiomqtt's or
paho's private attributes.  aiomqtt gives paho an asyncio face, but its
per-message costs would dominate a hop (docs/performance.md): a task and an
``asyncio.wait`` per received message, a coroutine, an event and a task per
publish, an event-loop trip per packet read, and paho's socket-pair write per
packet queued.  The ways around them need private attributes; each such line
says ``# reach:`` and why, so a new aiomqtt or paho release is checked here
(tests/test_faults.py and tests/test_pack.py pin the behaviour relied on).

Reconnecting, routing, retrying and acknowledging are :class:`jet.transport.link.Link`'s.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Self

import aiomqtt
import attrs
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from jet.transport.broker import Broker

READ_BURST = 64  # packets read per socket wake-up, at most
COMMAND_TIMEOUT = 30.0  # s: aiomqtt waits this long on a subscribe or unsubscribe
TCP_CORK: int | None = getattr(socket, "TCP_CORK", None)  # Linux
SESSION_EXPIRY = 7 * 24 * 3600  # s: an MQTT 5 persistent session outlives a week's outage
DISCONNECT_TIMEOUT = 2.0  # s: a clean DISCONNECT written by then, or the socket just closes

#: ``publish_nowait(...).rc`` values: handed to paho; refused for want of a
#: connection (a QoS>0 message then stays with paho, which sends it later).
PUBLISH_OK = mqtt.MQTT_ERR_SUCCESS
PUBLISH_NO_CONN = mqtt.MQTT_ERR_NO_CONN


def _share_property_tables() -> None:
    """paho builds two 30-entry lookup tables in every ``Properties()``, one per MQTT 5
    packet sent or received: a fifth of a level daemon's CPU (profiled in docs/levels.md).
    The tables never change, so every instance now shares the ones built once."""
    template = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    types, names, table = template.types, template.names, template.properties

    def __init__(self: Any, packetType: int) -> None:
        object.__setattr__(self, "packetType", packetType)
        object.__setattr__(self, "types", types)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "properties", table)

    Properties.__init__ = __init__  # type: ignore[method-assign]  # reach: tables built once


_share_property_tables()


@attrs.frozen
class Will:
    """The message the broker publishes for us when the connection dies."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class Connection:
    """An ``aiomqtt.Client`` with the shortcuts a hop needs; no reconnecting.

    ``async with connection:`` is one session, from connect to disconnect
    (``aiomqtt.MqttError`` when it fails or breaks); enter it again to
    reconnect.  Per message, callers use attributes bound once here, so no
    call layer of ours is added:

    - ``messages()``: the received messages (ends with ``aiomqtt.MqttError``
      when the connection is lost); ``none_arrived()`` and ``take_arrived()``
      take what has already arrived without that iterator's task and wait;
      ``deliver_to(sink)`` hands messages to ``sink`` in the turn they are read
      instead (see :meth:`_read_in_bursts`).
    - ``publish_nowait(topic, payload, qos, retain)``: straight to paho;
      returns paho's ``MQTTMessageInfo`` (``mid``, ``rc`` compared with
      :data:`PUBLISH_OK`, ``is_published()``).  The callback given to
      :meth:`on_published` is called with each ``mid`` once written (QoS 0)
      or acknowledged by the broker (QoS 1).
    - ``ack(mid, qos)``: acknowledge a received message, once
      :meth:`manual_ack` has turned paho's automatic acknowledgement off.

    ``last_error`` is paho's last complaint (a TLS alert, a refused login),
    more precise than aiomqtt's exceptions; "" until there is one.
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
        # echo=False: MQTT 5, and every subscription "no local": the broker does
        # not send this client its own publishes (a relay between brokers that
        # both publishes and subscribes the same topics would loop otherwise).
        self._no_local = not echo
        session: dict[str, Any] = {"clean_session": clean_session}
        if not echo:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if not clean_session:  # MQTT 5 ends a session at disconnect unless told
                properties.SessionExpiryInterval = SESSION_EXPIRY
            session = {"protocol": aiomqtt.ProtocolVersion.V5, "clean_start": clean_session,
                       "properties": properties}
        self._client = client = aiomqtt.Client(
            **broker.client_kwargs(),
            **session,
            identifier=client_id,
            keepalive=keepalive,
            will=aiomqtt.Will(will.topic, will.payload, will.qos, will.retain) if will else None,
            timeout=COMMAND_TIMEOUT,
            logger=self._paho_logger(client_id),
            # Small MQTT packets must not wait for Nagle's algorithm: without
            # this a QoS 1 round trip can take 40 ms on an idle connection.
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        # aiomqtt warns on each of its calls made while more than its default
        # threshold (10) wait on the broker.  Sized when publishes went through
        # aiomqtt (PUBLISH_WINDOW + 16); only (un)subscribes do now.
        client.pending_calls_threshold = 272
        self._paho = paho = client._client  # reach: the paho client, to publish and ack directly
        self._queue = queue = client._queue  # reach: messages arrived, to take without a task
        self.none_arrived = queue.empty
        self.take_arrived = queue.get_nowait
        # Publishing via aiomqtt costs a task and an event per message.
        self.publish_nowait = paho.publish
        self.ack = paho.ack
        self._aiomqtt_on_publish: Any = paho.on_publish
        self._sink: Callable[[str, bytes | bytearray, int, int, bool], None] | None = None
        self._arrived: collections.deque[mqtt.MQTTMessage] = collections.deque()
        self._reading = False  # in read_burst: writes wait for its end
        self._write_due = False
        self._read_in_bursts()

    def _paho_logger(self, client_id: str) -> logging.Logger:
        """paho's messages for this connection: its last error becomes
        ``last_error``, and the rest is passed on at debug level."""
        logger = logging.getLogger(f"jet.mqtt.paho.{client_id}")
        logger.setLevel(logging.WARNING)
        logger.propagate = False
        connection = self

        class LastError(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                connection.last_error = record.getMessage().splitlines()[0][:300]
                logging.getLogger("jet.mqtt.paho").debug("%s: %s", client_id, connection.last_error)

        logger.handlers[:] = [LastError()]
        return logger

    def _read_in_bursts(self) -> None:
        """One turn of the event loop per socket wake-up: read every packet that
        has arrived, hand each message to the sink, write what that produced.

        aiomqtt registers paho's ``loop_read()`` as the socket's reader, paho
        reads at most one packet per call when nothing is in flight (all QoS 0
        traffic), and aiomqtt passes each message through a queue to a task of
        its iterator.  This reader, installed right after aiomqtt's, calls
        ``loop_read()`` again while calls keep producing messages (bounded, so
        other tasks still run); with a sink (:meth:`deliver_to`) it hands the
        messages over as soon as paho has returned, then writes whatever the
        handlers queued (outputs, acknowledgements) with one call.  So a
        message is read, handled, published and acknowledged in the turn it
        arrived in, without a task, an event or a writer per packet.
        """
        client = self._client
        paho = self._paho
        queue = self._queue
        arrived = self._arrived
        aiomqtt_on_socket_open: Any = paho.on_socket_open
        aiomqtt_on_message: Any = paho.on_message
        connection = self

        def on_message(mqttc: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
            # Called by paho inside loop_read(): only noted here, and handed
            # over after paho has returned (a handler then runs with no paho
            # code under it, so the watchdog may ping from inside it).
            if connection._sink is None:
                aiomqtt_on_message(mqttc, userdata, message)
            else:
                arrived.append(message)

        paho.on_message = on_message  # instead of aiomqtt's, which it still calls

        def hand_over() -> None:
            sink = connection._sink
            while arrived:
                message = arrived.popleft()
                if sink is None:  # (the connection ended in a handler)
                    aiomqtt_on_message(paho, None, message)
                else:
                    sink(message.topic, message.payload, message.qos, message.mid,
                         message.retain)

        def read_burst() -> None:
            connection._reading = True
            try:
                for _ in range(READ_BURST):
                    before = queue.qsize() + len(arrived)
                    paho.loop_read()
                    sock: Any = paho._sock  # reach: TLS may hold decrypted bytes unread
                    if sock is not None and hasattr(sock, "pending") and sock.pending() > 0:
                        continue
                    if queue.qsize() + len(arrived) == before:
                        break
            except Exception as exc:  # as aiomqtt's reader does: the connection broke
                lost = client._disconnected  # reach: how aiomqtt's session learns it
                if not lost.done():
                    lost.set_exception(exc)
            finally:
                try:
                    hand_over()
                finally:
                    connection._reading = False
                    if connection._write_due:
                        connection._write_due = False
                        write_now(paho._sock)  # reach: the socket being read

        def on_socket_open(mqttc: Any, userdata: Any, sock: Any) -> None:
            aiomqtt_on_socket_open(mqttc, userdata, sock)
            # paho writes a byte to a socket pair on every packet it queues, to
            # wake its own thread loop; aiomqtt never runs that loop, so the
            # syscall per message is pure cost.
            wake, paho._sockpairW = paho._sockpairW, None  # reach: close paho's wake-up pair
            if wake is not None:
                wake.close()
            # Called from aiomqtt's connect thread; this runs after its add_reader,
            # unless the socket was closed meanwhile (a refused TLS handshake).
            loop = client._loop  # reach: the loop aiomqtt registered its reader on
            fileno = sock.fileno()

            def take_over_reading() -> None:
                current: Any = paho._sock  # reach: is this socket still paho's?
                if current is sock and current.fileno() == fileno:
                    with contextlib.suppress(OSError, ValueError):
                        loop.add_reader(fileno, read_burst)

            loop.call_soon_threadsafe(take_over_reading)

        paho.on_socket_open = on_socket_open  # aiomqtt's callback, called first

        out_packets: Any = paho._out_packet  # reach: how many packets a write will send

        def write() -> None:
            sock: Any = paho._sock  # reach: the socket paho writes to
            # paho sends each packet with its own send(): corked, the kernel
            # passes them to the broker as one segment, not one per packet.
            corked = TCP_CORK is not None and sock is not None and len(out_packets) > 1
            try:
                if corked:
                    sock.setsockopt(socket.IPPROTO_TCP, TCP_CORK, 1)
                paho.loop_write()
                if corked:
                    sock.setsockopt(socket.IPPROTO_TCP, TCP_CORK, 0)
            except Exception as exc:  # as aiomqtt's writer does: the connection broke
                lost = client._disconnected  # reach: how aiomqtt's session learns it
                if not lost.done():
                    lost.set_exception(exc)

        writing: list[int] = []  # the fd with a writer registered, if any

        def register(sock: Any) -> None:
            current: Any = paho._sock  # reach: is this socket still paho's?
            if current is sock and sock is not None and not writing:
                with contextlib.suppress(OSError, ValueError):
                    fileno = sock.fileno()
                    client._loop.add_writer(fileno, write)  # reach: aiomqtt's loop
                    writing.append(fileno)

        def on_socket_unregister_write(mqttc: Any, userdata: Any, sock: Any) -> None:
            # Instead of aiomqtt's remove_writer after every write: a writer is
            # registered only for what a socket could not take at once.
            if writing:
                with contextlib.suppress(OSError, ValueError):
                    client._loop.remove_writer(writing.pop())  # reach: aiomqtt's loop

        paho.on_socket_unregister_write = on_socket_unregister_write

        def write_now(sock: Any) -> None:
            # Everything queued so far goes out in one go, straight to the
            # socket; a writer waits only for what the socket cannot take.
            current: Any = paho._sock  # reach: is this socket still paho's?
            if current is not sock or sock is None:
                return
            write()
            if paho.want_write():
                register(sock)

        def on_socket_register_write(mqttc: Any, userdata: Any, sock: Any) -> None:
            # Instead of aiomqtt's: its add_writer, deferred to the loop, fails
            # with a logged traceback when the socket closed in between (a write
            # queued just as a connection dies, after a handler held the loop).
            loop = client._loop  # reach: the loop aiomqtt reads the socket on
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:  # aiomqtt's connect thread
                running = None
            if running is not loop:
                loop.call_soon_threadsafe(register, sock)
            elif connection._reading:
                # Queued by a handler of what is being read: written when the
                # whole burst is handled (read_burst), in one go.
                connection._write_due = True
            else:
                # On the loop (a publish or an acknowledgement): written at the end
                # of this turn, without a wake-up through the loop's self-pipe and
                # a writer registered and removed for every packet.
                loop.call_soon(write_now, sock)

        paho.on_socket_register_write = on_socket_register_write

    # -- session -----------------------------------------------------------------

    def use_server(self, host: str, port: int) -> None:
        """Connect to ``host:port`` from the next ``async with`` on (one of a
        cluster's servers: the same client, so paho keeps the QoS 1 messages in
        flight and sends them again there)."""
        client: Any = self._client
        client._hostname = host  # reach: where aiomqtt's __aenter__ connects
        client._port = port  # reach: (ditto)

    async def __aenter__(self) -> Self:
        await self._client.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # aiomqtt waits its client's `timeout` (30 s, sized for subscribes) for
        # its DISCONNECT to go out; a process on its way out (Ctrl-C) must not.
        client = self._client
        client.timeout = DISCONNECT_TIMEOUT
        try:
            await client.__aexit__(exc_type, exc, tb)
        except aiomqtt.MqttError as failed:
            # Not written in time: the socket closes with the process, and the
            # broker treats it as an unclean end.
            self.last_error = str(failed)
        finally:
            client.timeout = COMMAND_TIMEOUT

    def messages(self) -> AsyncIterator[aiomqtt.Message]:
        return self._client.messages

    async def subscribe(self, topic: str, qos: int, retained: bool = True) -> None:
        if self._no_local:  # MQTT 5: retain handling 2 sends no retained message
            options = SubscribeOptions(qos=qos, noLocal=True, retainHandling=0 if retained else 2)
            await self._until_lost(self._client.subscribe(topic, options=options))
        else:
            await self._until_lost(self._client.subscribe(topic, qos=qos))

    async def unsubscribe(self, topic: str) -> None:
        await self._until_lost(self._client.unsubscribe(topic))

    async def _until_lost(self, call: Awaitable[Any]) -> None:
        """Wait for the broker's answer to ``call``, or until the connection ends
        (``aiomqtt.MqttError``): aiomqtt would wait its whole timeout for an
        answer that cannot come any more (a cluster's server killed while it
        was still setting up a session's subscriptions)."""
        task = asyncio.ensure_future(call)
        lost: asyncio.Future[None] = self._client._disconnected  # reach: the session's end
        await asyncio.wait([task, lost], return_when=asyncio.FIRST_COMPLETED)
        if lost.done() and not lost.cancelled():
            lost.exception()  # (noted: aiomqtt's session reports it)
        if task.done():
            task.result()
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await task
        raise aiomqtt.MqttError(f"connection lost while waiting for the broker's answer"
                                f" ({self.last_error or 'no reason given'})")

    # -- publishing and acknowledging ----------------------------------------------

    def on_published(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(mid)`` as each ``publish_nowait`` completes (replaces
        an earlier callback; aiomqtt's own is still called first)."""
        aiomqtt_on_publish = self._aiomqtt_on_publish

        def on_publish(client: Any, userdata: Any, mid: int, *rest: Any) -> None:
            if aiomqtt_on_publish is not None:
                aiomqtt_on_publish(client, userdata, mid, *rest)
            callback(mid)

        self._paho.on_publish = on_publish

    def drop(self) -> bool:
        """End the connection with a clean DISCONNECT (no will): ``messages()`` ends
        with ``aiomqtt.MqttError`` as for any end, and the next ``async with``
        resumes the session (the broker resends what was not acknowledged).
        False when there was no connection to end."""
        return bool(self._paho.disconnect() == mqtt.MQTT_ERR_SUCCESS)

    def manual_ack(self, on: bool) -> None:
        """Acknowledge received QoS>0 messages only through ``ack`` (set before
        connecting).  aiomqtt does not expose paho's manual acknowledgement."""
        self._paho.manual_ack_set(on)

    def keep_alive_now(self) -> None:
        """Send a PINGREQ now, after whatever paho has queued (acknowledgements).

        Only for the event-loop watchdog (jet/transport/watchdog.py): called on
        the loop's thread while a gadget holds it, at a point where no paho,
        aiomqtt or transport code is running, so writing from here cannot
        interleave with another write.
        """
        paho = self._paho
        if not paho.is_connected():
            return
        # reach: written at once rather than through aiomqtt's add_writer,
        # which is deferred to the loop (busy) and would find the socket gone
        # if the connection died meanwhile.
        register = paho._on_socket_register_write
        paho._on_socket_register_write = None
        try:
            # reach: a PINGREQ that does not arm paho's wait for its answer
            # (_send_pingreq would; the answer is only read once the loop is
            # free, and paho could then call a live connection dead).  With no
            # write callback, paho writes it (and what was queued) at once.
            paho._send_simple_command(mqtt.PINGREQ)
        finally:
            paho._on_socket_register_write = register
        if paho.want_write():  # the socket took only part: the loop writes the rest
            paho._call_socket_register_write()

    def deliver_to(
        self, sink: Callable[[str, bytes | bytearray, int, int, bool], None] | None
    ) -> None:
        """Hand each received message to ``sink(topic, payload, qos, mid, retain)`` in the
        turn it is read, instead of to ``messages()``; None: back to
        ``messages()``.  Set it once a session is ready for messages and clear
        it when the session ends (what arrives before goes to ``messages()``)."""
        self._sink = sink

    def forget_arrived(self) -> None:
        """Drop the received messages not taken yet (as the connection dies:
        the broker redelivers what was never acknowledged)."""
        self._arrived.clear()
        while not self._queue.empty():
            self._queue.get_nowait()
