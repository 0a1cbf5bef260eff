"""The `jet` command.  Every failure ends in one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from jet import __version__, address


def _interrupted_while_loading(_signum: int, _frame: FrameType | None) -> None:
    os._exit(130)


# Ctrl-C while the modules below load (most of a second on a busy machine) ends as it does
# later: 130, no traceback.  main() gives SIGINT back to Python.  Only in the `jet` process
# itself (not in one that merely imports this module), and not where SIGINT is ignored.
if Path(sys.argv[0] if sys.argv else "").name in ("jet", "cli.py") and (
    signal.getsignal(signal.SIGINT) is signal.default_int_handler
):
    signal.signal(signal.SIGINT, _interrupted_while_loading)

from jet.cluster import GroupView  # noqa: E402
from jet.containers.status import Statuses  # noqa: E402
from jet.definition.check import check_app  # noqa: E402
from jet.definition.files import CircuitFileError, load_app, load_value  # noqa: E402
from jet.definition.model import AppDef  # noqa: E402
from jet.devices.config import ConfigError  # noqa: E402
from jet.levels import pump  # noqa: E402
from jet.levels.call import CallError, levels_here  # noqa: E402
from jet.loader import Loader, LoadError, level_brokers  # noqa: E402
from jet.runtime.registry import Registry  # noqa: E402
from jet.tasks import Signalled, run_until_signalled  # noqa: E402
from jet.transport import broker, codec  # noqa: E402
from jet.transport.client import CommandFailed, NoReply, Session  # noqa: E402
from jet.transport.connection import COMMAND_TIMEOUT  # noqa: E402

log = logging.getLogger("jet.cli")


class CliError(Exception):
    """Ends the command with this one-line message."""


def _registry(args: argparse.Namespace) -> Registry:
    return Registry.allowing(getattr(args, "allow", None) or ())


def _app(args: argparse.Namespace) -> AppDef:
    return load_app(args.file)


def _session(args: argparse.Namespace) -> Session:
    return Session(broker.parse(args.broker), timeout=args.timeout)


# -- commands ------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    app = _app(args)
    problems = check_app(app, _registry(args))
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    gadgets = sum(len(c.gadgets) for c in app.circuits)
    wires = len(app.wires) + len(app.foreign) + sum(len(c.wires) for c in app.circuits)
    print(f"{args.file}: ok ({len(app.circuits)} circuits, {gadgets} gadgets, {wires} wires)")
    return 0


@contextlib.asynccontextmanager
async def _loader(args: argparse.Namespace, app: AppDef | None = None) -> AsyncIterator[Loader]:
    """A loader on ``--broker``, or, for an app with levels, on the brokers of its levels
    (``--broker`` is not used then)."""
    async with contextlib.AsyncExitStack() as stack:
        session = None
        levels = {}
        if app is not None and app.levels:
            for level, where in level_brokers(app).items():
                levels[level] = await stack.enter_async_context(
                    Session(where, timeout=args.timeout)
                )
        else:
            session = await stack.enter_async_context(_session(args))
        yield Loader(
            session, _registry(args), pack=args.pack, hub=args.hub, progress=print, levels=levels
        )


async def _with_loader(
    args: argparse.Namespace, action: Callable[[Loader], Any], app: AppDef | None = None
) -> int:
    """Run ``action`` with a loader for ``app`` (:func:`_loader`)."""
    async with _loader(args, app) as loader:
        await action(loader)
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    if args.watch is not None:
        if args.file is not None:
            raise CliError("give a FILE or --watch DIR, not both")
        from jet.watch import DirectoryWatch

        watch = DirectoryWatch(Path(args.watch), lambda app: _loader(args, app), _registry(args),
                               progress=lambda line: print(line, flush=True))

        async def watching() -> int:
            await watch.run()
            return 0

        return run_until_signalled(watching())
    if args.file is None:
        raise CliError("give a circuit FILE to load, or --watch DIR")
    app = _app(args)
    return asyncio.run(_with_loader(args, lambda loader: loader.load(app), app))


def cmd_reload(args: argparse.Namespace) -> int:
    app = _app(args)
    return asyncio.run(_with_loader(args, lambda loader: loader.reload(app), app))


def cmd_unload(args: argparse.Namespace) -> int:
    target: str = args.target
    if target.endswith((".yaml", ".yml")) or Path(target).is_file():
        app = load_app(target)
        return asyncio.run(_with_loader(args, lambda loader: loader.unload_app(app), app))
    return asyncio.run(_with_loader(args, lambda loader: loader.unload_id(target)))


def _print_group(view: GroupView, group: str) -> None:
    """A pack group: its members, then where each circuit's copies run (docs/groups.md)."""
    print(f"\nGROUP {group}  (leader {view.leader(group) or 'none: no live member'})")
    print(f"{'MEMBER':<16} {'HOST':<20} {'STATE':<8} {'SINCE':<19} {'LOAD':>5}  PID")
    for m in view.of_group(group):
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.since)) if m.since else "?"
        print(f"{m.id:<16} {m.host[:20]:<20} {m.state:<8} {since:<19} {m.load:>5}"
              f"  {m.pid if m.pid is not None else '?'}")
    copies = view.copies_in(group)
    if not copies:
        return
    print(f"{'CIRCUIT':<24} {'COPIES':<7} {'APP':<12} WHERE")
    for circuit, found in copies.items():
        wanted = max(c.wanted for c in found)
        live = [c for c in found if view.is_live(c)]
        where = [
            f"{c.member} (in {(c.status.get('rates') or {}).get('in', 0)}/s,"
            f" {(c.status.get('counters') or {}).get('received', 0)} received"
            + (f", adopted from {c.adopted}" if c.adopted else "") + ")"
            for c in live
        ] + [f"{c.member} (gone)" for c in found if c not in live]
        print(f"{circuit:<24} {f'{len(live)}/{wanted}':<7} {found[0].app:<12} {', '.join(where)}")


