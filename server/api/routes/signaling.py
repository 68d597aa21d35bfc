"""Opening a session: the webcam page's SDP offer, answered in one exchange (no trickle ICE)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from server.api.deps import RuntimeDep
from server.rtc.sdp import MAX_SDP_BYTES
from server.tokens import MAX_TOKEN_CHARS

router = APIRouter(tags=["signaling"])

# The offer's JSON: the SDP (JSON escapes its line ends, two bytes each) and a few small fields.
OFFER_BODY_BYTES = 2 * MAX_SDP_BYTES + 16 * 1024


class Offer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sdp: str = Field(max_length=MAX_SDP_BYTES, description="the client's complete SDP offer")
    type: str = Field(description='"offer"')
    reference_id: str | None = Field(
        None, max_length=MAX_TOKEN_CHARS, description="from POST /api/references; default: the server's character"
    )
    params: dict[str, Any] | None = Field(
        None, description="initial fps and driving settings, as on the control channel"
    )


class Answer(BaseModel):
    sdp: str
    type: Literal["answer"] = "answer"
    session_id: str = Field(description="controls the session: keep it private")
    view_id: str = Field(description="names the session in view links (the OBS page, WHEP); grants nothing alone")
    view_token: str = Field(description="with the view id, lets a viewer watch the session, and nothing more")


@router.post(
    "/offer",
    responses={400: {"description": "bad SDP"}, 404: {"description": "unknown reference"},
               413: {"description": "body too large"}, 422: {"description": "bad params"},
               503: {"description": "server full"}},
)
async def offer(body: Offer, runtime: RuntimeDep) -> Answer:
    """Open a session: answer a webcam offer whose first video section sends the camera."""
    opened = await runtime.open_session(body.sdp, body.type, reference_id=body.reference_id, params=body.params)
    return Answer(
        sdp=opened.answer, session_id=opened.session_id, view_id=opened.view_id, view_token=opened.view_token
    )
