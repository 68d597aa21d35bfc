"""The live WHIP sessions, for the holder of the WHIP token: what the webcam page lists so that
a streamer publishing from OBS (which shows no response headers) finds the session's controls.

Each entry carries the session id, which controls the session, so the list is guarded exactly
as publishing is (`check_ingest_token`). Sessions opened by the webcam page are not listed:
their ids belong to their pages, and the WHIP token is no key to them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from server.api.deps import RuntimeDep, SettingsDep
from server.api.routes.whip import Authorization, check_ingest_token, session_links

router = APIRouter(prefix="/whip", tags=["whip"])


@router.get(
    "/sessions",
    responses={401: {"description": "no or wrong bearer token"},
               403: {"description": "WHIP is off (no RAIN_WHIP_TOKEN on a public address)"}},
)
async def whip_sessions(
    response: Response, runtime: RuntimeDep, settings: SettingsDep, authorization: Authorization = None
) -> dict[str, Any]:
    """The sessions published over WHIP, oldest first: ids, start, view links and a short status."""
    check_ingest_token(settings, authorization)
    response.headers["Cache-Control"] = "no-store"  # session ids: never kept by a cache
    sessions = await runtime.whip_sessions()
    return {"sessions": [
        {**s, "links": session_links(s["session_id"], s["view_id"], s["view_token"])} for s in sessions
    ]}
