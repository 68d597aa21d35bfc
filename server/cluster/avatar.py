"""An avatar replica: one `Runtime` (model worker, sessions, references, aiortc peers) in one
Serve replica, on its own GPU (or CPUs).

The peer connections live here, on this replica's asyncio loop (Serve runs every method of a
replica on one loop), so media flows between the browser and this node directly, and each
answer carries this node's own candidates (`RAIN_PUBLIC_IP` and TURN work per node as on a box).
Every call about a session names its replica (`replica=`, see `routing.py`); a call for another
replica's session, which the router sends here only when that replica is gone, finds none.
"""

from __future__ import annotations

import logging
from typing import Any

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from server.cluster.remote import result
from server.cluster.routing import owned_id
from server.core.config import Settings
from server.references import UnknownReference
from server.runtime import OpenedSession, OpenedViewer, Runtime
from server.sessions.errors import UnknownSession

logger = logging.getLogger(__name__)

# Seconds to fetch a reference image from the library.
REFERENCE_FETCH_TIMEOUT = 30.0


class AvatarReplica:
    """Serve deployment class: one runtime per replica."""

    async def __init__(self, settings: Settings, library: DeploymentHandle):
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.node = ray.get_runtime_context().get_node_id()
        self.library = library
        logging.getLogger("server").setLevel(settings.LOG_LEVEL)
        self.runtime = Runtime(settings)
        await self.runtime.start()
        logger.info("avatar replica %s ready on node %s", self.replica, self.node)

    async def __del__(self) -> None:
        # Serve calls it on a graceful stop (scale-down, redeploy, shutdown): close every session.
        await self.runtime.stop()

    def _own(self, replica: str) -> None:
        if replica != self.replica:
            raise UnknownSession(replica)

    async def _fetch_reference(self, reference_id: str) -> None:
        """Copy an uploaded reference from the library the first time a session here names it."""
        try:
            self.runtime.reference(reference_id)
        except UnknownReference:
            image = await result(self.library.image.remote(reference_id), timeout=REFERENCE_FETCH_TIMEOUT)
            self.runtime.references.add(image, reference_id)

    # What the ingress reads before choosing ------------------------------------------------
    async def load(self, *, replica: str) -> dict[str, Any]:
        self._own(replica)
        health = self.runtime.health()
        return {"replica": self.replica, "sessions": health["sessions"], "max_sessions": health["max_sessions"]}

    async def health(self, *, replica: str) -> dict[str, Any]:
        self._own(replica)
        return {"replica": self.replica, "node": self.node, **self.runtime.health()}

    async def metrics(self, *, replica: str) -> bytes:
        self._own(replica)
        return self.runtime.metrics.render()

    async def client_config(self) -> dict[str, Any]:
        return self.runtime.client_config()

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve's autoscaler scales on live sessions (`autoscaling.py`), not on requests."""
        return {"sessions": float(self.runtime.health()["sessions"])}

    # Sessions --------------------------------------------------------------------------------
    async def open_session(
        self, sdp: str, type_: str, *, replica: str, reference_id: str | None = None, params: Any = None
    ) -> OpenedSession:
        self._own(replica)
        if reference_id is not None:
            await self._fetch_reference(reference_id)
        opened = await self.runtime.open_session(sdp, type_, reference_id=reference_id, params=params)
        return OpenedSession(
            session_id=owned_id(self.replica, opened.session_id), view_token=opened.view_token, answer=opened.answer
        )

    async def stats(self, session_id: str, *, replica: str) -> dict[str, Any]:
        self._own(replica)
        stats = self.runtime.stats(session_id)
        if stats.get("recording") is not None:
            stats["recording"] = self._owned_recording(session_id, stats["recording"])
        return {**stats, "replica": self.replica}

    async def swap_reference(self, session_id: str, reference_id: str, *, replica: str) -> str:
        self._own(replica)
        self.runtime.stats(session_id)  # an unknown session is a 404 before the reference is fetched
        await self._fetch_reference(reference_id)
        return (await self.runtime.swap_reference(session_id, reference_id)).id

    async def close_session(self, session_id: str, *, replica: str) -> None:
        self._own(replica)
        await self.runtime.close_session(session_id)

    async def authorize_viewer(self, session_id: str, token: str | None, *, replica: str) -> None:
        self._own(replica)
        self.runtime.authorize_viewer(session_id, token)

    async def add_viewer(
        self, session_id: str, token: str | None, sdp: str, matte: bool = False, *, replica: str
    ) -> OpenedViewer:
        self._own(replica)
        return await self.runtime.add_viewer(session_id, token, sdp, matte=matte)

    async def view(self, session_id: str, token: str | None, *, replica: str) -> dict[str, Any]:
        self._own(replica)
        return self.runtime.view(session_id, token)

    async def remove_viewer(self, session_id: str, viewer_id: str, *, replica: str) -> None:
        self._own(replica)
        await self.runtime.remove_viewer(session_id, viewer_id)

    # Recordings (the files stay on this replica's node) ------------------------------------
    def _owned_recording(self, session_id: str, recording: dict[str, Any]) -> dict[str, Any]:
        """A recording's description with its download link under the id clients know."""
        if recording.get("url") is None:
            return recording
        return {**recording, "url": f"/api/sessions/{owned_id(self.replica, session_id)}/recordings/"
                                    f"{recording['recording_id']}"}

    async def start_recording(self, session_id: str, *, replica: str) -> dict[str, Any]:
        self._own(replica)
        return self._owned_recording(session_id, await self.runtime.start_recording(session_id))

    async def stop_recording(self, session_id: str, *, replica: str) -> dict[str, Any]:
        self._own(replica)
        return self._owned_recording(session_id, await self.runtime.stop_recording(session_id))

    async def recordings(self, session_id: str, *, replica: str) -> list[dict[str, Any]]:
        self._own(replica)
        return [self._owned_recording(session_id, r) for r in self.runtime.recordings(session_id)]

    async def recording_size(self, session_id: str, recording_id: str, *, replica: str) -> int:
        self._own(replica)
        return self.runtime.recording_file(session_id, recording_id).stat().st_size

    async def recording_chunk(
        self, session_id: str, recording_id: str, offset: int, size: int, *, replica: str
    ) -> bytes:
        self._own(replica)
        path = self.runtime.recording_file(session_id, recording_id)
        with path.open("rb") as file:
            file.seek(offset)
            return file.read(size)
