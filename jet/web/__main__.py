"""``python -m jet.web [options]``: the same as ``jet web [options]``."""

from __future__ import annotations

import argparse
import logging
import sys

from jet.tasks import Signalled
from jet.transport import broker
from jet.web.cli import add_web_parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jet.web")
    add_web_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["web", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except Signalled as stopped:
        return stopped.exit_code
    except (ConnectionError, broker.BrokerUrlError, OSError) as exc:
        print(f"jet web: error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
