"""One runtime interface: every implementation offers each operation of `RuntimeAPI` with its
signature, as a coroutine, and every error the runtime documents has a status at the API."""

from __future__ import annotations

import inspect

import pytest

from server.api.errors import ERROR_STATUSES
from server.api.runtime_api import OPERATIONS, SESSION_OPERATIONS, RuntimeAPI
from server.cluster.avatar import OPERATIONS as REPLICA_OPERATIONS
from server.cluster.ingress import ClusterRuntime
from server.runtime import DOMAIN_ERRORS, Runtime


def _shape(function) -> list[tuple[str, inspect._ParameterKind, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("implementation", [Runtime, ClusterRuntime])
@pytest.mark.parametrize("operation", OPERATIONS)
def test_every_runtime_offers_the_interface(implementation, operation) -> None:
    method = getattr(implementation, operation, None)
    assert method is not None, f"{implementation.__name__} has no {operation}"
    assert inspect.iscoroutinefunction(method), f"{implementation.__name__}.{operation} is not a coroutine"
    assert _shape(method) == _shape(getattr(RuntimeAPI, operation))


def test_the_interface_covers_what_the_routes_need() -> None:
    # Session operations are the ones a replica's generic call forwards by id; the rest place or fan out.
    assert set(SESSION_OPERATIONS) < set(OPERATIONS) <= REPLICA_OPERATIONS
    assert {"stats", "close_session", "add_viewer", "recording_file"} <= set(SESSION_OPERATIONS)
    assert not {"open_session", "health", "upload_reference", "whip_sessions"} & set(SESSION_OPERATIONS)


def test_every_documented_error_has_a_status() -> None:
    assert set(DOMAIN_ERRORS) == set(ERROR_STATUSES)
