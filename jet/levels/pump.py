"""A level's pump table: which of its topics are carried up (``levels/<name>/pump``).

The table is a retained list of topic filters on the level's own broker.  The
level's daemon follows it (:meth:`LevelDaemon._pump_table`); ``jet level --pump``
sets it at start; the loader adds the outputs that circuits at higher levels
read, and takes them out again when those circuits go (:func:`change`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from jet import address
from jet.transport.client import Session
from jet.transport.codec import encode

#: The table's messages are kept by the broker until replaced.
QOS = 1


def filters_in(table: Any) -> list[str] | None:
    """The filters of a decoded table, or None when it is not a list of strings."""
    if not isinstance(table, list) or not all(isinstance(f, str) for f in table):
        return None
    return table


async def read(session: Session, level: str) -> list[str]:
    """The table on ``level``'s broker as it is now ([] when none was ever set)."""
    topic = address.level_pump(level)
    # (up to a second for it to come: a table read as empty too soon would be replaced
    # by the loader's entries alone; an absent table costs that second)
    found = await session.retained(topic, quiet=1.0, limit=3.0)
    return filters_in(found.get(topic)) or []


async def change(session: Session, level: str, *, add: Iterable[str] = (),
                 remove: Iterable[str] = ()) -> list[str]:
    """Add and remove filters in ``level``'s table (everything else in it kept, in its
    order), publish it retained and confirmed; the new table.  Read, changed, written:
    two changers at the same instant (two loaders, a loader and a tap) may lose one
    change; the next load, reload or tap makes it again."""
    table = await read(session, level)
    gone = set(remove) - set(add)
    table = [f for f in table if f not in gone]
    table += [f for f in dict.fromkeys(add) if f not in table]
    await session.link.publish(address.level_pump(level), encode(table), qos=QOS, retain=True)
    return table
