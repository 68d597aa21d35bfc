"""The FastAPI app: `create_app(settings)`; the box's `Runtime` starts in `lifespan` and is kept
on `app.state`. `serve(settings)` runs it with uvicorn.

Run it with `rain-avatar serve`, or `uvicorn --factory server.main:create_app` (settings from
the `RAIN_*` environment variables).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from uvicorn.server import HANDLED_SIGNALS

from server.api.body_limit import DEFAULT_BODY_BYTES, BodyLimit, route_body_limits
from server.api.errors import add_error_handlers
from server.api.main import api_router
from server.api.routes import health, pages, whep, whip
from server.api.runtime_api import RuntimeAPI
from server.core.config import Settings, get_settings
from server.runtime import Runtime


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    if app.state.runtime is not None:  # served from elsewhere (a Ray cluster's replicas), not owned here
        yield
        return
    runtime = Runtime(app.state.settings)
    await runtime.start()
    app.state.runtime = runtime
    try:
        yield
    finally:
        app.state.runtime = None
        await runtime.stop()


def create_app(settings: Settings | None = None, runtime: RuntimeAPI | None = None) -> FastAPI:
    """The app; its runtime is the box's own (started in `lifespan`) unless `runtime` is given
    (the Ray ingress passes the cluster's)."""
    settings = settings or get_settings()
    app = FastAPI(
        title="rain-avatar",
        summary="Live RAIN avatars over WebRTC",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.runtime = runtime
    if settings.CORS_ORIGINS:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.CORS_ORIGINS,
            # OPTIONS too: WHIP/WHEP clients send it themselves (RFC 9725), and a cross-origin
            # OPTIONS is preflighted like any other method.
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            # If-Match and ETag: a WHIP client's trickle ICE (RFC 9725).
            allow_headers=["Content-Type", "Authorization", "If-Match"],
            expose_headers=["Location", "Link", "Retry-After", "ETag", "Accept-Patch"],
        )
    app.add_middleware(BodyLimit, default=DEFAULT_BODY_BYTES, limits=route_body_limits(settings))
    add_error_handlers(app)
    app.include_router(api_router)
    app.include_router(whep.router)
    app.include_router(whip.router)
    app.include_router(health.metrics_router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=settings.WEB_DIR), name="static")
    return app


class _Server(uvicorn.Server):
    """uvicorn's server, except that the signal that asked for the shutdown is not raised again
    once the shutdown is done: uvicorn re-raises it, and the process then ends killed by it
    (status -15 for SIGTERM) however cleanly it closed. Here it returns, and exits 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(settings: Settings) -> int:
    """Run the app on `settings.HOST`:`settings.PORT` until SIGINT or SIGTERM, then shut down
    cleanly (every session closed); returns the exit status, 0."""
    config = uvicorn.Config(
        create_app(settings),
        host=settings.HOST,
        port=settings.PORT,
        log_level=settings.LOG_LEVEL.lower(),
        access_log=False,  # request paths carry session ids and view tokens
    )
    _Server(config).run()
    return 0
