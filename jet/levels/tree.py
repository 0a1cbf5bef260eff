"""Several levels from one file: demos, tests, and ``jet run`` of a small tree.

    # circuits/levels-demo.yaml
    levels:
      cloud: {}
      fog-north: {parent: cloud, rules: north-rules.yaml}
      fog-south: {parent: cloud}
      dev-1: {parent: fog-north, functions: [mymodule]}
    app: levels-demo-app.yaml     # optional: an app with levels to run on the tree

Each level may name its ``broker`` (a URL); ``jet run FILE`` starts an embedded
mosquitto for every level that names none (MQTT 5 is needed: amqtt will not
do).  ``rules`` and ``app`` paths are relative to the file; the app's levels
are given the tree's brokers (a pack on each, in the same process).  The parents must form a tree
with one root (networkx checks it); every mistake is ``file:line: ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import networkx as nx
import yaml

from jet import address
from jet.definition.files import CircuitFileError, load_app, load_yaml
from jet.definition.model import AppDef
from jet.embedded import embedded_broker, mosquitto_path
from jet.levels.daemon import LevelDaemon
from jet.levels.functions import import_functions
from jet.levels.rules import Rules, load_rules
from jet.transport import Link, broker
from jet.transport.codec import decode, encode

#: Seconds between two demo events in ``jet run`` of a tree.
DEMO_EVERY = 1.0
#: Seconds the levels of a tree run from one file have to join (each knowing its way up).
JOIN_TIMEOUT = 10.0


class TreeError(ValueError):
    """A levels file that cannot be used: ``file:line: what``."""


@attrs.frozen
class LevelDef:
    name: str
    parent: str | None = None
    broker: str | None = None
    rules: Path | None = None
    functions: tuple[str, ...] = ()


@attrs.frozen
class TreeDef:
    source: str
    levels: tuple[LevelDef, ...]  # parents before their children
    app: AppDef | None = None  # an app with levels run on the tree

    def path(self, name: str) -> list[str]:
        """``name`` and the levels above it, up to the root."""
        parents = {level.name: level.parent for level in self.levels}
        found: list[str] = []
        at: str | None = name
        while at is not None:
            found.append(at)
            at = parents[at]
        return found

    def depth(self, name: str) -> int:
        return len(self.path(name)) - 1

    @property
    def leaves(self) -> list[str]:
        """The levels with no children, deepest first."""
        parents = {level.parent for level in self.levels}
        found = [level.name for level in self.levels if level.name not in parents]
        return sorted(found, key=lambda name: -self.depth(name))


def is_levels_file(path: str | Path) -> bool:
    """Whether a YAML file describes levels (a top-level ``levels:`` and no ``circuits:``)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "levels" in data and "circuits" not in data


def load_tree(path: str | Path) -> TreeDef:
    path = Path(path)
    try:
        data, lines = load_yaml(path)
    except CircuitFileError as exc:
        raise TreeError(str(exc)) from None

    def where(*at: str) -> str:
        return f"{path}:{lines.get(at, lines.get(at[:1], 1))}"

    specs = data.get("levels") if isinstance(data, dict) else None
    if not isinstance(specs, dict) or not specs:
        raise TreeError(f"{where('levels')}: 'levels' is a map of level names")
    unknown_keys = set(data) - {"levels", "app"}
    if unknown_keys:
        first = sorted(unknown_keys)[0]
        raise TreeError(f"{where(first)}: unknown key {first!r} (expected: app, levels)")
    graph: nx.DiGraph = nx.DiGraph()
    defs: dict[str, LevelDef] = {}
    for name, spec in specs.items():
        at = where("levels", str(name))
        try:
            address.check_level_name(name)
        except ValueError as exc:
            raise TreeError(f"{at}: {exc}") from None
        spec = spec or {}
        if not isinstance(spec, dict):
            raise TreeError(f"{at}: level {name}: expected a map (parent, broker, rules, ...)")
        unknown = set(spec) - {"parent", "broker", "rules", "functions"}
        if unknown:
            raise TreeError(f"{at}: level {name}: unknown key(s) {sorted(unknown)}")
        parent = spec.get("parent")
        if parent is not None and parent not in specs:
            raise TreeError(f"{at}: level {name}: parent {parent!r} is not a level of this file")
        url = spec.get("broker")
        if url is not None:
            try:
                broker.parse(str(url))
            except broker.BrokerUrlError as exc:
                raise TreeError(f"{at}: level {name}: {exc}") from None
        functions = spec.get("functions") or []
        if not isinstance(functions, list) or not all(isinstance(f, str) for f in functions):
            raise TreeError(f"{at}: level {name}: 'functions' is a list of module names")
        rules = spec.get("rules")
        defs[name] = LevelDef(name, parent, url, path.parent / rules if rules else None,
                              tuple(functions))
        graph.add_node(name)
        if parent is not None:
            graph.add_edge(parent, name)
    roots = [n for n in graph if graph.in_degree(n) == 0]
    if not nx.is_directed_acyclic_graph(graph) or len(roots) != 1:
        cycle = "" if nx.is_directed_acyclic_graph(graph) else (
            ": " + " -> ".join(str(e[0]) for e in nx.find_cycle(graph)))
        raise TreeError(f"{where('levels')}: the levels must form one tree with one root "
                        f"(roots: {', '.join(roots) or 'none'}){cycle}")
    return TreeDef(str(path), tuple(defs[n] for n in nx.topological_sort(graph)),
                   _tree_app(path, data.get("app"), where("app"), set(defs)))


