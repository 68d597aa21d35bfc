"""Which avatar replicas are running, as this process's request routers know them.

Its own module because Serve ships the router's module to each process by value (a copy of
its globals): a registry there would be a copy too; this module is imported as usual, so the
routers and the ingress share it.
"""

from __future__ import annotations

import threading
from typing import Protocol


class _Router(Protocol):
    running: tuple[str, ...]
    leaving: tuple[str, ...]


_routers: dict[tuple[str, str], _Router] = {}
_lock = threading.Lock()


def register(app: str, deployment: str, router: _Router) -> None:
    with _lock:
        _routers[(app, deployment)] = router


def running_replicas(app: str, deployment: str) -> tuple[str, ...] | None:
    """The running replicas of `deployment`; None before this process has a router for it (its
    first call through a handle makes one)."""
    with _lock:
        router = _routers.get((app, deployment))
    return None if router is None else router.running


def leaving_replicas(app: str, deployment: str) -> tuple[str, ...]:
    """The replicas of `deployment` taken out of service that still serve their sessions (draining)."""
    with _lock:
        router = _routers.get((app, deployment))
    return () if router is None else router.leaving
