"""Calling level functions from below: the caller's side.

    outcomes = await call(broker.parse("mqtt://127.0.0.1:1886"), "average", [[1, 2, 3]])
    # [{"level": "dev-1", "ok": False, "error": "... has no function ...", "ms": 1.2},
    #  {"level": "fog-north", "ok": True, "result": 2.0, "ms": 3.4}, ...]

The caller is connected only to its own level's broker, which says which levels
are above it (``levels/here``, kept by the level daemon).  Each request goes up
``levels/call/<level>/<function>`` as far as that level, and its answer comes
back down ``levels/reply/<caller>/<n>`` (:mod:`jet.levels.daemon`).

- ``concurrent``: every chosen level is asked at once; each answers on its own;
  one outcome per level (result, error or timeout), in the order they arrive.
- ``sequential``: the levels are asked one after the other in the order given,
  stopping at the first success unless ``all_levels``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from jet import address
from jet.transport.broker import Broker
from jet.transport.client import Session
from jet.transport.codec import PayloadError, decode, encode

Mode = Literal["concurrent", "sequential"]
MODES = ("concurrent", "sequential")

_numbers = itertools.count(1)


def outcome(level: str, started: float, *, result: Any = None, error: str | None = None
            ) -> dict[str, Any]:
    """One level's answer as the caller reports it."""
    ms = round(1000 * (time.monotonic() - started), 2)
    if error is None:
        return {"level": level, "ok": True, "result": result, "ms": ms}
    return {"level": level, "ok": False, "error": error, "ms": ms}


class CallError(Exception):
    """A call that cannot be made at all (no level daemon on the broker, unknown level)."""


async def levels_here(session: Session, limit: float = 2.0) -> list[str]:
    """This broker's level and the levels above it, as its daemon says (retained: it
    comes right after subscribing, and the read ends as soon as it has)."""
    found = await session.retained(address.LEVEL_HERE, quiet=limit, limit=limit)
    here = found.get(address.LEVEL_HERE)
    if not isinstance(here, dict) or not isinstance(here.get("path"), list):
        raise CallError(f"no level daemon on {session.link.broker.url} "
                        f"({address.LEVEL_HERE} is not set): start `jet level` for it")
    return [str(level) for level in here["path"]]


async def calls(
    broker: Broker,
    function: str,
    args: Any = None,
    *,
    mode: Mode = "concurrent",
    levels: Sequence[str] | None = None,
    all_levels: bool = False,
    timeout: float = 5.0,
    session: Session | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Each level's outcome as it comes (see the module doc).  With ``session``
    (connected to ``broker``) the call uses it instead of a connection of its own."""
    if mode not in MODES:
        raise CallError(f"mode {mode!r}: one of {', '.join(MODES)}")
    address.check(address.level_call("x", function))
    encode(args)  # fails here, before anything is sent, if it cannot be carried
    async with contextlib.AsyncExitStack() as stack:
        if session is None:
            session = await stack.enter_async_context(Session(broker, name="call"))
        known = await levels_here(session)
        chosen = list(levels) if levels else known
        unknown = [level for level in chosen if level not in known]
        if unknown:
            raise CallError(f"no level {', '.join(map(repr, unknown))} on the way up from "
                            f"{known[0]!r} (the levels: {', '.join(known)})")
        caller = uuid.uuid4().hex  # unique across hosts: replies are routed by it
        answers: dict[str, asyncio.Future[dict[str, Any]]] = {}

        def on_reply(topic: str, payload: bytes) -> None:
            request_id = topic[len(address.level_reply("")):]
            waiter = answers.get(request_id)
            if waiter is None or waiter.done():
                return
            try:
                body = decode(payload)
            except PayloadError as exc:
                body = {"ok": False, "error": f"unreadable reply: {exc}"}
            waiter.set_result(body if isinstance(body, dict) else
                              {"ok": False, "error": f"unreadable reply: {body!r}"})

        subscription = await session.link.subscribe(address.level_reply(f"{caller}/+"), 1,
                                                    on_reply)
        stack.push_async_callback(session.link.unsubscribe, subscription)
        loop = asyncio.get_running_loop()
        link = session.link

        def ask(level: str) -> tuple[asyncio.Future[dict[str, Any]], float]:
            request_id = f"{caller}/{next(_numbers)}"
            answers[request_id] = loop.create_future()
            link.publish_nowait(address.level_call(level, function), encode(
                {"id": request_id, "args": args, "deadline": time.time() + timeout}), qos=1)
            return answers[request_id], time.monotonic()

        async def answer(level: str, waiter: asyncio.Future[dict[str, Any]],
                         started: float) -> dict[str, Any]:
            try:
                async with asyncio.timeout(timeout):
                    body = await waiter
            except TimeoutError:
                return outcome(level, started, error=f"no answer within {timeout:g}s "
                               "(the level is down, or cut off)")
            if body.get("ok"):
                return outcome(level, started, result=body.get("result"))
            return outcome(level, started, error=str(body.get("error")))

        if mode == "concurrent":
            pending = [asyncio.ensure_future(answer(level, *ask(level))) for level in chosen]
            for next_done in asyncio.as_completed(pending):
                yield await next_done
            return
        for level in chosen:
            result = await answer(level, *ask(level))
            yield result
            if result["ok"] and not all_levels:
                return


async def call(broker: Broker, function: str, args: Any = None, **options: Any
               ) -> list[dict[str, Any]]:
    """Every outcome of :func:`calls`, as one list."""
    return [result async for result in calls(broker, function, args, **options)]
