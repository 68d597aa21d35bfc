"""WHIP (WebRTC-HTTP Ingestion Protocol, RFC 9725): a camera published by OBS 30+, GStreamer or
any WHIP client opens a full avatar session, as the webcam page's offer does.

`POST /whip` with an `application/sdp` offer (sendonly video, optional audio) and
`Authorization: Bearer <RAIN_WHIP_TOKEN>` answers `201 Created` with the answer SDP, a
`Location` (the session's WHIP resource, `DELETE` it to end the session) and `Link` headers:
the ICE servers (`rel="ice-server"`, as WHEP), the session's view links (`rel="related"`, titled
`obs-view` and `whep`: watching only) and its REST resource (`title="session"`: stats,
parameters, recordings). The answer is complete. A publisher that sends its offer before it has
every candidate trickles the rest (`PATCH` with an `application/trickle-ice-sdpfrag` body and
`If-Match` the 201's `ETag`: 204); ICE restarts are not offered (422), as RFC 9725 allows.

OBS does not show those headers: the server logs the webcam page's link to the new session
(`/#whip={view_id}`, no credential in it), and the page lists the WHIP sessions, with their
session ids, to the holder of the same token (`GET /api/whip/sessions`, `whip_sessions.py`).
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Header, HTTPException, Request, Response

from server.api.deps import RuntimeDep, SettingsDep
from server.api.sdp_exchange import (
    SDP_OFFER_BODY,
    SDP_RESPONSES,
    ice_server_links,
    read_sdp_body,
    read_sdp_offer,
    sdp_endpoint_options,
)
from server.core.config import MAX_WHIP_TOKEN, Settings
from server.rtc.trickle import TRICKLE_MEDIA_TYPE, ice_session_tag
from server.tokens import same_token

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/whip", tags=["whip"])

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="whip"'}


def _on_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name, or every address ("0.0.0.0" is not loopback either)


def check_ingest_token(settings: Settings, authorization: str | None) -> None:
    """The server's WHIP token as a bearer token; none needed only on a loopback HOST without one."""
    expected = settings.WHIP_TOKEN
    if expected is None:
        if _on_loopback(settings.HOST):
            return
        raise HTTPException(403, "WHIP ingest is off on this server: set RAIN_WHIP_TOKEN to publish to it")
    scheme, _, given = (authorization or "").partition(" ")
    given = given.strip()
    # Compared in constant time; a token longer than any valid one is wrong without comparing.
    if scheme.lower() != "bearer" or not given or len(given) > MAX_WHIP_TOKEN or not same_token(
        given, expected.get_secret_value()
    ):
        raise HTTPException(401, "a valid WHIP bearer token is required (Authorization: Bearer ...)", headers=CHALLENGE)


Authorization = Annotated[str | None, Header(max_length=MAX_WHIP_TOKEN + 16)]


def session_links(session_id: str, view_id: str, view_token: str) -> dict[str, str]:
    """A WHIP session's links by title: its view links (watching only) and its REST resource."""
    view = urlencode({"token": view_token})
    view_id, session_id = quote(view_id, safe=""), quote(session_id, safe="")
    return {
        "obs-view": f"/obs/{view_id}?{view}",
        "whep": f"/whep/{view_id}?{view}",
        "session": f"/api/sessions/{session_id}",
    }


@router.post(
    "",
    status_code=201,
    response_class=Response,
    openapi_extra=SDP_OFFER_BODY,
    responses={**SDP_RESPONSES,
               400: {"description": "bad SDP, or no video sent"}, 401: {"description": "no or wrong bearer token"},
               403: {"description": "WHIP is off (no RAIN_WHIP_TOKEN on a public address)"},
               503: {"description": "server full"}},
)
async def whip_publish(
    request: Request, runtime: RuntimeDep, settings: SettingsDep, authorization: Authorization = None
) -> Response:
    """Publish a camera: a sendonly SDP offer in, the answer out; the session drives an avatar."""
    # The token first: nothing more is read from a client without it.
    check_ingest_token(settings, authorization)
    sdp = await read_sdp_offer(request)
    opened = await runtime.open_session(sdp, "offer", whip=True)
    related = session_links(opened.session_id, opened.view_id, opened.view_token)
    links = ice_server_links(settings, "whip")
    links += [f'<{target}>; rel="related"; title="{title}"' for title, target in related.items()]
    headers = {
        "Location": f"/whip/{quote(opened.session_id, safe='')}",
        "Link": ", ".join(links),
        # Trickle ICE on the resource: the ICE session its PATCHes must name (If-Match).
        "ETag": ice_session_tag(sdp),
        "Accept-Patch": TRICKLE_MEDIA_TYPE,
    }
    # For the streamer at the server (OBS shows none of the headers): where the session's controls
    # are. Named by its view id, which grants nothing alone: the page asks for the WHIP token.
    logger.info(
        "WHIP publisher started a session; watch and control it on the webcam page: %s#whip=%s (with the WHIP token)",
        request.base_url, quote(opened.view_id, safe=""),
    )
    return Response(opened.answer, status_code=201, media_type="application/sdp", headers=headers)


@router.options("", response_class=Response, responses={200: {"description": "Accept-Post: application/sdp"}})
async def whip_options() -> Response:
    """What the endpoint takes (CORS, RFC 9725): an `application/sdp` offer by POST."""
    return sdp_endpoint_options()


@router.delete(
    "/{session_id}", status_code=204,
    responses={401: {"description": "no or wrong bearer token"}, 404: {"description": "unknown session"}},
)
async def whip_stop(
    session_id: str, runtime: RuntimeDep, settings: SettingsDep, authorization: Authorization = None
) -> Response:
    """End the published session (the resource named by the `Location` of the POST)."""
    check_ingest_token(settings, authorization)
    await runtime.close_session(session_id)
    return Response(status_code=204)


@router.patch(
    "/{session_id}", status_code=204, response_class=Response,
    openapi_extra={"requestBody": {"required": True, "content": {TRICKLE_MEDIA_TYPE: {"schema": {"type": "string"}}}}},
    responses={400: {"description": "not a usable fragment (names the line)"},
               401: {"description": "no or wrong bearer token"}, 404: {"description": "unknown session"},
               412: {"description": "If-Match names another ICE session"},
               415: {"description": f"not {TRICKLE_MEDIA_TYPE}"},
               422: {"description": "new ICE credentials: an ICE restart, not offered"}},
)
async def whip_trickle(
    session_id: str, request: Request, runtime: RuntimeDep, settings: SettingsDep,
    authorization: Authorization = None, if_match: Annotated[str | None, Header(max_length=512)] = None,
) -> Response:
    """Trickle ICE: candidates the publisher found after its offer, as an SDP fragment (RFC 8840)."""
    check_ingest_token(settings, authorization)
    fragment = await read_sdp_body(request, TRICKLE_MEDIA_TYPE, "trickled candidates")
    await runtime.trickle_ice(session_id, fragment, if_match)
    return Response(status_code=204)
