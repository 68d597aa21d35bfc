"""The FastAPI app: `create_app(settings)`; the model is loaded in `lifespan` and kept on `app.state`.

Run it with `rain-avatar serve`, or `uvicorn --factory server.main:create_app` (settings from
the `RAIN_*` environment variables).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from rain_core.validation import describe_validation_error
from rain_core.weights.profiles import sample_character
from server.api.main import api_router
from server.api.routes import health, pages, whep
from server.core.config import Settings, get_settings
from server.metrics import Metrics
from server.references import Reference, ReferenceStore, grey_card, load_reference_file
from server.sessions import SessionManager
from server.webrtc import include_loopback
from server.worker import ModelWorker

logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    image = load_reference_file(settings.REFERENCE_IMAGE) if settings.REFERENCE_IMAGE else None
    include_loopback(settings.ICE_LOOPBACK)
    metrics = Metrics()
    worker = ModelWorker(settings, metrics)
    try:
        await worker.start()
        if image is None:
            bundled = sample_character(worker.config)
            image = load_reference_file(bundled) if bundled is not None else grey_card()
        references = ReferenceStore(max_items=settings.MAX_REFERENCES, ttl=settings.REFERENCE_TTL)
        sessions = SessionManager(settings, worker, references, metrics, Reference(id="default", image=image))
        sessions.start()
        # Start-up objects (torch, diffusers, the models) live as long as the process: keep them out
        # of every later garbage collection, which then only scans what sessions create.
        gc.collect()
        gc.freeze()
        app.state.metrics = metrics
        app.state.worker = worker
        app.state.references = references
        app.state.sessions = sessions
        logger.info("ready: profile %s, at most %d sessions", worker.config.name, settings.MAX_SESSIONS)
        try:
            yield
        finally:
            logger.info("shutting down: closing %d sessions", len(sessions.sessions))
            await sessions.shutdown()
            references.clear()
            gc.unfreeze()
    finally:
        await worker.stop()
        include_loopback(False)


async def request_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Validation errors as one readable message; malformed JSON is a 400, not a 422."""
    errors = exc.errors()
    for error in errors:
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "JSON decode error")
            return JSONResponse({"detail": f"malformed JSON: {reason}"}, status_code=400)
    return JSONResponse({"detail": describe_validation_error(exc, skip=("body",))}, status_code=422)


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
    app.add_exception_handler(RequestValidationError, request_validation_error)
    app.include_router(api_router)
    app.include_router(whep.router)
    app.include_router(health.metrics_router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=settings.WEB_DIR), name="static")
    return app
