"""What the WHIP and WHEP routes share: an `application/sdp` offer in, an answer out with the ICE
servers in `Link` headers (RFC 9725 and the WHEP draft)."""

from __future__ import annotations

from fastapi import HTTPException, Request, Response

from server.core.config import Settings
from server.rtc.turn import ice_servers

# The OpenAPI description of both routes' body, and of the answers `read_sdp_offer` and the route give.
SDP_OFFER_BODY = {"requestBody": {"required": True, "content": {"application/sdp": {"schema": {"type": "string"}}}}}
SDP_RESPONSES: dict[int | str, dict] = {
    201: {"content": {"application/sdp": {}}, "description": "the answer SDP"},
    413: {"description": "SDP too large"},
    415: {"description": "not application/sdp"},
}


def sdp_endpoint_options() -> Response:
    """The answer to `OPTIONS` on a WHIP or WHEP endpoint: what it takes (RFC 9725 and the WHEP draft
    ask endpoints to answer OPTIONS, for CORS; browser clients such as Eyevinn's send one before
    their offer). Nothing is opened and no token is needed: a CORS preflight carries none."""
    return Response(status_code=200, headers={"Accept-Post": "application/sdp", "Allow": "OPTIONS, POST"})


async def read_sdp_offer(request: Request) -> str:
    """The request's SDP offer: 415 unless sent as application/sdp, 400 unless UTF-8 (its size is
    bounded by the app's body limit)."""
    return await read_sdp_body(request, "application/sdp", "the offer")


async def read_sdp_body(request: Request, media_type: str, what: str) -> str:
    """The request's body as SDP text of `media_type` (an offer, a trickle ICE fragment)."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != media_type:
        raise HTTPException(415, f"send {what} as Content-Type: {media_type}")
    try:
        return (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, f"{what} is not UTF-8 text") from None


def ice_server_links(settings: Settings, name: str) -> list[str]:
    """One `Link` value per ICE server URL, TURN credentials minted for `name`."""
    return [
        f'<{url}>; rel="ice-server"'
        + (f'; username="{s.username}"; credential="{s.credential}"; credential-type="password"' if s.username else "")
        for s in ice_servers(settings, name)
        for url in ([s.urls] if isinstance(s.urls, str) else s.urls)
    ]
