"""Opening a session: the webcam page's SDP offer, answered in one exchange (no trickle ICE)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from server.api.deps import SessionsDep
from server.references import UnknownReference
from server.sessions import CapacityError, ParamsError
from server.webrtc import OfferError

router = APIRouter(tags=["signaling"])

# How long a client told "full" should wait before offering again.
RETRY_AFTER_SECONDS = 5


class Offer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sdp: str = Field(max_length=200_000, description="the client's complete SDP offer")
    type: str = Field(description='"offer"')
    reference_id: str | None = Field(
        None, max_length=64, description="from POST /api/references; default: the server's character"
    )
    params: dict[str, Any] | None = Field(
        None, description="initial fps and driving settings, as on the control channel"
    )


class Answer(BaseModel):
    sdp: str
    type: Literal["answer"] = "answer"
    session_id: str = Field(description="controls the session: keep it private")
    view_token: str = Field(description="lets a viewer (the OBS page, WHEP) watch the session")


@router.post(
    "/offer",
    responses={400: {"description": "bad SDP"}, 404: {"description": "unknown reference"},
               422: {"description": "bad params"}, 503: {"description": "server full"}},
)
async def offer(body: Offer, sessions: SessionsDep) -> Answer:
    """Open a session: answer a webcam offer whose first video section sends the camera."""
    try:
        session = await sessions.open(body.sdp, body.type, reference_id=body.reference_id, params=body.params)
    except OfferError as exc:
        raise HTTPException(400, str(exc)) from None
    except UnknownReference as exc:
        raise HTTPException(404, str(exc)) from None
    except ParamsError as exc:
        raise HTTPException(422, str(exc)) from None
    except CapacityError as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
    assert session.answer is not None
    return Answer(sdp=session.answer, session_id=session.id, view_token=session.view_token)
