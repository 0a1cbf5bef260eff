"""`jet level` (a level's daemon), `jet call` (a level function) and `jet event`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
from collections.abc import Callable
from typing import Any

from jet import address
from jet.definition.files import CircuitFileError, load_value
from jet.definition.model import AppDef
from jet.levels import view
from jet.levels.call import MODES, CallError, calls
from jet.levels.daemon import LevelDaemon
from jet.levels.functions import FunctionsError, import_functions
from jet.levels.rules import Rules, RulesError, load_rules
from jet.levels.tree import TreeError, demo, is_levels_file, load_tree, running_tree
from jet.tasks import run_until_signalled
from jet.transport import broker
from jet.transport.client import Session
from jet.transport.codec import PayloadError, encode

__all__ = [
    "add_level_parsers", "cmd_call", "cmd_event", "cmd_level", "cmd_levels", "is_levels_file",
    "run_tree",
]


def cmd_level(args: argparse.Namespace) -> int:
    """Run a level's daemon until stopped; a bad name, URL or rule file is one line."""
    try:
        address.check_level_name(args.name)
    except ValueError as exc:
        print(f"jet level: error: {exc}", file=sys.stderr)
        return 2
    own = broker.parse(args.broker)
    parent = broker.parse(args.parent) if args.parent else None
    try:
        rules = load_rules(args.rules) if args.rules else Rules()
        functions = import_functions(args.functions or [])
    except (RulesError, FunctionsError) as exc:
        print(f"jet level: error: {exc}", file=sys.stderr)
        return 2
    for option, topic, filter_ok in [*(("--pump", f, True) for f in args.pump or ()),
                                     *(("--relevance", t, False) for t in [args.relevance] if t)]:
        try:
            address.check(topic, filter_ok=filter_ok)
        except address.TopicError as exc:
            print(f"jet level: error: {option} {topic!r}: {exc}", file=sys.stderr)
            return 2

    async def serve() -> int:
        async with LevelDaemon(args.name, own, parent=parent, rules=rules,
                               functions=functions, pump=args.pump or (),
                               relevance=args.relevance,
                               keepalive=args.keepalive):
            up = f", parent {parent.url}" if parent else " (the root)"
            print(f"level {args.name} on {own.url}{up}", flush=True)
            await asyncio.Event().wait()
        return 0

    return run_until_signalled(serve())


def cmd_event(args: argparse.Namespace) -> int:
    """Publish one event (QoS 1) on the given broker: every level's broker gets it."""
    try:
        address.check(args.name)
        value = load_value(args.value)
        payload = encode(value)
    except (address.TopicError, CircuitFileError, ValueError, PayloadError) as exc:
        print(f"jet event: error: {exc}", file=sys.stderr)
        return 2
    topic = address.event(args.name, external=args.external)

    async def send() -> int:
        async with Session(broker.parse(args.broker), name="event") as session:
            await session.link.publish(topic, payload, qos=1)
        print(topic)
        return 0

    return asyncio.run(send())


#: Runs a tree's app (``app:`` in a levels file) on the levels' brokers, by level: given
#: by the command layer (jet.runner.app_on_levels), which may load apps; levels may not.
AppOnLevels = Callable[[AppDef, dict[str, str]], contextlib.AbstractAsyncContextManager[None]]


