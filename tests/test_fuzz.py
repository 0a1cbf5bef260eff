"""Bad input, fuzzed: circuit files, conf messages and wire payloads.

- circuit files: ``load_app``/``loads_app`` only ever raise CircuitFileError, whose
  text is one line naming the file (tests/test_yamlfile.py fuzzes ``loads_app`` on
  text; here: raw bytes on disk, mutations of the shipped circuits, alias bombs);
- conf messages: arbitrary bytes, arbitrary msgpack maps and near-valid commands
  with wrong types are sent over a real mosquitto to a real Pack's container conf
  and circuit conf topics.  The pack answers every command that has a ``reply_to``
  with one ``ok: false`` line naming the topic, logs each error as one line, never
  reconnects, and a data flow through another circuit keeps passing during and
  after the fuzzing;
- wire payloads: garbage on a wired topic is counted in the circuit's ``errors``,
  logged as one line naming the topic, and good messages keep being delivered.

Every input that once broke the pack has its own test at the end of this file (and is
an explicit example of the fuzzers).
The RF12 line parser is fuzzed in tests/test_rf12_lines.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import REPO
from helpers import Collector
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from jet.containers import conf
from jet.containers.pack import Pack
from jet.definition.check import check_app
from jet.definition.files import CircuitFileError, load_app, loads_app
from jet.runtime.registry import Registry
from jet.transport import broker, codec
from jet.transport.client import CommandFailed, Session
from jet.transport.link import Link

T = TypeVar("T")

FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: Against a live pack: no shrinking (a pack a bug has cut off would make every shrink step
#: wait for its timeout); the failing example is reported as generated.
LIVE = settings(FUZZ, phases=[Phase.explicit, Phase.reuse, Phase.generate])


# --- an event loop in a thread: hypothesis is synchronous, the pack is not -------------------


class LoopThread:
    """Runs an event loop in a daemon thread; ``call`` runs a coroutine there, bounded."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop", daemon=True)

    def __enter__(self) -> LoopThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        async def cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.close_within(cancel_rest(), 3)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), self.loop)
        return future.result(timeout + 5)

    def close_within(self, coro: Coroutine[Any, Any, Any], timeout: float) -> None:
        """Run a clean-up coroutine; after ``timeout`` leave it to the daemon thread
        (a pack cut off by a known bug may take aiomqtt's 30 s to close)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        with contextlib.suppress(Exception):
            future.result(timeout)


def offset_circuit(name: str, offset: float) -> dict[str, Any]:
    return {
        "name": name,
        "container": "pack",
        "gadgets": [{"name": "d", "type": "jet.lib.Offset", "params": {"offset": offset}}],
        "wires": [],
    }


def one_line_records(records: list[logging.LogRecord]) -> None:
    """Every warning or error is one line without a traceback."""
    for record in records:
        if record.levelno < logging.WARNING:
            continue
        message = record.getMessage()
        assert "\n" not in message, f"multi-line log from {record.name}: {message!r}"
        assert record.exc_info is None, f"traceback logged by {record.name}: {message!r}"


# --- open bugs in jet/: inputs the broad fuzzers do not send ----------------------------------


# --- circuit files --------------------------------------------------------------------------

SHIPPED = [(REPO / "circuits" / name).read_bytes() for name in ("heater.yaml", "demo.yaml")]
SNIPPETS = [
    b": ", b"- ", b"{", b"}", b"[", b"]", b",", b"&a ", b"*a", b"<<: *a", b"!!str ", b"!!binary ",
    b"!!python/object/apply:os.system ", b"!!set ", b"? ", b"|", b">-", b"'", b'"', b"#", b"\n",
    b"    ", b"\t", b"\r", b"\x00", b"\xff", b"\xef\xbb\xbf", b"\xe2\x80\xa8", b"%YAML 1.1\n",
    b"---\n", b"...\n", b"->", b" -> ", b".", b"1e999", b"0x", b".nan", b"~", b"null", b"true",
    b"jet.lib.Nope", b"os.system", b"container: node", b"node: 99", b"qos=7", b"app: ",
]


@st.composite
def mutated_circuit_file(draw: st.DrawFn) -> bytes:
    """A shipped circuit file with a few edits: spans cut, tokens put in, lines moved."""
    data = bytearray(draw(st.sampled_from(SHIPPED)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        match draw(st.sampled_from(["cut", "insert", "replace", "line"])):
            case "cut":
                del data[at : at + draw(st.integers(1, 40))]
            case "insert":
                data[at:at] = draw(st.sampled_from(SNIPPETS))
            case "replace":
                data[at : at + 1] = draw(st.binary(min_size=1, max_size=2))
            case _:
                lines = bytes(data).split(b"\n")
                i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
                lines.insert(j, lines[i])
                data = bytearray(b"\n".join(lines))
    return bytes(data)


def refuse_in_one_line(load: Callable[[], Any], source: str) -> None:
    try:
        app = load()
    except CircuitFileError as exc:
        text = str(exc)
        assert text.startswith(f"{source}:"), text
        assert "\n" not in text and "\r" not in text, repr(text)
        assert exc.line >= 1
        return
    for problem in check_app(app, Registry()):
        assert str(problem).startswith(f"{source}:")
        assert "\n" not in str(problem)


def test_fuzz_circuit_file_bytes_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "fuzz.yaml"

    @FUZZ
    @given(st.one_of(st.binary(max_size=200), mutated_circuit_file()))
    @example(b"\xef\xbb\xbfapp: x\ncircuits: {}\n")
    @example(b"app: x\x00\n")
    @example(b"app: \xc3\x28\n")
    @example(b"app: x\r\ncircuits:\r\n  a: {gadgets: {g: {type: jet.lib.Scale}}}\r\n")
    def one(data: bytes) -> None:
        path.write_bytes(data)
        refuse_in_one_line(lambda: load_app(path), str(path))

    one()


def test_fuzz_mutated_shipped_circuits_as_text() -> None:
    @FUZZ
    @given(mutated_circuit_file())
    def one(data: bytes) -> None:
        text = data.decode("utf-8", errors="replace")
        refuse_in_one_line(lambda: loads_app(text, "mutant.yaml"), "mutant.yaml")

    one()


@pytest.mark.parametrize(
    "text",
    [
        # alias bomb: nine levels of ten aliases would be a billion values
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ),
        "app: " + "[" * 5000 + "]" * 5000 + "\n",
        "app: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
        "app: &r [*r]\n",
        "!!python/object/apply:os.system ['true']\n",
    ],
    ids=["alias-bomb", "deep-lists", "deep-maps", "self-alias", "python-tag"],
)
def test_hostile_circuit_files_are_refused_quickly(text: str) -> None:
    started = time.monotonic()
    with pytest.raises(CircuitFileError) as refused:
        loads_app(text, "hostile.yaml")
    assert time.monotonic() - started < 5
    assert str(refused.value).startswith("hostile.yaml:")
    assert "\n" not in str(refused.value)


# --- conf messages against a real pack ------------------------------------------------------

leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=12),
    st.binary(max_size=12),
)
any_value = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(-5, 5)), inner, max_size=4),
    ),
    max_leaves=10,
)


def near(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a plausible value, sometimes anything at all (a wrong type)."""
    return st.one_of(good, good, good, any_value)


