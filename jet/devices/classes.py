"""Device classes: what the registry knows of a kind of device, from YAML or XML files.

    # classes/plug.yaml
    class: plug                   # the site layout's <type> (or Home Assistant component)
    silence: 60                   # seconds without a message before it is offline
    template: plug-app.yaml       # plug-n-process: a circuit file run for each device
    grace: 5                      # seconds offline before its circuit is unloaded
    posts:                        # its post types
      power: {format: json, path: ENERGY.Power}
      relay: {format: text, command: true, window: 3, confirm: {post: relay}}

    <!-- classes/plug.xml: the same, checked against device-class.xsd (beside this file) -->
    <class name="plug" silence="60" template="plug-app.yaml" grace="5">
      <post name="power" format="json" path="ENERGY.Power"/>
      <post name="relay" format="text" command="true" window="3">
        <confirm post="relay"/>
      </post>
    </class>

A post type's ``format`` (json, text, raw, msgpack, presence; a ``path`` into a JSON or
msgpack document) is :class:`jet.transport.formats.Format`, the one reader of devices'
payloads; without one a payload is read as JSON when it is JSON, else as text.  A
``command`` post type is set through ``<...>/set/<post type>`` (``jet devices send``);
the device confirms by saying the value sent (or ``confirm.value``) on its post type (or
``confirm.post``, a post type or topic levels after the device's prefix) within
``window`` seconds.

A template is a circuit file with placeholders ``${uid}``, ``${id}``, ``${host}``,
``${zone}``, ``${class}`` and ``${topic}`` (the device's topics' prefix,
``<host>/<zone>/<type>/<id>``), filled in for each device (docs/devices.md).
A YAML file is checked against a JSON Schema (:data:`SCHEMA`), an XML file against the
XSD shipped beside this module (:data:`XSD`, with ``xmlschema``); every mistake is
``file:line: what``.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal
from xml.parsers import expat

import attrs
import jsonschema
import xmlschema

from jet.definition.files import CircuitFileError, load_value, load_yaml
from jet.transport.formats import FORMATS, Format, FormatError, payload_value

#: The XML class files' schema, shipped with JET (package data).
XSD = Path(__file__).with_name("device-class.xsd")

Kind = Literal["yaml", "xml"]

_POST_NAME = r"^[^/+#\s]+(/[^/+#\s]+)*$"
_POST: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "format": {"enum": list(FORMATS)},
        "path": {"type": "string", "pattern": r"^[^.\s]+(\.[^.\s]+)*$"},
        "command": {"type": "boolean"},
        "window": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
        "confirm": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "post": {"type": "string", "pattern": _POST_NAME},
                "value": {"type": ["string", "number", "boolean"]},
            },
        },
    },
}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["class"],
    "additionalProperties": False,
    "properties": {
        "class": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]+$"},
        "silence": {"type": "number", "exclusiveMinimum": 0, "maximum": 31_536_000},
        "template": {"type": "string", "minLength": 1},
        "grace": {"type": "number", "minimum": 0, "maximum": 86_400},
        "posts": {"type": "object", "propertyNames": {"pattern": _POST_NAME},
                  "additionalProperties": _POST},
    },
}


class ClassError(ValueError):
    """A class file that cannot be used: ``file:line: what``."""


class IsTemplate(Exception):
    """A circuit file (a template) beside the class files: not a class."""


def _text(value: Any) -> str:
    """A YAML scalar as the text an XML attribute would hold (``true``, ``21.5``)."""
    return value if isinstance(value, str) else json.dumps(value)


@attrs.frozen
class PostType:
    """One post type of a class: how its payloads read, and whether it is a command."""

    name: str
    #: None: JSON when it is JSON, else text (as for a post type no class describes)
    format: Format | None = None
    command: bool = False
    #: seconds a command waits for its confirmation (None: ``jet devices send``'s default)
    window: float | None = None
    #: where the device confirms (None: this post type) and what it says (None: the value)
    confirm_post: str | None = None
    confirm_value: str | None = None

    def read(self, payload: bytes) -> Any:
        """A payload of this post type as a value; FormatError when it does not read."""
        return payload_value(payload) if self.format is None else self.format.decode(payload)

    def value_of(self, text: str) -> Any:
        """What ``text`` (a command line's value, a confirmation's ``value``) means in
        this post type's format: ``21.5`` a number in text and JSON alike."""
        name = self.format.name if self.format is not None else None
        if name in (None, "json", "msgpack"):
            return payload_value(text.encode())
        if name == "raw":
            return text.encode()
        return Format(name).decode(text.encode())  # text, presence

    def payload(self, text: str) -> bytes:
        """The message that sets this post type to what ``text`` says: the text as given,
        or, in JSON or msgpack, its value written in the format (under ``path``)."""
        if self.format is None or self.format.name not in ("json", "msgpack"):
            return text.encode()
        return self.format.encode(self.value_of(text))


