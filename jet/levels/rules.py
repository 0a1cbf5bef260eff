"""Which machine messages concern a level: its rule file.

A level takes a machine message from its parent only when the message is
relevant to it.  The common case is written in a rule file (YAML); each rule
is a topic filter and, optionally, conditions on fields of the payload (a
msgpack or JSON map, as devices publish them):

    machine:
      - topic: machine/functions/heating/#
        where: {site: north}                # the payload's "site" equals "north"
      - topic: machine/functions/lights/+
        where: {zone: {in: [hall, stairs]}, level: {min: 1}}
      - topic: machine/functions/all/#      # no condition: always

A message is relevant when any rule matches it: its topic matches the filter
and every condition holds (``equals`` by default, ``in``, ``min``, ``max``;
dotted names reach into nested maps).  A payload that is not a map fails
every condition.  With no rule file a level takes every machine message; an
empty ``machine:`` list takes none.  A file that cannot be used is refused at
start with ``file:line: ...``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import attrs

from jet import address
from jet.definition.files import CircuitFileError, load_yaml
from jet.transport import codec

OPS = ("equals", "in", "min", "max")


class RulesError(ValueError):
    """A rule file that cannot be used: ``file:line: what``."""


@attrs.frozen
class Condition:
    field: tuple[str, ...]  # a dotted path into the payload map
    op: str
    value: Any

    def holds(self, doc: Any) -> bool:
        for key in self.field:
            if not isinstance(doc, Mapping) or key not in doc:
                return False
            doc = doc[key]
        if self.op == "equals":
            return bool(doc == self.value)
        if self.op == "in":
            return any(doc == v for v in self.value)
        if isinstance(doc, bool) or not isinstance(doc, int | float) or math.isnan(doc):
            return False
        return bool(doc >= self.value if self.op == "min" else doc <= self.value)


@attrs.frozen
class Rule:
    topic: str
    conditions: tuple[Condition, ...] = ()

    def matches(self, topic: str, doc: Any) -> bool:
        return aiomqtt.Topic(topic).matches(self.topic) and all(
            c.holds(doc) for c in self.conditions
        )


@attrs.frozen
class Rules:
    """A level's relevance rules; ``None`` rules (no file) take everything."""

    rules: tuple[Rule, ...] | None = None
    source: str = "(no rule file: every machine message)"

    def relevant(self, topic: str, payload: bytes) -> bool:
        if self.rules is None:
            return True
        doc = decode_map(payload) if any(r.conditions for r in self.rules) else None
        return any(rule.matches(topic, doc) for rule in self.rules)


def decode_map(payload: bytes) -> Any:
    """The payload as devices send it: msgpack, else JSON; None when neither."""
    try:
        return codec.decode(payload)
    except codec.PayloadError:
        pass
    try:
        return json.loads(payload)
    except ValueError:
        return None


def load_rules(path: str | Path) -> Rules:
    """Read a rule file; :class:`RulesError` names the file and line of a mistake."""
    try:
        data, lines = load_yaml(path)
    except CircuitFileError as exc:
        raise RulesError(str(exc)) from None

    def where(*at: str | int) -> str:
        return f"{path}:{lines.get(at, lines.get(at[:1], 1))}"

    if not isinstance(data, dict):
        raise RulesError(f"{where()}: expected a map with a 'machine:' list")
    unknown = set(data) - {"machine"}
    if unknown:
        raise RulesError(f"{where()}: unknown key(s) {sorted(unknown)}; expected 'machine'")
    items = data.get("machine")
    if items is None:
        return Rules((), str(path))
    if not isinstance(items, list):
        raise RulesError(f"{where('machine')}: 'machine' must be a list of rules")
    return Rules(tuple(_rule(item, where("machine", i)) for i, item in enumerate(items)),
                 str(path))


def _rule(item: Any, where: str) -> Rule:
    if not isinstance(item, dict) or not isinstance(item.get("topic"), str):
        raise RulesError(f"{where}: a rule is a map with a 'topic' filter")
    extra = set(item) - {"topic", "where"}
    if extra:
        raise RulesError(f"{where}: unknown key(s) {sorted(extra)} in a rule")
    topic = item["topic"]
    try:
        address.check(topic, filter_ok=True)
    except address.TopicError as exc:
        raise RulesError(f"{where}: {exc}") from None
    if not (topic == "#" or topic.startswith((address.MACHINE_FUNCTIONS, "+", "#"))):
        raise RulesError(f"{where}: {topic!r} can never match a machine message "
                         f"(they are under {address.MACHINE_FUNCTIONS}/)")
    conditions = item.get("where") or {}
    if not isinstance(conditions, dict):
        raise RulesError(f"{where}: 'where' is a map of payload fields")
    return Rule(topic, tuple(_condition(str(k), v, where) for k, v in conditions.items()))


def _condition(field: str, spec: Any, where: str) -> Condition:
    path = tuple(field.split("."))
    if not isinstance(spec, dict):
        return Condition(path, "equals", spec)
    if len(spec) != 1 or next(iter(spec)) not in OPS:
        raise RulesError(f"{where}: condition on {field!r}: one of {list(OPS)}")
    op, value = next(iter(spec.items()))
    if op == "in" and not isinstance(value, Sequence | set):
        raise RulesError(f"{where}: condition on {field!r}: 'in' takes a list")
    if op in ("min", "max") and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise RulesError(f"{where}: condition on {field!r}: {op!r} takes a number")
    return Condition(path, op, value)
