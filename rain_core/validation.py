"""One readable, bounded message from a pydantic `ValidationError`.

Configurations, driving settings, server settings, HTTP bodies and control messages are all
validated with pydantic; their errors reach users (a terminal, a 422, a data-channel reply), so
they are written the same way everywhere and never grow with the input: a client that sends
thousands of bad keys or a megabyte-long value gets a short message, not an echo.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from pydantic import ValidationError

# Per offending value, and for the whole message.
MAX_INPUT_CHARS = 60
MAX_MESSAGE_CHARS = 600
MAX_PROBLEMS = 5


class HasErrors(Protocol):
    """pydantic's error list, as FastAPI's `RequestValidationError` also gives it."""

    def errors(self) -> Sequence[Any]: ...


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_validation_error(
    exc: ValidationError | HasErrors, *, skip: Iterable[str] = (), show_input: bool = True
) -> str:
    """`field.sub: message (got value)` per problem, `; `-joined, at most MAX_MESSAGE_CHARS long.

    `skip` drops location parts that mean nothing to the reader (FastAPI's `body`).
    """
    skipped = set(skip)
    errors = list(exc.errors())
    parts = []
    for error in errors[:MAX_PROBLEMS]:
        where = ".".join(shorten(str(p), 40) for p in error.get("loc", ()) if p not in skipped)
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        part = f"{where}: {message}" if where else message
        if show_input and "input" in error and error.get("type") not in ("missing", "model_type", "dict_type"):
            part += f" (got {shorten(repr(error['input']), MAX_INPUT_CHARS)})"
        parts.append(part)
    if len(errors) > MAX_PROBLEMS:
        parts.append(f"and {len(errors) - MAX_PROBLEMS} more")
    return shorten("; ".join(parts), MAX_MESSAGE_CHARS)
