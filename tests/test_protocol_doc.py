"""docs/protocol.md's msgpack examples are what the code actually sends and accepts."""

from __future__ import annotations

import json
import re
from pathlib import Path

from jet.containers import conf
from jet.transport import codec

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
PAIR = re.compile(r"^value:\s+(.*)\nmsgpack:\s+([0-9a-f ]+)$", re.MULTILINE)


def examples() -> list[tuple[object, bytes]]:
    return [(json.loads(v), bytes.fromhex(h)) for v, h in PAIR.findall(DOC.read_text())]


def test_every_example_round_trips() -> None:
    pairs = examples()
    assert len(pairs) >= 10
    for value, encoded in pairs:
        assert codec.decode(encoded) == value
        assert codec.encode(value) == encoded


def test_every_command_example_is_accepted() -> None:
    tables = {**conf.CIRCUIT_COMMANDS, **conf.CONTAINER_COMMANDS}
    commands = [(v, e) for v, e in examples() if isinstance(v, dict) and "cmd" in v]
    assert {v["cmd"] for v, _ in commands} >= {"wire", "unwire", "tap", "inject", "stop", "load"}
    for value, encoded in commands:
        assert isinstance(value, dict)
        table = conf.CONTAINER_COMMANDS if value["cmd"] == "load" else conf.CIRCUIT_COMMANDS
        assert value["cmd"] in tables
        command = conf.parse("x/y/conf", encoded, table)
        assert command.name == value["cmd"]
