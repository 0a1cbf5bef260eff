"""`jet web`: the web container daemon and its page server."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from jet import address
from jet.tasks import run_until_signalled
from jet.transport import broker

__all__ = ["DEFAULT_PORT", "add_web_parser", "cmd_web"]

DEFAULT_PORT = 8080


def cmd_web(args: argparse.Namespace) -> int:
    """Serve until stopped (Ctrl-C, SIGTERM, SIGHUP: :class:`~jet.tasks.Signalled`);
    errors (bad URL, port in use) raise for the caller to print."""
    from jet.web.devices import shown_store
    from jet.web.server import serving

    if not address.NAME_RE.match(args.id):
        print(f"jet web: error: id {args.id!r} must match [a-z0-9_-]+", file=sys.stderr)
        return 2
    shown = broker.parse(args.broker).url  # a bad URL fails here, before anything starts

    async def serve() -> int:
        async with serving(
            args.broker, host=args.host, port=args.port, server_id=args.id,
            operator_view=args.operator, devices=args.devices,
        ) as url:
            view = "operator view on: pages may inject" if args.operator else "panels only"
            if args.devices:
                view += f"; devices of {shown_store(args.devices)}"
            print(f"web {args.id} on {url} (broker {shown}; {view})", flush=True)
            await asyncio.Event().wait()
        return 0

    return run_until_signalled(serve())


def add_web_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``web`` to an argparse subparsers object (from ``add_subparsers``)."""
    help_ = "run the web container: web circuits and the operator view in a browser page"
    p: argparse.ArgumentParser = subparsers.add_parser("web", help=help_, description=help_)
    p.set_defaults(func=cmd_web)
    p.add_argument(
        "--broker", help=broker.URL_HELP
    )
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"HTTP port (default {DEFAULT_PORT})"
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    p.add_argument("--id", default="web", help="web container id (topics jet/web/<id>/...)")
    p.add_argument(
        "--operator",
        action="store_true",
        help="let pages inject values into any circuit's input (default: a page only sets"
        " its own sliders, switches and buttons, within their ranges)",
    )
    p.add_argument(
        "--devices",
        metavar="DB_OR_URL",
        help="show the device registry of `jet devices serve --db DB_OR_URL` in the"
        " Devices tab (its SQLite file)",
    )
    return p
