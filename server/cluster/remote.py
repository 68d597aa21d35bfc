"""A call between deployments: the callee's own answer or refusal, within a bounded wait.

A client's request that a replica refuses (unknown session, full, bad offer: the runtime's
`DOMAIN_ERRORS`) comes back as a `Refused` value, not raised: Serve logs a raising call as a
failed request with its whole traceback, and these are ordinary answers. The caller raises the
error again, so the API's error table answers it as on a single box.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError
from ray.serve.handle import DeploymentResponse

from server.runtime import DOMAIN_ERRORS
from server.sessions.errors import CapacityError

logger = logging.getLogger(__name__)

# The replica died or is restarting under the call.
REPLICA_GONE = (ActorDiedError, ActorUnavailableError, RayActorError)


class ReplicaTimeout(CapacityError):
    """No replica answered in time (none running, or all overloaded): a 503, try again later."""


@dataclass(frozen=True)
class Refused:
    """A client's request refused by the callee; the caller raises `error`."""

    error: Exception


def log_to_stderr(level: str) -> None:
    """Our modules' log lines from a Serve replica's process, on its stderr: Ray passes that to the
    driver's output (`serve --ray`) and its log files. (Serve configures only its own logger there.)"""
    server_logger = logging.getLogger("server")
    server_logger.setLevel(level)
    if not server_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))  # as the CLI's
        server_logger.addHandler(handler)
        server_logger.propagate = False


async def answer(operation: str, call: Awaitable[Any]) -> Any:
    """The callee's side: `call`'s result, or `Refused` for a client's error (logged as one line)."""
    try:
        return await call
    except DOMAIN_ERRORS as exc:
        logger.info("%s refused: %s: %s", operation, type(exc).__name__, exc)
        return Refused(exc)


async def result(response: DeploymentResponse, *, timeout: float) -> Any:
    """The caller's side: the call's result, its refusal raised, or `ReplicaTimeout` after `timeout` seconds."""
    try:
        value = await asyncio.wait_for(_unwrapped(response), timeout)
    except asyncio.TimeoutError:
        response.cancel()
        raise ReplicaTimeout(f"no avatar replica answered within {timeout:g} s; try again later") from None
    if isinstance(value, Refused):
        raise value.error
    return value


async def _unwrapped(response: DeploymentResponse) -> Any:
    try:
        return await response
    except RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, Exception) and not isinstance(cause, RayTaskError):
            raise cause from None
        raise
