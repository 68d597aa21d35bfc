"""Dependencies of the routes: what lives on `app.state`, as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from server.api.runtime_api import RuntimeAPI
from server.core.config import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_runtime(request: Request) -> RuntimeAPI:
    return request.app.state.runtime


SettingsDep = Annotated[Settings, Depends(get_settings)]
# A local `Runtime` or a Ray cluster's avatar replicas: the routes see one interface.
RuntimeDep = Annotated[RuntimeAPI, Depends(get_runtime)]
