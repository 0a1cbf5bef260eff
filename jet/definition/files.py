"""Circuit files (YAML) -> :class:`jet.definition.model.AppDef`, with file:line in every error.

The text is parsed by PyYAML into a node tree (``compose``), whose marks give
the line of every key and item.  The tree is turned into plain data while a
table ``path -> line`` is recorded, the data is validated against the shipped
JSON Schema (``jet/schema.json``), and the first failure is reported at the
line of the offending key.  Scalars follow the YAML 1.2 core schema: only
``true``/``false`` are booleans (``on``, ``yes``, ``no`` stay strings, so a
port may be called ``on``), there are no sexagesimal numbers and no
timestamps.  Mapping keys are always strings.

The old name of ``subcircuits:``, ``definitions:``, is still read; it is
logged as one warning line naming file:line on the ``jet.yamlfile`` logger.

See docs/circuit-files.md for the format.
"""

from __future__ import annotations

import logging
import math
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import attrs
import jsonschema
import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from jet import address
from jet.definition.model import (
    MAX_NESTING,
    POLICIES,
    AppDef,
    CircuitDef,
    Container,
    ForeignWire,
    GadgetDef,
    PortRef,
    TooLarge,
    WireDef,
    expansion,
    queue_limit,
)
from jet.definition.schema import schema

__all__ = ["CircuitFileError", "load_app", "load_value", "loads_app"]

log = logging.getLogger("jet.yamlfile")

#: Most nodes a document may expand to (aliases can multiply a small file).
MAX_NODES = 100_000


class CircuitFileError(Exception):
    """A circuit file that cannot be loaded; ``str()`` is ``path:line: message``."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(path, line, message)
        self.path = path
        self.line = line
        self.message = message

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


# --- YAML: a SafeLoader with YAML 1.2 core scalars ------------------------------

_TAG = "tag:yaml.org,2002:"
_NULL, _BOOL, _INT, _FLOAT, _STR = (_TAG + t for t in ("null", "bool", "int", "float", "str"))
_MAP, _SEQ, _MERGE = _TAG + "map", _TAG + "seq", _TAG + "merge"

_INT_RE = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT_RE = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose plain scalars resolve like YAML 1.2 (core schema)."""


_LineLoader.yaml_implicit_resolvers = {}  # forget YAML 1.1's yes/no/on/off, 0777, 1:30, dates


#: The plain scalars that are not strings: (tag, pattern, first characters).
_IMPLICIT = (
    (_NULL, re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]),
    (_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")),
    (_INT, _INT_RE, list("-+0123456789")),
    (_FLOAT, _FLOAT_RE, list("-+.0123456789")),
    (_MERGE, re.compile(r"^(?:<<)$"), ["<"]),
)
for _tag, _regexp, _first in _IMPLICIT:
    _LineLoader.add_implicit_resolver(_tag, _regexp, _first)


def _reads_as_text(text: str) -> bool:
    """Whether ``text`` as a plain scalar is a string (not null, a boolean or a number)."""
    return not any(regexp.match(text) for _, regexp, _ in _IMPLICIT)


def _scalar(text: str, tag: str) -> Any:
    """The value of a scalar node; ValueError if its text does not fit its tag."""
    if tag == _STR:
        return text
    if tag == _NULL:
        if text in ("", "~", "null", "Null", "NULL"):
            return None
    elif tag == _BOOL:
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
    elif tag == _INT:
        if _INT_RE.match(text):
            return int(text, 0) if text[:2] in ("0o", "0x") else int(text, 10)
    elif tag == _FLOAT:
        if _FLOAT_RE.match(text):
            low = text.lower()
            if low.endswith(".inf"):
                return -math.inf if low.startswith("-") else math.inf
            return math.nan if low == ".nan" else float(text)
    else:
        raise ValueError(f"unsupported tag {_short_tag(tag)}")
    raise ValueError(f"{text!r} is not a valid {tag.removeprefix(_TAG)}")


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag


_Path = tuple[str | int, ...]


class _Tree:
    """Node tree -> plain data, recording the line of every key and item."""

    def __init__(self, source: str, loader: _LineLoader) -> None:
        self.source = source
        self.loader = loader
        self.lines: dict[_Path, int] = {}
        self.count = 0

    def fail(self, node: Node, message: str) -> CircuitFileError:
        return CircuitFileError(self.source, node.start_mark.line + 1, message)

    def convert(self, node: Node, path: _Path, active: frozenset[int]) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.fail(node, f"document too large (more than {MAX_NODES} values)")
        if id(node) in active:
            raise self.fail(node, "recursive alias: a value contains itself")
        if isinstance(node, ScalarNode):
            try:
                return _scalar(str(node.value), node.tag)
            except ValueError as exc:
                raise self.fail(node, str(exc)) from None
        active = active | {id(node)}
        if isinstance(node, SequenceNode):
            if node.tag != _SEQ:
                raise self.fail(node, f"unsupported tag {_short_tag(node.tag)}")
            items = []
            for index, item in enumerate(node.value):
                self.lines[(*path, index)] = item.start_mark.line + 1
                items.append(self.convert(item, (*path, index), active))
            return items
        if isinstance(node, MappingNode):
            return self.mapping(node, path, active)
        raise self.fail(node, "unsupported YAML node")  # pragma: no cover

    def mapping(self, node: MappingNode, path: _Path, active: frozenset[int]) -> dict[str, Any]:
        if node.tag != _MAP:
            raise self.fail(node, f"unsupported tag {_short_tag(node.tag)}")
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag != _MERGE:
                key, line = str(key_node.value), key_node.start_mark.line + 1
                if key in seen:
                    raise self.fail(key_node, f"duplicate key {key!r} (first at line {seen[key]})")
                seen[key] = line
        try:
            self.loader.flatten_mapping(node)  # resolves "<<" merge keys
        except yaml.MarkedYAMLError as exc:
            raise _yaml_error(self.source, exc) from None
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise self.fail(key_node, "a mapping key must be a plain string")
            key = str(key_node.value)
            self.lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = self.convert(value_node, (*path, key), active)
        return result