def _tree_app(path: Path, name: Any, at: str, levels: set[str]) -> AppDef | None:
    """The app a levels file runs on its tree (``app:``), every level of it in the tree."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise TreeError(f"{at}: 'app' is the path of a circuit file")
    try:
        app = load_app(path.parent / name)
    except CircuitFileError as exc:
        raise TreeError(f"{at}: app: {exc}") from None
    if not app.levels:
        raise TreeError(f"{at}: {name} has no levels: nothing to place on this tree")
    missing = sorted(set(app.levels) - levels)
    if missing:
        raise TreeError(f"{at}: {name} places circuits at {', '.join(missing)}, not a level"
                        f" of this file")
    return app


@contextlib.asynccontextmanager
async def running_tree(tree: TreeDef, *, progress: Callable[[str], None] = print,
                       keepalive: int = 10) -> AsyncIterator[dict[str, LevelDaemon]]:
    """Every level of ``tree`` (embedded brokers where none is named), parents first."""
    if any(level.broker is None for level in tree.levels) and mosquitto_path() is None:
        raise RuntimeError("levels need MQTT 5 brokers: install mosquitto "
                           "(apt-get install mosquitto), or name each level's broker")
    rules = {level.name: load_rules(level.rules) if level.rules else Rules()
             for level in tree.levels}
    functions = {level.name: import_functions(list(level.functions)) for level in tree.levels}
    async with contextlib.AsyncExitStack() as stack:
        urls: dict[str, str] = {}
        daemons: dict[str, LevelDaemon] = {}
        for level in tree.levels:
            url = level.broker
            if url is None:
                url = await stack.enter_async_context(embedded_broker(flavour="mosquitto"))
            urls[level.name] = url
            parent = broker.parse(urls[level.parent]) if level.parent else None
            daemons[level.name] = await stack.enter_async_context(LevelDaemon(
                level.name, broker.parse(urls[level.name]), parent=parent,
                rules=rules[level.name], functions=functions[level.name], keepalive=keepalive))
            up = f", parent {level.parent}" if level.parent else " (the root)"
            progress(f"level {level.name} on {urls[level.name]}{up}")
        try:  # every level knows its way up: the tree is joined
            async with asyncio.timeout(JOIN_TIMEOUT):
                for name, daemon in daemons.items():
                    await daemon.knows_path(tree.path(name))
        except TimeoutError:
            raise RuntimeError(f"the levels of {tree.source} did not join within "
                               f"{JOIN_TIMEOUT:g} s") from None
        yield daemons


async def demo(tree: TreeDef, daemons: Mapping[str, LevelDaemon],
               progress: Callable[[str], None] = print) -> None:
    """What ``jet run`` shows of a tree: an event raised at a leaf every second, and
    which levels' brokers it reached (each of them, once)."""
    origin = tree.leaves[0]
    seen: dict[int, list[str]] = {}
    arrived = asyncio.Event()

    def watcher(level: str) -> Callable[[str, bytes], None]:
        def on_event(_topic: str, payload: bytes) -> None:
            number = decode(payload).get("n") if payload else None
            if isinstance(number, int):
                seen.setdefault(number, []).append(level)
                arrived.set()

        return on_event

    async with contextlib.AsyncExitStack() as stack:
        links = {}
        for name, daemon in daemons.items():
            link = await stack.enter_async_context(
                Link(daemon.broker, f"jet-run-watch-{name}", clean_session=True))
            await link.subscribe(address.event("demo/tick"), 1, watcher(name))
            links[name] = link
        for number in range(1, 1 << 30):
            links[origin].publish_nowait(address.event("demo/tick"),
                                         encode({"n": number, "at": time.time()}), qos=1)
            deadline = asyncio.get_running_loop().time() + DEMO_EVERY
            while len(seen.get(number, [])) < len(daemons):
                arrived.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, deadline -
                                                   asyncio.get_running_loop().time())):
                        await arrived.wait()
                if asyncio.get_running_loop().time() >= deadline:
                    break
            reached = seen.pop(number, [])
            missing = sorted(set(daemons) - set(reached))
            progress(f"event demo/tick {number} raised at {origin}: reached "
                     f"{', '.join(sorted(reached))}"
                     + (f"; not (yet) {', '.join(missing)}" if missing else " (every level)"))
            await asyncio.sleep(max(0.0, deadline - asyncio.get_running_loop().time()))