@attrs.frozen
class Command:
    """A command for one device's post type, as its class says it goes."""

    post: PostType  # the post type set
    text: str  # the value, as given
    confirm: PostType  # the post type the device confirms on
    window: float | None

    @property
    def payload(self) -> bytes:
        return self.post.payload(self.text)

    def confirms(self, payload: bytes) -> bool:
        """Whether a message on the confirmation's topic is the confirmation."""
        wanted = self.post.confirm_value if self.post.confirm_value is not None else self.text
        try:
            return bool(self.confirm.read(payload) == self.confirm.value_of(wanted))
        except FormatError:
            return False


@attrs.frozen
class DeviceClass:
    name: str
    source: str
    silence: float | None = None
    template: Path | None = None
    grace: float = 5.0
    posts: Mapping[str, PostType] = attrs.field(factory=dict, eq=False)
    kind: Kind = "yaml"
    #: the class file's text (and its template's) as applied: what is recorded
    text: str = attrs.field(default="", eq=False, repr=False)

    def instantiate(self, device: Mapping[str, Any]) -> str:
        """The template's text with this device's values in its placeholders."""
        assert self.template is not None
        text = self.template.read_text(encoding="utf-8")
        return string.Template(text).safe_substitute(placeholders(device))

    def command(self, post_type: str, text: str) -> Command:
        """How ``text`` is sent to ``post_type`` of a device of this class; ValueError
        when the class says the post type is not a command."""
        post = self.posts.get(post_type)
        if post is None:  # (a post type the class does not describe: as with no class)
            return plain_command(post_type, text)
        if not post.command:
            raise ValueError(f"{post_type} is not a command ({self.source})")
        confirm = post.confirm_post or post_type
        return Command(post, text, post if confirm == post_type else
                       self.posts.get(confirm, PostType(confirm)), post.window)


def plain_command(post_type: str, text: str) -> Command:
    """A command no class describes: the text as given, confirmed by the same value on
    the same post type, in the default window."""
    post = PostType(post_type, command=True)
    return Command(post, text, post, None)


def placeholders(device: Mapping[str, Any]) -> dict[str, str]:
    safe_id = re.sub(r"[^a-z0-9_-]", "-", str(device["id"]).lower())
    return {
        "uid": str(device["uid"]), "id": safe_id, "host": str(device["host"]),
        "zone": str(device["zone"]), "class": str(device["class"]),
        "topic": f"{device['host']}/{device['zone']}/{device['class']}/{device['id']}",
    }


# -- reading ----------------------------------------------------------------------------

Lines = dict[tuple[str, ...], int]


def _yaml_data(data: Any, lines: Mapping[tuple[Any, ...], int], source: str
               ) -> dict[str, Any]:
    problem = next(iter(jsonschema.Draft202012Validator(SCHEMA).iter_errors(data)), None)
    if problem is not None:
        at = tuple(problem.absolute_path)
        line = next((lines[at[:n]] for n in range(len(at), 0, -1) if at[:n] in lines), 1)
        where = ".".join(str(p) for p in at) or "the file"
        raise ClassError(f"{source}:{line}: {where}: {problem.message}")
    assert isinstance(data, dict)
    return data


@cache
def _xsd() -> xmlschema.XMLSchema10:
    return xmlschema.XMLSchema10(str(XSD))


