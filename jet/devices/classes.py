"""Device classes: what the registry knows of a kind of device, from YAML files.

    # classes/thermo.yaml
    class: thermo                 # the site layout's <type> (or Home Assistant component)
    silence: 60                   # seconds without a message before it is offline
    template: thermo-app.yaml     # plug-n-process: a circuit file run for each device
    grace: 5                      # seconds offline before its circuit is unloaded

A template is a circuit file with placeholders ``${uid}``, ``${id}``, ``${host}``,
``${zone}``, ``${class}`` and ``${topic}`` (the device's topics' prefix,
``<host>/<zone>/<type>/<id>``), filled in for each device (docs/devices.md).
Every file is checked against a JSON Schema; every mistake is ``file:line: what``.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import jsonschema

from jet.definition.files import CircuitFileError, load_yaml

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["class"],
    "additionalProperties": False,
    "properties": {
        "class": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]+$"},
        "silence": {"type": "number", "exclusiveMinimum": 0, "maximum": 31_536_000},
        "template": {"type": "string", "minLength": 1},
        "grace": {"type": "number", "minimum": 0, "maximum": 86_400},
    },
}


class ClassError(ValueError):
    """A class file that cannot be used: ``file:line: what``."""


class IsTemplate(Exception):
    """A circuit file (a template) beside the class files: not a class."""


@attrs.frozen
class DeviceClass:
    name: str
    source: str
    silence: float | None = None
    template: Path | None = None
    grace: float = 5.0
    #: the class file's text (and its template's) as applied: what is recorded
    text: str = attrs.field(default="", eq=False, repr=False)

    def instantiate(self, device: Mapping[str, Any]) -> str:
        """The template's text with this device's values in its placeholders."""
        assert self.template is not None
        text = self.template.read_text(encoding="utf-8")
        return string.Template(text).safe_substitute(placeholders(device))


def placeholders(device: Mapping[str, Any]) -> dict[str, str]:
    safe_id = re.sub(r"[^a-z0-9_-]", "-", str(device["id"]).lower())
    return {
        "uid": str(device["uid"]), "id": safe_id, "host": str(device["host"]),
        "zone": str(device["zone"]), "class": str(device["class"]),
        "topic": f"{device['host']}/{device['zone']}/{device['class']}/{device['id']}",
    }


def load_class(path: Path) -> DeviceClass:
    try:
        data, lines = load_yaml(path)
    except CircuitFileError as exc:
        raise ClassError(str(exc)) from None
    if isinstance(data, dict) and "app" in data:
        raise IsTemplate(str(path))
    problem = next(iter(jsonschema.Draft202012Validator(SCHEMA).iter_errors(data)), None)
    if problem is not None:
        at = tuple(problem.absolute_path)
        line = lines.get(at, lines.get(at[:1], 1)) if at else 1
        where = ".".join(str(p) for p in at) or "the file"
        raise ClassError(f"{path}:{line}: {where}: {problem.message}")
    template = path.parent / data["template"] if "template" in data else None
    if template is not None and not template.is_file():
        raise ClassError(f"{path}:{lines.get(('template',), 1)}: template {template}: no such"
                         " file")
    text = path.read_text(encoding="utf-8")
    if template is not None:
        text += "\n---\n" + template.read_text(encoding="utf-8")
    return DeviceClass(data["class"], str(path), data.get("silence"), template,
                       float(data.get("grace", 5.0)), text)


def load_classes(directory: Path, before: Mapping[str, DeviceClass] | None = None
                 ) -> tuple[dict[str, DeviceClass], list[str]]:
    """The classes of a directory's ``*.yaml`` files (circuit files, the templates, are
    let be), and the errors of those refused; a refused file's class stays as it was in
    ``before`` (the classes applied until now)."""
    found: dict[str, DeviceClass] = {}
    errors: list[str] = []
    for path in sorted(directory.glob("*.y*ml")):
        if path.name.startswith("."):
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


def digest(device_class: DeviceClass) -> tuple[str, str]:
    """A class as recorded: (sha256 of its text, its text as applied)."""
    return hashlib.sha256(device_class.text.encode()).hexdigest(), device_class.text
