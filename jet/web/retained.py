"""Showing a web control's value in force: its retained last output.

A slider's or a switch's output is state (a setpoint, an on/off), not an
event, so the web container has its circuit boundary publish it retained
(:func:`state_outputs`, from ``WebGadgetSpec.state``):
a consumer that subscribes later -- a restarted thermostat -- gets the value
in force.  :func:`read_back` is the other half: when the web container loads
a circuit (after a restart, say) it takes each such output's retained value
as the output's last value, so every page draws the control there rather
than at its ``value`` parameter.  A button's press is an event: not retained.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from jet.containers.boundary import CircuitBoundary, CommandError
from jet.transport import codec
from jet.transport.link import Link
from jet.web.circuit import Announce, WebBody, check_output_value

log = logging.getLogger("jet.web")

__all__ = ["READ_BACK_WAIT", "read_back", "state_outputs"]

#: How long a load waits for retained values after the broker acknowledged the
#: subscriptions (a broker sends them right away; none may exist).
READ_BACK_WAIT = 0.25


def state_outputs(body: WebBody) -> set[tuple[str, int]]:
    """The (gadget, output index) pairs of ``body`` whose values are state."""
    return {
        (gadget, index)
        for gadget, spec in body.specs.items()
        if spec.state
        for index in range(len(spec.outputs))
    }


async def read_back(
    link: Link,
    circuit: CircuitBoundary,
    body: WebBody,
    announce: Announce,
    *,
    wait: float = READ_BACK_WAIT,
) -> None:
    """Adopt the retained value of each state output of ``circuit`` (whose
    body is ``body``) that has no value yet, and ``announce`` it to the pages.

    Returns when every such output has had a message, or after ``wait``
    seconds.  A value its gadget could not have produced (a slider's range
    changed since) is ignored.
    """
    wanted = {
        circuit.output_topic(gadget, port): (gadget, port)
        for gadget, spec in body.specs.items()
        if spec.state
        for port in spec.outputs
        if (gadget, port) not in body.outputs
    }
    if not wanted:
        return
    got: dict[str, Any] = {}
    complete = asyncio.Event()

    def on_message(topic: str, payload: bytes) -> None:
        if topic not in wanted or topic in got or not payload:
            return
        try:
            got[topic] = codec.decode(payload)
        except codec.PayloadError as exc:
            log.warning("%s: retained value ignored: %s", topic, exc)
            return
        if len(got) == len(wanted):
            complete.set()

    subs = [await link.subscribe(topic, 1, on_message) for topic in wanted]
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(complete.wait(), wait)
    finally:
        for sub in subs:
            await link.unsubscribe(sub)
    for topic, value in got.items():
        gadget, port = wanted[topic]
        definition = body.definition.gadget(gadget)
        if definition is None or (gadget, port) in body.outputs:
            continue  # gone in a reload meanwhile, or set by a page meanwhile
        params = {**body.specs[gadget].params, **definition.params}
        try:
            check_output_value(definition.type or "", params, value)
        except CommandError as exc:
            log.warning("%s: retained value ignored: %s", topic, exc)
            continue
        body.outputs[(gadget, port)] = value
        announce(body, gadget, port, value)