def _parse_xml(text: bytes, source: str) -> tuple[ET.Element, dict[int, int]]:
    """The document's tree and each element's line (by ``id``): ElementTree keeps no
    lines, so expat's are noted as each element starts."""
    lines: dict[int, int] = {}
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate(namespace_separator="}")

    def name(raw: str) -> str:  # expat's "uri}local" -> ElementTree's "{uri}local"
        return "{" + raw if "}" in raw else raw

    def start(tag: str, attributes: dict[str, str]) -> None:
        element = builder.start(name(tag), {name(k): v for k, v in attributes.items()})
        lines[id(element)] = parser.CurrentLineNumber

    parser.StartElementHandler = start
    parser.EndElementHandler = lambda tag: builder.end(name(tag))
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(text, True)
    except expat.ExpatError as exc:
        raise ClassError(f"{source}:{exc.lineno}: not well-formed XML:"
                         f" {expat.ErrorString(exc.code)} (column {exc.offset + 1})") from None
    return builder.close(), lines


def _xml_data(text: bytes, source: str) -> tuple[dict[str, Any], Lines]:
    """An XML class file as the YAML one saying the same, with the lines of its parts;
    checked against the XSD."""
    root, element_lines = _parse_xml(text, source)
    schema = _xsd()
    problem = next(iter(schema.iter_errors(root)), None)
    if problem is not None:
        element = problem.elem
        index = getattr(problem, "index", None)  # (a child that should not be there)
        if element is not None and isinstance(index, int) and 0 <= index < len(element):
            element = element[index]
        line = element_lines.get(id(element), 1) if element is not None else 1
        where = problem.path or "the file"
        raise ClassError(f"{source}:{line}: {where}: {problem.reason or problem.message}")
    document = schema.to_dict(root)
    assert isinstance(document, dict)
    lines: Lines = {(): element_lines.get(id(root), 1)}
    data: dict[str, Any] = {}
    for key in ("class", "silence", "template", "grace"):
        attribute = "@name" if key == "class" else f"@{key}"
        if attribute in document:
            data[key] = document[attribute]
            lines[(key,)] = lines[()]
    posts: dict[str, Any] = {}
    for element, post in zip(root.findall("post"), document.get("post", []), strict=True):
        spec = {k[1:]: v for k, v in post.items() if k.startswith("@") and k != "@name"}
        line = element_lines.get(id(element), 1)
        lines[("posts", post["@name"])] = line
        for key in spec:
            lines[("posts", post["@name"], key)] = line
        confirm = element.find("confirm")
        if "confirm" in post:
            spec["confirm"] = {k[1:]: v for k, v in (post["confirm"] or {}).items()
                               if k.startswith("@")}
            lines[("posts", post["@name"], "confirm")] = element_lines.get(id(confirm), line)
        posts[post["@name"]] = spec
    if posts:
        data["posts"] = posts
        lines[("posts",)] = lines[("posts", next(iter(posts)))]
    return data, lines


def _posts(data: Mapping[str, Any], lines: Mapping[tuple[Any, ...], int], source: str
           ) -> dict[str, PostType]:
    """The post types, with what a schema does not say: a path needs JSON or msgpack, a
    window or a confirmation needs a command."""
    found: dict[str, PostType] = {}
    for name, spec in (data.get("posts") or {}).items():
        def fail(key: str, what: str, name: str = name) -> ClassError:
            line = lines.get(("posts", name, key), lines.get(("posts", name), 1))
            return ClassError(f"{source}:{line}: posts.{name}.{key}: {what}")

        spec = spec or {}
        try:  # (a path alone: in JSON)
            fmt = (Format.from_map({"format": spec.get("format", "json"),
                                    "path": spec.get("path", "")})
                   if "format" in spec or "path" in spec else None)
        except ValueError as exc:
            raise fail("path", str(exc)) from None
        command = bool(spec.get("command", False))
        for key in ("window", "confirm"):
            if key in spec and not command:
                raise fail(key, f"{key} is for a command (command: true)")
        confirm = spec.get("confirm") or {}
        value = confirm.get("value")
        found[name] = PostType(name, fmt, command,
                               float(spec["window"]) if "window" in spec else None,
                               confirm.get("post"), None if value is None else _text(value))
    return found


