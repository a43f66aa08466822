"""The operator web page and /metrics: one Starlette app on the gateway's loop, served by uvicorn.

    app = make_app(hub, cfg, station_id)          # tests: starlette.testclient.TestClient(app)
    await serve_http(hub, cfg, ready, station_id)  # the gateway: until cancelled

The page (static/: one HTML file, vanilla JS and CSS, no build step, nothing from outside the box) reads
the JSON API (api.py) and one Server-Sent Events stream (live.py); login and CSRF are in auth.py, the
Prometheus collector in metrics.py. Routes and metrics: docs/plant.md, "web".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Generator
from importlib import resources
from pathlib import Path
from typing import Any

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inspector.gateway.config import HttpConfig
from inspector.gateway.hub import Hub
from inspector.gateway.web.api import Api, BadRequest
from inspector.gateway.web.auth import AuthError, Sessions, error_response
from inspector.gateway.web.labels import Labeller
from inspector.gateway.web.live import Live
from inspector.gateway.web.metrics import Metrics

log = structlog.get_logger("inspector.gateway.web")

PACKAGE = "inspector.gateway.web"
# Only this server's own files: no CDN, no inline script, no framing by another site.
CSP = ("default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
SECURITY_HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff",
                    "referrer-policy": "same-origin", "x-frame-options": "DENY"}
SHUTDOWN_S = 2.0


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every HTTP response (pure ASGI: streaming responses pass untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in SECURITY_HEADERS.items():
                    headers.setdefault(k, v)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _index() -> bytes:
    return resources.files(PACKAGE).joinpath("static", "index.html").read_bytes()


def make_app(hub: Hub, cfg: HttpConfig, station_id: str, *, secret: bytes | None = None,
             journal: Path | None = None) -> Starlette:
    """The Starlette app: the page, its API, login and /metrics over `hub`. The hub's event consumer starts
    with the app's lifespan (uvicorn, or a TestClient used as a context manager). `journal`: the station's
    journal file the label action writes to (None: labels off)."""
    sessions = Sessions(cfg.users, secret)
    labeller = Labeller(sessions, journal, cfg.label_defects)
    live_ref: dict[str, Live] = {}
    metrics = Metrics(hub, station_id, lambda: {"gateway_web_events": live_ref["live"].queue_depth()})
    live = live_ref["live"] = Live(hub, metrics.observe)
    api = Api(hub, cfg, station_id, live, metrics, login_enabled=bool(cfg.users))
    index = _index()

    async def page(request: Request) -> Response:
        return Response(index, media_type="text/html; charset=utf-8", headers={"cache-control": "no-cache"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await live.start()
        try:
            yield
        finally:
            await live.stop()

    async def bad_request(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": str(exc)}, status_code=400, headers={"cache-control": "no-store"})

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AuthError)
        return error_response(exc, request)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    async def server_error(request: Request, exc: Exception) -> Response:  # a bug: logged, answered in JSON
        log.error("web request failed", path=request.url.path, error=repr(exc))
        return JSONResponse({"error": "internal error"}, status_code=500)

    routes = [
        Route("/", page),
        Route("/api/state", api.state),
        Route("/api/results", api.results),
        Route("/api/history", api.history),
        Route("/api/result/{seq}", api.result),
        Route("/api/image/{seq}/{roi}/{kind}", api.image),
        Route("/api/preview.jpg", api.preview),
        Route("/api/events", api.events),
        Route("/api/session", sessions.session_info),
        Route("/api/ping-authenticated", sessions.ping, methods=["POST"]),
        Route("/api/label", labeller.info, methods=["GET"]),
        Route("/api/label", labeller.label, methods=["POST"]),
        Route("/login", sessions.login, methods=["POST"]),
        Route("/logout", sessions.logout, methods=["POST"]),
        Route("/metrics", api.prometheus),
        Mount("/static", StaticFiles(packages=[(PACKAGE, "static")]), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(SecurityHeaders)],
                    exception_handlers={BadRequest: bad_request, AuthError: refused, HTTPException: http_error,
                                        Exception: server_error})
    app.state.live, app.state.sessions, app.state.metrics = live, sessions, metrics
    return app


class _ToStructlog(logging.Handler):
    """uvicorn's own warnings and errors (a broken connection, a bug in a request) as the gateway's JSON log
    lines, instead of uvicorn's text format."""

    def emit(self, record: logging.LogRecord) -> None:
        level = "error" if record.levelno >= logging.ERROR else "warning"
        getattr(log, level)(record.getMessage(), logger=record.name,
                            exc_info=record.exc_info if record.exc_info else None)


def _uvicorn_logging() -> None:
    logger = logging.getLogger("uvicorn")
    if not any(isinstance(h, _ToStructlog) for h in logger.handlers):
        logger.addHandler(_ToStructlog(logging.WARNING))
    logger.setLevel(logging.WARNING)
    logger.propagate = False


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the gateway's CLI owns SIGTERM/SIGINT and cancels us."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:  # uvicorn >= 0.29
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn
        pass


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port in use is an OSError before anything is served."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


async def serve_http(hub: Hub, cfg: HttpConfig, ready: Callable[[str], None], station_id: str, **kw: Any) -> None:
    """Serve the page, the API and /metrics on cfg.bind until cancelled; `ready(line)` once listening.
    OSError if the address cannot be bound. Keyword arguments go to make_app (e.g. `secret`)."""
    host, _, port_text = cfg.bind.rpartition(":")   # validated by HttpConfig; port 0 (any free one) for tests
    sock = _listen(host, int(port_text))
    port = sock.getsockname()[1]
    app = make_app(hub, cfg, station_id, **kw)
    _uvicorn_logging()
    config = uvicorn.Config(app, lifespan="on", log_config=None, log_level="warning",
                            access_log=False, timeout_graceful_shutdown=SHUTDOWN_S, server_header=False,
                            proxy_headers=False)
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="http")
    try:
        while not server.started:
            if task.done():
                await task  # a failed start: its error here
                return
            await asyncio.sleep(0.02)
        shown = f"[{host.strip('[]')}]" if ":" in host.strip("[]") else host
        ready(f"http: http://{shown}:{port}/ (operator page; /metrics for Prometheus)")
        await asyncio.shield(task)
    finally:
        if not task.done():  # cancelled: shut down gracefully (event streams end at once), then for good
            app.state.live.closing.set()
            server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(task), SHUTDOWN_S + 2)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                server.force_exit = True
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        sock.close()
