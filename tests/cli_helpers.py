"""Running the real `jet` command in subprocesses."""

from __future__ import annotations

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


def jet(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run `jet ARGS` to completion; output captured as text."""
    return subprocess.run(
        jet_argv(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


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
    return proc.stdout.read() if proc.stdout else ""


def read_until(proc: subprocess.Popen[str], needle: str, limit: int = 500) -> list[str]:
    """Read a background process's lines until one contains ``needle`` (bounded)."""
    seen: list[str] = []
    assert proc.stdout is not None
    for _ in range(limit):
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line.rstrip("\n"))
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} not printed; got {seen[-20:]}")
