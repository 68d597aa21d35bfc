"""A live session: its stats, its character, its end. The session id is the credential."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field

from server.api.deps import ReferencesDep, SessionDep, SessionsDep
from server.references import UnknownReference

router = APIRouter(prefix="/sessions", tags=["sessions"])


class ReferenceChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reference_id: str = Field(max_length=64)


@router.get("/{session_id}/stats")
async def session_stats(session: SessionDep) -> dict[str, Any]:
    """Frame counts, fps, latency and queue state of a session."""
    return session.stats()


@router.put("/{session_id}/reference")
async def swap_reference(body: ReferenceChoice, session: SessionDep, references: ReferencesDep) -> ReferenceChoice:
    """Animate another character from the next frames on."""
    try:
        reference = references.get(body.reference_id)
    except UnknownReference as exc:
        raise HTTPException(404, str(exc)) from None
    await session.set_reference(reference)
    return ReferenceChoice(reference_id=reference.id)


@router.delete("/{session_id}", status_code=204)
async def end_session(session: SessionDep, sessions: SessionsDep) -> Response:
    """End a session and free everything it held."""
    await sessions.close(session, "ended by the client")
    return Response(status_code=204)
