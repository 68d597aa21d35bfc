"""Health, the pages' configuration, and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from server.api.deps import RuntimeDep

router = APIRouter(tags=["health"])
metrics_router = APIRouter(tags=["health"])


@router.get("/health")
async def health(runtime: RuntimeDep) -> dict[str, Any]:
    """Is the model loaded, and how busy is the server."""
    return await runtime.health()


@router.get("/config")
async def page_config(runtime: RuntimeDep) -> dict[str, Any]:
    """What the pages need: ICE servers, the stream's size and rates, the parameters and their ranges."""
    return await runtime.client_config()


@metrics_router.get("/metrics", response_class=Response)
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus text format."""
    return Response(await runtime.metrics(), media_type=CONTENT_TYPE_LATEST)
