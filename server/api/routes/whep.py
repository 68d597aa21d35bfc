"""WHEP (WebRTC-HTTP Egress Protocol) for viewers: any number of them per session, through `MediaRelay`.

`POST /whep/{view_id}` with an `application/sdp` offer and the session's view token
(`?token=` or `Authorization: Bearer`) answers `201 Created` with the answer SDP and a
`Location` to `DELETE` when done. The answer is complete; trickle ICE (PATCH) is not offered.
`?alpha=matte` asks for the avatar with its matte packed beside it (`server.media.alpha`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from server.api.deps import RuntimeDep, SettingsDep, ViewTokenDep
from server.api.sdp_exchange import (
    SDP_OFFER_BODY,
    SDP_RESPONSES,
    ice_server_links,
    read_sdp_offer,
    sdp_endpoint_options,
)

router = APIRouter(prefix="/whep", tags=["whep"])

# The OBS view's modes; only `matte` changes what the server sends (`key` is keyed in the page).
AlphaMode = Literal["none", "key", "matte"]


@router.post(
    "/{view_id}",
    status_code=201,
    response_class=Response,
    openapi_extra=SDP_OFFER_BODY,
    responses={**SDP_RESPONSES,
               400: {"description": "bad SDP"}, 401: {"description": "no view token"},
               403: {"description": "wrong view token"}, 404: {"description": "unknown session"},
               422: {"description": "unknown alpha mode"}, 503: {"description": "too many viewers"}},
)
async def whep_offer(
    view_id: str,
    request: Request,
    runtime: RuntimeDep,
    settings: SettingsDep,
    view_token: ViewTokenDep,
    alpha: Annotated[AlphaMode, Query(description="matte: the avatar with its matte packed beside it")] = "none",
) -> Response:
    """Watch a session: a receive-only SDP offer in, the answer out."""
    # The right to watch first: nothing more is read from a client without it (`add_viewer`
    # checks it again, as every runtime operation stands on its own).
    await runtime.authorize_viewer(view_id, view_token)
    sdp = await read_sdp_offer(request)
    viewer = await runtime.add_viewer(view_id, view_token, sdp, matte=alpha == "matte")
    headers = {"Location": f"/whep/{view_id}/{viewer.viewer_id}"}
    links = ice_server_links(settings, "whep")
    if links:
        headers["Link"] = ", ".join(links)
    return Response(viewer.answer, status_code=201, media_type="application/sdp", headers=headers)


@router.options(
    "/{view_id}", response_class=Response, responses={200: {"description": "Accept-Post: application/sdp"}}
)
async def whep_options(view_id: str) -> Response:
    """What the endpoint takes (CORS, as the WHEP draft asks): an `application/sdp` offer by POST."""
    return sdp_endpoint_options()


@router.delete(
    "/{view_id}/{viewer_id}", status_code=204, responses={404: {"description": "unknown session or viewer"}}
)
async def whep_stop(view_id: str, viewer_id: str, runtime: RuntimeDep) -> Response:
    """Stop watching (the viewer resource named by the `Location` of the POST)."""
    await runtime.remove_viewer(view_id, viewer_id)
    return Response(status_code=204)
