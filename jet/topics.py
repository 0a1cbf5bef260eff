"""Topic names (SPEC section 2, docs/protocol.md): built in one place only."""

from __future__ import annotations

import re

NAME_RE = re.compile(r"^[a-z0-9_-]+$")

MAX_TOPIC_BYTES = 65535
# What MQTT brokers refuse in a topic (mosquitto disconnects the client that
# sends one): NUL, C0 and C1 controls, and Unicode non-characters.
_REFUSED = re.compile("[\x00-\x1f\x7f-\x9f\ufdd0-\ufdef\ufffe\uffff]")


class TopicError(ValueError):
    """A topic or topic filter a broker would refuse."""


def check(topic: str, *, filter_ok: bool = False) -> str:
    """Return ``topic`` if a broker accepts it (as a filter when ``filter_ok``)."""
    if not isinstance(topic, str) or not topic:
        raise TopicError(f"topic {topic!r} is empty or not text")
    if len(topic.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
        raise TopicError(f"topic of {len(topic)} characters is longer than MQTT allows")
    bad = _REFUSED.search(topic) or re.search("[\ud800-\udfff]", topic)
    if bad:
        raise TopicError(f"topic {topic!r} has a character brokers refuse ({bad.group()!r})")
    # The non-characters beyond the first plane: U+1FFFE, U+1FFFF ... U+10FFFF.
    beyond = next((c for c in topic if ord(c) > 0xFFFF and ord(c) & 0xFFFE == 0xFFFE), None)
    if beyond is not None:
        raise TopicError(f"topic {topic!r} has a character brokers refuse ({beyond!r})")
    levels = topic.split("/")
    for i, level in enumerate(levels):
        wild = "+" in level or "#" in level
        if not wild:
            continue
        if not filter_ok:
            raise TopicError(f"topic {topic!r} has a wildcard (+ or #)")
        if level not in ("+", "#") or (level == "#" and i != len(levels) - 1):
            raise TopicError(f"topic filter {topic!r}: + and # must fill a level, # only last")
    return topic


def output(kind: str, circuit_id: str, gadget_id: str | int, output_num: int) -> str:
    return f"{kind}/{circuit_id}/{gadget_id}/{output_num}"


def circuit_prefix(kind: str, circuit_id: str) -> str:
    return f"{kind}/{circuit_id}/"


def circuit_conf(kind: str, circuit_id: str) -> str:
    return f"{kind}/{circuit_id}/conf"


def circuit_status(kind: str, circuit_id: str) -> str:
    return f"{kind}/{circuit_id}/status"


def circuit_definition(kind: str, circuit_id: str) -> str:
    return f"{kind}/{circuit_id}/definition"


def circuit_of(topic: str) -> str:
    """The circuit id in ``<type>/<circuit>/...``."""
    return topic.split("/", 2)[1]


def container_conf(kind: str, container_id: str) -> str:
    return f"jet/{kind}/{container_id}/conf"


def container_status(kind: str, container_id: str) -> str:
    return f"jet/{kind}/{container_id}/status"


def reply(client_id: str) -> str:
    return f"jet/reply/{client_id}"


ALL_CIRCUIT_STATUS = "+/+/status"
ALL_CIRCUIT_DEFINITIONS = "+/+/definition"
ALL_CONTAINER_STATUS = "jet/+/+/status"
