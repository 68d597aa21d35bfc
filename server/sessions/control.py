"""The control protocol of a session's `control` data channel, and the one check of session
parameters (the offer's `params` and the channel's `params` messages alike).

Each message is JSON `{"id", "type", "params"?}` and is answered with `{"id", "type", "ok":
true, "params", "paused"}` (plus `"recording"` for `start_recording` and `stop_recording`) or
`{"id", "type", "ok": false, "error"}`. The server also sends notices of its own, with no id:
`{"id": null, "type": "draining", "ok": true, "seconds", "message"}` when the server running the
session is being taken out of service (a cluster's scale-down): the session streams on for at
most `seconds`, then ends.

Every message gets exactly one reply, and every reply is small whatever the message held: it
echoes the id and type only when they are short, and its error is bounded. A reply larger than
the peer's SCTP message limit could not be sent at all, and a message that cannot be parsed
(too big, too deep, a number with thousands of digits) is refused, never an exception.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from rain_core.driving import DrivingSettings, DrivingSettingsError
from rain_core.validation import MAX_MESSAGE_CHARS, shorten
from server.core.config import MIN_FPS

CONTROL_TYPES = ("params", "pause", "resume", "reset", "start_recording", "stop_recording")
# A message with every parameter set is about 1 kB.
MAX_MESSAGE_BYTES = 16 * 1024
# The longest id and type echoed in a reply; ids beyond JavaScript's exact integers are refused.
MAX_ID_CHARS = 64
MAX_TYPE_CHARS = 32
MAX_EXACT_INTEGER = 2**53
# What an error quotes of a client's value.
MAX_QUOTE_CHARS = 40


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
    except RecursionError:  # describing a deeply nested value
        raise ParamsError("params are nested too deeply") from None


def _check_fps(value: Any, max_fps: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not MIN_FPS <= value <= max_fps:
        raise ParamsError(f"fps: must be a number from {MIN_FPS:g} to {max_fps:g} (got {_short(value)})")
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
    size = len(message.encode()) if isinstance(message, str) else len(message)
    if size > MAX_MESSAGE_BYTES:
        raise ControlError(f"control message is {size} bytes; the limit is {MAX_MESSAGE_BYTES} bytes")
    if isinstance(message, bytes):
        raise ControlError("control messages must be JSON text, not binary")
    try:
        request = json.loads(message)
    except RecursionError:
        raise ControlError("control message is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and integers past Python's digit limit
        raise ControlError(f"control message is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise ControlError("control message must be a JSON object")
    request_id, kind = request.get("id"), request.get("type")
    if not _echoable_id(request_id):
        raise ControlError(
            f"id must be a number or a string of at most {MAX_ID_CHARS} characters", kind=_echoable_type(kind)
        )
    if kind not in CONTROL_TYPES:
        raise ControlError(
            f"unknown message type {_short(kind)}; expected one of: {', '.join(CONTROL_TYPES)}",
            request_id=request_id, kind=_echoable_type(kind),
        )
    return ControlRequest(id=request_id, type=kind, params=request.get("params"))


def _echoable_id(value: Any) -> bool:
    """None, a short string, or a number that JSON carries exactly (a boolean is not one)."""
    if value is None:
        return True
    if isinstance(value, str):
        return len(value) <= MAX_ID_CHARS
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) <= MAX_EXACT_INTEGER
    return isinstance(value, float) and math.isfinite(value)


def _echoable_type(value: Any) -> str | None:
    return value if isinstance(value, str) and len(value) <= MAX_TYPE_CHARS else None


def _short(value: Any) -> str:
    """What an error quotes of a client's value: its repr, cut short."""
    try:
        return shorten(repr(value), MAX_QUOTE_CHARS)
    except RecursionError:
        return "(a deeply nested value)"


def error_reply(error: str, *, request_id: Any, kind: Any) -> dict:
    return {"id": request_id, "type": kind, "ok": False, "error": shorten(error, MAX_MESSAGE_CHARS)}


def notice(kind: str, **fields: Any) -> dict:
    """A message the server sends unasked (no id: it answers nothing)."""
    return {"id": None, "type": kind, "ok": True, **fields}


def ok_reply(request: ControlRequest, *, params: dict, paused: bool, **extra: Any) -> dict:
    """`extra`: what a type adds (the recording's state for `start_recording`/`stop_recording`)."""
    return {"id": request.id, "type": request.type, "ok": True, "params": params, "paused": paused, **extra}
