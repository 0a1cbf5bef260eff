"""A level's daemon: its presence, and the messages it carries between its
broker and its parent's.

    async with LevelDaemon("fog-north", own_broker, parent=cloud_broker, rules=rules):
        ...                          # the level runs until the block is left

Two connections, both MQTT 5 with no-local subscriptions (``Link(echo=False)``),
so the broker never hands the daemon back what it published itself; that is
what keeps every copy moving away from where it came from:

- ``own`` (this level's broker): events published here go **up**;
- ``up`` (the parent's broker, opened by the child: the only cross-broker
  connection): events published there come **down**, and machine messages
  come down when this level's :class:`~jet.levels.rules.Rules` say they
  concern it.  Level messages (``level/functions/...``) are never carried.

An event raised at any level therefore reaches the root by the chain of
``up`` forwards and every other branch by their ``down`` forwards: each
broker of the tree gets it once, in any tree shape, with nothing added to the
payload (a plain MQTT client subscribing sees what the publisher sent).

Presence: the ``up`` connection's will marks the level ``offline`` on the
parent's broker (``levels/<name>/presence``, retained), so a parent sees a
dead child within 1.5 keepalives; ``levels/<name>/uplink`` on the level's own
broker says ``online`` or ``lost`` (retained), so local circuits and devices
can react to a cut uplink.  While the uplink is down, events for the parent
wait in the ``up`` link's outbox (bounded, every drop counted) and the
parent's broker keeps this level's session (QoS 1, persistent), so a healed
partition delivers what was published meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import attrs

from jet import address
from jet.levels import view
from jet.levels.functions import invoke
from jet.levels.pump import filters_in
from jet.levels.rules import Rules, decode_map
from jet.tasks import cancel_all, worth_logging
from jet.transport import Link, Subscription, Will
from jet.transport.broker import Broker
from jet.transport.codec import PayloadError, decode, encode

log = logging.getLogger("jet.levels")

QOS = 1


#: Children a level keeps track of, at most (a bound against whoever publishes presences).
MAX_CHILDREN = 1000
#: Seconds the relevance circuit has to send a candidate back, and how many may wait.
CANDIDATE_TIMEOUT = 5.0
CANDIDATES_KEPT = 10_000
#: Seconds a call may take when its request names no deadline, and at most.
DEFAULT_CALL_TIMEOUT = 10.0
MAX_CALL_TIMEOUT = 600.0
#: Calls carried up are forgotten at their deadline (looked at once this many wait).
PENDING_CHECK = 1000


def decode_or_none(payload: bytes) -> Any:
    try:
        return decode(payload)
    except PayloadError:
        return None


@attrs.define
class LevelCounters:
    events_up: int = 0
    events_down: int = 0
    machine_down: int = 0
    machine_irrelevant: int = 0
    machine_undecided: int = 0  # candidates the relevance circuit gave no verdict on in time
    uplink_losses: int = 0
    calls: int = 0
    call_errors: int = 0
    bad_calls: int = 0
    data_up: int = 0
    refused: int = 0  # level messages of the wrong shape, or beyond the bounds


class LevelDaemon:
    """One level: ``async with`` connects to its own broker (``ConnectionError``
    if it cannot) and starts reaching for its parent in the background (a site
    keeps running without its uplink); leaving says ``offline`` and
    disconnects both."""

    def __init__(
        self,
        name: str,
        broker: Broker,
        *,
        parent: Broker | None = None,
        rules: Rules | None = None,
        functions: Mapping[str, Callable[..., Any]] | None = None,
        pump: Sequence[str] = (),
        relevance: str | None = None,
        keepalive: int = 10,
    ) -> None:
        """``pump``: topic filters on this level's broker whose messages are carried up
        (the first pump table; ``levels/<name>/pump`` on this broker changes it).

        ``relevance``: the output topic of a circuit that decides which machine
        messages concern this level (after the rules): each candidate goes to the
        circuit on ``levels/<name>/candidates`` and is taken when the circuit sends
        it back on ``relevance`` (docs/levels.md)."""
        address.check_level_name(name)
        self.name = name
        self.broker = broker
        self.parent = parent
        self.rules = rules or Rules()
        self.functions = dict(functions or {})
        self.counters = LevelCounters()
        self.path: list[str] = [name]  # this level and the ones above it, up to the root
        self._path_changed = asyncio.Event()
        self._pending: dict[str, float] = {}  # calls carried up: id -> deadline
        # Children as this level knows them: their presence, their own report of
        # their subtree, and when this level saw their presence change.
        self._child_presence: dict[str, dict[str, Any]] = {}
        self._child_reports: dict[str, view.Report] = {}
        self._child_changed: dict[str, float] = {}
        self._last_report: bytes = b""
        self._running: set[asyncio.Task[None]] = set()
        self._pump_first = [address.check(f, filter_ok=True) for f in pump]
        self.relevance = address.check(relevance) if relevance else None
        # Candidates waiting for the circuit's verdict: id -> (deadline, topic, payload).
        self._candidates: dict[int, tuple[float, str, bytes]] = {}
        self._candidate_ids = itertools.count(1)
        self._pumped: dict[str, Subscription] = {}
        self._pump_lock = asyncio.Lock()
        self.since = time.time()
        self._own_lost: float | None = None  # since when this level's broker is gone
        self._parent_level: dict[str, Any] = {}  # the parent level's presence, as its broker says
        self._uplink: dict[str, Any] = {}
        self.own = Link(broker, f"jet-level/{name}", echo=False, keepalive=keepalive,
                        will=Will(address.level_presence(name), self._presence("offline")),
                        on_connect=self._own_up, on_lost=self._own_broker_lost,
                        connect_timeout=10.0)
        self.up: Link | None = None
        if parent is not None:
            self.up = Link(
                parent, f"jet-level-up/{name}", echo=False, keepalive=keepalive,
                will=Will(address.level_presence(name), self._presence("offline")),
                on_connect=self._uplink_up, on_lost=self._uplink_lost, connect_timeout=None,
            )
        self._entering: list[asyncio.Task[Link]] = []

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.own.__aenter__()  # (_own_up says who is here)
        await self.own.subscribe(address.ALL_LEVEL_CALLS, QOS, self._on_call, retained=False)
        await self.own.subscribe(address.ALL_LEVEL_PRESENCE, QOS, self._on_child_presence)
        await self.own.subscribe(address.ALL_LEVEL_SUBTREES, QOS, self._on_child_report)
        if self.up is not None:
            up = self.up
            await self.own.subscribe(f"{address.MACHINE_EVENTS}/#", QOS, self._event_up,
                                     retained=False)
            await up.subscribe(f"{address.MACHINE_EVENTS}/#", QOS, self._event_down,
                               retained=False)
            await up.subscribe(f"{address.MACHINE_FUNCTIONS}/#", QOS, self._machine_down,
                               retained=False)
            if self.relevance is not None:
                await self.own.subscribe(self.relevance, QOS, self._verdict, retained=False)
            await up.subscribe(address.ALL_LEVEL_REPLIES, QOS, self._reply_down, retained=False)
            await up.subscribe(address.LEVEL_HERE, QOS, self._parent_here)
            await up.subscribe(address.ALL_LEVEL_PRESENCE, QOS, self._on_parent_presence)
            # Data pumped up by the levels below goes on up, to the root.
            await self.own.subscribe(address.ALL_LEVEL_DATA, QOS, self._data_up, retained=False)
            await self.own.subscribe(address.level_pump(self.name), QOS, self._pump_table)
            if self._pump_first:
                self.own.publish_nowait(address.level_pump(self.name),
                                        encode(self._pump_first), qos=QOS, retain=True)
                await self._pump_topics(self._pump_first)
            self._say_uplink("connecting")
            # Reaching the parent may take forever (it is down, or cut off):
            # the level serves its own broker meanwhile.
            self._entering = [asyncio.create_task(up.__aenter__(), name=f"uplink-{self.name}")]
        log.info("level %s on %s%s; %s", self.name, self.broker.url,
                 f", parent {self.parent.url}" if self.parent else " (the root)",
                 self.rules.source)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await cancel_all(self._entering, ConnectionError)
        self._entering = []
        await cancel_all(self._running, Exception)
        if self.up is not None:
            if self.up.connected:  # said at once, not left to the will
                self._say_presence(self.up, "offline")
            await self.up.close()
        self._say_presence(self.own, "offline")
        await self.own.close()

    # -- carrying ----------------------------------------------------------------------

    def _event_up(self, topic: str, payload: bytes) -> None:
        assert self.up is not None
        self.counters.events_up += 1
        self.up.publish_nowait(topic, payload, qos=QOS)

    def _event_down(self, topic: str, payload: bytes) -> None:
        self.counters.events_down += 1
        self.own.publish_nowait(topic, payload, qos=QOS)

    def _data_up(self, topic: str, payload: bytes) -> None:
        """Data a child pumped up (already named by its level): on to the parent."""
        assert self.up is not None
        self.counters.data_up += 1
        self.up.publish_nowait(topic, payload, qos=QOS)

    def _pump_own(self, topic: str, payload: bytes) -> None:
        """This level's own data, named for the levels above: ``levels/<name>/data/...``."""
        assert self.up is not None
        if topic.startswith(("levels/", f"{address.MACHINE_EVENTS}/", address.MACHINE_FUNCTIONS)):
            return  # (a wide filter, "#": these travel by their own rules)
        self.counters.data_up += 1
        self.up.publish_nowait(address.level_data(self.name, topic), payload, qos=QOS)

    def _pump_table(self, topic: str, payload: bytes) -> None:
        filters = filters_in(decode_or_none(payload) if payload else [])
        if filters is None:
            self._refused(topic, "not a list of topic filters")
            return
        task = asyncio.create_task(self._pump_topics(filters), name=f"pump-{self.name}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _pump_topics(self, filters: list[str]) -> None:
        async with self._pump_lock:  # one table at a time, in the order they came
            await self._apply_pump(filters)

    async def _apply_pump(self, filters: list[str]) -> None:
        wanted = set()
        for topic_filter in filters:
            try:
                wanted.add(address.check(topic_filter, filter_ok=True))
            except address.TopicError as exc:
                log.warning("level %s: pump %r refused: %s", self.name, topic_filter, exc)
        for gone in set(self._pumped) - wanted:
            await self.own.unsubscribe(self._pumped.pop(gone))
        for new in sorted(wanted - set(self._pumped)):
            self._pumped[new] = await self.own.subscribe(new, QOS, self._pump_own,
                                                         retained=False)
        if wanted:
            log.info("level %s: carrying up %s", self.name, ", ".join(sorted(wanted)))

    def _machine_down(self, topic: str, payload: bytes) -> None:
        if not self.rules.relevant(topic, payload):
            self.counters.machine_irrelevant += 1
            if worth_logging(self.counters.machine_irrelevant):
                log.debug("level %s: %s does not concern this level (%d so far)",
                          self.name, topic, self.counters.machine_irrelevant)
            return
        if self.relevance is not None:
            self._ask_circuit(topic, payload)
            return
        self.counters.machine_down += 1
        self.own.publish_nowait(topic, payload, qos=QOS)

    def _ask_circuit(self, topic: str, payload: bytes) -> None:
        now = time.monotonic()
        while self._candidates:  # the oldest first: forget those past their time
            oldest = next(iter(self._candidates))
            if self._candidates[oldest][0] > now and len(self._candidates) < CANDIDATES_KEPT:
                break
            del self._candidates[oldest]
            self.counters.machine_undecided += 1
            if worth_logging(self.counters.machine_undecided):
                log.warning("level %s: the relevance circuit (%s) gave no verdict within "
                            "%gs: %d machine messages not taken so far", self.name,
                            self.relevance, CANDIDATE_TIMEOUT, self.counters.machine_undecided)
        number = next(self._candidate_ids)
        self._candidates[number] = (now + CANDIDATE_TIMEOUT, topic, payload)
        candidate = {"id": number, "topic": topic, "value": decode_map(payload)}
        try:
            encoded = encode(candidate)
        except PayloadError:  # a value msgpack cannot carry (a huge JSON number): topic only
            encoded = encode({"id": number, "topic": topic, "value": None})
        self.own.publish_nowait(address.level_candidates(self.name), encoded, qos=QOS)

    def _verdict(self, _topic: str, payload: bytes) -> None:
        """The circuit sent a candidate back (or its id): it concerns this level."""
        verdict = decode_or_none(payload)
        number = verdict.get("id") if isinstance(verdict, dict) else verdict
        found = self._candidates.pop(number, None) if isinstance(number, int) else None
        if found is None:
            return  # (a verdict on no candidate of ours, or too late: counted as undecided)
        _deadline, topic, original = found
        self.counters.machine_down += 1
        self.own.publish_nowait(topic, original, qos=QOS)

    # -- level functions ---------------------------------------------------------------

    def _on_call(self, topic: str, payload: bytes) -> None:
        """A call published on this broker (by a caller here, or carried up by a child):
        run it if it is for this level, else carry it up."""
        parts = topic.split("/", 3)
        request = decode_or_none(payload)
        if len(parts) != 4 or not isinstance(request, dict) or not isinstance(
                request.get("id"), str) or "/" not in request["id"]:
            self.counters.bad_calls += 1
            if worth_logging(self.counters.bad_calls):
                log.warning("level %s: malformed call on %s (%d so far)", self.name,
                            topic[:200], self.counters.bad_calls)
            return
        target, name = parts[2], parts[3]
        request_id: str = request["id"]
        now = time.time()
        asked = request.get("deadline", now + DEFAULT_CALL_TIMEOUT)
        if isinstance(asked, bool) or not isinstance(asked, int | float) or asked != asked:
            self.counters.bad_calls += 1
            self._reply(request_id, target, error=f"call on {topic[:200]}: the deadline "
                        f"must be a time in seconds, got {str(asked)[:40]!r}")
            return
        deadline = min(float(asked), now + MAX_CALL_TIMEOUT)
        if target == self.name:
            task = asyncio.create_task(self._run_call(name, request, deadline),
                                       name=f"call-{request_id}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        elif self.up is None:
            self._reply(request_id, target, error=f"no level {target!r} above {self.name!r} "
                        f"(the levels here: {', '.join(self.path)})")
        elif not self.up.connected:
            self._reply(request_id, target, error=f"level {target!r} unreachable: "
                        f"{self.name!r} has lost its parent {self.up.broker.url}")
        else:
            self._forget_expired()
            self._pending[request_id] = deadline
            self.up.publish_nowait(topic, payload, qos=QOS)

    async def _run_call(self, name: str, request: dict[str, Any], deadline: float) -> None:
        request_id = request["id"]
        fn = self.functions.get(name)
        if fn is None:
            offered = ", ".join(sorted(self.functions)) or "none"
            self._reply(request_id, self.name, error=f"level {self.name!r} has no function "
                        f"{name!r} (it offers: {offered})")
            return
        left = deadline - time.time()
        if left <= 0:
            return  # the caller has given up already
        try:
            result = await invoke(fn, request.get("args"), left)
            self.counters.calls += 1
            self._reply(request_id, self.name, result=result)
        except TimeoutError:
            self._reply(request_id, self.name,
                        error=f"{name} on {self.name!r}: still running at the deadline")
        except asyncio.CancelledError:
            raise  # (the daemon is stopping)
        except BaseException as exc:  # the function's own error (SystemExit too), for its caller
            self.counters.call_errors += 1
            self._reply(request_id, self.name, error=f"{name} on {self.name!r}: "
                        f"{type(exc).__name__}: {str(exc)[:300]}")

    def _reply(self, request_id: str, level: str, *, result: Any = None,
               error: str | None = None) -> None:
        body: dict[str, Any] = {"id": request_id, "level": level, "ok": error is None}
        if error is None:
            body["result"] = result
        else:
            body["error"] = error
        try:
            payload = encode(body)
        except PayloadError as exc:
            payload = encode({"id": request_id, "level": level, "ok": False,
                              "error": f"the result cannot be sent: {exc}"})
        self.own.publish_nowait(address.level_reply(request_id), payload, qos=QOS)

    def _reply_down(self, topic: str, payload: bytes) -> None:
        request_id = topic[len(address.level_reply("")):]
        if self._pending.pop(request_id, None) is not None:
            self.own.publish_nowait(topic, payload, qos=QOS)

    def _forget_expired(self) -> None:
        if len(self._pending) < PENDING_CHECK:
            return
        now = time.time()
        for request_id, deadline in list(self._pending.items()):
            if deadline < now:
                del self._pending[request_id]

    def _parent_here(self, topic: str, payload: bytes) -> None:
        here = decode_or_none(payload)
        if isinstance(here, dict) and isinstance(here.get("path"), list):
            self.path = [self.name, *[str(level) for level in here["path"]]]
            self._path_changed.set()
            self._say_here()

    async def knows_path(self, path: list[str]) -> None:
        """Return once this level's way up is ``path`` (itself first, the root last), as
        its parent says: the tree above it is connected (bound it with a timeout)."""
        while self.path != path:
            self._path_changed.clear()
            await self._path_changed.wait()

    def _say_here(self) -> None:
        self.own.publish_nowait(address.LEVEL_HERE, encode(
            {"level": self.name, "path": self.path, "functions": sorted(self.functions)}),
            qos=QOS, retain=True)

    # -- the tree as this level sees it (jet levels) ------------------------------------

    def _on_child_presence(self, topic: str, payload: bytes) -> None:
        # On this broker: children's presence (their uplinks publish it, their
        # wills end it); this level's own is never handed back (no-local).
        child = topic.split("/")[1]
        if child == self.name:
            return
        if not payload:
            self._forget_child(child)
            return
        presence = decode_or_none(payload)
        if not isinstance(presence, dict) or presence.get("state") not in ("online", "offline"):
            self._refused(topic, "not a level's presence")
            return
        if not self._room_for(child, topic):
            return
        before = self._child_presence.get(child, {}).get("state")
        self._child_presence[child] = presence
        if presence.get("state") != before:
            self._child_changed[child] = time.time()
        self._report()

    def _on_child_report(self, topic: str, payload: bytes) -> None:
        child = topic.split("/")[1]
        if child == self.name:
            return
        if not payload:  # an emptied retained report: the child is decommissioned
            self._forget_child(child)
            return
        report = view.checked(decode_or_none(payload))
        if report is None or report["level"] != child:
            self._refused(topic, "not a level's subtree report")
            return
        if not self._room_for(child, topic):
            return
        self._child_reports[child] = report
        self._child_changed.setdefault(child, time.time())
        self._report()

    def _room_for(self, child: str, topic: str) -> bool:
        known = set(self._child_presence) | set(self._child_reports)
        if child in known or len(known) < MAX_CHILDREN:
            return True
        self._refused(topic, f"more than {MAX_CHILDREN} children")
        return False

    def _forget_child(self, child: str) -> None:
        self._child_presence.pop(child, None)
        self._child_reports.pop(child, None)
        self._child_changed.pop(child, None)
        self._report()

    def _refused(self, topic: str, why: str) -> None:
        self.counters.refused += 1
        if worth_logging(self.counters.refused):
            log.warning("level %s: %s on %s: ignored (%d so far)", self.name, why,
                        topic[:200], self.counters.refused)

    def _report(self) -> None:
        """Publish this level's subtree where it changed: here, and to the parent."""
        children = {
            child: view.child_report(child, self._child_presence.get(child),
                                     self._child_reports.get(child),
                                     self._child_changed.get(child, time.time()))
            for child in set(self._child_presence) | set(self._child_reports)
        }
        report = view.subtree(self.name, self.since, children)
        if self._own_lost is not None:  # what is below this level is out of reach
            report = view.broker_lost(report, self._own_lost)
        payload = encode(report)
        if payload == self._last_report:
            return
        self._last_report = payload
        topic = address.level_subtree(self.name)
        self.own.publish_nowait(topic, payload, qos=QOS, retain=True)
        if self.up is not None and self.up.connected:
            self.up.publish_nowait(topic, payload, qos=QOS, retain=True)

    # -- presence ----------------------------------------------------------------------

    async def _own_up(self) -> None:
        # (Again after a reconnect: a broker that restarted lost its retained messages.)
        self._own_lost = None
        self._say_presence(self.own, "online")
        self._say_here()
        self._last_report = b""
        self._report()
        if self._uplink:
            self.own.publish_nowait(address.level_uplink(self.name), encode(self._uplink),
                                    qos=QOS, retain=True)

    def _own_broker_lost(self, reason: str) -> None:
        self._own_lost = time.time()
        log.warning("level %s: its own broker %s is gone (%s): the levels below are cut off",
                    self.name, self.broker.url, reason)
        self._report()

    def _on_parent_presence(self, topic: str, payload: bytes) -> None:
        level = topic.split("/")[1]
        presence = decode_or_none(payload)
        if len(self.path) < 2 or level != self.path[1] or not isinstance(presence, dict):
            return
        if presence.get("state") != self._parent_level.get("state"):
            self._parent_level = {"state": presence.get("state"), "since": time.time()}
            self._say_uplink(self._uplink.get("state", "online"), self._uplink.get("reason", ""),
                             keep_since=True)

    def _presence(self, state: str) -> bytes:
        return encode({"state": state, "level": self.name, "host": socket.gethostname(),
                       "pid": os.getpid(), "since": self.since,
                       "parent": self.parent.url if self.parent else None})

    def _say_presence(self, link: Link, state: str) -> None:
        """This level's presence on ``link``'s broker (its own, or its parent's)."""
        link.publish_nowait(address.level_presence(self.name), self._presence(state), qos=QOS,
                            retain=True)

    async def _uplink_up(self) -> None:
        assert self.up is not None
        self._say_presence(self.up, "online")
        self._say_uplink("online")
        if self._last_report:  # the parent may have missed changes while cut off
            self.up.publish_nowait(address.level_subtree(self.name), self._last_report,
                                   qos=QOS, retain=True)
        log.info("level %s: parent %s reached", self.name, self.up.broker.url)

    def _uplink_lost(self, reason: str) -> None:
        self.counters.uplink_losses += 1
        self._say_uplink("lost", reason)

    def _say_uplink(self, state: str, reason: str = "", *, keep_since: bool = False) -> None:
        assert self.parent is not None
        since = self._uplink.get("since") if keep_since else None
        self._uplink = {"state": state, "level": self.name, "parent": self.parent.url,
                        "since": since or time.time(), "reason": reason,
                        "parent_level": self._parent_level or None}
        self.own.publish_nowait(address.level_uplink(self.name), encode(self._uplink), qos=QOS,
                                retain=True)
