"""`jet level` for the bench, offering ``echo`` (run as a script: ``levelfuncs.py level ...``)."""

from __future__ import annotations

import sys
from typing import Any

from jet.levels import level_function


@level_function
def echo(value: Any) -> Any:
    return value


if __name__ == "__main__":
    from jet.cli import main

    sys.exit(main([*sys.argv[1:], "--functions", "benchlib.levelfuncs"]))
