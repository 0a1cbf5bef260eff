"""`jet devices serve|ls|show` and `jet device-sim` (docs/devices.md)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from jet.devices.classes import (
    Command,
    DeviceClass,
    from_record,
    load_classes,
    plain_command,
)
from jet.devices.config import ConfigError, RegistryConfig, Source, load_config
from jet.devices.layouts import command_topic, confirmation_topic
from jet.devices.pnp import PlugAndProcess
from jet.devices.registry import SILENCE, RegistryServer
from jet.devices.sim import SiteDevices
from jet.devices.store import Store, open_store
from jet.tasks import run_until_signalled
from jet.transport import Link, broker
from jet.transport.client import Session
from jet.transport.formats import FormatError

DEFAULT_DB = "jet-devices.sqlite"


def _store(args: argparse.Namespace, *, must_exist: bool) -> Store:
    return open_store(args.db, must_exist=must_exist)


def _serving(args: argparse.Namespace) -> RegistryConfig:
    """What ``serve`` is to do: its ``--config`` file's, with the options given on the
    command line over it (a ConfigError names file:line)."""
    if args.config:
        if args.broker:
            raise ConfigError(f"{args.config}: --broker is not used with --config (its"
                              " brokers: are)")
        config = load_config(args.config)
    else:
        config = RegistryConfig(sources=(Source(broker.parse(args.broker)),))
    given = {k: getattr(args, k) for k in ("name", "group", "classes", "silence")
             if getattr(args, k) is not None}
    if args.db is not None:
        given["db"] = args.db
    if args.partition:
        given["partition"] = True
    return attrs.evolve(config, **given)


def cmd_serve(args: argparse.Namespace) -> int:
    config = _serving(args)
    classes: dict[str, DeviceClass] = {}
    if config.classes:
        classes, errors = load_classes(Path(config.classes))
        for error in errors:  # (refused; the valid ones are used)
            print(f"jet devices serve: {error} (refused)", file=sys.stderr, flush=True)
    db = config.db or DEFAULT_DB
    store = open_store(db)

    async def serve() -> int:
        async with contextlib.AsyncExitStack() as stack:
            pnp = None
            if config.classes:  # (a template may come with a class file saved later)
                session = await stack.enter_async_context(
                    Session(config.sources[0].broker, name="devices"))
                pnp = await stack.enter_async_context(PlugAndProcess(session, classes, store))
            server = await stack.enter_async_context(RegistryServer(
                config.sources, store, name=config.name or "",
                silence=config.silence or SILENCE, layouts=config.layouts,
                group=config.group or "", classes=classes, pnp=pnp,
                class_dir=Path(config.classes) if config.classes else None,
                keepalive=config.keepalive, partition=config.partition))
            where = ", ".join(source.broker.url for source in config.sources)
            print(f"device registry {server.name} on {where}, database {store.where}"
                  + (f", {len(classes)} classes" if classes else "")
                  + (f", group {config.group}" if config.group else "")
                  + (" (partition)" if config.group and config.partition else ""), flush=True)
            await server.serve_forever()
        return 0

    try:
        return run_until_signalled(serve())
    finally:
        store.close()


def _age(stamp: float, now: float) -> str:
    seconds = max(0.0, now - stamp)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.0f}h ago"


def cmd_ls(args: argparse.Namespace) -> int:
    store = _store(args, must_exist=True)
    try:
        devices = store.devices(zone=args.zone, device_class=getattr(args, "class"))
    finally:
        store.close()
    if args.json:
        print(json.dumps(devices, default=str))
        return 0
    now = time.time()
    print(f"{'DEVICE':<32} {'CLASS':<12} {'ZONE':<10} {'STATE':<8} {'LAST SEEN':<10}"
          f" {'TODAY':>9}  FOCUS")
    for d in devices:
        today = d["today"]
        print(f"{d['uid']:<32} {d['class']:<12} {d['zone'] or '-':<10}"
              f" {'online' if d['online'] else 'offline':<8} {_age(d['last_seen'], now):<10}"
              f" {today['attempts']:>5}/{today['failures']:<3}  {d['focus']}")
    return 0


def cmd_zones(args: argparse.Namespace) -> int:
    """The zones and the devices in each (how many, how many online)."""
    store = _store(args, must_exist=True)
    try:
        devices = store.devices()
    finally:
        store.close()
    zones: dict[str, dict[str, Any]] = {}
    for device in devices:
        zone = zones.setdefault(device["zone"] or "", {"devices": [], "online": 0})
        zone["devices"].append(device["uid"])
        zone["online"] += 1 if device["online"] else 0
    if args.json:
        print(json.dumps([{"zone": name, **zone} for name, zone in sorted(zones.items())]))
        return 0
    print(f"{'ZONE':<16} {'DEVICES':>7} {'ONLINE':>6}")
    for name, zone in sorted(zones.items()):
        print(f"{name or '-':<16} {len(zone['devices']):>7} {zone['online']:>6}")
    return 0


def cmd_fellows(args: argparse.Namespace) -> int:
    """The registry servers that keep this inventory, and their latest presence."""
    store = _store(args, must_exist=True)
    try:
        fellows = store.fellows()
    finally:
        store.close()
    if args.json:
        print(json.dumps(fellows))
        return 0
    now = time.time()
    print(f"{'SERVER':<20} {'HOST':<20} {'STATE':<8} {'LAST ACTIVE':<12} ROLE")
    for f in fellows:
        print(f"{f['id']:<20} {f['host']:<20} {'active' if f['active'] else 'gone':<8}"
              f" {_age(f['last_active'], now):<12} {f['role']}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    store = _store(args, must_exist=True)
    try:
        device = store.device(args.uid)
    finally:
        store.close()
    if device is None:
        print(f"jet devices show: error: no device {args.uid!r} in {store.where}",
              file=sys.stderr)
        return 1
    print(json.dumps(device, indent=2, default=str))
    return 0


#: Seconds `jet devices send` waits for a confirmation when neither --window nor the
#: device's class says.
WINDOW = 5.0


def _class_of(store: Store, device: Mapping[str, Any]) -> DeviceClass | None:
    """The device's class as the registry last applied it (its latest version in
    ``configs``), or None."""
    record = store.latest_config(str(device["class"]))
    if record is None:
        return None
    return from_record(str(record["type"]), str(record["data"]),
                       f"class {record['name']} version {record['version']}")


def cmd_send(args: argparse.Namespace) -> int:
    """Publish a command to a registered device; wait for its confirmation within the
    window (--window, else its class's for the post type, else 5 s); record the use (a
    failure when none came).  Exit 1 on a failure or a refusal."""
    store = _store(args, must_exist=True)
    try:
        device = store.device(args.uid)
        if device is None:
            print(f"jet devices send: error: no device {args.uid!r} in {store.where}",
                  file=sys.stderr)
            return 1
        try:
            topic = command_topic(device, args.post_type)
            device_class = _class_of(store, device)
            command = (device_class.command(args.post_type, args.value)
                       if device_class is not None
                       else plain_command(args.post_type, args.value))
            payload = command.payload
        except (ValueError, FormatError) as exc:  # (ClassError is a ValueError)
            print(f"jet devices send: error: {args.uid}: {exc} (refused)", file=sys.stderr)
            return 1
        window = args.window if args.window is not None else command.window or WINDOW
        confirmed = asyncio.run(_send(broker.parse(args.broker), topic, payload,
                                      confirmation_topic(device, command.confirm.name),
                                      command, window))
        store.use(args.uid, f"{args.post_type} {args.value}", time.time(),
                  failed=not confirmed)
    finally:
        store.close()
    if not confirmed:
        print(f"jet devices send: error: {args.uid} did not confirm {args.post_type}"
              f" {args.value} within {window:g} s (counted as a failure)", file=sys.stderr)
        return 1
    print(f"{args.uid}: {args.post_type} {args.value} confirmed")
    return 0


async def _send(where: broker.Broker, topic: str, payload: bytes, confirmation: str,
                command: Command, window: float) -> bool:
    done = asyncio.Event()

    def on_confirmation(_topic: str, message: bytes) -> None:
        if command.confirms(message):
            done.set()

    async with Link(where, f"jet-devices-send-{os.getpid()}", clean_session=True) as link:
        # (retained=False: the value it said before the command is no confirmation)
        await link.subscribe(confirmation, 1, on_confirmation, retained=False)
        await link.publish(topic, payload, qos=1)
        try:
            async with asyncio.timeout(window):
                await done.wait()
        except TimeoutError:
            return False
    return True


def cmd_device_sim(args: argparse.Namespace) -> int:
    where = broker.parse(args.broker)

    async def simulate() -> int:
        async with SiteDevices(where, args.count, host=args.host, zones=args.zones,
                               period=args.period, leave_every=args.leave_every,
                               join_rate=args.join_rate, layout=args.layout) as sim:
            print(f"{args.count} simulated {args.layout} devices of {args.host} on"
                  f" {where.url}" + (f", joining {args.join_rate:g}/s" if args.join_rate
                                     else ""), flush=True)
            if args.duration is not None:
                await asyncio.sleep(args.duration)
            else:
                await sim.run_forever()
        return 0

    return run_until_signalled(simulate())


def add_device_parsers(subparsers: Any) -> None:
    """Add ``devices`` (serve, ls, show) and ``device-sim``."""
    top = subparsers.add_parser("devices", help="the device registry: discovery, inventory",
                                description="the device registry: discovery, inventory")
    sub = top.add_subparsers(dest="devices_command", required=True)

    def command(name: str, func: Any, help_: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        p.add_argument("--db", default=None if name == "serve" else DEFAULT_DB,
                       help=f"the registry: a SQLite file (default ./{DEFAULT_DB}) or a"
                       " PostgreSQL URL (postgresql://user@host:port/dbname), which servers"
                       " on several machines can share")
        return p

    p = command("serve", cmd_serve, "discover the devices on a broker and keep them in the"
                " registry")
    p.add_argument("--broker", help=broker.URL_HELP)
    p.add_argument("--config", metavar="FILE", help="a YAML file: brokers (TLS, users,"
                   " certificates), topics, layouts of one's own, and the options below"
                   " (docs/devices.md); options given here win")
    p.add_argument("--name", help="this server's name (default host-pid); its persistent"
                   " session on the broker is jet-devices-NAME")
    p.add_argument("--classes", metavar="DIR", help="device classes (YAML or XML files):"
                   " silence limits, post types (formats, commands, confirmation windows),"
                   " circuit templates run for each device (plug-n-process)")
    p.add_argument("--group", help="share the work with the other servers of this group on"
                   " the broker (shared subscriptions): each message is handled by one")
    p.add_argument("--partition", action="store_true",
                   help="with --group, on a broker without shared subscriptions (NATS): each"
                   " server gets every message and handles the devices that fall to it")
    p.add_argument("--silence", type=float, default=None,
                   help=f"seconds without a message before a device is offline ({SILENCE:g})")
    p = command("ls", cmd_ls, "list the devices of the registry")
    p.add_argument("--zone", help="only this zone's")
    p.add_argument("--class", help="only this class's")
    p.add_argument("--json", action="store_true", help="one JSON list")
    p = command("zones", cmd_zones, "the zones and the devices in each")
    p.add_argument("--json", action="store_true", help="one JSON list")
    p = command("fellows", cmd_fellows, "the registry servers keeping this inventory")
    p.add_argument("--json", action="store_true", help="one JSON list")
    p = command("show", cmd_show, "one device: its fields, latest data, uses, statistics")
    p.add_argument("uid")
    p = command("send", cmd_send, "send a device a command and wait for its confirmation")
    p.add_argument("uid")
    p.add_argument("post_type", help="what to set (site layout: .../set/POST_TYPE; Homie:"
                   " NODE/PROPERTY)")
    p.add_argument("value", help="the value, as the device takes it (JSON or text)")
    p.add_argument("--broker", help=broker.URL_HELP)
    p.add_argument("--window", type=float,
                   help="seconds to wait for the device to confirm (default: its class's"
                   f" window for the post type, else {WINDOW:g})")
    p = subparsers.add_parser("device-sim", help="simulated devices in the site layout",
                              description="simulated devices publishing in the site layout"
                              " <host>/<zone>/<type>/<id>/<post_type> (or Homie 4), with"
                              " wills, joining and leaving at a chosen rate")
    p.set_defaults(func=cmd_device_sim)
    p.add_argument("--broker", help=broker.URL_HELP)
    p.add_argument("--count", type=int, default=10, help="how many devices (default 10)")
    p.add_argument("--host", default="sim", help="their host level (default sim)")
    p.add_argument("--zones", type=int, default=3, help="zones they are spread over")
    p.add_argument("--period", type=float, default=5.0,
                   help="seconds between two readings of a device (default 5)")
    p.add_argument("--leave-every", type=float, default=0.0,
                   help="seconds between a device leaving (its will) and coming back (0: never)")
    p.add_argument("--join-rate", type=float, default=0.0,
                   help="devices joining per second (default 0: all at once)")
    p.add_argument("--layout", choices=SiteDevices.LAYOUTS, default="site",
                   help="site (default): <host>/<zone>/<type>/<id>/...; homie: Homie 4")
    p.add_argument("--for", dest="duration", type=float, help="stop after this many seconds")
