"""Request bodies bounded while they are read, each by the limit of its route.

A body is counted as the route reads it: past the limit the read fails and the client is
answered 413 at once; a `Content-Length` over the limit fails the first read, before any byte of
the body. The HTTP server drops whatever of the body still comes (it is never buffered or
parsed). So no route takes in more than its limit, with or without a `Content-Length`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.routes import references, signaling, whep, whip
from server.core.config import Settings
from server.rtc.sdp import MAX_SDP_BYTES

# The small JSON bodies of every other route (a reference choice).
DEFAULT_BODY_BYTES = 16 * 1024


def route_body_limits(settings: Settings) -> dict[Callable[..., Any], int]:
    """The routes whose bodies may be larger than `DEFAULT_BODY_BYTES`, by endpoint."""
    return {
        signaling.offer: signaling.OFFER_BODY_BYTES,
        whep.whep_offer: MAX_SDP_BYTES,
        whip.whip_publish: MAX_SDP_BYTES,
        references.upload_reference: settings.MAX_UPLOAD_BYTES + references.MULTIPART_OVERHEAD,
    }


class BodyTooLarge(HTTPException):
    """An HTTPException, so that FastAPI's body parsing lets it through (it turns other
    errors met while reading a body into a 400)."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than {limit} bytes, this request's limit")


class BodyLimit:
    """ASGI middleware: every request's body bounded by its route's limit (routing runs before
    the first read, so the endpoint is known by then)."""

    def __init__(self, app: ASGIApp, *, default: int, limits: Mapping[Callable[..., Any], int]):
        self.app = app
        self.default = default
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            limit = self.limits.get(scope.get("endpoint"), self.default)
            if declared is not None and declared > limit:
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, receive_within_limit, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