def _build(data: Mapping[str, Any], lines: Mapping[tuple[Any, ...], int], path: Path,
           kind: Kind, text: str, *, with_template: bool = True) -> DeviceClass:
    source = str(path)
    posts = _posts(data, lines, source)
    template = path.parent / data["template"] if "template" in data else None
    if with_template and template is not None:
        if not template.is_file():
            raise ClassError(f"{source}:{lines.get(('template',), 1)}: template {template}:"
                             " no such file")
        text += "\n---\n" + template.read_text(encoding="utf-8")
    silence = data.get("silence")
    return DeviceClass(data["class"], source, None if silence is None else float(silence),
                       template, float(data.get("grace", 5.0)), posts, kind, text)


def kind_of(path: Path) -> Kind:
    return "xml" if path.suffix.lower() == ".xml" else "yaml"


def load_class(path: Path) -> DeviceClass:
    """One class file (``*.xml``: XML, else YAML); ClassError, or IsTemplate for a
    circuit file."""
    kind = kind_of(path)
    if kind == "xml":
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ClassError(f"{path}:1: {exc.strerror or exc}") from None
        data, lines = _xml_data(raw, str(path))
        return _build(data, lines, path, kind, raw.decode("utf-8", "replace"))
    try:
        loaded, yaml_lines = load_yaml(path)
    except CircuitFileError as exc:
        raise ClassError(str(exc)) from None
    if isinstance(loaded, dict) and "app" in loaded:
        raise IsTemplate(str(path))
    data = _yaml_data(loaded, yaml_lines, str(path))
    return _build(data, yaml_lines, path, kind, path.read_text(encoding="utf-8"))


def load_classes(directory: Path, before: Mapping[str, DeviceClass] | None = None
                 ) -> tuple[dict[str, DeviceClass], list[str]]:
    """The classes of a directory's ``*.yaml`` and ``*.xml`` files (circuit files, the
    templates, are let be), and the errors of those refused; a refused file's class stays
    as it was in ``before`` (the classes applied until now)."""
    found: dict[str, DeviceClass] = {}
    errors: list[str] = []
    paths = [*directory.glob("*.y*ml"), *directory.glob("*.xml")]
    for path in sorted(paths):
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            device_class = load_class(path)
        except IsTemplate:
            continue
        except ClassError as exc:
            errors.append(str(exc))
            kept = next((c for c in (before or {}).values() if c.source == str(path)), None)
            if kept is not None:
                found.setdefault(kept.name, kept)
            continue
        if device_class.name in found:
            errors.append(f"{path}:1: class {device_class.name!r} is already"
                          f" {found[device_class.name].source}'s")
            continue
        found[device_class.name] = device_class
    return found, errors


def from_record(kind: str, text: str, source: str) -> DeviceClass:
    """A class as the registry recorded it (``configs``: its type and text, the class
    file's with its template's after a ``---`` line): what ``jet devices send`` reads.
    The class file's text is the whole text, or else the first head before such a line
    that reads as a class (it was valid when applied); its template is not read again."""
    heads = [text, *(text[:at] for at in _separators(text))]
    error = ClassError(f"{source}:1: no class in the recorded text")
    for head in heads:
        try:
            if kind == "xml":
                data, lines = _xml_data(head.encode(), source)
            else:
                loaded = load_value(head, source)
                if not isinstance(loaded, dict) or "app" in loaded:
                    continue
                data, lines = _yaml_data(loaded, {}, source), {}
            return _build(data, lines, Path(source), "xml" if kind == "xml" else "yaml",
                          head, with_template=False)
        except (ClassError, CircuitFileError) as exc:
            error = exc if isinstance(exc, ClassError) else ClassError(str(exc))
    raise error


def _separators(text: str) -> list[int]:
    return [m.start() for m in re.finditer(r"\n---\n", text)]


def digest(device_class: DeviceClass) -> tuple[str, str]:
    """A class as recorded: (sha256 of its text, its text as applied)."""
    return hashlib.sha256(device_class.text.encode()).hexdigest(), device_class.text
