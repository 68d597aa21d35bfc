"""Session affinity: every request about a session reaches the avatar replica that owns it.

A session's id is the owning replica's Serve id and a token, `{replica}.{token}` (the replica's
`Runtime` is named after it, and names its sessions so). The ingress splits it and calls the avatar deployment with
`replica=` among the keyword arguments; `ReplicaAddressedRouter`, the deployment's Serve request
router, sends such a request to that replica. Calls without `replica=` (the pages'
configuration) go to any replica. The routing state is Serve's own list of running replicas,
updated by Serve as replicas are added, removed or restarted, and the id is in the request, so
any number of ingress replicas route alike with nothing shared between them.

A replica that Serve takes out of service (scale-down, redeploy) is *leaving*: Serve drops it
from the running list at once, but it serves its sessions on until they end (the drain,
`AvatarReplica.hold`), so the router keeps it for calls addressed to it (stats, control, viewers,
DELETE) for at most `leaving_for_s`, and never gives it a call for any replica (a new offer).

A request for a replica that is gone (dead, drained, or restarted under a new id) goes to any
live replica, which answers "unknown session" (404) because the id is not its own: a router
must send every request somewhere, or Serve retries it forever.
"""

from __future__ import annotations

import time
from typing import Any

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from server.cluster import known_replicas
from server.runtime import SESSION_ID_SEPARATOR
from server.sessions.errors import UnknownSession

# The keyword argument that names the replica a call is for.
REPLICA_ARG = "replica"


def split_owned_id(session_id: str) -> tuple[str, str]:
    """`{replica}.{token}` -> (replica, token); anything else is an unknown session."""
    replica, separator, local_id = session_id.partition(SESSION_ID_SEPARATOR)
    if not separator or not replica or not local_id:
        raise UnknownSession(session_id)
    return replica, local_id


class ReplicaAddressedRouter(RequestRouter):
    """Routes a call with `replica=ID` to that replica (running or leaving), any other call to the
    least busy running replica."""

    # Replica ids; tuples replaced whole, as the ingress reads them from another thread.
    running: tuple[str, ...] = ()
    leaving: tuple[str, ...] = ()

    def initialize_state(self, leaving_for_s: float = 0.0, **kwargs: Any) -> None:
        self.leaving_for_s = leaving_for_s
        self._given: dict[str, RunningReplica] = {}  # what Serve gave last, by id
        self._leaving: dict[str, tuple[RunningReplica, float]] = {}  # id -> (replica, when it left)
        known_replicas.register(self._deployment_id.app_name, self._deployment_id.name, self)

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        now = time.monotonic()
        given = {r.replica_id.unique_id: r for r in replicas}
        for unique_id, replica in self._given.items():
            if unique_id not in given:
                self._leaving[unique_id] = (replica, now)
        self._given = given
        for unique_id, (_, since) in list(self._leaving.items()):
            if unique_id in given or now - since > self.leaving_for_s:
                del self._leaving[unique_id]
        # Serve routes only to the replicas it was given: the leaving ones stay among them.
        super().update_replicas([*replicas, *(replica for replica, _ in self._leaving.values())])
        self.running = tuple(r.replica_id.unique_id for r in replicas)
        self.leaving = tuple(self._leaving)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._given.pop(replica_id.unique_id, None)
        self._leaving.pop(replica_id.unique_id, None)
        self.running = tuple(r for r in self.running if r != replica_id.unique_id)
        self.leaving = tuple(self._leaving)

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        target = pending_request.kwargs.get(REPLICA_ARG) if pending_request is not None else None
        if target is not None:
            for replica in candidate_replicas:
                if replica.replica_id.unique_id == target:
                    return [[replica]]
        # No target, or its replica is gone: Serve picks the running one with the shortest queue.
        running = [r for r in candidate_replicas if r.replica_id.unique_id not in self._leaving]
        return [running] if running else []
