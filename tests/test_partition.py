"""jet.transport.partition without a broker: the rule, keeping, replaying, the marker's
early messages (the brokers' runs are in test_groups.py, test_cluster.py, test_devices.py)."""

from __future__ import annotations

from jet.transport.partition import Partition, Split, message_key, owner


def test_each_key_falls_to_one_member_and_a_going_moves_only_its_own() -> None:
    keys = [message_key("feed/work", str(n).encode()) for n in range(1000)]
    three = {k: owner(k, {"a", "b", "c"}) for k in keys}
    assert {k: owner(k, ["c", "a", "b"]) for k in keys} == three  # (order does not matter)
    counts = {m: sum(1 for o in three.values() if o == m) for m in "abc"}
    assert all(250 < n < 420 for n in counts.values()), counts
    two = {k: owner(k, {"a", "b"}) for k in keys}
    assert all(two[k] == three[k] for k in keys if three[k] != "c")


def test_others_messages_are_kept_and_the_gone_ones_replayed() -> None:
    handled: list[bytes] = []
    parts = {m: Partition(m) for m in ("a", "b")}
    for part in parts.values():
        assert part.marked(others_live=False) == []
    mine = {m: 0 for m in parts}
    for n in range(200):
        payload = str(n).encode()
        key = message_key("t", payload)
        for m, part in parts.items():
            mine[m] += part.mine(key, {"a", "b"}, "t", payload,
                                 lambda _t, p: handled.append(p))
    assert sum(mine.values()) == 200 and all(mine.values()), mine
    replay = parts["a"].gone({"b"}, {"a", "b"}, {"a"})
    assert len(replay) == mine["b"] and parts["a"].replayed == mine["b"]
    assert all(owner(k.key, {"a", "b"}) == "b" for k in replay)
    # what the caller says the gone one handled is not replayed; other spaces are kept
    part = Partition("a")
    part.marked(others_live=False)
    key = next(k for k in (message_key("t", str(n).encode()) for n in range(50))
               if owner(k, {"a", "b"}) == "b")
    part.mine(key, {"a", "b"}, "t", b"x", lambda _t, _p: None, space="one")
    assert part.gone({"b"}, {"a", "b"}, {"a"}, space="two") == []
    assert part.gone({"b"}, {"a", "b"}, {"a"}, space="one", handled=lambda _k: True) == []


def test_before_the_marker_messages_wait_and_are_dropped_when_others_handled_them() -> None:
    part = Partition("a")
    assert not part.mine("k", {"a"}, "t", b"1", lambda _t, _p: None)
    assert len(part.marked(others_live=False)) == 1
    part = Partition("a")
    part.mine("k", {"a"}, "t", b"1", lambda _t, _p: None)
    assert part.marked(others_live=True) == [] and part.dropped_early == 1
    split = Split("a")
    split.part.marked(others_live=False)
    assert split.mine("work", "t", b"1", lambda _t, _p: None)  # (alone until told more)
