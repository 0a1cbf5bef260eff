"""`jet level` (a level's daemon) and `jet event` (raise an event on a level's broker)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from jet import address
from jet.definition.files import CircuitFileError, load_value
from jet.levels.daemon import LevelDaemon
from jet.levels.rules import Rules, RulesError, load_rules
from jet.tasks import run_until_signalled
from jet.transport import broker
from jet.transport.client import Session
from jet.transport.codec import PayloadError, encode

__all__ = ["add_level_parsers", "cmd_event", "cmd_level"]


def cmd_level(args: argparse.Namespace) -> int:
    """Run a level's daemon until stopped; a bad name, URL or rule file is one line."""
    if not address.NAME_RE.match(args.name):
        print(f"jet level: error: name {args.name!r} must match [a-z0-9_-]+", file=sys.stderr)
        return 2
    own = broker.parse(args.broker)
    parent = broker.parse(args.parent) if args.parent else None
    try:
        rules = load_rules(args.rules) if args.rules else Rules()
    except RulesError as exc:
        print(f"jet level: error: {exc}", file=sys.stderr)
        return 2

    async def serve() -> int:
        async with LevelDaemon(args.name, own, parent=parent, rules=rules,
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


def add_level_parsers(subparsers: Any) -> None:
    """Add ``level`` and ``event`` to an argparse subparsers object."""
    help_ = "run a level's daemon: its presence, and messages between its broker and its parent's"
    p: argparse.ArgumentParser = subparsers.add_parser("level", help=help_, description=help_)
    p.set_defaults(func=cmd_level)
    p.add_argument("name", help="the level's name, unique in the tree (e.g. fog-north)")
    p.add_argument("--broker", help="this level's broker URL "
                   f"(default ${broker.ENV_VAR} or {broker.DEFAULT_URL})")
    p.add_argument("--parent", metavar="URL", help="the parent level's broker (none: the root)")
    p.add_argument("--rules", metavar="FILE",
                   help="which machine messages concern this level (default: all); "
                   "see docs/levels.md")
    p.add_argument("--keepalive", type=int, default=10,
                   help="MQTT keepalive to the parent, seconds: a dead level is seen offline "
                   "within 1.5 times this")
    help_ = "raise an event: it reaches every level's broker once"
    p = subparsers.add_parser("event", help=help_, description=help_)
    p.set_defaults(func=cmd_event)
    p.add_argument("name", help="event name, a topic below machine/events/internal/")
    p.add_argument("value", help="a YAML/JSON value: 42, true, '\"text\"', {a: 1}")
    p.add_argument("--external", action="store_true",
                   help="injected from outside the machine: machine/events/external/NAME")
    p.add_argument("--broker", help=f"a level's broker URL (default ${broker.ENV_VAR} or "
                   f"{broker.DEFAULT_URL})")
