"""Dependencies of the routes: what lives on `app.state`, as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from server.core.config import Settings
from server.metrics import Metrics
from server.references import ReferenceStore
from server.sessions import Session, SessionManager, UnknownSession
from server.worker import ModelWorker


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_sessions(request: Request) -> SessionManager:
    return request.app.state.sessions


async def get_worker(request: Request) -> ModelWorker:
    return request.app.state.worker


async def get_references(request: Request) -> ReferenceStore:
    return request.app.state.references


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionsDep = Annotated[SessionManager, Depends(get_sessions)]
WorkerDep = Annotated[ModelWorker, Depends(get_worker)]
ReferencesDep = Annotated[ReferenceStore, Depends(get_references)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


async def get_session(session_id: str, sessions: SessionsDep) -> Session:
    try:
        return sessions.get(session_id)
    except UnknownSession as exc:
        raise HTTPException(404, str(exc)) from None


SessionDep = Annotated[Session, Depends(get_session)]
