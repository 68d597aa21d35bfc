"""What an OBS view reads beside its stream, by the session's view id and with its view token."""

from __future__ import annotations

from fastapi import APIRouter

from server.api.deps import RuntimeDep, ViewTokenDep

router = APIRouter(prefix="/views", tags=["views"])


@router.get(
    "/{view_id}",
    responses={401: {"description": "no view token"}, 403: {"description": "wrong view token"},
               404: {"description": "unknown session"}},
)
async def view(view_id: str, runtime: RuntimeDep, view_token: ViewTokenDep) -> dict:
    """`{"key_colour": "RRGGBB"}`: the colour of the session character's background, read from its border."""
    return await runtime.view(view_id, view_token)
