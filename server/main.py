"""The FastAPI app: `create_app(settings)`; the box's `Runtime` starts in `lifespan` and is kept
on `app.state`.

Run it with `rain-avatar serve`, or `uvicorn --factory server.main:create_app` (settings from
the `RAIN_*` environment variables).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from server.api.body_limit import DEFAULT_BODY_BYTES, BodyLimit, route_body_limits
from server.api.errors import add_error_handlers
from server.api.main import api_router
from server.api.routes import health, pages, whep
from server.core.config import Settings, get_settings
from server.runtime import Runtime


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    runtime = Runtime(app.state.settings)
    await runtime.start()
    app.state.runtime = runtime
    try:
        yield
    finally:
        await runtime.stop()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="rain-avatar",
        summary="Live RAIN avatars over WebRTC",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    if settings.CORS_ORIGINS:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.CORS_ORIGINS,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Content-Type", "Authorization"],
            expose_headers=["Location", "Link", "Retry-After"],
        )
    app.add_middleware(BodyLimit, default=DEFAULT_BODY_BYTES, limits=route_body_limits(settings))
    add_error_handlers(app)
    app.include_router(api_router)
    app.include_router(whep.router)
    app.include_router(health.metrics_router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=settings.WEB_DIR), name="static")
    return app
