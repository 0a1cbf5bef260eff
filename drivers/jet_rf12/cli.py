"""``jet hub`` and ``jet node-sim``: argparse subcommands for the jet CLI.

``jet/cli.py`` calls :func:`add_hub_parser` and :func:`add_node_sim_parser`
with its subparsers; each sets ``func`` to a callable taking the parsed
Namespace and returning an exit code.  ``python -m jet_rf12.cli`` runs the
two on their own.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any

from jet.tasks import Signalled, run_until_signalled
from jet.transport.broker import BrokerUrlError, parse
from jet_rf12.dongle import DEFAULT_GROUP, parse_port
from jet_rf12.hub import DEFAULT_HUB_ID, STATUS_INTERVAL, Hub
from jet_rf12.sim import NodeSim
from jet_rf12.sim_nodes import SimConfigError, SimNode, default_nodes, nodes_from_yaml
from jet_rf12.uid import UidTableError, load_uid_map

Subparsers = Any  # argparse's _SubParsersAction is private


def _group(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"group must be 0..255, got {value}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def add_hub_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "hub",
        help="hub driver daemon: RF12 radio nodes behind JeeLink dongles <-> MQTT",
        description="Read RF12demo dongles, publish node outputs on node/<uid>/<gadget>/<n>, "
        "answer jet/node/<id>/conf and node/<uid>/conf.  See docs/nodes.md.",
    )
    p.add_argument("--port", action="append", required=True, metavar="DEVICE[@GROUP]",
                   help="serial device (or pyserial URL) of a dongle, e.g. /dev/ttyUSB0; "
                   "repeat for several dongles; @GROUP gives that dongle's RF12 group")
    p.add_argument("--broker", metavar="URL", default=None,
                   help="mqtt://[user[:password]@]host[:port] or mqtts://... "
                   "(default $JET_BROKER or mqtt://127.0.0.1:1883)")
    p.add_argument("--id", dest="hub_id", default=DEFAULT_HUB_ID, metavar="HUB_ID",
                   help=f"container id: jet/node/<HUB_ID> (default {DEFAULT_HUB_ID})")
    p.add_argument("--group", type=_group, default=DEFAULT_GROUP,
                   help=f"RF12 group of ports given without @GROUP (default {DEFAULT_GROUP})")
    p.add_argument("--state", metavar="FILE", default=None,
                   help="keep loaded node circuits and their wires in FILE across restarts")
    p.add_argument("--uid-table", metavar="FILE", default=None,
                   help="YAML/JSON list of {group, node, uid} overriding "
                   "node_uid = group*100 + node id")
    p.add_argument("--status-interval", type=_positive, default=STATUS_INTERVAL,
                   metavar="SECONDS",
                   help=f"republish changed counters this often (default {STATUS_INTERVAL})")
    p.add_argument("--drop-unknown", action="store_true",
                   help="do not publish packets from nodes with no loaded circuit "
                   "(they are counted either way)")
    p.set_defaults(func=run_hub)
    return p


def add_node_sim_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "node-sim",
        help="simulated JeeLink (RF12demo) on a pseudo-terminal, with simulated nodes",
        description="Open a pty that speaks RF12demo like a JeeLink and run simulated nodes "
        "behind it (default: the boiler as node 5).  Point `jet hub --port` at it.",
    )
    p.add_argument("--nodes", metavar="FILE", default=None,
                   help="YAML file declaring the simulated nodes (default: the boiler, node 5)")
    p.add_argument("--link", metavar="PATH", default=None,
                   help="create PATH as a symlink to the pty (stable name for `jet hub --port`)")
    p.add_argument("--speed", type=_positive, default=1.0,
                   help="simulated seconds per real second in the node models (default 1)")
    p.add_argument("--group", type=_group, default=None,
                   help=f"RF12 group the simulated dongle reports (default: the nodes file's, "
                   f"else {DEFAULT_GROUP})")
    p.add_argument("--interval", type=_positive, default=None, metavar="SECONDS",
                   help="report interval of every node (default: per node, 1 s)")
    p.add_argument("--hex", type=int, choices=(0, 1, 2), default=0,
                   help="RF12demo's output format, as set by its `x` command: 0 decimal "
                   "(default), 1 hex, 2 hex and characters")
    p.add_argument("--rf69", action="store_true",
                   help="print what an RF69 build prints: the RSSI after every packet")
    p.add_argument("--rssi", type=int, default=-60, metavar="DBM",
                   help="the RSSI an --rf69 dongle reports (default -60)")
    p.add_argument("--radio-delay", type=_positive, default=None, metavar="SECONDS",
                   help="time a send takes on air before RF12demo confirms it (default: "
                   "the packet's bytes at the RF12's 49.2 kbit/s, a few ms)")
    p.set_defaults(func=run_node_sim)
    return p


def _setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_hub(args: argparse.Namespace) -> int:
    _setup_logging()
    try:
        broker = parse(args.broker)
        ports = [parse_port(p, args.group) for p in args.port]
        uids = load_uid_map(args.uid_table) if args.uid_table else None
    except (BrokerUrlError, UidTableError, ValueError) as exc:
        print(f"jet hub: {exc}", file=sys.stderr)
        return 2

    async def main() -> None:
        async with Hub(broker, ports, hub_id=args.hub_id, group=args.group, uid_table=uids,
                       state_file=args.state, status_interval=args.status_interval,
                       publish_unknown=not args.drop_unknown) as hub:
            print(f"hub jet/node/{hub.hub_id} on {broker.url}: "
                  + ", ".join(f"{p.device} (group {p.group})" for p in ports), flush=True)
            await asyncio.Event().wait()  # until run_until_signalled stops it

    try:
        run_until_signalled(main())
    except ConnectionError as exc:
        print(f"jet hub: {exc}", file=sys.stderr)
        return 1
    except Signalled as stopped:  # SIGTERM, SIGHUP or Ctrl-C: a clean stop
        return stopped.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


def run_node_sim(args: argparse.Namespace) -> int:
    _setup_logging()
    group = args.group
    nodes: Sequence[SimNode]
    if args.nodes:
        try:
            config = nodes_from_yaml(args.nodes)
        except SimConfigError as exc:
            print(f"jet node-sim: {exc}", file=sys.stderr)
            return 2
        nodes = config.nodes
        group = group if group is not None else config.group
    else:
        nodes = default_nodes()
    if args.interval is not None:
        for node in nodes:
            node.interval = args.interval

    async def main() -> None:
        async with NodeSim(nodes, link=args.link, group=group or DEFAULT_GROUP,
                           speed=args.speed, hex_output=args.hex, rf69=args.rf69,
                           rssi=args.rssi, radio_delay=args.radio_delay) as sim:
            where = sim.slave_path + (f" (link {sim.link})" if sim.link else "")
            print(f"RF12demo simulator on {where}: nodes "
                  + ", ".join(f"{n.node_id} ({type(n).__name__})" for n in nodes), flush=True)
            await asyncio.Event().wait()  # until run_until_signalled stops it

    try:
        run_until_signalled(main())
    except OSError as exc:
        print(f"jet node-sim: {exc}", file=sys.stderr)
        return 1
    except Signalled as stopped:  # SIGTERM, SIGHUP or Ctrl-C: a clean stop
        return stopped.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jet_rf12.cli hub|node-sim ...`` (the same as ``jet hub|node-sim``)."""
    parser = argparse.ArgumentParser(prog="python -m jet_rf12.cli")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_hub_parser(subparsers)
    add_node_sim_parser(subparsers)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