def cmd_ls(args: argparse.Namespace) -> int:
    async def ls() -> int:
        async with _session(args) as session:
            found = await session.retained(*Statuses.FILTERS, *GroupView.FILTERS)
        known, groups = Statuses.of(found), GroupView.of(found)
        print(f"{'CONTAINER':<24} {'STATE':<8} {'CIRCUITS':>8}  DETAIL")
        for name, container in sorted(known.containers.items()):
            detail = f"pid {container.pid if container.pid is not None else '?'}"
            if container.outbox_dropped:
                detail += f", outbox dropped {container.outbox_dropped}"
            print(f"{name:<24} {container.state:<8} {len(container.circuits):>8}  {detail}")
        print()
        header = f"{'CIRCUIT':<24} {'STATE':<8} {'APP':<12} {'IN/s':>8} {'OUT/s':>8}"
        print(f"{header} {'DROPPED':>8} {'ERRORS':>7}  CONTAINER")
        for name, circuit in sorted(known.circuits.items()):
            status = circuit.status
            print(
                f"{name:<24} {known.state_of(circuit):<8} {status.app:<12}"
                f" {status.rates.get('in', 0):>8} {status.rates.get('out', 0):>8}"
                f" {status.counters.get('dropped', 0):>8} {status.counters.get('errors', 0):>7}"
                f"  {status.container}"
            )
        unread = [
            f"{name}.{port} <- {wire.topic}: {wire.undecodable} messages not read as"
            f" {(wire.payload or {}).get('format', '?')}"
            for name, circuit in sorted(known.circuits.items())
            for port, wires in sorted(circuit.status.inputs.items())
            for wire in wires
            if wire.undecodable
        ]
        if unread:
            print("\nDEVICE MESSAGES NOT READ (the rest of each circuit runs on)")
            for line in unread:
                print(line)
        for group in groups.groups():
            _print_group(groups, group)
        return 0

    return asyncio.run(ls())


async def _resolve_port(
    session: Session, target: str, output: bool
) -> tuple[address.Port, list[str]]:
    """``circuit.gadget.port`` -> the port, named as its circuit names it, and the members
    running its copies when it is a pack group's circuit ([] otherwise).

    Its port names come from the circuit's retained status (its container imported the
    gadget classes), so a user's own gadget module need not be importable here.
    """
    found = await session.retained(*Statuses.FILTERS, *GroupView.FILTERS)
    try:
        return Statuses.of(found).find_port(target, output=output), []
    except address.UnknownPort as exc:
        # A pack group's circuit: its ports from one of its copies' statuses (a tap
        # without `pack` reaches every copy; an inject names one, see cmd_inject).
        copies = GroupView.of(found).live_copies(target.split(".")[0])
        if not copies:
            raise CliError(str(exc)) from None
        copy = Statuses()
        copy.take(address.circuit_status("pack", copies[0].circuit), dict(copies[0].status))
        try:
            return copy.find_port(target, output=output), [c.member for c in copies]
        except address.UnknownPort as inner:
            raise CliError(str(inner)) from None


