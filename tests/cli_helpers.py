"""Running the real `jet` command in subprocesses."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
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


def jet(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run `jet ARGS` to completion; output captured as text, checked for tracebacks."""
    done = subprocess.run(
        jet_argv(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert_no_traceback(done.stdout + done.stderr, "jet " + " ".join(args))
    return done


def jet_background(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        jet_argv(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def stop(proc: subprocess.Popen[str]) -> str:
    """Terminate a background `jet` and return what it printed."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
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


async def jet_async(*args: str, timeout: float = 25.0) -> tuple[int, str, str]:
    """Run `jet ARGS` without blocking the event loop (a pack may run in it)."""
    proc = await asyncio.create_subprocess_exec(
        *jet_argv(*args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
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
