"""The radio packet format: tags (5+3 bits, 0xFF escape to 10+6), payloads, node_uids."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jet.transport.codec import PayloadError, decode, encode
from jet_rf12.payload import MSGPACK, PortCodec, codec_from_params
from jet_rf12.tags import (
    CONF_GADGET,
    CONF_INPUT,
    ESCAPE,
    MAX_GADGET,
    MAX_PORT,
    TagError,
    decode_tag,
    encode_tag,
    is_conf_input,
)
from jet_rf12.uid import UidMap, UidTableError, default_uid, load_uid_map, table_from_entries

gadgets = st.integers(0, MAX_GADGET)
ports = st.integers(0, MAX_PORT)


def test_every_valid_tag_round_trips() -> None:
    # 65536 combinations: cheap enough to check them all, not just a sample.
    for gadget in range(MAX_GADGET + 1):
        for port in range(MAX_PORT + 1):
            tag = encode_tag(gadget, port)
            assert decode_tag(tag) == (gadget, port, len(tag))


@given(gadgets, ports, st.binary(max_size=66))
def test_tag_round_trip_with_payload(gadget: int, port: int, payload: bytes) -> None:
    tag = encode_tag(gadget, port)
    short = gadget <= 30 and port <= 7
    assert len(tag) == (1 if short else 3)
    assert (tag[0] == ESCAPE) is not short
    assert decode_tag(tag + payload) == (gadget, port, len(tag))


def test_short_form_layout() -> None:
    assert encode_tag(0, 0) == b"\x00"
    assert encode_tag(1, 0) == b"\x08"  # gadget 1 output/input 0: the boiler relay
    assert encode_tag(30, 7) == b"\xf7"
    assert encode_tag(0, 7) == b"\x07"


def test_escape_form_layout() -> None:
    assert encode_tag(31, 0) == bytes([0xFF, 0x07, 0xC0])  # gadget 31 never fits one byte
    assert encode_tag(0, 8) == bytes([0xFF, 0x00, 0x08])
    assert encode_tag(1023, 63) == bytes([0xFF, 0xFF, 0xFF])
    # A non-canonical escape for a small gadget is still understood.
    assert decode_tag(bytes([0xFF, 0x00, 0x41])) == (1, 1, 3)


@pytest.mark.parametrize(("gadget", "port"), [(-1, 0), (1024, 0), (0, -1), (0, 64), (5000, 99)])
def test_out_of_range_is_refused(gadget: int, port: int) -> None:
    with pytest.raises(TagError):
        encode_tag(gadget, port)


@pytest.mark.parametrize("data", [b"", b"\xff", b"\xff\x01", b"\xf8", b"\xfe"])
def test_truncated_or_malformed_tags(data: bytes) -> None:
    with pytest.raises(TagError) as info:
        decode_tag(data)
    assert isinstance(info.value, ValueError)


@given(st.binary(max_size=8))
def test_decode_raises_only_tag_errors(data: bytes) -> None:
    try:
        gadget, port, header = decode_tag(data)
    except TagError:
        return
    assert 0 <= gadget <= MAX_GADGET and 0 <= port <= MAX_PORT and header in (1, 3)


def test_configuration_input_is_gadget_0_input_7() -> None:
    assert (CONF_GADGET, CONF_INPUT) == (0, 7)
    assert is_conf_input(*decode_tag(encode_tag(0, 7))[:2])
    assert not is_conf_input(0, 6)


# -- payloads ------------------------------------------------------------------------


@given(st.one_of(st.floats(allow_nan=False), st.integers(-(2**63), 2**64 - 1), st.booleans(),
                 st.text(max_size=20), st.none()))
def test_msgpack_passthrough_keeps_the_bytes(value: object) -> None:
    payload = encode(value)
    assert MSGPACK.to_mqtt(payload) == payload
    assert MSGPACK.to_radio(payload) == payload


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\xcb\x40", encode(1.5) + b"\x00"])
def test_msgpack_payload_is_checked(data: bytes) -> None:
    with pytest.raises(PayloadError):
        MSGPACK.to_mqtt(data)


def test_struct_codec_scales_both_ways() -> None:
    codec = codec_from_params({"codec": "<h", "scale": 0.01})
    assert decode(codec.to_mqtt((2157).to_bytes(2, "little", signed=True))) == 21.57
    assert decode(codec.to_mqtt((-550).to_bytes(2, "little", signed=True))) == -5.5
    assert codec.to_radio(encode(21.57)) == (2157).to_bytes(2, "little")
    with pytest.raises(PayloadError):
        codec.to_mqtt(b"\x01")  # one byte short
    with pytest.raises(PayloadError):
        codec.to_radio(encode(1e9))  # does not fit in a short


def test_struct_codec_with_several_fields() -> None:
    codec = PortCodec("<hB")
    assert decode(codec.to_mqtt(b"\x10\x00\x07")) == [16, 7]
    assert codec.to_radio(encode([16, 7])) == b"\x10\x00\x07"
    assert PortCodec("<2h", 0.5).to_radio(encode([1.0, 2.0])) == b"\x02\x00\x04\x00"


@given(st.integers(-32768, 32767))
def test_struct_codec_round_trip(raw: int) -> None:
    codec = PortCodec("<h", 0.01)
    data = raw.to_bytes(2, "little", signed=True)
    value = decode(codec.to_mqtt(data))
    assert math.isclose(value, raw / 100)
    assert codec.to_radio(encode(value)) == data


@pytest.mark.parametrize("spec", [{"codec": "<q!"}, {"codec": 5}, {"codec": "<h", "scale": 0},
                                  "<h"])
def test_bad_codec_declarations(spec: object) -> None:
    with pytest.raises(ValueError):
        codec_from_params(spec)  # type: ignore[arg-type]


# -- node_uid ------------------------------------------------------------------------


def test_default_uid_is_stable_group_times_100_plus_node() -> None:
    uids = UidMap()
    assert default_uid(212, 5) == 21205
    assert uids.uid(212, 5) == 21205
    assert uids.address(21205) == (212, 5)
    assert uids.address(21299) is None  # no node 99


def test_uid_table_overrides_both_ways() -> None:
    uids = UidMap(table_from_entries([{"group": 212, "node": 5, "uid": 7}]))
    assert uids.uid(212, 5) == 7
    assert uids.address(7) == (212, 5)
    assert uids.address(21205) is None  # that node is called 7 now
    assert uids.uid(212, 6) == 21206


def test_uid_table_file(tmp_path: Path) -> None:
    path = tmp_path / "uids.yaml"
    path.write_text("- {group: 100, node: 3, uid: 42}\n")
    assert load_uid_map(path).uid(100, 3) == 42
    path.write_text("- {group: 100, node: 3, uid: 42}\n- {group: 100, node: 4, uid: 42}\n")
    with pytest.raises(UidTableError, match="42"):
        load_uid_map(path)
    path.write_text("{nope: 1}\n")
    with pytest.raises(UidTableError):
        load_uid_map(path)
