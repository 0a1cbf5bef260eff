"""Topic layouts: how a device is recognised from the topic a message came on.

A layout is a pattern of topic levels, some of them named (``{zone}``), the last
one may take the rest (``{data...}``).  Built in (docs/devices.md):

=============  ==================================================  =========================
layout         pattern                                             device uid
=============  ==================================================  =========================
``site``       ``{host}/{zone}/{type}/{id}/{post_type}/{data...}``  ``<host>/<type>/<id>``
``homie``      ``homie/{id}/{node}/{data...}``                      ``homie/<id>``
``hass``       ``homeassistant/{component}/{data...}`` (``config``)  ``hass/<component>/<object>``
``jet``        ``{kind}/{id}/status`` (pack, node, web)            ``<kind>/<id>``
=============  ==================================================  =========================

The ``site`` layout is the registry design's own: a zone is where the device is
now (an access point, a last router, a VLAN), so it is not part of its uid: a
device that moves keeps its history.  Topics of the other layouts, JET's own
and the foreign devices' command topics are never taken for ``site`` devices.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

#: First topic levels that are never a ``site`` host (other layouts, JET, well-known devices).
NOT_HOSTS = frozenset({
    "homie", "homeassistant", "jet", "pack", "node", "web", "levels", "machine", "level",
    "zigbee2mqtt", "tele", "cmnd", "stat", "shellies", "bench",
})
_NAME = re.compile(r"\{(\w+)(\.\.\.)?\}")


@attrs.frozen
class Sighting:
    """What one message says of a device: who it is, and what it said."""

    uid: str
    layout: str
    fields: Mapping[str, str]  # the pattern's named levels (host, zone, type, id, ...)
    kind: str  # "data", "state" (online/offline), "announce" (a description), "status"
    post_type: str = ""
    data: tuple[str, ...] = ()  # the topic levels after the post type

    @property
    def zone(self) -> str:
        return self.fields.get("zone", "")

    @property
    def device_class(self) -> str:
        return self.fields.get("type") or self.fields.get("component") or self.layout


class LayoutError(ValueError):
    """A pattern of one's own that cannot be used."""


@attrs.frozen
class Layout:
    """One pattern of topic levels (see the module doc)."""

    name: str
    pattern: str

    @classmethod
    def custom(cls, name: str, pattern: str) -> Layout:
        """A pattern of one's own (``jet devices serve --config``): levels that are words
        or ``{name}``, the last one may be ``{name...}``; ``{id}`` is required, and
        ``{host}``, ``{zone}``, ``{type}``, ``{post_type}`` mean what they mean in the
        site layout.  The device's uid is ``<host or the layout's name>/<type>/<id>``."""
        levels = pattern.split("/")
        names = []
        for n, level in enumerate(levels):
            match = _NAME.fullmatch(level)
            if match is None:
                if not level or any(c in level for c in "+#{}"):
                    raise LayoutError(f"pattern {pattern!r}: level {level!r} is neither a word"
                                      " nor {name}")
                continue
            if match.group(2) and n != len(levels) - 1:
                raise LayoutError(f"pattern {pattern!r}: only the last level may be"
                                  f" {{{match.group(1)}...}}")
            names.append(match.group(1))
        if "id" not in names:
            raise LayoutError(f"pattern {pattern!r}: no {{id}} level (which device?)")
        if len(set(names)) != len(names):
            raise LayoutError(f"pattern {pattern!r}: a name is used twice")
        return cls(name, pattern)

    @property
    def levels(self) -> list[str]:
        return self.pattern.split("/")

    def topic_filter(self) -> str:
        """The MQTT subscription that takes every topic of this layout."""
        out = []
        for level in self.levels:
            match = _NAME.fullmatch(level)
            if match is None:
                out.append(level)
            elif match.group(2):
                out.append("#")
                break
            else:
                out.append("+")
        return "/".join(out)

    def match(self, topic: str) -> dict[str, Any] | None:
        """The named levels of ``topic`` (``data...`` as a tuple), or None."""
        parts = topic.split("/")
        found: dict[str, Any] = {}
        for i, level in enumerate(self.levels):
            match = _NAME.fullmatch(level)
            if match is not None and match.group(2):
                found[match.group(1)] = tuple(parts[i:])
                return found
            if i >= len(parts):
                return None
            if match is None:
                if parts[i] != level:
                    return None
            elif not parts[i]:
                return None
            else:
                found[match.group(1)] = parts[i]
        return found if len(parts) == len(self.levels) else None


