"""Level functions: Python functions a level offers to the levels below it.

    # fogfuncs.py, started with `jet level fog-north ... --functions fogfuncs`
    from jet.levels import level_function

    @level_function
    def average(values: list[float]) -> float:
        return sum(values) / len(values)

    @level_function(name="forecast")
    async def weather(hours: int = 3) -> dict: ...

A caller (``jet call``, :func:`jet.levels.call`) talks only to its own level's
broker; the level daemons carry the request up to the level asked and the
reply back down (:mod:`jet.levels.daemon`).  From the function's side a call
is a call: it gets the arguments (a list, or a map of keyword arguments) and
returns a value msgpack can carry, or raises (the caller gets the error's
one-line text).  A sync function runs in a worker thread, so a slow one does
not stop the daemon; every call is bounded by its caller's deadline.

Only modules named with ``--functions`` are imported (like the pack's allow
list): nothing on a level runs that its operator did not name.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

from jet import address

F = TypeVar("F", bound=Callable[..., Any])

#: Every function decorated so far, by name (the modules a level imports fill it).
REGISTRY: dict[str, Callable[..., Any]] = {}


class FunctionsError(ValueError):
    """A ``--functions`` module that cannot be used."""


@overload
def level_function(fn: F) -> F: ...
@overload
def level_function(*, name: str | None = None) -> Callable[[F], F]: ...


def level_function(fn: Any = None, *, name: str | None = None) -> Any:
    """Offer ``fn`` (sync or async) as a level function, under its name or ``name``."""

    def register(f: F) -> F:
        called = name or f.__name__
        if not address.NAME_RE.match(called.replace(".", "_")):
            raise ValueError(f"level function name {called!r}: use [a-z0-9_-]")
        REGISTRY[called] = f
        return f

    return register(fn) if fn is not None else register


def import_functions(modules: list[str]) -> dict[str, Callable[..., Any]]:
    """Import the named modules; the functions they offer, by name."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # an operator's module: any error is theirs, in one line
            raise FunctionsError(f"--functions {module}: cannot import: "
                                 f"{type(exc).__name__}: {exc}") from None
    return {fn_name: fn for fn_name, fn in REGISTRY.items() if fn.__module__ in modules}


#: Sync functions running at once, at most: each in a thread of its own, so one that
#: never returns holds only its thread (never the daemon, nor its exit).
MAX_THREADS = 16
_threads = threading.BoundedSemaphore(MAX_THREADS)


class Busy(RuntimeError):
    """Every thread for sync functions is taken (some never return)."""


async def invoke(fn: Callable[..., Any], args: Any, timeout: float) -> Any:
    """Call ``fn`` with ``args`` (a list: positional; a map: keywords; else one
    argument), awaited if async, in a thread if not; bounded by ``timeout``."""
    if isinstance(args, list):
        pos, kw = args, {}
    elif isinstance(args, Mapping):
        pos, kw = [], {str(k): v for k, v in args.items()}
    else:
        pos, kw = ([] if args is None else [args]), {}
    async with asyncio.timeout(timeout):
        if inspect.iscoroutinefunction(fn):
            return await fn(*pos, **kw)
        return await _in_thread(fn, pos, kw)


async def _in_thread(fn: Callable[..., Any], pos: list[Any], kw: dict[str, Any]) -> Any:
    # A daemon thread, not asyncio.to_thread: the default executor is waited for at
    # exit, and a function stuck for ever would keep the level from stopping.
    if not _threads.acquire(blocking=False):
        raise Busy(f"{MAX_THREADS} calls of sync functions are still running "
                   "(does one never return?)")
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if not done.done():
            if error is None:
                done.set_result(result)
            else:
                done.set_exception(error)

    def work() -> None:
        try:
            result, error = fn(*pos, **kw), None
        except Exception as exc:  # the function's own error, for its caller
            result, error = None, exc
        except BaseException as exc:  # SystemExit and the like: an error like any other
            result, error = None, RuntimeError(f"{type(exc).__name__}: {exc}")
        finally:
            _threads.release()
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name=f"level-function-{fn.__name__}", daemon=True).start()
    return await done
