"""Helpers for the web container tests: a headless Chromium page and a loaded app."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from jet.containers.pack import Pack
from jet.definition.files import load_app
from jet.loader import Loader
from jet.transport import broker
from jet.transport.client import Session
from jet.web import serving

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: Waits on the page are bounded by this (milliseconds), never by sleeping.
PAGE_TIMEOUT_MS = 8000


def require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium) - browser tests skipped")


@contextlib.asynccontextmanager
async def browser_page(tmp_path: Path, name: str) -> AsyncIterator[Any]:
    """A fresh headless page; on failure a screenshot is saved and its path printed."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            try:
                yield page
                assert not errors, f"JavaScript errors on the page: {errors}"
            except BaseException:
                shot = tmp_path / f"{name}-failure.png"
                with contextlib.suppress(Exception):
                    await page.screenshot(path=str(shot), full_page=True)
                    print(f"screenshot of the failing page: {shot}")
                raise
        finally:
            await browser.close()


@attrs.define
class Stack:
    """A pack and a web container on one broker, with an app loaded by the Loader."""

    url: str
    page_url: str
    pack: Pack
    session: Session
    loader: Loader


@contextlib.asynccontextmanager
async def loaded_app(broker_url: str, tmp_path: Path, app_text: str) -> AsyncIterator[Stack]:
    path = tmp_path / "app.yaml"
    path.write_text(app_text)
    app = load_app(path)
    async with (
        Pack(broker.parse(broker_url), "default", stats_interval=0.5) as pack,
        serving(
            broker_url, connect_timeout=5.0, stats_interval=0.5, rate_interval=0.5,
            operator_view=True,
        ) as page_url,
        Session(broker.parse(broker_url), name="webtest") as session,
    ):
        loader = Loader(session)
        await loader.load(app)
        yield Stack(broker_url, page_url, pack, session, loader)


def now() -> float:
    return time.time()