def _is_topic(target: str) -> bool:
    """A `jet tap` target is a topic filter when it has a level or a wildcard
    (``pack/x/#``, ``#``), else ``circuit.gadget.port``."""
    return any(mark in target for mark in "/+#")


async def _tap_sessions(
    args: argparse.Namespace, stack: contextlib.AsyncExitStack
) -> tuple[Session, Session, str | None, dict[str, broker.Broker]]:
    """Where a tap talks to the circuit, where it listens, and (when it listens at a level
    above the circuit's: ``--app FILE --at LEVEL``) the circuit's level and the brokers of
    the app's levels above it."""
    if args.app is not None and _is_topic(args.target):
        raise CliError("--app taps a circuit.gadget.port of the app, not a topic")
    if args.app is None:
        if args.at is not None:
            raise CliError("--at LEVEL needs --app FILE (the app's file says the levels' brokers)")
        session = await stack.enter_async_context(_session(args))
        return session, session, None, {}
    app = load_app(args.app)
    brokers = level_brokers(app)
    if not brokers:
        raise CliError(f"{args.app}: this app has no levels (tap it with --broker)")
    circuit = app.circuit(args.target.split(".")[0])
    if circuit is None or circuit.level is None:
        raise CliError(f"{args.app}: no circuit {args.target.split('.')[0]!r} in this app")
    at = args.at or circuit.level
    if at not in brokers:
        raise CliError(f"{args.app}: no level {at!r} (levels: {', '.join(brokers)})")
    session = await stack.enter_async_context(Session(brokers[circuit.level], timeout=args.timeout))
    if at == circuit.level:
        return session, session, None, {}
    try:
        above = await levels_here(session)
    except CallError as exc:
        raise CliError(f"level {circuit.level}: {exc}") from None
    if at not in above[1:]:
        raise CliError(f"level {at} is not above level {circuit.level} "
                       f"(its levels: {' -> '.join(above)}): a tap sees what goes up")
    watch = await stack.enter_async_context(Session(brokers[at], timeout=args.timeout))
    return session, watch, circuit.level, {n: b for n, b in brokers.items() if n in above[1:]}


async def _carry_while_tapped(
    stack: contextlib.AsyncExitStack, session: Session, level: str, topic: str,
    above: dict[str, broker.Broker],
) -> None:
    """Have ``level`` carry ``topic`` up while the tap runs.  When it ends, the entry goes
    unless a circuit at a level ``above`` (the app's) is wired to it: so an entry a
    killed tap left is tidied by the next tap of the output, and a wire's is kept."""
    if topic not in await pump.read(session, level):
        await pump.change(session, level, add=[topic])

    async def take_out() -> None:
        with contextlib.suppress(CommandFailed, NoReply, OSError, TimeoutError, ConnectionError):
            async with asyncio.timeout(COMMAND_TIMEOUT * (1 + len(above))):
                carried = address.level_data(level, topic)
                for where in above.values():
                    async with Session(where, name="tap") as there:
                        known = await Statuses.read(there)
                    if any(wire.topic == carried for circuit in known.circuits.values()
                           for wires in circuit.status.inputs.values() for wire in wires):
                        return  # a circuit reads it: the loader's entry, not the tap's
                await pump.change(session, level, remove=[topic])

    stack.push_async_callback(take_out)


