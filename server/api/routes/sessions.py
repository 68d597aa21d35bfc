"""A live session: its stats, its character, its end. The session id is the credential."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from server.api.deps import RuntimeDep
from server.tokens import MAX_TOKEN_CHARS

router = APIRouter(prefix="/sessions", tags=["sessions"])


class ReferenceChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reference_id: str = Field(max_length=MAX_TOKEN_CHARS)


@router.get("/{session_id}/stats", responses={404: {"description": "unknown session"}})
async def session_stats(session_id: str, runtime: RuntimeDep) -> dict[str, Any]:
    """Frame counts, fps, latency and queue state of a session."""
    return await runtime.stats(session_id)


@router.put("/{session_id}/reference", responses={404: {"description": "unknown session or reference"}})
async def swap_reference(session_id: str, body: ReferenceChoice, runtime: RuntimeDep) -> ReferenceChoice:
    """Animate another character from the next frames on."""
    return ReferenceChoice(reference_id=await runtime.swap_reference(session_id, body.reference_id))


@router.delete("/{session_id}", status_code=204, responses={404: {"description": "unknown session"}})
async def end_session(session_id: str, runtime: RuntimeDep) -> Response:
    """End a session and free everything it held."""
    await runtime.close_session(session_id)
    return Response(status_code=204)
