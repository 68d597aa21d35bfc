"""The ingress deployment: the FastAPI app of a single box, its runtime the cluster's avatar replicas.

`ClusterRuntime` implements the routes' `RuntimeAPI` with calls to the avatar deployment: a new
offer goes to the replica with the most free sessions (each replica asked for its load, the
fullest tried last, past the cluster's capacity a `CapacityError`: 503 with `Retry-After`);
every later call names the session's replica (`routing.py`). Health and metrics ask every
running replica. The ingress keeps no state of its own: any number of replicas serve alike.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from server.api.runtime_api import RecordingFile, UploadedReference
from server.cluster.known_replicas import running_replicas
from server.cluster.metrics import labelled_exposition
from server.cluster.remote import REPLICA_GONE, result
from server.cluster.routing import split_owned_id
from server.core.config import Settings
from server.runtime import OpenedSession, OpenedViewer
from server.sessions.errors import CapacityError, UnknownSession

logger = logging.getLogger(__name__)

# Seconds a call may take: an offer gathers ICE candidates and builds a session; the rest are quick.
OFFER_TIMEOUT = 60.0
CALL_TIMEOUT = 20.0
# What `/api/health` lists of each replica.
REPLICA_HEALTH = ("replica", "node", "sessions", "max_sessions", "viewers", "device", "dtype", "profile", "engines",
                  "process")
# A recording downloaded through the ingress comes from its replica in pieces of this size.
RECORDING_CHUNK_BYTES = 1 << 20
# How long to wait for the first avatar replica to be known (a cluster still starting).
FIRST_REPLICA_TIMEOUT = 10.0


class ClusterRuntime:
    """`RuntimeAPI` over the avatar deployment's replicas (and the reference library)."""

    def __init__(self, avatars: DeploymentHandle, library: DeploymentHandle):
        self.avatars = avatars
        self.library = library

    async def _replicas(self) -> tuple[str, ...]:
        """The running avatar replicas, as this process's router knows them."""
        replicas = running_replicas(self.avatars.app_name, self.avatars.deployment_name)
        if not replicas:
            # The first call through the handle makes its router and waits for a replica.
            await result(self.avatars.client_config.remote(), timeout=FIRST_REPLICA_TIMEOUT)
            replicas = running_replicas(self.avatars.app_name, self.avatars.deployment_name)
        if not replicas:
            raise CapacityError("no avatar replica is running; try again later")
        return replicas

    async def _each(self, method: str, timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
        """`method` of every running replica -> its answer or the exception it gave, by replica."""
        # One after the other, not gathered: Serve (2.60) gives every call made while handling one
        # HTTP request that request's internal id, and its router hands a chosen replica to the
        # pending call of that id, so concurrent calls to different replicas could swap targets.
        answers: dict[str, Any] = {}
        for replica in await self._replicas():
            try:
                answers[replica] = await result(getattr(self.avatars, method).remote(replica=replica), timeout=timeout)
            except Exception as exc:  # one replica's trouble must not hide the others
                logger.warning("avatar replica %s: %s failed: %r", replica, method, exc)
                answers[replica] = exc
        return answers

    async def _session_call(self, method: str, session_id: str, *args: Any, timeout: float = CALL_TIMEOUT) -> Any:
        replica, local_id = split_owned_id(session_id)
        try:
            call = getattr(self.avatars, method).remote(local_id, *args, replica=replica)
            return await result(call, timeout=timeout)
        except REPLICA_GONE:
            raise UnknownSession(session_id) from None  # its replica died under the call: the session with it

    # Sessions ----------------------------------------------------------------------------
    async def open_session(
        self, sdp: str, type_: str, *, reference_id: str | None = None, params: Any = None
    ) -> OpenedSession:
        loads = {r: load for r, load in (await self._each("load")).items() if isinstance(load, dict)}
        free = sorted(loads, key=lambda r: loads[r]["max_sessions"] - loads[r]["sessions"], reverse=True)
        for replica in free:
            if loads[replica]["sessions"] >= loads[replica]["max_sessions"]:
                break
            call = self.avatars.open_session.remote(
                sdp, type_, replica=replica, reference_id=reference_id, params=params
            )
            try:
                return await result(call, timeout=OFFER_TIMEOUT)
            except (CapacityError, UnknownSession, *REPLICA_GONE) as exc:
                # Filled by another offer meanwhile, or gone: the next one.
                logger.info("offer not taken by replica %s (%s); trying the next", replica, type(exc).__name__)
        capacity = sum(load["max_sessions"] for load in loads.values())
        raise CapacityError(f"the cluster is full ({capacity} sessions on {len(loads)} replicas); try again later")

    async def stats(self, session_id: str) -> dict[str, Any]:
        return await self._session_call("stats", session_id)

    async def swap_reference(self, session_id: str, reference_id: str) -> str:
        return await self._session_call("swap_reference", session_id, reference_id)

    async def close_session(self, session_id: str) -> None:
        await self._session_call("close_session", session_id)

    # Viewers -----------------------------------------------------------------------------
    async def authorize_viewer(self, session_id: str, token: str | None) -> None:
        await self._session_call("authorize_viewer", session_id, token)

    async def add_viewer(self, session_id: str, token: str | None, sdp: str, *, matte: bool = False) -> OpenedViewer:
        return await self._session_call("add_viewer", session_id, token, sdp, matte, timeout=OFFER_TIMEOUT)

    async def view(self, session_id: str, token: str | None) -> dict[str, Any]:
        return await self._session_call("view", session_id, token)

    async def remove_viewer(self, session_id: str, viewer_id: str) -> None:
        await self._session_call("remove_viewer", session_id, viewer_id)

    # Recordings --------------------------------------------------------------------------
    async def start_recording(self, session_id: str) -> dict[str, Any]:
        return await self._session_call("start_recording", session_id)

    async def stop_recording(self, session_id: str) -> dict[str, Any]:
        # Answers once the file is complete: as long as a session's close waits for it.
        return await self._session_call("stop_recording", session_id, timeout=OFFER_TIMEOUT)

    async def recordings(self, session_id: str) -> list[dict[str, Any]]:
        return await self._session_call("recordings", session_id)

    async def recording_file(self, session_id: str, recording_id: str) -> RecordingFile:
        # The file is on the owning replica's node: its bytes come through Ray, a piece per call,
        # so that neither side holds a whole recording in memory.
        size = await self._session_call("recording_size", session_id, recording_id)

        async def chunks() -> AsyncIterator[bytes]:
            for offset in range(0, size, RECORDING_CHUNK_BYTES):
                yield await self._session_call(
                    "recording_chunk", session_id, recording_id, offset, RECORDING_CHUNK_BYTES
                )

        return RecordingFile(size=size, chunks=chunks)

    # References --------------------------------------------------------------------------
    async def upload_reference(self, data: bytes) -> UploadedReference:
        return await result(self.library.upload.remote(data), timeout=CALL_TIMEOUT)

    # Health ------------------------------------------------------------------------------
    async def health(self) -> dict[str, Any]:
        answers = await self._each("health")
        replicas = [a for a in answers.values() if isinstance(a, dict)]
        unreachable = [r for r, a in answers.items() if not isinstance(a, dict)]
        if not replicas:
            raise CapacityError("no avatar replica answers; try again later")
        first = replicas[0]
        return {
            "status": "ok",
            "profile": first["profile"],
            "device": first["device"],
            "dtype": first["dtype"],
            "sessions": sum(r["sessions"] for r in replicas),
            "max_sessions": sum(r["max_sessions"] for r in replicas),
            "viewers": sum(r["viewers"] for r in replicas),
            "references": await result(self.library.count.remote(), timeout=CALL_TIMEOUT),
            "replicas": [{key: r.get(key) for key in REPLICA_HEALTH} for r in replicas],
            "unreachable_replicas": unreachable,
        }

    async def client_config(self) -> dict[str, Any]:
        return await result(self.avatars.client_config.remote(), timeout=CALL_TIMEOUT)

    async def metrics(self) -> bytes:
        texts = {r: text for r, text in (await self._each("metrics")).items() if isinstance(text, bytes)}
        return labelled_exposition(texts)


@serve.ingress()
class Ingress:
    """Serve deployment class: the FastAPI app (pages, OBS view, REST, signaling, WHEP, health, metrics)."""

    def __init__(self, settings: Settings, avatars: DeploymentHandle, library: DeploymentHandle):
        logging.getLogger("server").setLevel(settings.LOG_LEVEL)
        self.settings = settings
        self.runtime = ClusterRuntime(avatars, library)

    def __serve_build_asgi_app__(self):  # the FastAPI app, built on the replica after __init__
        from server.main import create_app

        return create_app(self.settings, runtime=self.runtime)
