"""Which gadget types a container may build, and how a type name becomes a class.

A pack instantiates only installed, allowed code (SPEC section 3): a type
name is either the name of an entry point in the ``jet.gadgets`` group, or a
dotted ``module.Class`` path whose module is inside one of the allowed
module prefixes.  Nothing else is imported, so no code travels over MQTT.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points

import attrs

from jet.runtime.gadget import Gadget

DEFAULT_ALLOW: tuple[str, ...] = ("jet.lib",)
ENTRY_POINT_GROUP = "jet.gadgets"


class UnknownGadgetType(LookupError):
    """The type name does not resolve to an allowed gadget class."""


@functools.cache
def _entry_points() -> dict[str, EntryPoint]:
    # Reading installed distributions' metadata takes milliseconds; the set
    # does not change while a process runs.
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _inside(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@attrs.frozen
class Registry:
    """Resolves gadget type names under an allow list of module prefixes."""

    allow: tuple[str, ...] = DEFAULT_ALLOW

    @classmethod
    def allowing(cls, extra: Iterable[str] = ()) -> Registry:
        return cls(tuple(dict.fromkeys((*DEFAULT_ALLOW, *extra))))

    def resolve(self, type_name: str) -> type[Gadget]:
        ep = _entry_points().get(type_name)
        if ep is not None:
            try:
                loaded = ep.load()
            except BaseException as exc:  # its module's code, run on import
                raise UnknownGadgetType(
                    f"gadget type {type_name!r}: cannot load {ep.value!r}: {_one_line(exc)}"
                ) from None
            return self._check(type_name, loaded)
        module_name, _, attr = type_name.rpartition(".")
        if not module_name:
            raise UnknownGadgetType(f"unknown gadget type {type_name!r}")
        if not any(_inside(module_name, prefix) for prefix in self.allow):
            raise UnknownGadgetType(
                f"gadget type {type_name!r} is not allowed"
                f" (allowed modules: {', '.join(self.allow)})"
            )
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UnknownGadgetType(
                f"unknown gadget type {type_name!r}: cannot import {module_name!r}: {exc!r}"
            ) from exc
        except BaseException as exc:  # a module's own code failed (even SystemExit)
            raise UnknownGadgetType(
                f"gadget type {type_name!r}: importing {module_name!r} failed: {_one_line(exc)}"
            ) from None
        found = getattr(module, attr, None)
        if found is None:
            raise UnknownGadgetType(
                f"unknown gadget type {type_name!r}: {module_name!r} has no {attr!r}"
            )
        return self._check(type_name, found)

    @staticmethod
    def _check(type_name: str, found: object) -> type[Gadget]:
        if not (isinstance(found, type) and issubclass(found, Gadget)):
            raise UnknownGadgetType(f"{type_name!r} is not a gadget class")
        return found
