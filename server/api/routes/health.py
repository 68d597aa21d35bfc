"""Health, the pages' configuration, and Prometheus metrics."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from rain_core.driving import DrivingSettings
from server.api.deps import MetricsDep, ReferencesDep, SessionsDep, SettingsDep, WorkerDep
from server.sessions import SessionManager
from server.worker import ModelWorker

router = APIRouter(tags=["health"])
metrics_router = APIRouter(tags=["health"])


def _process(sessions: SessionManager, worker: ModelWorker) -> dict[str, Any]:
    """What a leak would grow: threads (all, and Python's), resident memory, asyncio tasks, and
    the session and engine objects still in memory (open or not)."""
    try:
        with open("/proc/self/statm") as statm:
            rss: int | None = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        threads = len(os.listdir("/proc/self/task"))
    except (OSError, ValueError, IndexError):
        rss, threads = None, threading.active_count()
    return {
        "threads": threads,
        "python_threads": threading.active_count(),
        "rss_bytes": rss,
        "tasks": len(asyncio.all_tasks()),
        "session_objects": len(sessions.in_memory),
        "engine_objects": len(worker.in_memory),
    }


@router.get("/health")
async def health(
    settings: SettingsDep, sessions: SessionsDep, worker: WorkerDep, references: ReferencesDep
) -> dict[str, Any]:
    """Is the model loaded, and how busy is the server."""
    config = worker.config
    return {
        "status": "ok",
        "profile": config.name,
        "device": str(config.device),
        "dtype": config.dtype,
        "sessions": len(sessions.sessions),
        "max_sessions": settings.MAX_SESSIONS,
        "engines": len(worker.engines),
        "viewers": sessions.viewer_count,
        "references": len(references),
        "process": _process(sessions, worker),
    }


@router.get("/config")
async def page_config(settings: SettingsDep, worker: WorkerDep) -> dict[str, Any]:
    """What the pages need: ICE servers, the stream's size and rates, the parameters and their ranges."""
    config = worker.config
    return {
        "ice_servers": [s.model_dump(exclude_none=True) for s in settings.ICE_SERVERS],
        "profile": config.name,
        "width": config.width,
        "height": config.height,
        "frames_per_call": config.frames_per_group,
        "first_frame_latency_frames": config.queue_length,
        "fps": settings.FPS,
        "max_fps": settings.MAX_FPS,
        "max_upload_bytes": settings.MAX_UPLOAD_BYTES,
        "params": {"fps": settings.FPS, **worker.driving_defaults.model_dump()},
        "params_schema": DrivingSettings.model_json_schema(),
    }


@metrics_router.get("/metrics", response_class=Response)
async def metrics(metrics: MetricsDep) -> Response:
    """Prometheus text format."""
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
