"""One table from the domain's errors to HTTP statuses, and the handlers that apply it.

Routes call the runtime and let its errors through; each is answered here as `{"detail":
message}` with its status (and `Retry-After` where waiting helps).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from rain_core.validation import describe_validation_error
from server.references import BadDimensions, NotAnImage, UnknownReference, UploadTooLarge
from server.rtc.ice import PortsExhausted
from server.rtc.sdp import OfferError
from server.rtc.trickle import FragmentError, IceRestartRefused, StaleIceSession
from server.sessions.control import ParamsError
from server.sessions.errors import BadViewToken, CapacityError, NoViewToken, UnknownSession, UnknownViewer
from server.sessions.recordings import RecordingConflict, RecordingsFull, UnknownRecording

# How long a client told "full" should wait before offering again.
RETRY_AFTER_SECONDS = 5

ERROR_STATUSES: dict[type[Exception], int] = {
    OfferError: 400,
    FragmentError: 400,
    NoViewToken: 401,
    BadViewToken: 403,
    UnknownSession: 404,
    UnknownViewer: 404,
    UnknownReference: 404,
    UnknownRecording: 404,
    RecordingConflict: 409,
    StaleIceSession: 412,
    UploadTooLarge: 413,
    NotAnImage: 415,
    BadDimensions: 422,
    ParamsError: 422,
    IceRestartRefused: 422,
    CapacityError: 503,
    PortsExhausted: 503,
    RecordingsFull: 507,
}

# Statuses that tell the client when to come back.
RETRY_STATUSES = {503}


async def domain_error(request: Request, exc: Exception) -> JSONResponse:
    status = next(ERROR_STATUSES[cls] for cls in type(exc).__mro__ if cls in ERROR_STATUSES)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status in RETRY_STATUSES else None
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)


async def request_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Validation errors as one readable message; malformed JSON is a 400, not a 422."""
    errors = exc.errors()
    for error in errors:
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "JSON decode error")
            return JSONResponse({"detail": f"malformed JSON: {reason}"}, status_code=400)
    return JSONResponse({"detail": describe_validation_error(exc, skip=("body",))}, status_code=422)


def add_error_handlers(app: FastAPI) -> None:
    for error in ERROR_STATUSES:
        app.add_exception_handler(error, domain_error)
    app.add_exception_handler(RequestValidationError, request_validation_error)