port_names = st.one_of(
    st.sampled_from(["d.in", "d.out"]),  # the victim's ports: commands get past the name check
    st.sampled_from(["e.in", "x.y", "a.b.c", "", ".", "d."]),
)
gadget_def = st.fixed_dictionaries(
    {
        "name": near(st.sampled_from(["d", "e", "Bad Name", ""])),
        "type": near(
            st.sampled_from(
                ["jet.lib.Offset", "jet.lib.Scale", "jet.lib.Counter", "jet.lib.Nope", "os.system"]
            )
        ),
    },
    optional={
        "params": near(st.dictionaries(st.sampled_from(["offset", "factor", "x"]), any_value)),
        "inputs": any_value,
        "outputs": any_value,
        "number": any_value,
    },
)
wire_def = st.fixed_dictionaries(
    {"from": near(port_names), "to": near(port_names)},
    optional={
        "qos": near(st.integers(-1, 3)),
        "queue": near(st.integers(-1, 5)),
        "policy": near(st.sampled_from(["block", "drop-oldest", "drop-newest", "nope"])),
    },
)
definition = st.fixed_dictionaries(
    {
        "name": near(st.sampled_from(["victim", "fz1", "fz2", "flow", "Bad Name"])),
        "gadgets": near(st.lists(near(gadget_def), max_size=3)),
    },
    optional={
        "container": near(st.sampled_from(["pack", "node", "web", "nope"])),
        "wires": near(st.lists(near(wire_def), max_size=3)),
        "exports_in": near(st.dictionaries(st.text(max_size=4), near(port_names), max_size=2)),
        "exports_out": near(st.dictionaries(st.text(max_size=4), near(port_names), max_size=2)),
        "subcircuits": any_value,
    },
)
wire_topics = st.one_of(
    st.sampled_from(["fuzz/a", "fuzz/+", "fuzz/#", "fuzz/+/x", "flow/in"]),
    # not valid filters, or refused by mosquitto: refused in one line
    st.sampled_from(["", "fuzz/#/x", "fuzz/a+", "fuzz/\x00", "fuzz/\x01", "fuzz/" + "x" * 70_000]),
    st.text(max_size=12).map(lambda t: f"fuzz/{t}"),
)
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "input": port_names,
    "output": port_names,
    "topic": wire_topics,
    "qos": st.integers(-1, 3),
    "queue": st.integers(-1, 5),
    "policy": st.sampled_from(["block", "drop-oldest", "nope"]),
    "by": st.text(max_size=6),
    "ttl": st.one_of(st.integers(-1, 3), st.floats()),
    "value": any_value,
    "timeout": st.one_of(st.integers(-1, 1), st.floats(max_value=1.0)),
    "definition": definition,
    "exports": st.dictionaries(port_names, st.lists(st.text(max_size=4), max_size=2)),
    "app": st.text(max_size=6),
    "start": st.booleans(),
    # a group's copy (docs/groups.md): a group that may or may not be this pack's
    "pack_group": st.one_of(st.just("fz-group"), st.text(max_size=6)),
    "replicas": st.integers(-1, 70),
    "adopted": st.text(max_size=6),
}
#: How a device's messages read or write (a wire's ``payload``, a ``foreign`` target's).
payload_formats = st.fixed_dictionaries(
    {"format": st.sampled_from(["json", "text", "raw", "msgpack", "presence", "yaml", 3])},
    optional={"path": st.one_of(st.text(max_size=6), st.integers()),
              "map": st.one_of(st.dictionaries(st.text(max_size=3), any_value, max_size=2),
                               st.lists(st.integers(), max_size=2))},
)
FIELD_VALUES["payload"] = payload_formats
FIELD_VALUES["foreign"] = st.dictionaries(port_names, st.one_of(
    st.lists(st.one_of(payload_formats.map(lambda f: {"topic": "fuzz/out", **f}),
                       st.fixed_dictionaries({"topic": wire_topics},
                                             optional={"qos": st.integers(-1, 3),
                                                       "retain": st.one_of(st.booleans(),
                                                                           st.integers())}),
                       any_value), max_size=2),
    any_value), max_size=2)


