"""A minimal single-threaded MQTT 3.1.1 client for the bench driver.

The driver has to be cheaper and quicker than what it measures: a paho
client with its network thread adds a thread hand-off (and the GIL's 5 ms
switch interval) to every message and costs as much CPU per message as the
relay it is compared with.  This client speaks just what the driver needs
(CONNECT, SUBSCRIBE, PUBLISH at QoS 0/1, PUBACK) on one non-blocking socket
polled by the caller, so sending, receiving and timestamping happen on one
thread with one clock.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Callable

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK = 1, 2, 3, 4, 8, 9

#: ``on_message(topic, payload, received_at)``
OnMessage = Callable[[bytes, bytes, float], None]


class WireError(RuntimeError):
    """The broker refused or closed the connection."""


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack(">H", len(data)) + data


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + _length(len(body)) + body


class MiniMqtt:
    def __init__(self, port: int, client_id: str, on_message: OnMessage) -> None:
        self.on_message = on_message
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # protocol "MQTT" level 4, clean session, keepalive 0 (no pings needed)
        body = _utf8("MQTT") + bytes([4, 0x02]) + struct.pack(">H", 0) + _utf8(client_id)
        self.sock.sendall(_packet(CONNECT, 0, body))
        self._in = bytearray()
        self._out = bytearray()
        self._mid = 0
        self._acked: set[int] = set()
        self._connack = False
        while not self._connack:
            self._read_blocking()
        self.sock.setblocking(False)

    def close(self) -> None:
        try:
            self.sock.setblocking(True)
            self.sock.sendall(bytes([0xE0, 0]))  # DISCONNECT
        except OSError:
            pass
        self.sock.close()

    def _next_mid(self) -> int:
        self._mid = self._mid % 65535 + 1
        return self._mid

    def subscribe(self, topic: str, qos: int, timeout: float = 10.0) -> None:
        mid = self._next_mid()
        body = struct.pack(">H", mid) + _utf8(topic) + bytes([qos])
        self._out += _packet(SUBSCRIBE, 2, body)
        deadline = time.monotonic() + timeout
        while mid not in self._acked:
            if time.monotonic() > deadline:
                raise WireError(f"no SUBACK for {topic}")
            self.poll(0.1)

    def publish(self, topic: bytes, payload: bytes, qos: int) -> None:
        """Queue a PUBLISH; :meth:`flush` or :meth:`poll` sends it."""
        head = _utf8(topic)
        if qos:
            head += struct.pack(">H", self._next_mid())
        self._out += _packet(PUBLISH, qos << 1, head + payload)

    def flush(self) -> None:
        while self._out:
            try:
                sent = self.sock.send(self._out)
            except BlockingIOError:
                return
            del self._out[:sent]

    def _read_blocking(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise WireError("broker closed the connection")
        self._in += data
        self._parse(time.perf_counter())

    def poll(self, timeout: float) -> int:
        """Send what is queued, wait up to ``timeout`` s for input, handle it; packets read."""
        self.flush()
        writers = [self.sock] if self._out else []
        readable, _, _ = select.select([self.sock], writers, [], max(0.0, timeout))
        count = 0
        if readable:
            while True:
                try:
                    data = self.sock.recv(262144)
                except BlockingIOError:
                    break
                if not data:
                    raise WireError("broker closed the connection")
                self._in += data
                count += self._parse(time.perf_counter())
                if len(data) < 262144:
                    break
        self.flush()
        return count

    def _parse(self, now: float) -> int:
        buf = self._in
        pos, count, size = 0, 0, len(buf)
        while size - pos >= 2:
            first = buf[pos]
            length, shift, i, complete = 0, 0, pos + 1, False
            while i < size and i - pos <= 4:
                byte = buf[i]
                i += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    complete = True
                    break
                shift += 7
            if not complete or i + length > size:
                break
            body = bytes(buf[i : i + length])
            pos = i + length
            count += 1
            kind = first >> 4
            if kind == PUBLISH:
                qos = (first >> 1) & 3
                tlen = body[0] << 8 | body[1]
                topic = body[2 : 2 + tlen]
                start = 2 + tlen
                if qos:
                    self._out += bytes([PUBACK << 4, 2]) + body[start : start + 2]
                    start += 2
                self.on_message(topic, body[start:], now)
            elif kind in (SUBACK, PUBACK):
                if kind == SUBACK:
                    self._acked.add(body[0] << 8 | body[1])
            elif kind == CONNACK:
                if body[1] != 0:
                    raise WireError(f"CONNACK refused: code {body[1]}")
                self._connack = True
        del buf[:pos]
        return count