#: The site layout's command post type: ``<host>/<zone>/<type>/<id>/set/<post_type>``.
COMMAND = "set"


def command_topic(device: Mapping[str, Any], post_type: str) -> str:
    """Where a command for ``post_type`` goes to a registered device (its latest zone)."""
    if device["layout"] == "homie":
        node, _, prop = post_type.partition("/")
        return f"{device['uid']}/{node}/{prop or node}/set"
    if device["layout"] != "site":
        raise ValueError(f"{device['uid']}: a {device['layout']} device takes no commands here")
    return (f"{device['host']}/{device['zone']}/{device['class']}/{device['id']}/{COMMAND}/"
            f"{post_type}")


def confirmation_topic(device: Mapping[str, Any], post_type: str) -> str:
    """Where a device says it did what a command asked (the post type's own topic)."""
    if device["layout"] == "homie":
        node, _, prop = post_type.partition("/")
        return f"{device['uid']}/{node}/{prop or node}"
    return f"{device['host']}/{device['zone']}/{device['class']}/{device['id']}/{post_type}"


SITE = Layout("site", "{host}/{zone}/{type}/{id}/{post_type}/{data...}")
HOMIE = Layout("homie", "homie/{id}/{rest...}")
HASS = Layout("hass", "homeassistant/{component}/{rest...}")
JET = Layout("jet", "{kind}/{id}/status")
BUILT_IN = {layout.name: layout for layout in (SITE, HOMIE, HASS, JET)}


def recognise(topic: str, layouts: Iterable[Layout] = BUILT_IN.values()) -> Sighting | None:
    """The device a message on ``topic`` is from, by the first layout that knows it."""
    for layout in layouts:
        found = layout.match(topic)
        if found is None:
            continue
        sighting = (_SIGHTING[layout.name](found) if layout.name in _SIGHTING
                    else _own(layout.name, found))
        if sighting is not None:
            return sighting
    return None


def _site(found: dict[str, Any]) -> Sighting | None:
    if found["host"] in NOT_HOSTS or found["host"].startswith("$"):
        return None
    uid = f"{found['host']}/{found['type']}/{found['id']}"
    fields = {k: v for k, v in found.items() if isinstance(v, str)}
    post = found["post_type"]
    if post == COMMAND:
        return None  # a command to the device (jet devices send), not a message from it
    kind = "state" if post in ("state", "will", "$state") else "data"
    return Sighting(uid, "site", fields, kind, post, found["data"])


def _own(name: str, found: dict[str, Any]) -> Sighting | None:
    """A message on a pattern of one's own: as the site layout reads it."""
    fields = {k: v for k, v in found.items() if isinstance(v, str)}
    fields.setdefault("host", name)
    fields.setdefault("type", name)
    uid = f"{fields['host']}/{fields['type']}/{fields['id']}"
    post = fields.get("post_type", "")
    if post == COMMAND:
        return None
    data = next((v for v in found.values() if isinstance(v, tuple)), ())
    kind = "state" if post in ("state", "will", "$state") else "data"
    return Sighting(uid, name, fields, kind, post or "value", data)


def _homie(found: dict[str, Any]) -> Sighting | None:
    rest: tuple[str, ...] = found["rest"]
    if not rest:
        return None
    fields = {"id": found["id"]}
    if rest == ("$state",):
        return Sighting(f"homie/{found['id']}", "homie", fields, "state", "$state")
    if rest[0].startswith("$") or rest[-1] == "set" or len(rest) < 2:
        return None  # attributes of the device or a node, and commands to it
    return Sighting(f"homie/{found['id']}", "homie", fields, "data", rest[0], rest[1:])


def _hass(found: dict[str, Any]) -> Sighting | None:
    rest: tuple[str, ...] = found["rest"]
    # homeassistant/<component>/[<node_id>/]<object_id>/config
    if len(rest) not in (2, 3) or rest[-1] != "config":
        return None
    uid = "/".join(("hass", found["component"], *rest[:-1]))
    fields = {"component": found["component"], "id": rest[-2]}
    return Sighting(uid, "hass", fields, "announce", "config")


def _jet(found: dict[str, Any]) -> Sighting | None:
    if found["kind"] not in ("pack", "node", "web"):
        return None
    fields = {"type": f"jet-{found['kind']}", "id": found["id"]}
    return Sighting(f"{found['kind']}/{found['id']}", "jet", fields, "status", "status")


_SIGHTING = {"site": _site, "homie": _homie, "hass": _hass, "jet": _jet}
