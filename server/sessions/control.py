"""The control protocol of a session's `control` data channel, and the one check of session
parameters (the offer's `params` and the channel's `params` messages alike).

Each message is JSON `{"id", "type", "params"?}` and is answered with `{"id", "type", "ok":
true, "params", "paused"}` or `{"id", "type", "ok": false, "error"}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rain_core.driving import DrivingSettings, DrivingSettingsError

CONTROL_TYPES = ("params", "pause", "resume", "reset")


class ParamsError(ValueError):
    """Session parameters that cannot be applied; the message names the field."""


@dataclass(frozen=True)
class ParamsChange:
    """Checked parameters: the new frame rate (None: unchanged) and the driving settings."""

    fps: float | None
    driving: DrivingSettings


def check_params(params: Any, *, max_fps: float, current: DrivingSettings) -> ParamsChange:
    """Validate `fps` plus driving-settings changes against `current`, applying nothing."""
    if not isinstance(params, dict):
        raise ParamsError(f"params must be an object, got {type(params).__name__}")
    changes = dict(params)
    fps = _check_fps(changes.pop("fps"), max_fps) if "fps" in changes else None
    try:
        return ParamsChange(fps=fps, driving=current.updated(changes))
    except DrivingSettingsError as exc:
        raise ParamsError(str(exc)) from None


def _check_fps(value: Any, max_fps: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= max_fps:
        raise ParamsError(f"fps: must be a number above 0 and at most {max_fps:g} (got {value!r})")
    return float(value)


@dataclass(frozen=True)
class ControlRequest:
    id: Any
    type: str
    params: Any


class ControlError(ValueError):
    """A message refused before it was acted on; the reply echoes what it can of the request."""

    def __init__(self, error: str, *, request_id: Any = None, kind: Any = None):
        super().__init__(error)
        self.request_id = request_id
        self.kind = kind


def parse_request(message: str | bytes) -> ControlRequest:
    """One message from the channel -> a request of a known type, or a `ControlError`."""
    if isinstance(message, bytes):
        raise ControlError("control messages must be JSON text, not binary")
    try:
        request = json.loads(message)
    except json.JSONDecodeError as exc:
        raise ControlError(f"control message is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise ControlError("control message must be a JSON object")
    request_id, kind = request.get("id"), request.get("type")
    if kind not in CONTROL_TYPES:
        raise ControlError(
            f"unknown message type {kind!r}; expected one of: {', '.join(CONTROL_TYPES)}",
            request_id=request_id, kind=kind,
        )
    return ControlRequest(id=request_id, type=kind, params=request.get("params"))


def error_reply(error: str, *, request_id: Any, kind: Any) -> dict:
    return {"id": request_id, "type": kind, "ok": False, "error": error}


def ok_reply(request: ControlRequest, *, params: dict, paused: bool) -> dict:
    return {"id": request.id, "type": request.type, "ok": True, "params": params, "paused": paused}
