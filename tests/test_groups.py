"""Pack groups (docs/groups.md), through real processes: `jet pack --group` members on a
real mosquitto, `jet load` of a file with `pack: <group>` and `replicas: N`, a numbered
QoS 1 stream counted at the far end (each number once; duplicates counted), a member
killed -9 under the stream and brought back, and `jet ls` showing the group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import JetProcess, jet, jet_ok
from conftest import Mosquitto
from helpers import Collector, account, run

from jet.cluster import GroupView
from jet.transport import broker, codec
from jet.transport.client import Session
from jet.transport.link import Link

KEEPALIVE = 2
INPUT = "feed/work"
OUTPUT = "pack/work/s/0"


def app_text(replicas: int, group: str = "g", factor: int = 1) -> str:
    return f"""
app: grouped
circuits:
  work:
    pack: {group}
    replicas: {replicas}
    gadgets:
      s: {{type: jet.lib.Scale, params: {{factor: {factor}}}}}
wires:
  - from: {{topic: {INPUT}, format: msgpack}}
    to: work.s.in
"""


def member(mq: Mosquitto, tmp_path: Path, pack_id: str, group: str = "g", *,
           state: bool = True) -> JetProcess:
    kept = ["--state", str(tmp_path / f"{pack_id}.state")] if state else []
    proc = JetProcess("pack", "--broker", mq.url, "--id", pack_id, "--group", group,
                      "--keepalive", str(KEEPALIVE), *kept)
    proc.wait_for_line(f"pack {pack_id} in group {group}", timeout=20)
    return proc


def persistent(url: str, name: str) -> Link:
    return Link(broker.parse(url), name, ack_after_handling=True)


async def read_group(url: str) -> GroupView:
    async with Session(broker.parse(url)) as session:
        return await GroupView.read(session)


async def until(check: Any, what: str, timeout: float) -> Any:
    """Poll the retained view (a bounded wait on what the broker says)."""
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.1)


async def stream(producer: Link, numbers: range, pause: float = 0.005) -> None:
    for n in numbers:
        producer.publish_nowait(INPUT, codec.encode(n), qos=1)
        if n % 20 == 0:
            await asyncio.sleep(pause)
    await producer.flush()


def test_check_refuses_replicas_mistakes(tmp_path: Path) -> None:
    scale = "    gadgets:\n      s: {type: jet.lib.Scale}\n"
    cases = {
        "web": ("  w:\n    container: web\n    replicas: 2\n    gadgets: {}\n",
                "'replicas' is only allowed in a pack circuit", 5),
        "nopack": ("  w:\n    replicas: 2\n" + scale,
                   "replicas need a group", 4),
        "zero": ("  w:\n    pack: g\n    replicas: 0\n" + scale,
                 "replicas", 5),
        "many": ("  w:\n    pack: g\n    replicas: 65\n" + scale,
                 "replicas", 5),
    }
    for name, (body, said, at) in cases.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"app: a\ncircuits:\n{body}")
        done = jet("check", str(path))
        assert done.returncode != 0, done.stdout
        line = (done.stdout + done.stderr).strip()
        assert f"{path}:" in line and said in line, line
        assert f"{path}:{at}:" in line, line  # the line of the mistake
        assert len(line.splitlines()) == 1, line
    done = jet("pack", "--group", "Bad!", "--broker", "mqtt://127.0.0.1:1")
    assert done.returncode == 1
    assert done.stderr.strip() == "jet pack: error: group 'Bad!' must match [a-z0-9_-]+"
    done = jet("pack", "--partition", "--broker", "mqtt://127.0.0.1:1")
    assert done.returncode == 1
    assert done.stderr.strip() == ("jet pack: error: --partition splits a group's inputs:"
                                   " it needs --group")


def test_copies_share_the_input_each_message_once(mosquitto: Mosquitto, tmp_path: Path) -> None:
    app = tmp_path / "grouped.yaml"
    app.write_text(app_text(2))
    members = [member(mosquitto, tmp_path, name) for name in ("a", "b")]
    total = 600

    async def scenario() -> tuple[list[Any], GroupView, str]:
        url = broker.parse(mosquitto.url)
        await until(lambda: _live_members(mosquitto.url, 2), "two live members", 15)
        too_many = tmp_path / "three.yaml"
        too_many.write_text(app_text(3))
        code, out, err = await _jet("load", str(too_many), "--broker", mosquitto.url)
        assert code != 0 and "replicas: 3 but group g has 2 live members" in err, out + err
        assert len(err.strip().splitlines()) == 1, err
        await jet_ok("load", str(app), "--broker", mosquitto.url)
        async with (
            Link(url, "producer", clean_session=False) as producer,
            persistent(mosquitto.url, "consumer") as consumer,
        ):
            out = await Collector(consumer).watch(OUTPUT)
            await stream(producer, range(total))
            await out.wait_for(lambda c: len(set(map(int, c.values()))) >= total, timeout=30)
            view = await until(lambda: _counted(mosquitto.url, total), "copies' counters", 15)
            listing = await jet_ok("ls", "--broker", mosquitto.url)
            values = out.values()
            # jet inject: into one copy (once); jet tap: ports read from a copy's status
            injected = await Collector(consumer).watch(OUTPUT)
            await jet_ok("inject", "work.s.in", "7777", "--broker", mosquitto.url)
            await injected.wait_for(lambda c: 7777 in c.values(), timeout=10)
            tapping = asyncio.create_task(
                jet_ok("tap", "work.s.out", "--count", "1", "--broker", mosquitto.url)
            )
            for n in range(20):  # until the tap has seen one (it subscribes meanwhile)
                if tapping.done():
                    break
                producer.publish_nowait(INPUT, codec.encode(9000 + n), qos=1)
                await asyncio.wait({tapping}, timeout=0.5)
            assert "pack/work/s/0 90" in await tapping
            with contextlib.suppress(AssertionError):
                await injected.wait_for(lambda c: c.values().count(7777) > 1, timeout=1)
            assert injected.values().count(7777) == 1
            # reload: every copy runs the new definition, in place
            app.write_text(app_text(2, factor=1000))
            said = await jet_ok("reload", str(app), "--broker", mosquitto.url)
            assert "reloaded work (copies on a, b)" in said, said
            doubled = await Collector(consumer).watch(OUTPUT)
            await stream(producer, range(1, 41))
            await doubled.wait_for(lambda c: len(c.values()) >= 40, timeout=20)
            assert sorted(map(int, doubled.values())) == [1000 * n for n in range(1, 41)]
            # reload with fewer copies, then more: the count follows the file
            for count, where in ((1, ["a"]), (2, ["a", "b"])):
                app.write_text(app_text(count, factor=1000))
                await jet_ok("reload", str(app), "--broker", mosquitto.url)
                copies = (await read_group(mosquitto.url)).live_copies("work")
                assert [c.member for c in copies] == where
                assert all(c.wanted == count for c in copies), [c.status for c in copies]
            again = await Collector(consumer).watch(OUTPUT)
            await stream(producer, range(1, 201))
            await again.wait_for(lambda c: len(c.values()) >= 200, timeout=20)
            assert sorted(map(int, again.values())) == [1000 * n for n in range(1, 201)]

            async def both_took_some() -> bool:  # (counters are published every 5 s)
                copies = (await read_group(mosquitto.url)).live_copies("work")
                return len(copies) == 2 and all(
                    c.status["counters"]["received"] > 0 for c in copies)

            await until(both_took_some, "the new copy's share", 12)
            # unload: each copy stops, its retained status is cleared
            said = await jet_ok("unload", str(app), "--broker", mosquitto.url)
            assert "unloaded work (copies on a, b)" in said, said
            after = await read_group(mosquitto.url)
            assert "work" not in after.copies, after.copies
            return values, view, listing

    try:
        values, view, listing = run(scenario(), timeout=90)
    finally:
        for proc in members:
            proc.stop()
    print(listing)
    row = account("pack group: 2 copies share a QoS 1 stream", total, values)
    assert row["lost"] == 0 and row["duplicated"] == 0, row
    received = {c.member: c.status["counters"]["received"] for c in view.live_copies("work")}
    assert set(received) == {"a", "b"}, received
    assert sum(received.values()) == total, received  # each message handled by one copy
    assert all(n > 0 for n in received.values()), received  # and both took a share
    assert "GROUP g" in listing and "work" in listing and "2/2" in listing, listing
    for name in ("a", "b"):
        assert any(line.startswith(name) and "online" in line for line in listing.splitlines())


async def _jet(*args: str) -> tuple[int, str, str]:
    from cli_helpers import jet_async

    return await jet_async(*args)


async def _live_members(url: str, count: int) -> bool:
    return len((await read_group(url)).live("g")) >= count


async def _counted(url: str, total: int) -> GroupView | None:
    view = await read_group(url)
    copies = view.live_copies("work")
    got = sum(c.status.get("counters", {}).get("received", 0) for c in copies)
    return view if got >= total else None


@pytest.mark.parametrize("names, replicas, state", [("ab", 1, True), ("abc", 2, False)])
def test_member_killed_its_circuit_moves_nothing_lost(
    mosquitto: Mosquitto, tmp_path: Path, names: str, replicas: int, state: bool
) -> None:
    """replicas: 1 on a group of two (2 on three): kill -9 the leader, which runs a copy,
    under a QoS 1 stream: the next leader places its copy within two keepalives (on itself
    when it runs none, else on the member left), holds the dead member's session (its
    queued share), nothing is lost; the member back (from its state file, or without one:
    from its copies' retained statuses): the copy adopted from it stops, and the stream
    still arrives once."""
    app = tmp_path / "grouped.yaml"
    app.write_text(app_text(replicas))
    procs = {name: member(mosquitto, tmp_path, name, state=state) for name in names}
    total, after = 1200, 300
    timings: dict[str, float] = {}
    victim, leader = names[0], names[1]
    # where the copies run once the victim is gone: the next leader, and the member left
    survivors = sorted(set(names[1:replicas + 1]))

    async def scenario() -> tuple[list[Any], GroupView, str]:
        url = broker.parse(mosquitto.url)
        await until(lambda: _live_members(mosquitto.url, len(names)), "live members", 15)
        await jet_ok("load", str(app), "--broker", mosquitto.url)
        first = sorted(c.member for c in (await read_group(mosquitto.url)).live_copies("work"))
        assert first == sorted(names[:replicas])  # least loaded first, then the lowest id
        async with (
            Link(url, "producer", clean_session=False) as producer,
            persistent(mosquitto.url, "consumer") as consumer,
        ):
            out = await Collector(consumer).watch(OUTPUT)
            flowing = asyncio.create_task(stream(producer, range(total), pause=0.01))
            await out.wait_for(lambda c: len(c.values()) >= total // 4, timeout=30)
            killed_at = time.monotonic()
            os.kill(procs[victim].proc.pid, signal.SIGKILL)
            procs[victim].proc.wait(10)

            async def moved() -> bool:
                copies = (await read_group(mosquitto.url)).live_copies("work")
                return sorted(c.member for c in copies) == survivors

            await until(moved, "the circuit placed on the survivor", 2 * KEEPALIVE + 2)
            timings["placed"] = time.monotonic() - killed_at
            outage = await jet_ok("ls", "--broker", mosquitto.url)
            lines = outage.splitlines()
            assert any(line.split()[:1] == [victim] and "offline" in line for line in lines), outage
            assert f"adopted from {victim}" in outage and f"{victim} (gone)" in outage, outage
            await asyncio.wait_for(flowing, 60)
            await out.wait_for(lambda c: set(map(int, c.values())) >= set(range(total)),
                               timeout=30)
            # the member comes back from its state file: one copy runs, nothing twice
            procs[victim] = member(mosquitto, tmp_path, victim, state=state)

            async def copies_back() -> bool:
                copies = (await read_group(mosquitto.url)).live_copies("work")
                return sorted(c.member for c in copies) == first

            await until(copies_back, "the copies as first placed, none twice", 20)
            seen_before = len(out.values())
            await stream(producer, range(total, total + after))
            await out.wait_for(
                lambda c: set(map(int, c.values())) >= set(range(total + after)), timeout=30
            )
            with contextlib.suppress(AssertionError):  # (late duplicates, if any, counted)
                await out.wait_for(lambda c: False, timeout=1)
            assert len(out.values()) - seen_before >= after
            listing = await jet_ok("ls", "--broker", mosquitto.url)
            return out.values(), await read_group(mosquitto.url), listing

    said = ""
    try:
        values, view, listing = run(scenario(), timeout=150)
    finally:
        for proc in procs.values():
            said += proc.stop()
    print(said)
    row = account(f"pack group of {len(names)}, replicas {replicas}: member kill -9"
                  f" mid-stream, back {'from --state' if state else 'without --state'}",
                  total + after, values)
    print(f"placed on the survivor {timings['placed']:.2f} s after the kill; {row}")
    assert row["lost"] == 0, row
    assert timings["placed"] <= 2 * KEEPALIVE
    assert len(view.live_copies("work")) == replicas
    assert "GROUP g" in listing and f"{replicas}/{replicas}" in listing, listing
    assert f"{leader} holds {victim}'s share while it is gone" in said, said
    assert f"{victim}'s copy of work now runs on {survivors[-1]}" in said, said
    assert f"adopted from {victim}, which runs it again" in said, said


def test_a_member_with_circuits_of_its_own_is_not_held(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """A gone member that also ran a circuit of its own (`pack: a`): the leader adopts its
    copy but does not hold its session (the holder would drop what the session keeps for
    that circuit); both streams arrive whole once the member is back (late, not lost)."""
    app = tmp_path / "mixed.yaml"
    app.write_text(app_text(1) + """
  - from: {topic: feed/mine, format: msgpack}
    to: mine.s.in
""")
    app.write_text(app.read_text().replace("wires:", """  mine:
    pack: a
    gadgets:
      s: {type: jet.lib.Scale, params: {factor: 1}}
wires:""", 1))
    procs = {name: member(mosquitto, tmp_path, name) for name in "ab"}
    total = 400

    async def scenario() -> tuple[list[Any], list[Any]]:
        url = broker.parse(mosquitto.url)
        await until(lambda: _live_members(mosquitto.url, 2), "two live members", 15)
        await jet_ok("load", str(app), "--broker", mosquitto.url)
        async with (
            Link(url, "producer", clean_session=False) as producer,
            persistent(mosquitto.url, "consumer") as consumer,
        ):
            work = await Collector(consumer).watch(OUTPUT)
            mine = await Collector(consumer).watch("pack/mine/s/0")
            for n in range(total // 2):
                producer.publish_nowait(INPUT, codec.encode(n), qos=1)
                producer.publish_nowait("feed/mine", codec.encode(n), qos=1)
            await producer.flush()
            await work.wait_for(lambda c: len(c.values()) >= total // 2, timeout=20)
            os.kill(procs["a"].proc.pid, signal.SIGKILL)
            procs["a"].proc.wait(10)
            await procs["b"].line("a ran circuits of its own (mine): its session is not held",
                                  timeout=2 * KEEPALIVE)
            for n in range(total // 2, total):  # while a is gone
                producer.publish_nowait(INPUT, codec.encode(n), qos=1)
                producer.publish_nowait("feed/mine", codec.encode(n), qos=1)
            await producer.flush()
            procs["a"] = member(mosquitto, tmp_path, "a")
            for out in (work, mine):
                await out.wait_for(lambda c: set(map(int, c.values())) >= set(range(total)),
                                   timeout=30)
            return work.values(), mine.values()

    said = ""
    try:
        work, mine = run(scenario(), timeout=120)
    finally:
        for proc in procs.values():
            said += proc.stop()
    for name, values in (("a group circuit", work), ("a member's own circuit", mine)):
        row = account(f"pack group: {name}, its member gone and back, not held", total, values)
        assert row["lost"] == 0, row
    assert "holds a's share" not in said, said


def partition_member(url: str, tmp_path: Path, pack_id: str) -> JetProcess:
    """A member on a broker without shared subscriptions (``--partition``)."""
    proc = JetProcess("pack", "--broker", url, "--id", pack_id, "--group", "g", "--partition",
                      "--keepalive", str(KEEPALIVE), "--state", str(tmp_path / f"{pack_id}.state"))
    proc.wait_for_line(f"pack {pack_id} in group g (partition)", timeout=20)
    return proc


def partitioned_stream(member_urls: dict[str, str], load_url: str, feed_url: str,
                       out_url: str, tmp_path: Path, label: str) -> dict[str, Any]:
    """Two --partition members (on ``member_urls``), a ``replicas: 2`` circuit loaded from
    ``load_url``, a numbered QoS 1 stream from ``feed_url`` counted on ``out_url``: each
    message handled by one copy (the copies' counters add up, both non-zero); then the
    second member killed -9 mid-stream: nothing lost, duplicates counted, the survivor
    goes on; the member back: what its session kept is dropped, 300 more once each; a
    reload in place, 40 more once each.
    Returns the figures (asserted here)."""
    app = tmp_path / "grouped.yaml"
    app.write_text(app_text(2))
    procs = {name: partition_member(url, tmp_path, name) for name, url in member_urls.items()}
    first, total = 600, 1200
    victim = sorted(procs)[-1]
    figures: dict[str, Any] = {}

    async def scenario() -> list[Any]:
        await until(lambda: _live_members(load_url, 2), "two live members", 15)
        await jet_ok("load", str(app), "--broker", load_url)

        async def both_live() -> bool:
            copies = (await read_group(load_url)).live_copies("work")
            return sorted(c.member for c in copies) == sorted(procs)

        await until(both_live, "both copies live", 15)
        async with (
            Link(broker.parse(feed_url), "producer", clean_session=False) as producer,
            persistent(out_url, "consumer") as consumer,
        ):
            out = await Collector(consumer).watch(OUTPUT)
            await stream(producer, range(first))
            await out.wait_for(lambda c: len(set(map(int, c.values()))) >= first, timeout=30)
            view = await until(lambda: _counted(load_url, first), "copies' counters", 15)
            with contextlib.suppress(AssertionError):  # (late duplicates, if any, counted)
                await out.wait_for(lambda c: len(c.values()) > first, timeout=1)
            figures["once"] = account(f"{label}: 2 copies split a QoS 1 stream", first,
                                      out.values())
            figures["received"] = {c.member: c.status["counters"]["received"]
                                   for c in view.live_copies("work")}
            # kill -9 one member mid-stream: the other takes its keys and its last messages
            out2 = await Collector(consumer).watch(OUTPUT)
            numbers = range(first, first + total)
            flowing = asyncio.create_task(stream(producer, numbers, pause=0.01))
            await out2.wait_for(lambda c: len(c.values()) >= total // 3, timeout=30)
            os.kill(procs[victim].proc.pid, signal.SIGKILL)
            procs[victim].proc.wait(10)
            await asyncio.wait_for(flowing, 60)
            await out2.wait_for(lambda c: set(map(int, c.values())) >= set(numbers),
                                timeout=30)
            with contextlib.suppress(AssertionError):
                await out2.wait_for(lambda c: False, timeout=1)
            figures["kill"] = account(f"{label}: member kill -9 mid-stream",
                                      total, [int(v) - first for v in out2.values()])
            # the member back (its copy from its state file): what its session kept while
            # it was away comes before its marker and is dropped; the two split again
            procs[victim] = partition_member(member_urls[victim], tmp_path, victim)
            await until(both_live, "both copies live again", 15)
            out3 = await Collector(consumer).watch(OUTPUT)
            again = range(first + total, first + total + 300)
            await stream(producer, again)
            await out3.wait_for(lambda c: set(map(int, c.values())) >= set(again), timeout=30)
            with contextlib.suppress(AssertionError):
                await out3.wait_for(lambda c: False, timeout=1)
            figures["back"] = account(f"{label}: the member back, 300 more", len(again),
                                      [int(v) - again[0] for v in out3.values()])
            # reload in place: each copy runs the new definition, the split goes on
            app.write_text(app_text(2, factor=1000))
            said = await jet_ok("reload", str(app), "--broker", load_url)
            assert "reloaded work (copies on a, b)" in said, said
            out4 = await Collector(consumer).watch(OUTPUT)
            await stream(producer, range(1, 41))
            await out4.wait_for(lambda c: len(c.values()) >= 40, timeout=20)
            with contextlib.suppress(AssertionError):
                await out4.wait_for(lambda c: len(c.values()) > 40, timeout=1)
            assert sorted(map(int, out4.values())) == [1000 * n for n in range(1, 41)]
            return out2.values()

    said = ""
    try:
        run(scenario(), timeout=150)
    finally:
        for proc in procs.values():
            said += proc.stop()
    figures["replayed"] = [line for line in said.splitlines() if "replays" in line]
    figures["dropped"] = [line for line in said.splitlines() if "our session held" in line]
    print(figures)
    assert figures["once"]["lost"] == 0 and figures["once"]["duplicated"] == 0, figures
    received = figures["received"]
    assert set(received) == set(procs) and sum(received.values()) == first, received
    assert all(n > 0 for n in received.values()), received
    assert figures["kill"]["lost"] == 0, figures
    assert figures["replayed"], said  # the survivor replayed the victim's last messages
    assert figures["back"]["lost"] == 0 and figures["back"]["duplicated"] == 0, figures
    assert figures["dropped"], said  # what its session kept, the survivor had handled
    return figures


def test_partition_without_shared_subscriptions(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """``--partition`` on mosquitto (which has shares; the mode must not need them): the
    copies split the stream by hash, and a member's kill -9 loses nothing."""
    partitioned_stream({"a": mosquitto.url, "b": mosquitto.url}, mosquitto.url, mosquitto.url,
                       mosquitto.url, tmp_path, "pack group --partition (mosquitto)")
