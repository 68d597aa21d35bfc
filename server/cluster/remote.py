"""Awaiting a call to another deployment: the callee's own error, or a bounded wait.

A domain error raised in a replica (`UnknownSession`, `CapacityError`, ...) reaches the caller
wrapped in Ray's `RayTaskError`, whose text is the whole remote traceback; the caller raises the
original error instead, so the API's error table answers it as on a single box.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError
from ray.serve.handle import DeploymentResponse

from server.sessions.errors import CapacityError

# The replica died or is restarting under the call.
REPLICA_GONE = (ActorDiedError, ActorUnavailableError, RayActorError)


class ReplicaTimeout(CapacityError):
    """No replica answered in time (none running, or all overloaded): a 503, try again later."""


async def result(response: DeploymentResponse, *, timeout: float) -> Any:
    """The call's result, its own error, or `ReplicaTimeout` after `timeout` seconds."""
    try:
        return await asyncio.wait_for(_unwrapped(response), timeout)
    except asyncio.TimeoutError:
        response.cancel()
        raise ReplicaTimeout(f"no avatar replica answered within {timeout:g} s; try again later") from None


async def _unwrapped(response: DeploymentResponse) -> Any:
    try:
        return await response
    except RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, Exception) and not isinstance(cause, RayTaskError):
            raise cause from None
        raise