def run_tree(args: argparse.Namespace, app_on_levels: AppOnLevels | None = None) -> int:
    """`jet run LEVELS-FILE`: every level on an embedded broker of its own, the file's
    app on them (if it names one), and an event raised at a leaf every second, shown
    arriving at every level."""
    try:
        tree = load_tree(args.file)
    except (TreeError, RulesError, FunctionsError) as exc:
        print(f"jet run: error: {exc}", file=sys.stderr)
        return 2

    async def main() -> int:
        async with contextlib.AsyncExitStack() as stack:
            daemons = await stack.enter_async_context(
                running_tree(tree, progress=lambda line: print(line, flush=True)))
            print(f"levels of {tree.source} running; try `jet levels --broker "
                  f"{daemons[tree.levels[0].name].broker.url}`", flush=True)
            if tree.app is not None and app_on_levels is not None:
                urls = {name: daemon.broker.url for name, daemon in daemons.items()}
                await stack.enter_async_context(app_on_levels(tree.app, urls))
            shown = demo(tree, daemons, progress=lambda line: print(line, flush=True))
            if args.duration is None:
                await shown
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(args.duration):
                        await shown
        return 0

    try:
        return run_until_signalled(main())
    except (RulesError, FunctionsError) as exc:  # a level's rule file or modules
        print(f"jet run: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # no mosquitto for the embedded brokers
        print(f"jet run: error: {exc}", file=sys.stderr)
        return 1


def cmd_call(args: argparse.Namespace) -> int:
    """Call a level function on the levels above this broker; one line per level
    (or one JSON list); exit 1 when no level succeeded."""
    try:
        call_args = json.loads(args.args) if args.args is not None else None
    except ValueError as exc:
        print(f"jet call: error: ARGS_JSON is not JSON: {exc}", file=sys.stderr)
        return 2
    levels = [level for level in args.levels.split(",") if level] if args.levels else None

    async def run() -> list[dict[str, Any]]:
        found = []
        async for result in calls(broker.parse(args.broker), args.name, call_args,
                                  mode=args.mode, levels=levels, all_levels=args.all,
                                  timeout=args.timeout):
            found.append(result)
            if not args.json:
                shown = (json.dumps(plain(result["result"])) if result["ok"]
                         else f"error: {result['error']}")
                print(f"{result['level']}: {shown} ({result['ms']:g} ms)", flush=True)
        return found

    try:
        results = asyncio.run(run())
    except (CallError, address.TopicError, PayloadError) as exc:
        print(f"jet call: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(plain(results)))
    return 0 if any(r["ok"] for r in results) else 1


def plain(value: Any) -> Any:
    """What msgpack carried, as JSON can print it (bytes, and map keys that are not text)."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else repr(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return repr(bytes(value))
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def seconds(text: str) -> float:
    """A positive, finite number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a positive number of seconds")
    return value


def cmd_levels(args: argparse.Namespace) -> int:
    """The tree as the level of this broker sees it (picture, or --json)."""

    async def read() -> dict[str, Any]:
        async with Session(broker.parse(args.broker), name="levels") as session:
            return await session.retained(address.LEVEL_HERE, address.ALL_LEVEL_SUBTREES,
                                          "levels/+/uplink", quiet=0.3, limit=3.0)

    found = asyncio.run(read())
    here = found.get(address.LEVEL_HERE)
    if not isinstance(here, dict) or not isinstance(here.get("level"), str):
        print(f"jet levels: error: no level daemon on {broker.parse(args.broker).url} "
              f"({address.LEVEL_HERE} is not set)", file=sys.stderr)
        return 1
    name = here["level"]
    tree = view.checked(found.get(address.level_subtree(name)))  # read, so checked
    if tree is None:
        tree = {"level": name, "state": "online", "since": None, "children": []}
    uplink = found.get(address.level_uplink(name))
    uplink = uplink if isinstance(uplink, dict) else None
    if args.json:
        print(json.dumps(plain({"level": name, "path": here.get("path"), "uplink": uplink,
                                "tree": tree})))
    else:
        print(view.render(tree, here, uplink))
    return 0


def _command(subparsers: Any, name: str, func: Any, help_: str, broker_is: str
             ) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(name, help=help_, description=help_)
    p.set_defaults(func=func)
    p.add_argument("--broker", help=f"{broker_is} (default ${broker.ENV_VAR} or "
                   f"{broker.DEFAULT_URL})")
    return p


def add_level_parsers(subparsers: Any) -> None:
    """Add ``level``, ``levels``, ``call`` and ``event`` to an argparse subparsers object."""
    p = _command(subparsers, "level", cmd_level, "run a level's daemon: its presence, and "
                 "messages between its broker and its parent's", "this level's broker URL")
    p.add_argument("name", help="the level's name, unique in the tree (e.g. fog-north)")
    p.add_argument("--parent", metavar="URL", help="the parent level's broker (none: the root)")
    p.add_argument("--rules", metavar="FILE",
                   help="which machine messages concern this level (default: all); "
                   "see docs/levels.md")
    p.add_argument("--relevance", metavar="TOPIC",
                   help="the output of a circuit that decides which machine messages concern "
                   "this level: it reads levels/NAME/candidates and sends back those to take")
    p.add_argument("--pump", action="append", metavar="FILTER",
                   help="carry this level's messages on FILTER up, as levels/NAME/data/TOPIC "
                   "(repeatable; levels/NAME/pump on its broker changes the list)")
    p.add_argument("--functions", action="append", metavar="MODULE",
                   help="import MODULE and offer its @level_function functions (repeatable)")
    p.add_argument("--keepalive", type=int, default=10,
                   help="MQTT keepalive to the parent, seconds: a dead level is seen offline "
                   "within 1.5 times this")
    p = _command(subparsers, "levels", cmd_levels, "show the tree of levels as the level of "
                 "this broker sees it", "a level's broker URL")
    p.add_argument("--json", action="store_true",
                   help="one JSON object: level, path, uplink, tree")
    p = _command(subparsers, "call", cmd_call, "call a level function on the levels above "
                 "this broker", "this level's broker URL")
    p.add_argument("name", help="the function's name")
    p.add_argument("args", nargs="?", metavar="ARGS_JSON",
                   help="its arguments: a JSON list (positional) or object (keywords)")
    p.add_argument("--mode", choices=MODES, default="concurrent",
                   help="concurrent: ask every level at once (default); sequential: one after "
                   "the other, stopping at the first success")
    p.add_argument("--levels", metavar="A,B,C",
                   help="which levels, in this order (default: this one and every one above)")
    p.add_argument("--all", action="store_true",
                   help="sequential: go through every level, not only to the first success")
    p.add_argument("--timeout", type=seconds, default=5.0, help="seconds per level (default 5)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON list of {level, ok, result | error, ms}")
    p = _command(subparsers, "event", cmd_event, "raise an event: it reaches every level's "
                 "broker once", "a level's broker URL")
    p.add_argument("name", help="event name, a topic below machine/events/internal/")
    p.add_argument("value", help="a YAML/JSON value: 42, true, '\"text\"', {a: 1}")
    p.add_argument("--external", action="store_true",
                   help="injected from outside the machine: machine/events/external/NAME")
