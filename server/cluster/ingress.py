"""The ingress deployment: the FastAPI app of a single box, its runtime the cluster's avatar replicas.

`ClusterRuntime` implements the routes' `RuntimeAPI` with the only code a cluster adds to a
box's runtime: placement (a new offer goes to the replica with the most free sessions; past the
cluster's capacity a `CapacityError`, 503 with `Retry-After`), fan-out (health, metrics and the
WHIP sessions' list ask every running replica, one bounded call each) and routing by id (a
session id names its replica, `routing.py`). Every other operation is forwarded as it is,
through the replica's one generic `call`; the forwarding methods are made from the interface
itself (`_forwarding`). The ingress keeps no state of its own: any number of replicas serve alike.

Every call is bounded (`RAY_CALL_TIMEOUT`, an offer's and a recording's end `OFFER_TIMEOUT`): a
lost node answers late or not at all, and the API must answer regardless. A session whose replica
is gone, or that does not answer in time while no longer running, is `SessionGone` (404, "the
stream ended").
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from server.api.runtime_api import SESSION_OPERATIONS, RecordingFile, RuntimeAPI, UploadedReference
from server.cluster.known_replicas import leaving_replicas, running_replicas
from server.cluster.metrics import labelled_exposition
from server.cluster.remote import REPLICA_GONE, ReplicaTimeout, log_to_stderr, result
from server.cluster.routing import split_owned_id
from server.core.config import Settings
from server.runtime import OpenedSession
from server.sessions.errors import CapacityError, SessionGone, UnknownSession

logger = logging.getLogger(__name__)

# Seconds an offer may take (it gathers ICE candidates and builds a session), and the calls that
# may wait as long: a character swap (fetched, then encoded on the model worker), a viewer's
# offer and its end (a peer connection closed), the end of a recording (its file finished), new
# driving settings (the landmark pipeline rebuilt).
OFFER_TIMEOUT = 60.0
SLOW_OPERATIONS = frozenset(
    {"open_session", "swap_reference", "add_viewer", "remove_viewer", "stop_recording", "close_session", "set_params"}
)
# Seconds an upload may take at the library (decoding an image of up to MAX_UPLOAD_BYTES).
UPLOAD_TIMEOUT = 30.0
# What `/api/health` lists of each replica.
REPLICA_HEALTH = ("replica", "node", "address", "sessions", "max_sessions", "viewers", "device", "dtype", "profile",
                  "engines", "process", "draining")
# A recording downloaded through the ingress comes from its replica in pieces of this size.
RECORDING_CHUNK_BYTES = 1 << 20
# How long to wait for the first avatar replica to be known (a cluster still starting).
FIRST_REPLICA_TIMEOUT = 10.0


class ClusterRuntime:
    """`RuntimeAPI` over the avatar deployment's replicas (and the reference library)."""

    def __init__(self, avatars: DeploymentHandle, library: DeploymentHandle, *, call_timeout: float):
        self.avatars = avatars
        self.library = library
        self.call_timeout = call_timeout

    def _running(self) -> tuple[str, ...] | None:
        return running_replicas(self.avatars.app_name, self.avatars.deployment_name)

    def _leaving(self) -> tuple[str, ...]:
        return leaving_replicas(self.avatars.app_name, self.avatars.deployment_name)

    async def _call(self, replica: str | None, operation: str, *args: Any, **kwargs: Any) -> Any:
        """One operation on one replica (`None`: any), its refusal raised, bounded in time."""
        timeout = OFFER_TIMEOUT if operation in SLOW_OPERATIONS else self.call_timeout
        return await result(self.avatars.call.remote(operation, *args, replica=replica, **kwargs), timeout=timeout)

    async def _replicas(self) -> tuple[str, ...]:
        """The running avatar replicas, as this process's router knows them."""
        if not self._running():
            # The first call through the handle makes its router and waits for a replica.
            await result(self.avatars.call.remote("client_config", replica=None), timeout=FIRST_REPLICA_TIMEOUT)
        replicas = self._running()
        if not replicas:
            raise CapacityError("no avatar replica is running; try again later")
        return replicas

    async def _each(self, operation: str, *, leaving: bool = False) -> dict[str, Any]:
        """`operation` of every running replica (and, with `leaving`, of those draining) -> its
        answer or the exception it gave, by replica."""
        # One after the other, not gathered: Serve (2.60) gives every call made while handling one
        # HTTP request that request's internal id, and its router hands a chosen replica to the
        # pending call of that id, so concurrent calls to different replicas could swap targets.
        answers: dict[str, Any] = {}
        for replica in (*await self._replicas(), *(self._leaving() if leaving else ())):
            try:
                answers[replica] = await self._call(replica, operation)
            except Exception as exc:  # one replica's trouble must not hide the others
                logger.warning("avatar replica %s: %s failed: %r", replica, operation, exc)
                answers[replica] = exc
        return answers

    async def _session_call(self, operation: str, session_id: str, *args: Any, **kwargs: Any) -> Any:
        """An operation on the replica that owns the session; a gone replica's session is `SessionGone`."""
        replica, _ = split_owned_id(session_id)
        running = self._running()
        if running is not None and replica not in running and replica not in self._leaving():
            raise SessionGone(session_id)  # no call: Serve knows that replica is gone
        try:
            return await self._call(replica, operation, session_id, *args, **kwargs)
        except REPLICA_GONE:
            raise SessionGone(session_id) from None  # its replica died under the call: the session with it
        except ReplicaTimeout:
            if replica not in (self._running() or ()):
                raise SessionGone(session_id) from None
            # Overloaded, or its machine lost and not yet declared dead by Ray (then a 404 follows).
            raise ReplicaTimeout(
                "the server running this session does not answer (busy, or its machine is lost); try again later"
            ) from None

    # Placement -----------------------------------------------------------------------------
    async def open_session(
        self, sdp: str, type_: str, *, reference_id: str | None = None, params: Any = None, whip: bool = False
    ) -> OpenedSession:
        loads = {r: load for r, load in (await self._each("health")).items() if isinstance(load, dict)}
        free = sorted(loads, key=lambda r: loads[r]["max_sessions"] - loads[r]["sessions"], reverse=True)
        for replica in free:
            if loads[replica]["sessions"] >= loads[replica]["max_sessions"]:
                break
            try:
                return await self._call(
                    replica, "open_session", sdp, type_, reference_id=reference_id, params=params, whip=whip
                )
            except (CapacityError, UnknownSession, *REPLICA_GONE) as exc:
                # Filled by another offer meanwhile, or gone: the next one.
                logger.info("offer not taken by replica %s (%s); trying the next", replica, type(exc).__name__)
        capacity = sum(load["max_sessions"] for load in loads.values())
        raise CapacityError(f"the cluster is full ({capacity} sessions on {len(loads)} replicas); try again later")

    async def recording_file(self, session_id: str, recording_id: str) -> RecordingFile:
        # The file is on the owning replica's node: its bytes come through Ray, a piece per call,
        # so that neither side holds a whole recording in memory.
        size = (await self._session_call("recording_file", session_id, recording_id)).size

        async def chunks() -> AsyncIterator[bytes]:
            for offset in range(0, size, RECORDING_CHUNK_BYTES):
                yield await self._session_call("recording_chunk", session_id, recording_id, offset,
                                               RECORDING_CHUNK_BYTES)

        return RecordingFile(size=size, chunks=chunks)

    async def upload_reference(self, data: bytes) -> UploadedReference:
        return await result(self.library.upload.remote(data), timeout=UPLOAD_TIMEOUT)

    async def client_config(self) -> dict[str, Any]:
        return await self._call(None, "client_config")

    # Fan-out -------------------------------------------------------------------------------
    async def health(self) -> dict[str, Any]:
        answers = await self._each("health", leaving=True)
        draining = set(self._leaving())
        replicas = [{**a, "draining": r in draining} for r, a in answers.items() if isinstance(a, dict)]
        serving = [r for r in replicas if not r["draining"]]
        unreachable = [r for r, a in answers.items() if not isinstance(a, dict)]
        if not replicas:
            raise CapacityError("no avatar replica answers; try again later")
        first = replicas[0]
        try:
            references: int | None = await result(self.library.count.remote(), timeout=self.call_timeout)
        except (ReplicaTimeout, *REPLICA_GONE):
            references = None  # the library restarting: health is about the replicas
        return {
            "status": "ok",
            "profile": first["profile"],
            "device": first["device"],
            "dtype": first["dtype"],
            "sessions": sum(r["sessions"] for r in replicas),
            "max_sessions": sum(r["max_sessions"] for r in serving),
            "viewers": sum(r["viewers"] for r in replicas),
            "references": references,
            "replicas": [{key: r.get(key) for key in REPLICA_HEALTH} for r in replicas],
            "unreachable_replicas": unreachable,
        }

    async def whip_sessions(self) -> list[dict[str, Any]]:
        answers = await self._each("whip_sessions", leaving=True)  # a draining replica's sessions stream on
        listed = [a for a in answers.values() if isinstance(a, list)]
        if not listed:
            raise CapacityError("no avatar replica answers; try again later")
        # A replica that does not answer is left out (and logged by `_each`): the others still list theirs.
        return sorted((s for sessions in listed for s in sessions), key=lambda s: s["started"])

    async def metrics(self) -> bytes:
        texts = {r: text for r, text in (await self._each("metrics", leaving=True)).items() if isinstance(text, bytes)}
        return labelled_exposition(texts)


def _forwarding(operation: str) -> Callable[..., Any]:
    """`ClusterRuntime.<operation>`: the interface's own signature, the call sent to the session's owner."""

    @functools.wraps(getattr(RuntimeAPI, operation))
    async def forward(self: ClusterRuntime, session_id: str, *args: Any, **kwargs: Any) -> Any:
        return await self._session_call(operation, session_id, *args, **kwargs)

    return forward


for _operation in SESSION_OPERATIONS:
    if _operation not in vars(ClusterRuntime):
        setattr(ClusterRuntime, _operation, _forwarding(_operation))


@serve.ingress()
class Ingress:
    """Serve deployment class: the FastAPI app (pages, OBS view, REST, signaling, WHEP, health, metrics)."""

    def __init__(self, settings: Settings, avatars: DeploymentHandle, library: DeploymentHandle):
        log_to_stderr(settings.LOG_LEVEL)
        self.settings = settings
        self.runtime = ClusterRuntime(avatars, library, call_timeout=settings.RAY_CALL_TIMEOUT)

    def __serve_build_asgi_app__(self):  # the FastAPI app, built on the replica after __init__
        from server.main import create_app

        return create_app(self.settings, runtime=self.runtime)
