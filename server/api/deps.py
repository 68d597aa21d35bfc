"""Dependencies of the routes: what lives on `app.state`, as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Query, Request

from server.api.runtime_api import RuntimeAPI
from server.core.config import Settings
from server.tokens import MAX_TOKEN_CHARS


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_runtime(request: Request) -> RuntimeAPI:
    return request.app.state.runtime


async def get_view_token(
    token: Annotated[str | None, Query(max_length=MAX_TOKEN_CHARS)] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> str | None:
    """A session's view token, from `?token=` or `Authorization: Bearer` (what WHEP players send)."""
    if token is not None:
        return token
    if authorization is not None and authorization.lower().startswith("bearer "):
        return authorization[len("bearer "):].strip()
    return None


SettingsDep = Annotated[Settings, Depends(get_settings)]
RuntimeDep = Annotated[RuntimeAPI, Depends(get_runtime)]
ViewTokenDep = Annotated[str | None, Depends(get_view_token)]
