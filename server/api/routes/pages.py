"""The webcam page and the OBS view (plain files from `web/`)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from server.api.deps import SettingsDep

router = APIRouter(include_in_schema=False)

NO_CACHE = {"Cache-Control": "no-cache"}


@router.get("/")
async def webcam_page(settings: SettingsDep) -> FileResponse:
    return FileResponse(settings.WEB_DIR / "index.html", headers=NO_CACHE)


@router.get("/obs/{view_id}")
async def obs_page(view_id: str, settings: SettingsDep) -> FileResponse:
    # The page reads the view id and token from its own URL; the server only hands out the file.
    return FileResponse(settings.WEB_DIR / "obs.html", headers=NO_CACHE)
