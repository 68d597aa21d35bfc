"""A live session: its stats, its character, its recordings, its end. The session id is the credential."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
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


@router.patch(
    "/{session_id}/params",
    responses={404: {"description": "unknown session"},
               422: {"description": "a parameter out of range or unknown (named), as for the offer's params"}},
)
async def set_params(
    session_id: str, runtime: RuntimeDep,
    params: Annotated[dict[str, Any], Body(description="fps and driving settings, as on the control channel")],
) -> dict[str, Any]:
    """Change parameters (a WHIP publisher has no control channel); all or nothing -> all of them now."""
    return await runtime.set_params(session_id, params)


@router.post(
    "/{session_id}/control",
    responses={404: {"description": "unknown session"},
               422: {"description": "a message the control channel would refuse; its error, bounded"}},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "properties": {"id": {}, "type": {"type": "string"}, "params": {"type": "object"}},
        "required": ["type"],
    }}}}},
)
async def control(session_id: str, request: Request, runtime: RuntimeDep) -> dict[str, Any]:
    """One control channel message over HTTP (`{"type": "pause"}`, `{"type": "params", "params":
    {...}}`, ...: for clients without the channel, e.g. a WHIP publisher) -> the channel's reply."""
    # The body goes to the channel's own parser as it came: one check of every message, its
    # size bounded by the route's body limit first.
    try:
        message = (await request.body()).decode()
    except UnicodeDecodeError:
        raise HTTPException(422, "a control message is JSON text in UTF-8") from None
    reply = await runtime.control(session_id, message)
    if not reply["ok"]:
        raise HTTPException(422, reply["error"])
    return reply


@router.put("/{session_id}/reference", responses={404: {"description": "unknown session or reference"}})
async def swap_reference(session_id: str, body: ReferenceChoice, runtime: RuntimeDep) -> ReferenceChoice:
    """Animate another character from the next frames on."""
    return ReferenceChoice(reference_id=await runtime.swap_reference(session_id, body.reference_id))


@router.delete("/{session_id}", status_code=204, responses={404: {"description": "unknown session"}})
async def end_session(session_id: str, runtime: RuntimeDep) -> Response:
    """End a session and free everything it held."""
    await runtime.close_session(session_id)
    return Response(status_code=204)


@router.post(
    "/{session_id}/recordings", status_code=201,
    responses={404: {"description": "unknown session"}, 409: {"description": "already recording"},
               507: {"description": "the disk space for recordings is used up"}},
)
async def start_recording(session_id: str, runtime: RuntimeDep) -> dict[str, Any]:
    """Start recording the session's avatar (and voice) to MP4."""
    return await runtime.start_recording(session_id)


@router.post(
    "/{session_id}/recordings/stop",
    responses={404: {"description": "unknown session"}, 409: {"description": "not recording"}},
)
async def stop_recording(session_id: str, runtime: RuntimeDep) -> dict[str, Any]:
    """Stop the recording under way; answers once its file is complete."""
    return await runtime.stop_recording(session_id)


@router.get("/{session_id}/recordings", responses={404: {"description": "unknown or expired session"}})
async def list_recordings(session_id: str, runtime: RuntimeDep) -> dict[str, Any]:
    """The session's recordings, each with its download `url` once finished (kept RECORDING_TTL
    seconds after the session ends)."""
    return {"recordings": await runtime.recordings(session_id)}


@router.get(
    "/{session_id}/recordings/{recording_id}",
    response_class=FileResponse,
    responses={200: {"content": {"video/mp4": {}}, "description": "the MP4 file"},
               404: {"description": "unknown session or recording"}, 409: {"description": "still recording"}},
)
async def download_recording(session_id: str, recording_id: str, runtime: RuntimeDep) -> Response:
    """One finished recording of the session, as an MP4 file."""
    recording = await runtime.recording_file(session_id, recording_id)
    filename = f"rain-avatar-{recording_id[:8]}.mp4"
    if recording.path is not None:
        return FileResponse(recording.path, media_type="video/mp4", filename=filename)
    assert recording.chunks is not None
    return StreamingResponse(
        recording.chunks(), media_type="video/mp4",
        headers={"Content-Length": str(recording.size), "Content-Disposition": f'attachment; filename="{filename}"'},
    )