def cmd_tap(args: argparse.Namespace) -> int:
    topic_filter = None
    if _is_topic(args.target):
        try:
            topic_filter = address.check(args.target, filter_ok=True)
        except address.TopicError as exc:
            raise CliError(str(exc)) from None

    async def tap() -> int:
        async with contextlib.AsyncExitStack() as stack:
            session, watch, carried, above = await _tap_sessions(args, stack)
            port: address.Port | None = None
            if topic_filter is None:
                port, _members = await _resolve_port(session, args.target, output=True)
                topic = port.topic
            else:
                topic = topic_filter
            if carried is not None:  # seen at a level above: carried up while tapped
                await _carry_while_tapped(stack, session, carried, topic, above)
                topic = address.level_data(carried, topic)
            seen = 0
            done = asyncio.Event()
            broken: list[BrokenPipeError] = []

            def show(msg_topic: str, payload: bytes) -> None:
                nonlocal seen
                if done.is_set():
                    return
                try:
                    value: Any = codec.decode(payload)
                except codec.PayloadError as exc:
                    value = f"<{exc}>"
                try:
                    print(f"{time.strftime('%H:%M:%S')} {msg_topic} {value!r}", flush=True)
                except BrokenPipeError as exc:  # `| head`: whoever read us has gone
                    broken.append(exc)
                    done.set()
                    return
                seen += 1
                if args.count and seen >= args.count:
                    done.set()

            await watch.link.subscribe(topic, 1, show)
            ttl = 30.0
            loop = asyncio.get_running_loop()
            deadline = loop.time() + args.duration if args.duration else None
            while not done.is_set():
                if port is not None and address.rules(port.circuit.kind).runs_graph:
                    # An internal output is published only while tapped; the
                    # lease is renewed so a killed `jet tap` stops costing anything.
                    await session.request(
                        port.conf, {"cmd": "tap", "output": port.name, "ttl": ttl}
                    )
                wait = ttl / 2
                if deadline is not None:
                    wait = min(wait, deadline - loop.time())
                    if wait <= 0:
                        break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):  # (not wait_for: see Replies.request)
                        await done.wait()
            if broken:
                raise broken[0]
            if args.count and seen < args.count:
                raise CliError(f"{topic}: {seen} of {args.count} messages within {args.duration}s")
        return 0

    return asyncio.run(tap())


def cmd_inject(args: argparse.Namespace) -> int:
    # Read as circuit files are (YAML 1.2 core): `on` stays text, 0777 is 777.
    try:
        value = load_value(args.value)
    except CircuitFileError as exc:
        raise CliError(f"value {_shown(args.value)}: {exc.message}") from None
    try:
        size = len(codec.encode(value))
    except codec.PayloadError as exc:
        raise CliError(f"value {_shown(args.value)} cannot be sent: {exc}") from None
    if size > codec.MAX_PAYLOAD:  # (YAML aliases can make a short argument large)
        raise CliError(f"value of {size} bytes is larger than containers take"
                       f" ({codec.MAX_PAYLOAD})")

    async def inject() -> int:
        async with _session(args) as session:
            port, members = await _resolve_port(session, args.target, output=False)
            command = {"cmd": "inject", "input": port.name, "value": value}
            if members:  # a pack group's circuit: into one copy, as a message on a wire
                command["pack"] = members[0]
            await session.request(port.conf, command)
        print(f"injected {value!r} into {args.target}")
        return 0

    return asyncio.run(inject())


