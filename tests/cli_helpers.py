"""Running the real `jet` command in subprocesses."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def jet_argv(*args: str) -> list[str]:
    # The `jet` installed beside the interpreter running the tests (a venv's
    # bin/ need not be on PATH), else whatever PATH has, else the module.
    beside = Path(sys.executable).with_name("jet")
    exe = str(beside) if beside.exists() else shutil.which("jet")
    base = [exe] if exe else [sys.executable, "-m", "jet.cli"]
    return [*base, *args]


def assert_no_traceback(output: str, what: str = "jet") -> str:
    """No `jet` command ever shows a user a traceback: every test that runs one checks it."""
    assert "Traceback (most recent call last)" not in output, (
        f"{what} printed a traceback:\n{output}"
    )
    return output


def jet(
    *args: str, timeout: float = 30.0, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `jet ARGS` to completion; output captured as text, checked for tracebacks.

    ``env``: the whole environment (default: this one, unbuffered)."""
    done = subprocess.run(
        jet_argv(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO,
        env=dict(env) if env is not None else {**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert_no_traceback(done.stdout + done.stderr, "jet " + " ".join(args))
    return done


def jet_background(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        jet_argv(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def terminate(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL if it has not ended within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def stop(proc: subprocess.Popen[str]) -> str:
    """Terminate a background `jet` and return what it printed."""
    terminate(proc)
    printed = proc.stdout.read() if proc.stdout else ""
    return assert_no_traceback(printed, " ".join(map(str, proc.args)))


def read_until(proc: subprocess.Popen[str], needle: str, limit: int = 500) -> list[str]:
    """Read a background process's lines until one contains ``needle`` (bounded)."""
    seen: list[str] = []
    assert proc.stdout is not None
    for _ in range(limit):
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line.rstrip("\n"))
        assert_no_traceback(line)
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} not printed; got {seen[-20:]}")


async def jet_async(
    *args: str, timeout: float = 25.0, cwd: Path = REPO
) -> tuple[int, str, str]:
    """Run `jet ARGS` without blocking the event loop (a pack may run in it)."""
    proc = await asyncio.create_subprocess_exec(
        *jet_argv(*args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    assert_no_traceback(out.decode() + err.decode(), "jet " + " ".join(args))
    return proc.returncode, out.decode(), err.decode()



async def jet_ok(*args: str, timeout: float = 25.0, cwd: Path = REPO) -> str:
    """`jet_async`, which must succeed: its stdout."""
    code, out, err = await jet_async(*args, timeout=timeout, cwd=cwd)
    assert code == 0, f"jet {' '.join(args)}: {out}{err}"
    return out

class JetProcess:
    """A long-running `jet` subprocess whose output is read as it comes (a
    thread), so a test waits for a line with a timeout instead of on the pipe."""

    def __init__(self, *args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self._seen = threading.Condition()
        self.proc = subprocess.Popen(
            jet_argv(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._seen:
                self.lines.append(line.rstrip("\n"))
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    @property
    def output(self) -> str:
        with self._seen:
            return "\n".join(self.lines)

    def wait_for_line(self, needle: str, timeout: float = 20.0) -> str:
        """The first line containing ``needle``, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._seen:
            while True:
                found = next((line for line in self.lines if needle in line), None)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._reader.is_alive():
                    raise AssertionError(f"{needle!r} not printed; got:\n{self.output}")
                self._seen.wait(remaining)

    async def line(self, needle: str, timeout: float = 20.0) -> str:
        return await asyncio.to_thread(self.wait_for_line, needle, timeout)

    def signal(self, signum: int, timeout: float = 15.0) -> int:
        """Send ``signum``; the exit code (the process must end within ``timeout``)."""
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout)
        self._reader.join(5)
        assert_no_traceback(self.output, " ".join(map(str, self.proc.args)))
        return code

    def stop(self) -> str:
        terminate(self.proc)
        self._reader.join(5)
        return assert_no_traceback(self.output, " ".join(map(str, self.proc.args)))
