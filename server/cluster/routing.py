"""Session affinity: every request about a session reaches the avatar replica that owns it.

A session's id is the owning replica's Serve id and a token, `{replica}.{token}` (the replica's
`Runtime` is named after it, and names its sessions so). The ingress splits it and calls the avatar deployment with
`replica=` among the keyword arguments; `ReplicaAddressedRouter`, the deployment's Serve request
router, sends such a request to that replica. Calls without `replica=` (the pages'
configuration) go to any replica. The routing state is Serve's own list of running replicas,
updated by Serve as replicas are added, removed or restarted, and the id is in the request, so
any number of ingress replicas route alike with nothing shared between them.

A request for a replica that is gone (dead, scaled down, or restarted under a new id) goes to
any live replica, which answers "unknown session" (404) because the id is not its own: a
router must send every request somewhere, or Serve retries it forever.
"""

from __future__ import annotations

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
    """Routes a call with `replica=ID` to that replica, any other call to the least busy replica."""

    running: tuple[str, ...] = ()  # replica ids; a tuple replaced whole, as the ingress reads it from another thread

    def initialize_state(self, **kwargs: Any) -> None:
        known_replicas.register(self._deployment_id.app_name, self._deployment_id.name, self)

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        super().update_replicas(replicas)
        self.running = tuple(r.replica_id.unique_id for r in replicas)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self.running = tuple(r for r in self.running if r != replica_id.unique_id)

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        target = pending_request.kwargs.get(REPLICA_ARG) if pending_request is not None else None
        if target is not None:
            for replica in candidate_replicas:
                if replica.replica_id.unique_id == target:
                    return [[replica]]
        # No target, or its replica is gone: Serve picks the one with the shortest queue.
        return [candidate_replicas]