def _shown(text: str, limit: int = 60) -> str:
    """A user's argument in an error line: quoted, one line, bounded."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def cmd_graph(args: argparse.Namespace) -> int:
    from jet.definition.graph import draw_app

    app = _app(args)
    try:
        draw_app(app, Path(args.output))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(f"wrote {args.output}")
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from jet.containers.pack import Pack

    async def serve() -> int:
        state = Path(args.state) if args.state else None
        if args.partition and not args.group:
            raise CliError("--partition splits a group's inputs: it needs --group")
        try:
            pack = Pack(
                broker.parse(args.broker), args.id, registry=_registry(args), state_file=state,
                keepalive=args.keepalive, stuck_limit=args.stuck_limit, group=args.group,
                partition=args.partition,
            )
        except ValueError as exc:  # an id or group that cannot be a topic level
            raise CliError(str(exc)) from None
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(pack)
            if args.group:
                from jet.cluster import GroupMember

                await stack.enter_async_context(GroupMember(pack))
            group = f" in group {args.group}" if args.group else ""
            if args.group and args.partition:
                group += " (partition)"
            print(f"pack {args.id}{group} on {pack.link.broker.url}", flush=True)
            await pack.serve_forever()
        return 0

    return run_until_signalled(serve())


def cmd_run(args: argparse.Namespace) -> int:
    from jet.levels.cli import is_levels_file, run_tree
    from jet.runner import app_on_levels, run

    if is_levels_file(args.file):  # a tree of levels (and maybe an app on it)
        return run_tree(args, lambda app, urls: app_on_levels(
            app, urls, registry=_registry(args), timeout=args.timeout,
            progress=lambda line: print(line, flush=True)))
    app = _app(args)
    if app.levels:
        raise CliError(f"{args.file}: an app with levels runs on its levels' brokers:"
                       " start them, then `jet load` it (docs/levels.md)")
    problems = check_app(app, _registry(args))
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1
    run_until_signalled(
        run(
            app,
            duration=args.duration,
            broker_url=args.broker,
            registry=_registry(args),
            simulate=args.simulate,
            flavour=args.embedded,
            web=args.web,
            web_port=args.web_port,
            timeout=args.timeout,
            progress=lambda line: print(line, flush=True),
        )
    )
    return 0


# -- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jet", description="JET dataflow circuits over MQTT",
        epilog="Broker URLs (--broker, $JET_BROKER): mqtt://[user[:password]@]host[:port],"
        " mqtts:// for TLS (?ca=...&cert=...&key=...); a clustered broker's servers with"
        " commas, mqtt://host1:1883,host2:1883,host3:1883: a client connects to one and moves"
        " to the next when it fails (docs/deploy.md).",
    )
    parser.add_argument("--version", action="version", version=f"jet {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less log output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str,
        func: Callable[[argparse.Namespace], int],
        help_: str,
        net: bool = True,
        allow: bool = False,
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        if net:
            p.add_argument(
                "--broker", help=broker.URL_HELP
            )
            p.add_argument("--timeout", type=float, default=5.0, help="reply timeout, seconds")
        if allow:
            p.add_argument(
                "--allow",
                action="append",
                metavar="MODULE",
                help="also allow gadget types from this module (repeatable)",
            )
        return p

    p = command(
        "run", cmd_run, "run an app with an embedded broker (demo, development)", allow=True
    )
    p.add_argument("file")
    p.add_argument("--for", dest="duration", type=float, help="stop after this many seconds")
    p.add_argument("--simulate", action="store_true", help="run node circuits on simulated radios")
    p.add_argument(
        "--embedded",
        choices=["auto", "mosquitto", "amqtt"],
        default="auto",
        help="embedded broker when --broker is not given",
    )
    p.add_argument(
        "--web", action="store_true", help="start the web page even without web circuits"
    )
    p.add_argument(
        "--web-port", type=int, default=0, help="web page port (default: a free one, printed)"
    )
    p = command(
        "check", cmd_check, "validate a circuit file without a broker", net=False, allow=True
    )
    p.add_argument("file")
    for name, func, help_ in (
        ("load", cmd_load, "load an app's circuits into running containers"),
        ("reload", cmd_reload, "replace an app's circuits, keeping wires that stay"),
    ):
        p = command(name, func, help_, allow=True)
        p.add_argument("file", nargs="?" if name == "load" else None)
        p.add_argument("--pack", default="default", help="pack for circuits that name none")
        p.add_argument("--hub", default="hub", help="hub driver for node circuits")
        if name == "load":
            p.add_argument("--watch", metavar="DIR", help="keep the apps of a directory of"
                           " circuit files live: new files loaded, changed ones reloaded,"
                           " deleted ones unloaded (runs until stopped)")
    p = command("unload", cmd_unload, "unload a circuit by id, or every circuit of an app file")
    p.add_argument("target", metavar="ID|FILE")
    p.add_argument("--pack", default="default")
    p.add_argument("--hub", default="hub")
    command("ls", cmd_ls, "list containers and circuits with status and message rates")
    p = command("tap", cmd_tap, "print the messages on a topic or circuit.gadget.port")
    p.add_argument("target", metavar="TOPIC|circuit.gadget.port")
    p.add_argument("-n", "--count", type=int, default=0, help="exit after N messages")
    p.add_argument("--for", dest="duration", type=float, help="exit after this many seconds")
    p.add_argument("--app", metavar="FILE", help="an app with levels: tap its circuit on its"
                   " level's broker (the file says where; --broker is not used)")
    p.add_argument("--at", metavar="LEVEL", help="with --app: watch from this level above the"
                   " circuit's (the output is carried up while tapped)")
    p = command("inject", cmd_inject, "send a value into an input")
    p.add_argument("target", metavar="circuit.gadget.port")
    p.add_argument("value", help="a YAML/JSON value: 42, true, '\"text\"', [1, 2]")
    p = command("graph", cmd_graph, "draw an app's circuit graph (SVG or PNG)", net=False)
    p.add_argument("file")
    p.add_argument("-o", "--output", required=True, help="out.svg or out.png")
    p = command("pack", cmd_pack, "run a pack container daemon", allow=True)
    p.add_argument("--id", default="default", help="pack id (topics jet/pack/<id>/...)")
    p.add_argument("--state", help="file where loaded circuits persist across restarts")
    p.add_argument("--group", metavar="G", help="join pack group G: runs copies of the"
                   " group's circuits, and takes over a gone member's (docs/groups.md)")
    p.add_argument("--partition", action="store_true",
                   help="with --group, on a broker without shared subscriptions (NATS): the"
                   " copies subscribe plainly and split the messages by a rule over the live"
                   " copies (docs/groups.md)")
    p.add_argument("--keepalive", type=int, default=10,
                   help="MQTT keepalive, seconds: a dead pack is reported offline by its"
                   " will within 1.5 times this")
    p.add_argument("--stuck-limit", type=float, default=60.0, metavar="SECONDS",
                   help="how long a gadget may hold the pack (a slow handler) while the pack"
                   " keeps its MQTT connection alive; past it the pack is let go offline"
                   " (default 60)")
    from jet.devices.cli import add_device_parsers
    from jet.levels.cli import add_level_parsers
    from jet.web.cli import add_web_parser

    add_web_parser(sub)
    add_level_parsers(sub)
    add_device_parsers(sub)
    with contextlib.suppress(ImportError):
        from jet_rf12.cli import add_hub_parser, add_node_sim_parser

        add_hub_parser(sub)
        add_node_sim_parser(sub)
    # -v and -q after the command too (`jet pack -v`), counted with those before it.
    for p in sub.choices.values():
        p.add_argument("-v", "--verbose", dest="sub_verbose", action="count",
                       default=argparse.SUPPRESS, help="more log output")
        p.add_argument("-q", "--quiet", dest="sub_quiet", action="count",
                       default=argparse.SUPPRESS, help="less log output")
    return parser


#: Commands that run until stopped: they log what they do (INFO) unless told -q.
DAEMONS = frozenset({"run", "pack", "web", "hub", "node-sim", "level", "devices",
                     "device-sim"})
#: Libraries whose INFO lines repeat ours or are per-connection chatter: they
#: stay at warnings unless asked for with -vv.
QUIET_LIBRARIES = ("aiohttp", "amqtt", "transitions", "asyncio")


def _setup_logging(args: argparse.Namespace) -> None:
    """Daemons log at INFO (their own lines, and a gadget module's, Logger gadgets
    included), other commands at WARNING; each -v is one level more, each -q one less."""
    verbosity = args.verbose + getattr(args, "sub_verbose", 0)
    verbosity -= args.quiet + getattr(args, "sub_quiet", 0)
    base = logging.INFO if args.command in DAEMONS else logging.WARNING
    level = max(logging.DEBUG, min(logging.CRITICAL, base - 10 * verbosity))
    logging.basicConfig(
        level=level, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    if verbosity < 2:  # -vv and more: everything, libraries included
        for name in QUIET_LIBRARIES:
            logging.getLogger(name).setLevel(max(level, logging.WARNING))
        # paho's own connection errors repeat what our one-line message says
        logging.getLogger("jet.mqtt.paho").setLevel(logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    if signal.getsignal(signal.SIGINT) is _interrupted_while_loading:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # KeyboardInterrupt again
    # A gadget module in the current directory imports like under `python -m`
    # (appended: it cannot shadow jet or the standard library).
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    args = build_parser().parse_args(argv)
    _setup_logging(args)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130  # Ctrl-C: the shell's code for SIGINT, and nothing more to say
    except Signalled as stopped:  # a clean stop, as asked: nothing to say
        return stopped.exit_code
    except BrokenPipeError:
        # `jet tap | head`: the reader has gone.  Nothing is left to say, and
        # stdout is pointed at /dev/null so the exit flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # what a shell reports for a command ended by SIGPIPE
    except (
        CliError,
        CircuitFileError,
        ConfigError,
        LoadError,
        CommandFailed,
        NoReply,
        ConnectionError,
        broker.BrokerUrlError,
        OSError,
    ) as exc:
        print(f"jet {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