def commands(table: Mapping[str, Mapping[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Near-valid commands of ``table``: fields missing, mistyped, or one too many."""

    def build(name: str) -> st.SearchStrategy[dict[str, Any]]:
        optional = {key: near(FIELD_VALUES[key]) for key in table[name]}
        optional["extra"] = any_value
        return st.fixed_dictionaries({"cmd": near(st.just(name))}, optional=optional)

    return st.sampled_from(sorted(table)).flatmap(build)


CONTAINER_CONF = "jet/pack/fz/conf"
VICTIM_CONF = "pack/victim/conf"
CONF_EXAMPLES: list[tuple[str, dict[str, Any]]] = [
    (VICTIM_CONF, {"cmd": "wire", "input": "d.in"}),
    (VICTIM_CONF, {"cmd": "tap", "output": "d.out", "ttl": math.inf}),
    (VICTIM_CONF, {"cmd": "drain", "timeout": -1}),
    (VICTIM_CONF, {"cmd": "stop"}),
    (VICTIM_CONF, {"cmd": "inject", "input": "d.in", "value": [1, {"a": None}]}),
    (CONTAINER_CONF, {"cmd": "load", "definition": {"x": 1}}),
    (
        CONTAINER_CONF,
        {
            "cmd": "load",
            "definition": {
                "name": "loop",
                "gadgets": [{"name": "d", "type": "jet.lib.Offset"}],
                "wires": [{"from": "d.out", "to": "d.in"}],  # a cycle without a delay
            },
        },
    ),
]
#: Commands that once broke the pack, kept as examples.
REGRESSION_EXAMPLES: list[tuple[str, dict[str, Any]]] = [
    (VICTIM_CONF, {"cmd": "wire", "input": "d.in", "topic": "fuzz/#/x"}),
    (VICTIM_CONF, {"cmd": "wire", "input": "d.in", "topic": "fuzz/\x01"}),
    (VICTIM_CONF, {"cmd": "drain", "timeout": math.nan}),
    (VICTIM_CONF, {"cmd": "export", "output": "d.out", "by": "x", "qos": 5}),
    (
        VICTIM_CONF,
        {"cmd": "reload", "definition": offset_circuit("victim", 2.0), "exports": {"d.out": 5}},
    ),
    (
        CONTAINER_CONF,
        {
            "cmd": "load",
            "definition": offset_circuit("fz1", 1.0),
            "exports": {"d.out": ["a", 1]},
        },
    ),
    (
        CONTAINER_CONF,
        {
            "cmd": "load",
            "definition": {
                **offset_circuit("fz2", 1.0),
                "wires": [{"from": "d.out", "to": "d.in", "qos": math.inf}],
            },
        },
    ),
]


def examples(*values: Any) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """``@example(v)`` for each of ``values``, in order."""

    def decorate(test: Callable[..., None]) -> Callable[..., None]:
        for value in reversed(values):
            test = example(value)(test)
        return test

    return decorate

conf_targets = st.one_of(
    st.tuples(st.just(CONTAINER_CONF), commands(conf.CONTAINER_COMMANDS)),
    st.tuples(st.just(VICTIM_CONF), commands(conf.CIRCUIT_COMMANDS)),
    st.tuples(
        st.sampled_from([CONTAINER_CONF, VICTIM_CONF]),
        st.dictionaries(
            st.one_of(st.text(max_size=8), st.integers(-9, 2**64 - 1)), any_value, max_size=5
        ),
    ),
)
raw_messages = st.tuples(
    st.sampled_from([CONTAINER_CONF, VICTIM_CONF]),
    st.one_of(st.binary(max_size=64), any_value.map(codec.encode)),
)


class FuzzedPack:
    """A pack ``fz`` with a ``victim`` circuit (fuzzed) and a ``flow`` circuit fed
    a steady stream on ``flow/in`` whose every output is recorded with its time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stack = contextlib.AsyncExitStack()
        self.sent = 0
        self.arrivals: list[tuple[float, Any]] = []
        self._streaming: asyncio.Task[None] | None = None

    async def start(self) -> None:
        where = broker.parse(self.url)
        self.pack = await self.stack.enter_async_context(Pack(where, "fz"))
        self.session = await self.stack.enter_async_context(Session(where, timeout=3))
        self.producer = await self.stack.enter_async_context(
            Link(where, "fuzz-producer", clean_session=True)
        )
        for name, offset in (("victim", 1.0), ("flow", 1000.0)):
            await self.session.request(
                CONTAINER_CONF, {"cmd": "load", "definition": offset_circuit(name, offset)}
            )
        await self.session.request(
            "pack/flow/conf", {"cmd": "wire", "input": "d.in", "topic": "flow/in"}
        )
        await self.producer.subscribe("pack/flow/d/0", 1, self._arrived)
        self._streaming = asyncio.create_task(self._stream())

    def _arrived(self, _topic: str, payload: bytes) -> None:
        self.arrivals.append((time.monotonic(), codec.decode(payload)))

    async def _stream(self) -> None:
        while True:
            self.producer.publish_nowait("flow/in", codec.encode(self.sent), qos=1)
            self.sent += 1
            await asyncio.sleep(0.01)

    async def finish(self) -> None:
        if self._streaming is not None:
            self._streaming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._streaming
        await self.producer.flush()
        deadline = time.monotonic() + 10
        while len(self.arrivals) < self.sent and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self._streaming is not None:
            self._streaming.cancel()
        await self.stack.aclose()

    async def restore_victim(self) -> None:
        """A fuzzed ``stop`` may have unloaded the victim: load it again."""
        if "victim" not in self.pack.circuits:
            await self.session.request(
                CONTAINER_CONF, {"cmd": "load", "definition": offset_circuit("victim", 1.0)}
            )

    async def request(self, topic: str, command: dict[str, Any]) -> tuple[bool, Any]:
        try:
            return True, await self.session.request(topic, command)
        except CommandFailed as exc:
            return False, str(exc)
        finally:
            await self.restore_victim()

    async def publish_then_sync(self, topic: str, payload: bytes) -> None:
        """Publish raw bytes, then wait for a status reply on the same topic: the
        pack handles conf messages one at a time, so by then the bytes were handled."""
        await self.session.link.publish(topic, payload, qos=1)
        await self.session.request(CONTAINER_CONF, {"cmd": "status"})
        await self.restore_victim()


@pytest.fixture
def fuzzed_pack(mosquitto: Any) -> Iterator[tuple[LoopThread, FuzzedPack]]:
    with LoopThread() as thread:
        subject = FuzzedPack(mosquitto.url)
        thread.call(subject.start())
        try:
            yield thread, subject
        finally:
            thread.close_within(subject.close(), 10)


def check_flow(thread: LoopThread, subject: FuzzedPack, fuzz_started: float) -> None:
    """The flow circuit passed every message, in order, with no stall while fuzzed."""
    thread.call(subject.finish(), 20)
    values = [v for _, v in subject.arrivals]
    assert values == [n + 1000.0 for n in range(subject.sent)], "flow lost or reordered messages"
    times = [fuzz_started] + [t for t, _ in subject.arrivals if t >= fuzz_started]
    assert len(times) > 10, "the flow did not run during the fuzzing"
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) < 2.0, f"the flow stalled for {max(gaps):.1f}s during the fuzzing"
    assert subject.pack.link.stats.reconnects == 0, "a conf message got the pack disconnected"
    assert subject.pack.link.stats.handler_errors == 0


def test_fuzz_conf_commands_get_one_line_errors_and_flow_keeps_going(
    fuzzed_pack: tuple[LoopThread, FuzzedPack], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    thread, subject = fuzzed_pack
    started = time.monotonic()
    answered = {"ok": 0, "error": 0}

    @settings(LIVE, max_examples=150)
    @given(conf_targets)
    @examples(*CONF_EXAMPLES, *REGRESSION_EXAMPLES)
    def one(target: tuple[str, dict[Any, Any]]) -> None:
        topic, command = target
        first = len(caplog.records)
        ok, result = thread.call(subject.request(topic, command))
        records = caplog.records[first:]
        one_line_records(records)
        answered["ok" if ok else "error"] += 1
        if not ok:
            assert isinstance(result, str)
            assert "\n" not in result
            assert result.startswith(f"{topic}: "), result
            logged = [r.getMessage() for r in records if r.name == "jet.pack"]
            assert logged.count(result) == 1, f"error not logged once as one line: {logged}"

    one()
    assert answered["error"] >= 60, answered
    check_flow(thread, subject, started)
    one_line_records(caplog.records)


def test_fuzz_raw_conf_bytes_are_logged_once_and_flow_keeps_going(
    fuzzed_pack: tuple[LoopThread, FuzzedPack], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    thread, subject = fuzzed_pack
    started = time.monotonic()

    @settings(LIVE, max_examples=80)
    @given(raw_messages)
    @example((VICTIM_CONF, b""))
    @example((VICTIM_CONF, b"\xc1"))
    @example((CONTAINER_CONF, b"\x91" * 3000 + b"\xc0"))  # nested too deep for msgpack
    @example((CONTAINER_CONF, b"\xdd\xff\xff\xff\xff"))  # claims 4 billion items
    @example((VICTIM_CONF, b"\x00" * (codec.MAX_PAYLOAD + 1)))
    @example((VICTIM_CONF, b"\x81\x91\x01\x01"))  # a map with an array key
    def one(target: tuple[str, bytes]) -> None:
        topic, payload = target
        first = len(caplog.records)
        thread.call(subject.publish_then_sync(topic, payload))
        records = caplog.records[first:]
        one_line_records(records)
        errors = [r.getMessage() for r in records if r.name == "jet.pack"]
        assert len(errors) <= 1, errors
        for message in errors:
            assert message.startswith(f"{topic}: "), message
            assert not message.endswith(": "), f"says what, not why: {message!r}"

    one()
    check_flow(thread, subject, started)
    one_line_records(caplog.records)


# --- garbage payloads on a wire -----------------------------------------------------------------

WIRED = "wire/in"
payloads = st.one_of(
    st.binary(max_size=64),
    any_value.map(codec.encode),
    any_value.map(codec.encode).map(lambda b: b[: max(0, len(b) - 1)]),  # cut short
    any_value.map(codec.encode).map(lambda b: b + b"\xc0"),  # trailing bytes
)


def test_fuzz_wire_payloads_are_counted_logged_and_good_ones_delivered(
    mosquitto: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)

    async def setup() -> tuple[contextlib.AsyncExitStack, Pack, Session, Collector]:
        stack = contextlib.AsyncExitStack()
        where = broker.parse(mosquitto.url)
        pack = await stack.enter_async_context(Pack(where, "wires"))
        session = await stack.enter_async_context(Session(where))
        link = await stack.enter_async_context(Link(where, "wire-fuzz", clean_session=True))
        await session.request(
            "jet/pack/wires/conf", {"cmd": "load", "definition": offset_circuit("sink", 0.5)}
        )
        await session.request("pack/sink/conf", {"cmd": "wire", "input": "d.in", "topic": WIRED})
        out = await Collector(link).watch("pack/sink/d/0")
        return stack, pack, session, out

    with LoopThread() as thread:
        stack, pack, session, out = thread.call(setup())
        expected = {"errors": 0, "good": 0}

        async def send(batch: list[bytes]) -> dict[str, Any]:
            for payload in batch:
                await out.link.publish(WIRED, payload, qos=1)
            marker = 10_000_000 + expected["good"]
            await out.link.publish(WIRED, codec.encode(marker), qos=1)
            await out.wait_for(lambda c: marker + 0.5 in c.values())
            status: dict[str, Any] = await session.request("pack/sink/conf", {"cmd": "status"})
            return status

        try:

            @settings(LIVE, max_examples=80)
            @given(st.lists(payloads, min_size=1, max_size=4))
            @example([b"\xc1", b"", b"\x92\x01"])
            @example([b"\x00" * (codec.MAX_PAYLOAD + 1)])
            @example([b"\x91" * 3000 + b"\xc0"])
            @example([b"\x81\x91\x01\x01"])  # a map with an array key
            def one(batch: list[bytes]) -> None:
                bad = 0
                for payload in batch:
                    try:
                        codec.decode(payload)
                    except codec.PayloadError:
                        bad += 1
                first = len(caplog.records)
                status = thread.call(send(batch))
                expected["errors"] += bad
                expected["good"] += 1
                assert status["counters"]["errors"] == expected["errors"]
                records = caplog.records[first:]
                one_line_records(records)
                dropped = [r.getMessage() for r in records if r.name == "jet.circuit"]
                assert len(dropped) == bad, dropped
                for message in dropped:
                    assert message.startswith(f"{WIRED}: "), message

            one()
            wanted = [10_000_000.5 + n for n in range(expected["good"])]
            assert [v for v in out.values() if v in set(wanted)] == wanted
            assert pack.link.stats.handler_errors == 0
            assert pack.link.stats.reconnects == 0
        finally:
            thread.close_within(stack.aclose(), 10)


# --- input that once broke the pack (one test each) ----------------------------------------------


def pack_scenario(
    mosquitto: Any,
    body: Callable[[Pack, Session, Link], Coroutine[Any, Any, None]],
    *,
    stats: float = 5.0,
) -> None:
    """Run ``body`` against a pack ``fz`` with ``victim`` and ``flow`` circuits loaded
    (in a loop thread, so a pack a bug has cut off cannot hang the test in clean-up)."""

    async def setup(stack: contextlib.AsyncExitStack) -> tuple[Pack, Session, Link]:
        where = broker.parse(mosquitto.url)
        pack = await stack.enter_async_context(Pack(where, "fz", stats_interval=stats))
        session = await stack.enter_async_context(Session(where, timeout=1))
        observer = await stack.enter_async_context(Link(where, "observer", clean_session=True))
        for name, offset in (("victim", 1.0), ("flow", 1000.0)):
            await session.request(
                CONTAINER_CONF, {"cmd": "load", "definition": offset_circuit(name, offset)}
            )
        await session.request(
            "pack/flow/conf", {"cmd": "wire", "input": "d.in", "topic": "flow/in"}
        )
        return pack, session, observer

    stack = contextlib.AsyncExitStack()
    with LoopThread() as thread:
        try:
            pack, session, observer = thread.call(setup(stack), 10)
            thread.call(body(pack, session, observer), 15)
        finally:
            thread.close_within(stack.aclose(), 5)


async def flow_still_works(observer: Link, value: int = 5) -> None:
    out = await Collector(observer).watch("pack/flow/d/0")
    await observer.publish("flow/in", codec.encode(value), qos=1)
    await out.wait_for(lambda c: value + 1000.0 in c.values(), timeout=1.5)


async def refused_in_one_line(session: Session, topic: str, command: dict[str, Any]) -> None:
    with pytest.raises(CommandFailed) as refused:
        await session.request(topic, command)
    assert str(refused.value).startswith(f"{topic}: ")
    assert "\n" not in str(refused.value)


def test_wire_to_an_invalid_filter_is_refused_and_pack_keeps_listening(mosquitto: Any) -> None:
    async def body(pack: Pack, session: Session, observer: Link) -> None:
        await refused_in_one_line(
            session, VICTIM_CONF, {"cmd": "wire", "input": "d.in", "topic": "a/#/b"}
        )
        await flow_still_works(observer)

    pack_scenario(mosquitto, body)


#: Topics mosquitto 2 refuses (it disconnects the client), checked against 2.0.11: C0 and C1
#: controls, DEL, and non-characters, those of the supplementary planes included.
REFUSED_TOPICS = ["fuzz/\x00", "fuzz/\x01", "fuzz/\x7f", "fuzz/\x85", "fuzz/\ufdd0", "fuzz/\uffff"]
SUPPLEMENTARY_NONCHARACTERS = ["fuzz/\U0001fffe", "fuzz/\U0010ffff"]


def test_wire_to_a_topic_mosquitto_refuses_is_refused(mosquitto: Any) -> None:
    async def body(pack: Pack, session: Session, observer: Link) -> None:
        for topic in REFUSED_TOPICS:
            await refused_in_one_line(
                session, VICTIM_CONF, {"cmd": "wire", "input": "d.in", "topic": topic}
            )
        await flow_still_works(observer)
        assert pack.link.stats.reconnects == 0

    pack_scenario(mosquitto, body)


def test_topics_with_supplementary_noncharacters_are_refused(mosquitto: Any) -> None:
    async def body(pack: Pack, session: Session, observer: Link) -> None:
        for topic in SUPPLEMENTARY_NONCHARACTERS:
            await refused_in_one_line(
                session, VICTIM_CONF, {"cmd": "wire", "input": "d.in", "topic": topic}
            )
            payload = codec.encode({"cmd": "status", "id": "1", "reply_to": topic})
            await observer.publish(VICTIM_CONF, payload, qos=1)
            await session.request(CONTAINER_CONF, {"cmd": "status"})
        await flow_still_works(observer)
        assert pack.link.stats.reconnects == 0

    pack_scenario(mosquitto, body)


@pytest.mark.parametrize(
    "reply_to", ["jet/reply/\x01", "jet/reply/" + "x" * 70_000], ids=["control-char", "too-long"]
)
def test_reply_to_a_topic_mosquitto_refuses_does_not_cut_the_pack_off(
    mosquitto: Any, reply_to: str
) -> None:
    async def body(pack: Pack, session: Session, observer: Link) -> None:
        payload = codec.encode({"cmd": "status", "id": "1", "reply_to": reply_to})
        await observer.publish(VICTIM_CONF, payload, qos=1)
        await session.request(CONTAINER_CONF, {"cmd": "status"})
        await flow_still_works(observer)
        assert pack.link.stats.reconnects == 0

    pack_scenario(mosquitto, body)


def test_conf_map_with_unhashable_key_is_one_line(
    mosquitto: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)

    async def body(pack: Pack, session: Session, observer: Link) -> None:
        await observer.publish(VICTIM_CONF, b"\x81\x91\x01\x01", qos=1)
        await session.request(CONTAINER_CONF, {"cmd": "status"})

    pack_scenario(mosquitto, body)
    one_line_records(caplog.records)
    assert any(r.getMessage().startswith(f"{VICTIM_CONF}: bad conf") for r in caplog.records)


def test_wire_payload_with_unhashable_key_is_counted(
    mosquitto: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)

    async def body(pack: Pack, session: Session, observer: Link) -> None:
        await observer.publish("flow/in", b"\x81\x91\x01\x01", qos=1)
        await flow_still_works(observer)
        status = await session.request("pack/flow/conf", {"cmd": "status"})
        assert status["counters"]["errors"] == 1

    pack_scenario(mosquitto, body)
    one_line_records(caplog.records)


MALFORMED_DEFINITIONS: list[dict[str, Any]] = [
    {"exports_in": [1]},
    {"subcircuits": [1]},
    {"wires": [None]},
    {"wires": [{"from": 1, "to": "d.in"}]},
    {"gadgets": [{"name": "d", "type": 5}]},
    {"gadgets": [{"name": "d", "type": [1]}]},
]


def test_malformed_definitions_get_one_line_refusals(
    mosquitto: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)

    async def body(pack: Pack, session: Session, observer: Link) -> None:
        for bad in MALFORMED_DEFINITIONS:
            definition = {**offset_circuit("fz1", 1.0), **bad}
            await refused_in_one_line(
                session, CONTAINER_CONF, {"cmd": "load", "definition": definition}
            )
            reload = {"cmd": "reload", "definition": {**definition, "name": "victim"}}
            await refused_in_one_line(session, VICTIM_CONF, reload)
        assert set(pack.circuits) == {"victim", "flow"}
        await flow_still_works(observer)

    pack_scenario(mosquitto, body)
    one_line_records(caplog.records)


def test_infinite_qos_or_queue_in_a_definition_is_refused(
    mosquitto: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)

    async def body(pack: Pack, session: Session, observer: Link) -> None:
        for field in ("qos", "queue"):
            wire = {"from": "d.out", "to": "d.in", field: math.inf}
            definition = {**offset_circuit("fz1", 1.0), "wires": [wire]}
            await refused_in_one_line(
                session, CONTAINER_CONF, {"cmd": "load", "definition": definition}
            )

    pack_scenario(mosquitto, body)
    one_line_records(caplog.records)


def test_export_with_a_qos_out_of_range_is_refused(mosquitto: Any) -> None:
    async def body(pack: Pack, session: Session, observer: Link) -> None:
        export = {"cmd": "export", "output": "d.out", "by": "x", "qos": 5}
        await refused_in_one_line(session, VICTIM_CONF, export)
        await session.request(VICTIM_CONF, {"cmd": "inject", "input": "d.in", "value": 1})
        await flow_still_works(observer)

    pack_scenario(mosquitto, body)


def test_gadget_names_are_checked_like_circuit_ids(mosquitto: Any) -> None:
    async def body(pack: Pack, session: Session, observer: Link) -> None:
        for name in ("g\x01", "g/#", "g+"):
            definition = offset_circuit("fz1", 1.0)
            definition["gadgets"][0]["name"] = name
            await refused_in_one_line(
                session, CONTAINER_CONF, {"cmd": "load", "definition": definition}
            )
        await flow_still_works(observer)

    pack_scenario(mosquitto, body)


def test_refused_reload_leaves_the_circuit_unchanged(mosquitto: Any) -> None:
    async def body(pack: Pack, session: Session, observer: Link) -> None:
        await refused_in_one_line(
            session,
            VICTIM_CONF,
            {
                "cmd": "reload",
                "definition": offset_circuit("victim", 50.0),
                "exports": {"d.out": 5},
            },
        )
        out = await Collector(observer).watch("pack/victim/d/0")
        await session.request(VICTIM_CONF, {"cmd": "inject", "input": "d.in", "value": 1})
        await out.wait_for(lambda c: bool(c.values()), timeout=3)
        assert out.values() == [2.0], "the refused reload changed the circuit"

    pack_scenario(mosquitto, body)


def test_drain_with_a_nan_timeout_does_not_stall_other_circuits(mosquitto: Any) -> None:
    where = broker.parse(mosquitto.url)
    ticks: list[float] = []
    ticker = {
        "name": "tick",
        "container": "pack",
        "gadgets": [{"name": "t", "type": "jet.lib.Ticker", "params": {"interval": 0.02}}],
        "wires": [],
    }

    async def start_pack(stack: contextlib.AsyncExitStack) -> None:
        await stack.enter_async_context(Pack(where, "fz"))

    async def start_client(stack: contextlib.AsyncExitStack) -> Session:
        session = await stack.enter_async_context(Session(where, timeout=2))
        await session.request(CONTAINER_CONF, {"cmd": "load", "definition": ticker})
        await session.request(
            CONTAINER_CONF, {"cmd": "load", "definition": offset_circuit("victim", 1.0)}
        )
        await session.link.subscribe(
            "pack/tick/t/0", 0, lambda _t, _p: ticks.append(time.monotonic())
        )
        return session

    async def drain_nan(session: Session) -> None:
        for _ in range(5):
            with contextlib.suppress(CommandFailed):  # refusing it is right too
                await session.request(VICTIM_CONF, {"cmd": "drain", "timeout": math.nan})

    # The pack runs in its own loop and thread: a stalled loop must not stall the test.
    pack_stack, client_stack = contextlib.AsyncExitStack(), contextlib.AsyncExitStack()
    with LoopThread() as pack_thread, LoopThread() as client_thread:
        try:
            pack_thread.call(start_pack(pack_stack))
            session = client_thread.call(start_client(client_stack))
            client_thread.call(drain_nan(session), 10)
            time.sleep(1.5)
            recent = [t for t in ticks if t > time.monotonic() - 1.0]
            assert len(recent) >= 20, f"{len(recent)} ticks in the last second (50 due)"
        finally:
            client_thread.close_within(client_stack.aclose(), 5)
            pack_thread.close_within(pack_stack.aclose(), 5)
