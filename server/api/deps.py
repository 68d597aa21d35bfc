"""Dependencies of the routes: what lives on `app.state`, as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from server.core.config import Settings
from server.runtime import Runtime


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


SettingsDep = Annotated[Settings, Depends(get_settings)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
