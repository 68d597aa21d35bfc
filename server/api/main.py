"""The JSON API under `/api`."""

from fastapi import APIRouter

from server.api.routes import health, references, sessions, signaling, views, whip_sessions

api_router = APIRouter(prefix="/api")
api_router.include_router(signaling.router)
api_router.include_router(references.router)
api_router.include_router(sessions.router)
api_router.include_router(health.router)
api_router.include_router(views.router)
api_router.include_router(whip_sessions.router)
