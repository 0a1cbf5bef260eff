"""`jet load --watch DIR`: the apps of a directory of circuit files, kept live.

Every ``*.yaml``/``*.yml`` file in the directory is an app.  At start, and
whenever files change, what runs is brought in line with them: a new file is
loaded, a changed one reloaded (only its changed circuits are replaced: the
loader skips the ones that run as the file says), a deleted one unloaded.  A
file that does not read or that ``jet check`` refuses is reported with its
``file:line`` errors and changes nothing: what runs of it stays as it was.
Bursts of saves (an editor writing a temporary file, then renaming it; a
``git checkout`` touching twenty files) come as one batch: watchfiles groups
the events of a quiet interval (``debounce``), and each file of a batch is
read once.

Lifecycle: :meth:`DirectoryWatch.run` until it is cancelled (``jet load --watch``
runs it until SIGINT/SIGTERM); nothing is unloaded when it stops: the apps keep
running, as after a ``jet load``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import watchfiles

from jet.definition.check import check_app
from jet.definition.files import CircuitFileError, load_app
from jet.definition.model import AppDef
from jet.loader import Loader, LoadError, level_brokers
from jet.runtime.registry import Registry
from jet.transport.client import CommandFailed, NoReply

log = logging.getLogger("jet.watch")

#: Milliseconds without a file event before a batch of changes is applied.
DEBOUNCE_MS = 400
#: Milliseconds of quiet after which the watcher yields an empty batch (see run()).
QUIET_MS = 250
SUFFIXES = (".yaml", ".yml")

#: Opens a loader for an app (on its broker, or its levels' brokers).
OpenLoader = Callable[[AppDef], AbstractAsyncContextManager[Loader]]
#: What a failed step may raise: said in one line, and the watch goes on.
TROUBLE = (LoadError, CommandFailed, NoReply, ConnectionError, OSError, TimeoutError)


def _is_app_file(path: Path) -> bool:
    return path.suffix in SUFFIXES and not path.name.startswith(".")


class DirectoryWatch:
    """Keeps the apps of ``directory`` running as its files say (see the module doc)."""

    def __init__(
        self,
        directory: Path,
        open_loader: OpenLoader,
        registry: Registry,
        *,
        progress: Callable[[str], None] = print,
        debounce_ms: int = DEBOUNCE_MS,
    ) -> None:
        self.directory = directory
        self.open_loader = open_loader
        self.registry = registry
        self.progress = progress
        self.debounce_ms = debounce_ms
        #: the app each file runs now: its last version that was loaded
        self.apps: dict[Path, AppDef] = {}

    async def run(self) -> None:
        if not self.directory.is_dir():
            raise OSError(f"{self.directory}: not a directory")
        watching = False
        async for changes in watchfiles.awatch(
            self.directory,
            watch_filter=lambda _change, name: _is_app_file(Path(name)),
            debounce=self.debounce_ms,
            recursive=False,
            # An empty batch after each quiet interval: the first says the watch is in
            # place, so the files are read after it and no change between is missed.
            yield_on_timeout=True,
            rust_timeout=QUIET_MS,
        ):
            if not watching:
                watching = True
                await self.sync(p for p in self.directory.iterdir() if _is_app_file(p))
                self.progress(f"watching {self.directory} ({len(self.apps)} apps running)")
            elif changes:
                await self.sync(Path(name) for _change, name in changes)

    async def sync(self, paths: Iterable[Path]) -> None:
        """Bring what runs in line with these files (each once, in name order; the
        deleted ones last, so a renamed file's app moves to its new name untouched)."""
        ordered = sorted(set(paths), key=lambda path: (not path.is_file(), path))
        for path in ordered:
            if path.is_file():
                await self._apply(path)
            else:
                await self._remove(path)

    async def _apply(self, path: Path) -> None:
        try:
            app = load_app(path)
        except CircuitFileError as exc:
            self._refused(path, [str(exc)])
            return
        problems = [str(p) for p in check_app(app, self.registry)]
        try:
            level_brokers(app)
        except LoadError as exc:
            problems.append(str(exc))
        if problems:
            self._refused(path, problems)
            return
        owner = next((p for p, a in self.apps.items() if a.name == app.name and p != path), None)
        if owner is not None and owner.is_file():
            self._refused(path, [f"{path}:1: app {app.name!r} is already the app of {owner}"])
            return
        if owner is not None:  # renamed (or moved in git): the app is this file's now
            self.apps[path] = self.apps.pop(owner)
            self.progress(f"{path}: app {app.name} was {owner}'s")
        before = self.apps.get(path)
        if before == app:
            return  # saved again unchanged
        try:
            if before is not None and before.name != app.name:  # renamed: the old one goes
                async with self.open_loader(before) as loader:
                    await loader.unload_app(before)
            async with self.open_loader(app) as loader:
                await loader.reload(app)
        except TROUBLE as exc:
            self.progress(f"{path}: {exc}")
            return
        self.apps[path] = app
        what = "loaded" if before is None else "reloaded"
        self.progress(f"{path}: app {app.name} {what} ({len(app.circuits)} circuits)")

    async def _remove(self, path: Path) -> None:
        before = self.apps.pop(path, None)
        if before is None:
            return
        try:
            async with self.open_loader(before) as loader:
                await loader.unload_app(before)
        except TROUBLE as exc:
            self.progress(f"{path}: deleted, but its app {before.name} was not unloaded: {exc}")
            return
        self.progress(f"{path}: deleted: app {before.name} unloaded")

    def _refused(self, path: Path, problems: list[str]) -> None:
        for problem in problems:
            self.progress(problem)
        running = self.apps.get(path)
        kept = f"app {running.name} runs as it was" if running else "nothing of it runs"
        self.progress(f"{path}: refused; {kept}")
