"""The RF12demo serial line: received lines, send commands, and noise that must not hurt."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jet_rf12.rf12demo import (
    MAX_LINE,
    MAX_PAYLOAD,
    BadPacket,
    Garbage,
    LineParser,
    Other,
    Packet,
    Partial,
    SendError,
    format_send,
    is_send_confirmation,
    parse_banner,
    parse_config,
    parse_line,
)


def feed_all(parser: LineParser, *chunks: bytes) -> list[object]:
    events: list[object] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


def test_ok_line_is_a_packet_from_hdr_and_0x1f() -> None:
    event = parse_line(b"OK 5 8 203 65 0 0 0 0 0 0 0\r")
    assert isinstance(event, Packet)
    assert event.node_id == 5 and event.hdr == 5 and event.group is None
    assert event.data == bytes([8, 203, 65, 0, 0, 0, 0, 0, 0, 0])
    # Flag bits above the node id: ack requested (0x20) still from node 5.
    event = parse_line(b"OK 37 0 195")
    assert isinstance(event, Packet) and event.node_id == 5 and not event.is_ack
    ack = parse_line(b"OK 133")
    assert isinstance(ack, Packet) and ack.is_ack and ack.data == b""


def test_ok_line_with_group_from_a_dongle_listening_to_all_groups() -> None:
    event = parse_line(b"OK G100 3 0 1")
    assert isinstance(event, Packet) and event.group == 100 and event.node_id == 3


def test_bad_packets_and_text_lines() -> None:
    assert isinstance(parse_line(b" ? 5 8 203 65"), BadPacket)
    banner = parse_line(b"[RF12demo.12] _ i31* g212 @ 868 MHz c1 q1")
    assert isinstance(banner, Other)
    config = parse_config(banner.line)
    assert config is not None and (config.node_id, config.group, config.band) == (31, 212, 868)
    assert isinstance(parse_line(b"> 8,195,5s"), Other)
    assert is_send_confirmation(" -> 2 b")
    assert not is_send_confirmation("> 8,195,5s")


def test_only_the_sketchs_send_line_confirms_a_send() -> None:
    # RF12demo prints " -> <n> b" when the host's packet goes on air, and " -> ack"
    # when it acknowledges a packet it received: only the first confirms a send.
    assert is_send_confirmation(" -> 2 b") and is_send_confirmation(" -> 0 b\r")
    assert not is_send_confirmation(" -> ack")
    assert not is_send_confirmation("->") and not is_send_confirmation(" -> 2 bytes")
    assert parse_banner("[RF12demo.12] _ i31 g212 @ 868 MHz q1") == 12
    assert parse_banner("Current configuration:") is None


def test_every_rf12demo_output_mode_is_read() -> None:
    """Decimal, hex (1x), hex + ASCII (2x), RF69 RSSI, group 0 old and new."""
    decimal = parse_line(b"OK 5 202 65 172 0 0\r")
    hex_line = parse_line(b"OKX 05CA41AC0000\r")
    assert isinstance(decimal, Packet) and isinstance(hex_line, Packet)
    assert hex_line.hdr == decimal.hdr == 5 and hex_line.data == decimal.data
    assert isinstance(parse_line(b"ASC <E . A . . ."), Other)
    rf69 = parse_line(b"OK 5 202 65 (-61) \r")
    assert isinstance(rf69, Packet) and rf69.rssi == -61 and rf69.data == bytes([202, 65])
    rf69_hex = parse_line(b"OKX 05CA41 (7A) ")  # the raw register: 0x7A = 122 -> -61 dBm
    assert isinstance(rf69_hex, Packet) and rf69_hex.rssi == -61
    for line in (b"OK G212 5 1 2", b"OKG 212 5 1 2", b"OKX GD4 050102"):
        event = parse_line(line)
        assert isinstance(event, Packet), line
        assert (event.group, event.hdr, event.data) == (212, 5, b"\x01\x02"), line
    assert isinstance(parse_line(b" ?X 05CA41"), BadPacket)
    directed = parse_line(b"OK 71 8 1")  # DST | 7: to node 7, sender unknown
    assert isinstance(directed, Packet) and directed.directed and directed.node_id == 7
    asks = parse_line(b"OK 37 8 1")
    assert isinstance(asks, Packet) and asks.wants_ack and not asks.directed


@pytest.mark.parametrize(
    "line",
    [b"OK", b"OK 5 300 1", b"OK 5 x 1", b"OKX 05G8", b"OKX 050", b"OK G999 5 1",
     b"OK 5 1 2\x00", b"OK 5 1 (-61", b"OKX 05 08",
     b"\x00\xff\xfe\x80", b"OK\t5 1", b"OK 5 -1", b"OK 5 1_0", b"OK 1234 5"],
)
def test_malformed_lines_are_garbage(line: bytes) -> None:
    event = parse_line(line)
    assert isinstance(event, Garbage), event


def test_parser_counts_each_kind() -> None:
    parser = LineParser()
    events = feed_all(
        parser,
        b"\r\n[RF12demo.12] _ i31 g212 @ 868 MHz\r\n",
        b"OK 5 0 202 65 172 0 0\r\n",
        b" ? 5 0 1\r\n",
        b"\xde\xad\xbe\xef\r\n",
        b"OK 5 999\r\n",
    )
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Other", "Packet", "BadPacket", "Garbage", "Garbage"]
    s = parser.stats
    assert (s.lines, s.packets, s.bad_packets, s.garbage, s.other, s.partial) == (5, 1, 1, 2, 1, 0)


def test_lines_split_across_reads() -> None:
    parser = LineParser()
    line = b"OK 5 0 203 64 53 128 0 0 0 0 0\r\n"
    events = feed_all(parser, *(line[i : i + 1] for i in range(len(line))))
    assert len(events) == 1 and isinstance(events[0], Packet)
    assert events[0].data == bytes([0, 203, 64, 53, 128, 0, 0, 0, 0, 0])


def test_endless_line_is_dropped_as_partial() -> None:
    parser = LineParser()
    events = feed_all(parser, b"OK 5", b" 1" * MAX_LINE)
    assert [type(e) for e in events] == [Partial]
    # The parser recovers at the next line.
    events = feed_all(parser, b" 2\r\nOK 5 0 1\r\n")
    assert isinstance(events[-1], Packet) and events[-1].data == b"\x00\x01"
    assert parser.stats.partial == 1


def test_reopen_drops_the_cut_line_and_resyncs() -> None:
    parser = LineParser()
    feed_all(parser, b"OK 5 0 1\r\nOK 5 0 2")  # the dongle vanished mid-line
    fragment = parser.reset()
    assert isinstance(fragment, Partial) and "OK 5 0 2" in fragment.line
    # The first read after reopening starts mid-line: that tail is not a line.
    events = feed_all(parser, b"3 0 4\r\nOK 5 0 5\r\n")
    assert [type(e) for e in events] == [Partial, Packet]
    assert parser.stats.partial == 2 and parser.stats.packets == 2
    # A clean start after reopening loses nothing.
    parser.reset()
    events = feed_all(parser, b"O", b"K 5 0 6\r\n")
    assert [type(e) for e in events] == [Packet]


def test_format_send() -> None:
    assert format_send(5, bytes([8, 195])) == b"8,195,5s\n"
    assert format_send(5, bytes([8, 195]), ack=True) == b"8,195,5a\n"
    assert format_send(0, b"") == b"0s\n"
    assert format_send(30, bytes(range(MAX_PAYLOAD))).count(b",") == MAX_PAYLOAD
    with pytest.raises(SendError):
        format_send(5, bytes(MAX_PAYLOAD + 1))
    with pytest.raises(SendError):
        format_send(32, b"\x00")


# -- properties -------------------------------------------------------------------------

lines = st.one_of(
    st.binary(max_size=120),
    st.builds(lambda hdr, data: b"OK " + b" ".join(str(b).encode() for b in [hdr, *data]),
              st.integers(0, 255), st.binary(max_size=70)),
    st.sampled_from([b" ? 1 2 3", b"[RF12demo.12] _ i31 g212 @ 868 MHz", b"OK", b"OK 5 256"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_arbitrary_bytes_never_raise_and_are_accounted(chunks: list[bytes]) -> None:
    parser = LineParser()
    events = feed_all(parser, *chunks)
    s = parser.stats
    assert s.lines == s.packets + s.bad_packets + s.garbage + s.other
    assert len(events) == s.lines + s.partial
    for e in events:
        assert isinstance(e, Packet | BadPacket | Garbage | Other | Partial)
        if isinstance(e, Packet):
            assert all(0 <= b <= 255 for b in e.data) and 0 <= e.hdr <= 255


@settings(max_examples=200, deadline=None)
@given(st.lists(lines, max_size=10), st.integers(1, 50), st.binary(min_size=1, max_size=66))
def test_a_good_line_after_any_noise_is_parsed(noise: list[bytes], cut: int,
                                               data: bytes) -> None:
    parser = LineParser()
    stream = b"\r\n".join(noise)
    # Noise arrives in arbitrary pieces, then a line feed ends whatever it was.
    feed_all(parser, *(stream[i : i + cut] for i in range(0, len(stream), cut)), b"\r\n")
    good = b"OK 5 " + b" ".join(str(b).encode() for b in data) + b"\r\n"
    events = feed_all(parser, good)
    assert isinstance(events[-1], Packet)
    assert events[-1].node_id == 5 and events[-1].data == data


@given(st.integers(0, 31), st.binary(max_size=MAX_PAYLOAD), st.booleans())
def test_send_command_shape(node: int, data: bytes, ack: bool) -> None:
    command = format_send(node, data, ack).decode()
    assert command.endswith("a\n" if ack else "s\n")
    numbers = [int(n) for n in command[:-2].split(",")]
    assert numbers == [*data, node]


@given(st.integers(0, 255), st.binary(max_size=MAX_PAYLOAD))
def test_ok_lines_round_trip(hdr: int, data: bytes) -> None:
    line = " ".join(["OK", str(hdr), *map(str, data)]).encode()
    event = parse_line(line + b"\r")
    assert isinstance(event, Packet) and (event.hdr, event.data) == (hdr, data)
