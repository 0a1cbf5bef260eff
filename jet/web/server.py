"""The page server: static files over HTTP and one WebSocket per page.

    async with serving("mqtt://127.0.0.1:1883") as url:
        print(url)            # http://127.0.0.1:<port>/

Plain HTTP GETs get the page (``/``, ``/app.js``, ``/style.css``); ``/ws``
upgrades to the WebSocket that carries JSON frames both ways
(docs/web.md).  The server binds 127.0.0.1 unless told otherwise, answers
only requests whose ``Host`` names it (no DNS rebinding) and WebSockets
whose ``Origin`` is the page's own (no other site can drive it from a
visitor's browser).  Broker credentials never reach a page: the page only
ever sees values, statuses and its own requests' results.

What a page may set is bounded: its own web gadgets' outputs, within their
declared ranges (``emit``).  Injecting into any circuit's input (``inject``)
is the operator's power, refused unless the server was started with the
operator view on (``jet web --operator``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator
from importlib import resources
from types import TracebackType
from typing import Any, Self

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from jet.transport import broker
from jet.web.container import PageError, WebContainer
from jet.web.devices import DeviceView
from jet.web.jsonvalue import to_json
from jet.web.operator import RATE_INTERVAL, Operator
from jet.web.pages import Page, Pages
from jet.web.protocol import MAX_FRAME, FrameError, error_reply, ok_reply, parse

log = logging.getLogger("jet.web")

__all__ = ["PageServer", "serving"]

PROTOCOL_VERSION = 1
WS_PATH = "/ws"
#: Above this the WebSocket layer closes the connection (code 1009) without
#: reading the frame; between MAX_FRAME and this a frame gets an error reply.
HARD_FRAME_LIMIT = 1 << 20
#: Requests of one page that wait on MQTT (tap, inject) at the same time.
IN_FLIGHT = 8
#: The reply to an ``inject`` while the operator view is off.
OPERATOR_OFF = (
    "inject: the operator view is off: a page may only set its own gadgets"
    " (start the web container with --operator to inject into any input)"
)

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
_SECURITY_HEADERS = [
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
]


def _load_static() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("jet.web") / "static"
    return {path: ((folder / name).read_bytes(), kind) for path, (name, kind) in _STATIC.items()}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _response(status: int, reason: str, body: bytes, kind: str) -> Response:
    headers = Headers(
        [("Content-Type", kind), ("Content-Length", str(len(body))), *_SECURITY_HEADERS]
    )
    return Response(status, reason, headers, body)


def _refusal(status: int, reason: str, text: str) -> Response:
    return _response(status, reason, f"{text}\n".encode(), "text/plain; charset=utf-8")


class PageServer:
    """HTTP for the static page and one WebSocket per page, bound to 127.0.0.1 by default.

    ``async with PageServer(...)`` listens (:attr:`url` is then known);
    leaving the block closes every page and stops listening.
    """

    def __init__(
        self,
        container: WebContainer,
        operator: Operator,
        pages: Pages,
        *,
        devices: DeviceView | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        operator_view: bool = False,
    ) -> None:
        self.container = container
        self.operator = operator
        self.devices = devices
        #: a page may inject into any circuit's input (else only emit on its own gadgets)
        self.operator_view = operator_view
        self.pages = pages
        self.host = host
        self.port = port
        self._static = _load_static()
        self._server: Server | None = None
        self._allowed_hosts: set[str] | None = None

    @property
    def url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}/"

    async def __aenter__(self) -> Self:
        self._server = await serve(
            self._serve_page,
            self.host,
            self.port,
            process_request=self._process_request,
            max_size=HARD_FRAME_LIMIT,
            logger=logging.getLogger("jet.web.http"),
        )
        self.port = int(next(iter(self._server.sockets)).getsockname()[1])
        if _is_loopback(self.host):
            names = {"127.0.0.1", "localhost", "[::1]", _url_host(self.host)}
            self._allowed_hosts = {f"{name}:{self.port}" for name in names}
        log.info("web pages on %s", self.url)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # -- HTTP --------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        host = request.headers.get("Host", "")
        if self._allowed_hosts is not None and host not in self._allowed_hosts:
            # A loopback server answers only to its own names: a page on
            # another site cannot reach it by rebinding a DNS name to 127.0.0.1.
            return _refusal(403, "Forbidden", f"unknown host {host[:80]!r}")
        path = request.path.split("?", 1)[0]
        if path == WS_PATH:
            origin = request.headers.get("Origin")
            if origin is not None and origin not in (f"http://{host}", f"https://{host}"):
                return _refusal(403, "Forbidden", f"WebSocket from another origin {origin[:80]!r}")
            return None  # go on with the WebSocket handshake
        found = self._static.get(path)
        if found is None:
            return _refusal(404, "Not Found", f"no page {path[:80]!r}")
        body, kind = found
        return _response(200, "OK", body, kind)

    # -- WebSocket ---------------------------------------------------------------------

    async def _serve_page(self, connection: ServerConnection) -> None:
        page = Page(connection.send)
        slots = asyncio.Semaphore(IN_FLIGHT)
        running: set[asyncio.Task[None]] = set()
        # No await from the greeting to joining the broadcast: the page gets
        # each value once, either in the greeting or as a broadcast after it.
        page.send(
            {
                "op": "hello",
                "server": self.container.id,
                "version": PROTOCOL_VERSION,
                "max_frame": MAX_FRAME,
                "operator": self.operator_view,
            }
        )
        self.container.greet(page)
        self.operator.greet(page)
        if self.devices is not None:
            self.devices.greet(page)
        self.pages.add(page)
        try:
            async for frame in connection:
                self._take(page, frame, slots, running)
        except ConnectionClosed as exc:
            log.debug("page %d closed: %s", page.number, exc)
        finally:
            self.pages.remove(page)
            for task in running:
                task.cancel()
            await self.operator.release(page)
            await page.close()

    def _take(
        self,
        page: Page,
        frame: str | bytes,
        slots: asyncio.Semaphore,
        running: set[asyncio.Task[None]],
    ) -> None:
        """Answer one frame: at once when it needs no MQTT round trip, else in a task."""
        try:
            request = parse(frame)
        except FrameError as exc:
            page.send(error_reply(exc.ref, str(exc)))
            return
        if request.op == "emit":
            page.send(self._emit(request.ref, request.args))
            return
        if request.op == "ping":
            page.send(ok_reply(request.ref, "pong"))
            return
        if request.op == "inject" and not self.operator_view:
            page.send(error_reply(request.ref, OPERATOR_OFF))
            return
        if slots.locked():
            page.send(error_reply(request.ref, f"too many requests in flight (max {IN_FLIGHT})"))
            return

        async def answer() -> None:
            async with slots:
                page.send(await self._ask(page, request.op, request.ref, request.args))

        task = asyncio.create_task(answer(), name=f"web-page-{page.number}-{request.op}")
        running.add(task)
        task.add_done_callback(running.discard)

    def _emit(self, ref: Any, args: Any) -> dict[str, Any]:
        try:
            topic = self.container.emit(
                args["circuit"], args["gadget"], args["port"], args["value"]
            )
        except PageError as exc:
            return error_reply(ref, f"emit: {exc}")
        except Exception as exc:  # a bug answers this page; the server goes on
            log.exception("emit failed")
            return error_reply(ref, f"emit: internal error: {type(exc).__name__}")
        return ok_reply(ref, {"topic": topic})

    async def _ask(self, page: Page, op: str, ref: Any, args: Any) -> dict[str, Any]:
        try:
            if op == "tap":
                result: Any = await self.operator.tap(page, args["target"])
            elif op == "untap":
                await self.operator.untap(page, args["target"])
                result = None
            else:
                result = await self.operator.inject(args["target"], args["value"])
        except PageError as exc:
            return error_reply(ref, str(exc))
        except Exception as exc:  # a bug answers this page; the server goes on
            log.exception("page %d: %s failed", page.number, op)
            return error_reply(ref, f"{op}: internal error: {type(exc).__name__}")
        return ok_reply(ref, to_json(result))


@contextlib.asynccontextmanager
async def serving(
    broker_url: str | None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    server_id: str = "web",
    connect_timeout: float | None = None,
    stats_interval: float | None = None,
    rate_interval: float = RATE_INTERVAL,
    operator_view: bool = False,
    devices: str | None = None,
) -> AsyncIterator[str]:
    """Run the web container ``server_id`` and its page server; yields the page URL.

    ``broker_url`` None means ``$JET_BROKER`` or the local default, as everywhere.
    ``operator_view``: pages may inject into any circuit's input (``--operator``).
    ``devices``: the device registry's store (``--devices``: a SQLite file or a URL)
    shown in the Devices tab; None: the tab says how to turn it on.

    ``connect_timeout`` None waits for the broker as long as it takes (a
    daemon); a number raises ConnectionError after that many seconds.
    """
    pages = Pages()
    options: dict[str, Any] = {} if stats_interval is None else {"stats_interval": stats_interval}
    container = WebContainer(
        broker.parse(broker_url), server_id, pages=pages, connect_timeout=connect_timeout, **options
    )
    async with (
        container,
        Operator(container.link, pages, rate_interval=rate_interval) as operator,
        DeviceView(devices, operator.board, pages) as device_view,
        PageServer(
            container, operator, pages, host=host, port=port, operator_view=operator_view,
            devices=device_view,
        ) as server,
    ):
        operator.on_board.append(device_view.board_changed)
        container.set_url(server.url)
        yield server.url