def _yaml_error(source: str, exc: yaml.YAMLError, text: str = "") -> CircuitFileError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        message = exc.problem or exc.context or "malformed YAML"
        if exc.context and exc.problem:
            where = ""
            if exc.context_mark and exc.context_mark.line + 1 != line:
                where = f" started at line {exc.context_mark.line + 1}"
            if exc.problem.startswith("but "):
                message = f"{exc.context}{where}, {exc.problem}"
            else:
                message = f"{exc.problem} ({exc.context}{where})"
        return CircuitFileError(source, line, f"invalid YAML: {message}")
    if isinstance(exc, ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character
        shown = f"#x{char:04x}" if isinstance(char, int) else repr(char)
        return CircuitFileError(source, line, f"invalid YAML: unacceptable character {shown}")
    return CircuitFileError(source, 1, f"invalid YAML: {exc}")  # pragma: no cover


def _parse(source: str, text: str) -> tuple[Any, dict[_Path, int]]:
    try:
        loader = _LineLoader(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(source, exc, text) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {(): 1}
        tree = _Tree(source, loader)
        tree.lines[()] = node.start_mark.line + 1
        return tree.convert(node, (), frozenset()), tree.lines
    except yaml.YAMLError as exc:
        raise _yaml_error(source, exc, text) from None
    except RecursionError:
        # PyYAML composes (and we convert) nested values recursively: `[[[[…]]]]`
        # thousands deep would exhaust the stack; no circuit file or value is that deep.
        raise CircuitFileError(source, 1, "invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()


# --- schema errors -> file:line --------------------------------------------------


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema())


def _where(path: Iterable[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "top level"


def _shown(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({value!r})"
    if isinstance(value, int | float):
        return f"a number ({_shown(value)})"
    if isinstance(value, str):
        return f"a string ({_shown(value)})"
    if isinstance(value, list):
        return "a list"
    return "a mapping"


_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "nothing",
}


def _line_of(path: _Path, lines: Mapping[_Path, int]) -> int:
    while path not in lines:
        path = path[:-1]
    return lines[path]


def _schema_problem(error: jsonschema.ValidationError) -> tuple[_Path, str]:
    """(path of the offending key, message) for one schema violation."""
    path: _Path = tuple(error.absolute_path)
    where = _where(path)
    instance: Any = error.instance
    value: Any = error.validator_value
    sub: Any = error.schema
    if error.validator == "type":
        types = [value] if isinstance(value, str) else [t for t in value if t != "null"]
        wanted = " or ".join(_TYPE_WORDS[t] for t in types)
        return path, f"{where}: expected {wanted}, got {_kind(instance)}"
    if error.validator == "required":
        missing = next((k for k in value if k not in instance), "?")
        return path, f"{where}: missing required key {missing!r}"
    if error.validator == "additionalProperties":
        props: dict[str, Any] = sub.get("properties", {})
        extra = next(k for k in instance if k not in props)
        # an old key still read is not offered (its schema says "deprecated")
        known = sorted(
            k for k, v in props.items() if not (isinstance(v, dict) and v.get("deprecated"))
        )
        return (*path, extra), f"{where}: unknown key {extra!r} (expected: {', '.join(known)})"
    if error.validator == "enum":
        allowed = ", ".join(str(v) for v in value)
        return path, f"{where}: {_shown(instance)} is not one of: {allowed}"
    if error.validator == "minLength":
        return path, f"{where}: must not be empty"
    if error.validator == "dependentRequired":
        need: list[str] = next((value[k] for k in instance if k in value), [])
        return path, f"{where}: {', '.join(map(repr, need))} is required with 'scale'"
    if error.validator == "not" and "description" in sub:
        return path, f"{where}: {sub['description']}"
    if error.validator in ("minimum", "maximum"):
        lo, hi = sub.get("minimum"), sub.get("maximum")
        return path, f"{where}: {instance!r} is out of range {lo}..{hi}"
    return path, f"{where}: {error.message}"  # pragma: no cover


def _validate(source: str, data: Any, lines: Mapping[_Path, int],
              validator: jsonschema.Draft202012Validator | None = None) -> None:
    found = []
    for error in (validator or _validator()).iter_errors(data):
        path, message = _schema_problem(error)
        found.append((_line_of(path, lines), -len(path), message))
    if found:
        line, _, message = min(found)
        raise CircuitFileError(source, line, message)


# --- plain data -> model -----------------------------------------------------------

_WIRE_HELP = {
    3: "circuit.gadget.port -> circuit.gadget.port [qos=N] [queue=N] [policy=P]",
    2: "gadget.port -> gadget.port [qos=N] [queue=N] [policy=P]",
}
_WIRE_OPTIONS = ("qos", "queue", "policy")


@attrs.define
class _Builder:
    source: str
    lines: Mapping[_Path, int]

    def line(self, path: _Path) -> int:
        return _line_of(path, self.lines)

    def fail(self, path: _Path, message: str) -> CircuitFileError:
        return CircuitFileError(self.source, self.line(path), message)

    # wires

    def port(self, text: str, parts: int, path: _Path, what: str) -> PortRef:
        names = text.strip().split(".")
        if len(names) != parts or not all(n and not re.search(r"\s", n) for n in names):
            shape = "circuit.gadget.port" if parts == 3 else "gadget.port"
            raise self.fail(path, f"bad {what} {text.strip()!r}: expected {shape}")
        if parts == 3:
            return PortRef(names[1], names[2], names[0])
        return PortRef(names[0], names[1])

    def wire(self, item: str | Mapping[str, Any], parts: int, path: _Path) -> WireDef:
        line = self.line(path)
        if isinstance(item, str):
            halves = item.split("->")
            words = halves[-1].split()
            if len(halves) != 2 or not halves[0].strip() or not words:
                raise self.fail(path, f"bad wire {item!r}: expected {_WIRE_HELP[parts]}")
            src, dst = halves[0], words[0]
            options: dict[str, Any] = {}
            for word in words[1:]:
                key, eq, value = word.partition("=")
                if not eq or key not in _WIRE_OPTIONS:
                    raise self.fail(
                        path, f"bad wire {item!r}: unknown option {word!r}"
                        f" (options: {', '.join(_WIRE_OPTIONS)})"
                    )
                options[key] = value
        else:
            src, dst = item["from"], item["to"]
            options = {k: item[k] for k in _WIRE_OPTIONS if k in item}
            if isinstance(src, Mapping) or isinstance(dst, Mapping):
                raise self.fail(path, "a wire to or from a topic (a device's) is written in the"
                                " app's top-level wires, not inside a circuit")
        qos, queue, policy = self.wire_options(item, options, path)
        return WireDef(
            self.port(src, parts, path, "wire source"),
            self.port(dst, parts, path, "wire destination"),
            qos,
            line,
            queue=queue,
            policy=policy,
        )

    def wire_options(
        self, item: Any, options: Mapping[str, Any], path: _Path
    ) -> tuple[int, int | None, str | None]:
        """A wire's qos, queue and policy, checked."""
        qos = str(options.get("qos", 1))
        if qos not in ("0", "1", "2"):
            raise self.fail(path, f"bad wire {item!r}: qos must be 0, 1 or 2")
        queue = options.get("queue")
        if isinstance(queue, str) and queue.isdigit() and len(queue) < 10:
            queue = int(queue)
        if queue is not None:
            try:
                queue_limit(queue)
            except ValueError as exc:
                raise self.fail(path, f"bad wire {item!r}: {exc}") from None
        policy = options.get("policy")
        if policy is not None and policy not in POLICIES:
            raise self.fail(
                path, f"bad wire {item!r}: policy must be one of {', '.join(POLICIES)}"
            )
        return int(qos), queue, policy

    def wires(self, items: Sequence[Any] | None, parts: int, path: _Path) -> list[WireDef]:
        return [self.wire(w, parts, (*path, i)) for i, w in enumerate(items or ())]

    def app_wires(self, items: Sequence[Any] | None) -> tuple[list[WireDef], list[ForeignWire]]:
        """The top-level wires: between circuits, and between a port and a device's topic."""
        wires, foreign = [], []
        for i, item in enumerate(items or ()):
            path: _Path = ("wires", i)
            if isinstance(item, Mapping) and (
                isinstance(item["from"], Mapping) or isinstance(item["to"], Mapping)
            ):
                foreign.append(self.foreign_wire(item, path))
            else:
                wires.append(self.wire(item, 3, path))
        return wires, foreign

    def foreign_wire(self, item: Mapping[str, Any], path: _Path) -> ForeignWire:
        src, dst = item["from"], item["to"]
        inbound = isinstance(src, Mapping)
        if inbound and isinstance(dst, Mapping):
            raise self.fail(path, "a wire joins a port and a topic, not two topics"
                            " (a broker bridge does that)")
        end, port_text = (src, dst) if inbound else (dst, src)
        at = (*path, "from" if inbound else "to")
        port = self.port(port_text, 3, path, "wire destination" if inbound else "wire source")
        topic = str(end["topic"])
        try:
            address.check(topic, filter_ok=inbound)
        except address.TopicError as exc:
            what = "topic filter" if inbound else "topic (no wildcards: one topic is written)"
            raise self.fail((*at, "topic"), f"bad {what} {topic!r}: {exc}") from None
        name = end.get("format", "json")
        if "path" in end and name not in ("json", "msgpack"):
            raise self.fail((*at, "path"), f"a path needs format json or msgpack, not {name}")
        if inbound and "retain" in end:
            raise self.fail((*at, "retain"), "retain is for a topic written by an output")
        payload: dict[str, Any] = {"format": name}
        if "path" in end:
            payload["path"] = str(end["path"])
        if end.get("map"):
            payload["map"] = dict(end["map"])
        qos, queue, policy = self.wire_options(
            item, {k: item[k] for k in _WIRE_OPTIONS if k in item}, path)
        return ForeignWire(port, topic, inbound, payload, qos, bool(end.get("retain")),
                           queue, policy, self.line(path))

    # gadgets

    def pack_gadgets(self, gadgets: Mapping[str, Any] | None, path: _Path) -> list[GadgetDef]:
        return [
            GadgetDef(
                name=name,
                type=g["type"],
                params=dict(g.get("params") or {}),
                line=self.line((*path, name)),
            )
            for name, g in (gadgets or {}).items()
        ]

    def node_gadgets(self, gadgets: Sequence[Any] | None, path: _Path) -> list[GadgetDef]:
        result = []
        for index, g in enumerate(gadgets or ()):
            codecs: dict[str, dict[str, Any]] = {}
            types: dict[str, str] = {}
            ports: dict[str, tuple[str, ...]] = {}
            for direction in ("inputs", "outputs"):
                names = []
                for port in g.get(direction) or ():
                    if isinstance(port, str):
                        names.append(port)
                        continue
                    names.append(port["name"])
                    if "codec" in port:
                        codecs[port["name"]] = {
                            "codec": port["codec"],
                            "scale": port.get("scale", 1),
                        }
                    if "type" in port:
                        types[port["name"]] = port["type"]
                ports[direction] = tuple(names)
            params: dict[str, Any] = {}
            if codecs:
                params["codecs"] = codecs
            if types:
                params["types"] = types
            result.append(
                GadgetDef(
                    name=g["name"],
                    params=params,
                    inputs=ports["inputs"],
                    outputs=ports["outputs"],
                    number=int(g.get("id", index)),
                    line=self.line((*path, index)),
                )
            )
        return result

    # sub-circuits

    def subcircuits(self, subs: Mapping[str, Any] | None, key: str) -> dict[str, CircuitDef]:
        """Each sub-circuit with the ones it uses, nested ones included; ``key``
        is the top-level key they were written under (for error lines)."""
        raw: dict[str, CircuitDef] = {}
        for name, d in (subs or {}).items():
            path: _Path = (key, name)
            ports: dict[str, dict[str, PortRef]] = {}
            for direction in ("inputs", "outputs"):
                what = direction[:-1]  # "input", "output"
                ports[direction] = {
                    port: self.port(inner, 2, (*path, direction, port), f"{what} {port!r}")
                    for port, inner in (d.get(direction) or {}).items()
                }
            raw[name] = CircuitDef(
                name=name,
                gadgets=tuple(self.pack_gadgets(d.get("gadgets"), (*path, "gadgets"))),
                wires=tuple(self.wires(d.get("wires"), 2, (*path, "wires"))),
                inputs=ports["inputs"],
                outputs=ports["outputs"],
                line=self.line(path),
            )
        done: dict[str, CircuitDef] = {}

        def finish(name: str, trail: tuple[str, ...]) -> CircuitDef:
            if name in done:
                return done[name]
            used: dict[str, CircuitDef] = {}
            for g in raw[name].gadgets:
                if g.type not in raw:
                    continue
                chain = (*trail, name)
                if g.type in chain:
                    loop = " -> ".join((*chain[chain.index(g.type) :], g.type))
                    where = (key, name, "gadgets", g.name)
                    raise self.fail(where, f"sub-circuit {g.type!r} uses itself ({loop})")
                if len(chain) >= MAX_NESTING:
                    where = (key, name, "gadgets", g.name)
                    raise self.fail(
                        where,
                        f"sub-circuits nested more than {MAX_NESTING} deep"
                        f" ({' -> '.join((*chain[:3], '...', g.type))})",
                    )
                inner = finish(g.type, (*trail, name))
                used.update(inner.subcircuits)
                used[g.type] = inner
            done[name] = attrs.evolve(raw[name], subcircuits=used)
            return done[name]

        for name in raw:
            finish(name, ())
        return done

    # the app

    def app(self, data: Mapping[str, Any]) -> AppDef:
        key = "subcircuits"
        if "definitions" in data:  # the old name, still read
            if "subcircuits" in data:
                raise self.fail(
                    ("definitions",), "'definitions' is the old name of 'subcircuits': use only one"
                )
            key = "definitions"
            log.warning(
                "%s:%d: 'definitions' is deprecated: rename it 'subcircuits'",
                self.source, self.line((key,)),
            )
        defs = self.subcircuits(data.get(key), key)
        levels = self.levels(data.get("levels") or {})
        circuits: dict[str, dict[str, Any]] = {}
        for name, c in (data.get("circuits") or {}).items():
            path: _Path = ("circuits", name)
            level = c.get("level")
            if levels and level is None:
                raise self.fail(path, f"circuit {name!r}: this app has levels: say which"
                                f" one runs it (level: one of {', '.join(levels)})")
            if level is not None and level not in levels:
                known = f"one of {', '.join(levels)}" if levels else "a file with no 'levels'"
                raise self.fail((*path, "level"), f"circuit {name!r}: level {level!r} is not"
                                f" in the file's levels ({known})")
            container: Container = c.get("container", "pack")
            if container == "node":
                gadgets = self.node_gadgets(c.get("gadgets"), (*path, "gadgets"))
            else:
                gadgets = self.pack_gadgets(c.get("gadgets"), (*path, "gadgets"))
            used: dict[str, CircuitDef] = {}
            if container == "pack":
                for g in gadgets:
                    if g.type in defs:
                        used.update(defs[g.type].subcircuits)
                        used[g.type] = defs[g.type]
            if c.get("replicas") is not None and not c.get("pack"):
                raise self.fail((*path, "replicas"), f"circuit {name!r}: replicas need a group:"
                                " say which one (pack: <group>)")
            circuits[name] = {
                "name": name,
                "container": container,
                "gadgets": tuple(gadgets),
                "wires": self.wires(c.get("wires"), 2, (*path, "wires")),
                "node": None if c.get("node") is None else int(c["node"]),
                "pack": c.get("pack"),
                "replicas": c.get("replicas"),
                "level": level,
                "subcircuits": used,
                "line": self.line(path),
            }
        app_wires = []
        between, foreign = self.app_wires(data.get("wires"))
        for wire in between:
            circuit = wire.src.circuit
            if circuit == wire.dst.circuit and circuit in circuits:
                local = attrs.evolve(wire, src=wire.src.local(), dst=wire.dst.local())
                circuits[circuit]["wires"].append(local)
            else:
                app_wires.append(wire)
        built = [CircuitDef(**{**f, "wires": tuple(f["wires"])}) for f in circuits.values()]
        for done in built:
            try:
                expansion(done)  # refused before anything (jet check, a pack) expands it
            except TooLarge as exc:
                raise self.fail(("circuits", done.name), str(exc)) from None
        return AppDef(
            name=data["app"],
            circuits=tuple(built),
            wires=tuple(app_wires),
            source=self.source,
            levels=levels,
            foreign=tuple(foreign),
        )

    def levels(self, levels: Mapping[str, str | None]) -> dict[str, str | None]:
        """The app's levels (name -> broker URL); the URLs are read when it is loaded."""
        for name in levels:
            try:
                address.check_level_name(name)
            except ValueError as exc:
                raise self.fail(("levels", name), str(exc)) from None
        return dict(levels)


# --- entry points --------------------------------------------------------------------


def loads_app(text: str, source: str = "<string>") -> AppDef:
    """Parse circuit-file ``text``; errors name ``source`` as the file."""
    try:
        data, lines = _parse(source, text)
        _validate(source, data, lines)
        return _Builder(source, lines).app(data)
    except RecursionError:
        raise CircuitFileError(source, 1, "values nested too deeply") from None


class AppTemplate:
    """A circuit file with ``${name}`` placeholders (a device class's template), parsed
    once and filled in many times: :meth:`fill` substitutes the values in every string
    of the parsed file (keys too), then checks and builds the app as :func:`loads_app`
    does, without reading the YAML again.

    The result is ``loads_app(string.Template(text).safe_substitute(values))``'s; where
    it might not be (a filled-in value that YAML would read as a number, a boolean or
    null; two keys filled in alike), that is what it runs instead.
    """

    def __init__(self, text: str, source: str = "<string>") -> None:
        self.text = text
        self.source = source
        try:
            self.data, self.lines = _parse(source, text)
        except (CircuitFileError, RecursionError):
            self.data, self.lines = None, {}
        self.parsed = isinstance(self.data, dict)

    def fill(self, values: Mapping[str, str], source: str | None = None) -> AppDef:
        source = source or self.source
        if self.parsed:
            try:
                data = _filled(self.data, values)
                lines = {tuple(_filled_key(p, values) if isinstance(p, str) else p
                               for p in path): line for path, line in self.lines.items()}
            except _NotAlike:
                pass
            else:
                try:
                    _validate(source, data, lines)
                    return _Builder(source, lines).app(data)
                except RecursionError:
                    raise CircuitFileError(source, 1, "values nested too deeply") from None
        return loads_app(string.Template(self.text).safe_substitute(values), source)


class _NotAlike(Exception):
    """Filling in the parsed file would not give what parsing the filled-in text gives."""


def _filled_key(text: str, values: Mapping[str, str]) -> str:
    return string.Template(text).safe_substitute(values) if "$" in text else text


def _filled(data: Any, values: Mapping[str, str]) -> Any:
    if isinstance(data, str):
        if "$" not in data:
            return data
        text = string.Template(data).safe_substitute(values)
        if text != data and not _reads_as_text(text):
            raise _NotAlike(text)  # (YAML would read the filled-in text as another type)
        return text
    if isinstance(data, list):
        return [_filled(item, values) for item in data]
    if isinstance(data, dict):
        filled = {_filled_key(k, values): _filled(v, values) for k, v in data.items()}
        if len(filled) != len(data):
            raise _NotAlike("two keys filled in alike")
        return filled
    return data


def load_app(path: str | Path) -> AppDef:
    """Load a circuit file; raises :class:`CircuitFileError` naming file:line."""
    return loads_app(_read_text(path), str(path))


def _read_text(path: str | Path) -> str:
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CircuitFileError(source, 1, f"cannot read file: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise CircuitFileError(source, line, "file is not valid UTF-8") from None


def check_schema(source: str, data: Any, lines: Mapping[_Path, int],
                 schema_: Mapping[str, Any]) -> None:
    """Check another of JET's YAML files (``load_yaml``) against its JSON Schema: the
    first mistake, by line, as :class:`CircuitFileError` naming file:line, in the words
    circuit files' mistakes are said in."""
    _validate(source, data, lines, jsonschema.Draft202012Validator(schema_))


def load_yaml(path: str | Path) -> tuple[Any, dict[tuple[str | int, ...], int]]:
    """Any other YAML file of JET's (levels, rules), read as circuit files are: YAML 1.2
    core scalars, bounded depth; with the line of every value by its path (``("machine",
    2)`` is the third rule).  :class:`CircuitFileError` names file:line."""
    return _parse(str(path), _read_text(path))


def load_value(text: str, source: str = "value") -> Any:
    """One YAML value given on a command line (``jet inject``), read as circuit files are:
    YAML 1.2 core scalars (``on`` stays text, ``0777`` is 777, no dates); CircuitFileError."""
    value, _lines = _parse(source, text)
    return value
