"""What the broker says about a container's identity and about the circuits of its kind.

Two things a container must know from the retained statuses of others, and
learn before it acts:

- **its own id is free** (:func:`claim`): MQTT lets one client id have one
  connection, so a second container with the same kind and id would kick the
  first off the broker, and be kicked back, forever.  Before connecting under
  its id, a container reads its retained presence ``jet/<type>/<id>/status``
  over a connection of its own; when that says ``online``, it asks the holder
  (a ``status`` command) and refuses to start with :class:`IdentityClash` if it
  answers.  A process that dies (even by kill -9) has its socket closed by its
  system and its will fires at once; one that is frozen or cut off keeps its
  ``online`` presence until the broker misses 1.5 of its keepalives.  So the
  holder is waited for until it answers (a clash), its presence turns offline,
  or 1.5 of its keepalives and 2 s pass without either (taken over; both
  logged).  A holder that wakes up after that finds the id taken over and stops
  (:meth:`jet.containers.base.Container._presence_seen`).
- **who runs which circuit** (:class:`Census`): a live view of the retained
  circuit statuses and container presences of the kind, so a container refuses
  a ``load`` of a circuit another live container runs, and learns of the
  statuses an earlier run of itself left behind (ghosts) to clear them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import attrs

from jet import address
from jet.containers.status import why_not_status
from jet.transport import codec
from jet.transport.broker import Broker
from jet.transport.client import NoReply, Replies
from jet.transport.link import Link

#: Keepalive assumed for a holder whose presence does not say (the containers' default).
DEFAULT_KEEPALIVE = 10
#: The longest a starting container waits for a stale ``online`` presence to resolve.
LONGEST_WAIT = 120.0
#: Beyond 1.5 keepalives, how late a broker may fire a will (it checks keepalives
#: on a timer of its own).
WILL_MARGIN = 2.0
#: How long the broker may take to send the retained messages of a subscription.
RETAINED_WITHIN = 5.0


_claims = itertools.count(1)  # (client ids of claims made by one process stay apart)


class IdentityClash(ConnectionError):
    """Another live container holds this kind and id on the broker (one line naming it).

    A ConnectionError: the broker connection this container would need is taken,
    and every command reports that class of failure in one line.
    """


@attrs.frozen
class Holder:
    """Who a retained presence says holds a container id."""

    state: str
    pid: int | None
    host: str
    keepalive: float
    #: when it started (epoch seconds; None: unknown)
    since: float | None = None

    @classmethod
    def of(cls, presence: Any) -> Holder | None:
        """The holder a decoded presence names; None when it is unreadable."""
        if not isinstance(presence, dict) or not isinstance(presence.get("state"), str):
            return None
        pid = presence.get("pid")
        keepalive = presence.get("keepalive")
        return cls(
            state=presence["state"],
            pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
            host=str(presence.get("host", "?")),
            since=(
                float(presence["since"])
                if isinstance(presence.get("since"), int | float)
                and not isinstance(presence.get("since"), bool)
                else None
            ),
            keepalive=(
                float(keepalive)
                if isinstance(keepalive, int | float) and not isinstance(keepalive, bool)
                and 0 < keepalive < LONGEST_WAIT
                else DEFAULT_KEEPALIVE
            ),
        )

    def __str__(self) -> str:
        return f"pid {self.pid if self.pid is not None else '?'} on host {self.host}"

    def is_this_process(self) -> bool:
        return self.pid == os.getpid() and self.host == socket.gethostname()


async def retained_delivered(link: Link, timeout: float = RETAINED_WITHIN) -> None:
    """Return once the broker has sent the retained messages of every subscription
    ``link`` has made: a message on a topic of its own, published after them, comes
    back after them (a broker sends a subscription's retained messages at once)."""
    topic = address.reply(f"{link.client_id}-sync")
    back = asyncio.Event()
    sub = await link.subscribe(topic, 1, lambda _t, _p: back.set())
    try:
        await link.publish(topic, b"", qos=1)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(back.wait(), timeout)
    finally:
        await link.unsubscribe(sub)


async def retained_statuses(
    broker: Broker, topic_filter: str, *, connect_timeout: float | None
) -> dict[str, Any]:
    """The retained messages under ``topic_filter`` now, decoded (unreadable ones left out),
    read over a connection of its own (clean session, no will) before a container
    connects under its id."""
    link = Link(broker, f"jet-read-{os.getpid()}-{next(_claims)}", clean_session=True,
                connect_timeout=connect_timeout)
    found: dict[str, Any] = {}

    def on_message(topic: str, payload: bytes) -> None:
        if not payload:
            found.pop(topic, None)
            return
        with contextlib.suppress(codec.PayloadError):
            found[topic] = codec.decode(payload)

    async with link:
        await link.subscribe(topic_filter, 1, on_message)
        await retained_delivered(link)
    return found


async def claim(
    broker: Broker,
    kind: str,
    container_id: str,
    *,
    connect_timeout: float | None,
    log: logging.Logger,
) -> None:
    """Make sure no live container holds ``kind``/``container_id``; raise
    :class:`IdentityClash` (one line naming its host and pid) if one does.

    Uses a connection of its own (a client id of its own, clean session, no will),
    so asking disturbs nobody; ``connect_timeout`` as the container's own link.
    """
    status_topic = address.container_status(kind, container_id)
    link = Link(
        broker, f"jet-{kind}-{container_id}-claim-{os.getpid()}-{next(_claims)}",
        clean_session=True, connect_timeout=connect_timeout,
    )
    presences: list[Holder | None] = []
    changed = asyncio.Event()

    def on_presence(_topic: str, payload: bytes) -> None:
        try:
            presences.append(Holder.of(codec.decode(payload)) if payload else None)
        except codec.PayloadError:
            presences.append(None)
        changed.set()

    async with link:
        await link.subscribe(status_topic, 1, on_presence)
        await retained_delivered(link)
        holder = presences[-1] if presences else None
        if holder is None or holder.state != "online":
            return
        wait = min(1.5 * holder.keepalive + WILL_MARGIN, LONGEST_WAIT)
        replies = Replies(link, timeout=wait)
        await replies.start()

        async def offline() -> None:
            while True:
                changed.clear()
                latest = presences[-1] if presences else None
                if latest is None or latest.state != "online":
                    return
                await changed.wait()

        # QoS 0: a question a dead holder's persistent session should not keep.
        asked = asyncio.create_task(
            replies.request(address.container_conf(kind, container_id), {"cmd": "status"},
                            wait, qos=0)
        )
        went = asyncio.create_task(offline())
        try:
            done, _ = await asyncio.wait({asked, went}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (asked, went):
                task.cancel()
            await asyncio.gather(asked, went, return_exceptions=True)
        # Any answer, even a refusal, is a live holder.
        if asked in done and not isinstance(asked.exception(), NoReply):
            answer = (Holder.of(asked.result()) if asked.exception() is None else None) or holder
            raise IdentityClash(
                f"{kind} {container_id} already runs on this broker ({answer}, "
                f"{status_topic}): stop it, or give this one another --id"
            )
        if went in done:
            log.warning("%s %s: its earlier holder (%s) went offline; taking over",
                        kind, container_id, holder)
        else:
            log.warning("%s %s: its presence said online (%s) but nothing answered in %g s;"
                        " taking over", kind, container_id, holder, wait)


#: Called with (circuit id, status) for each status naming this container.
OnMine = Callable[[str, dict[str, Any]], None]
#: Called with this container's own presence as the broker has it now (None: cleared).
OnPresence = Callable[[dict[str, Any] | None], None]


class Census:
    """Who runs which circuit of one container kind, as the retained statuses say.

    Lifecycle: made by its container, :meth:`start` subscribes the kind's circuit
    statuses and container presences on the container's link (before it
    connects); from then on every status updates the view.  ``on_mine`` is
    called for every readable status that names this container (its own
    publications, and what an earlier run of it left behind), ``on_presence``
    for every change of the presence under its own id (its own, or another
    process's with the same id).  A status that :func:`jet.containers.status.why_not_status`
    refuses is taken as no status: the census believes only well-formed ones.
    """

    def __init__(self, kind: str, me: str, on_mine: OnMine, on_presence: OnPresence) -> None:
        self.kind = kind
        self.me = me
        self.on_mine = on_mine
        self.on_presence = on_presence
        #: circuit id -> the container its status says runs it, while it says online
        self.owners: dict[str, str] = {}
        #: container name -> its presence
        self.presences: dict[str, dict[str, Any]] = {}

    async def start(self, link: Link) -> None:
        await link.subscribe(address.circuit_status(self.kind, "+"), 1, self._on_status)
        await link.subscribe(address.container_status(self.kind, "+"), 1, self._on_status)

    def running_elsewhere(self, circuit_id: str) -> str | None:
        """The other live container running ``circuit_id`` (named with its pid and
        host), or None.  A container whose presence is not online (its will fired)
        runs nothing."""
        owner = self.owners.get(circuit_id)
        if owner is None or owner == self.me:
            return None
        presence = self.presences.get(owner)
        holder = Holder.of(presence)
        if holder is None or holder.state != "online":
            return None
        return f"{owner} ({holder})"

    def _on_status(self, topic: str, payload: bytes) -> None:
        parsed = address.parse(topic)
        if parsed is None:
            return
        try:
            status = codec.decode(payload) if payload else None
        except codec.PayloadError:
            status = None
        # Believed only when it reads as every other reader of statuses reads it.
        if status is not None and why_not_status(parsed.role, status) is not None:
            status = None
        if parsed.role == "container_status":
            name = parsed.owner
            if status is None:
                self.presences.pop(name, None)
            else:
                self.presences[name] = status
            if name == self.me:
                self.on_presence(status)
            return
        if parsed.role != "status":
            return
        container = status.get("container") if status is not None else None
        if status is not None and status.get("state") == "online" and isinstance(container, str):
            self.owners[parsed.id] = container
        else:
            self.owners.pop(parsed.id, None)
        if container == self.me and status is not None:
            self.on_mine(parsed.id, status)
