"""What the routes ask of a runtime, as one awaitable interface (`RuntimeAPI`).

Two things implement it: the box's own `server.runtime.Runtime` (the single-box server, and
each avatar replica of a cluster), and `server.cluster.ingress.ClusterRuntime`, which places
new sessions on a Ray Serve cluster's replicas and forwards every other call to the owner.
Every method is a coroutine because a remote runtime answers over the network.
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol

from server.runtime import OpenedSession, OpenedViewer, RecordingFile, UploadedReference

__all__ = ["OPERATIONS", "OWNED_IDS", "SESSION_OPERATIONS", "RecordingFile", "RuntimeAPI", "UploadedReference"]


class RuntimeAPI(Protocol):
    async def open_session(
        self, sdp: str, type_: str, *, reference_id: str | None = None, params: Any = None, whip: bool = False
    ) -> OpenedSession: ...

    async def whip_sessions(self) -> list[dict[str, Any]]: ...

    async def stats(self, session_id: str) -> dict[str, Any]: ...

    async def set_params(self, session_id: str, params: Any) -> dict[str, Any]: ...

    async def control(self, session_id: str, message: str | bytes) -> dict[str, Any]: ...

    async def swap_reference(self, session_id: str, reference_id: str) -> str: ...

    async def close_session(self, session_id: str) -> None: ...

    async def trickle_ice(self, session_id: str, fragment: str, if_match: str | None = None) -> int: ...

    async def authorize_viewer(self, view_id: str, token: str | None) -> None: ...

    async def add_viewer(
        self, view_id: str, token: str | None, sdp: str, *, matte: bool = False
    ) -> OpenedViewer: ...

    async def view(self, view_id: str, token: str | None) -> dict[str, Any]: ...

    async def remove_viewer(self, view_id: str, viewer_id: str) -> None: ...

    async def start_recording(self, session_id: str) -> dict[str, Any]: ...

    async def stop_recording(self, session_id: str) -> dict[str, Any]: ...

    async def recordings(self, session_id: str) -> list[dict[str, Any]]: ...

    async def recording_file(self, session_id: str, recording_id: str) -> RecordingFile: ...

    async def upload_reference(self, data: bytes) -> UploadedReference: ...

    async def health(self) -> dict[str, Any]: ...

    async def client_config(self) -> dict[str, Any]: ...

    async def metrics(self) -> bytes: ...


# The interface's operations by name, and those about one session: a session id comes first, or
# its view id (a viewer's operations); both start with the owning replica's name in a cluster.
OPERATIONS: tuple[str, ...] = tuple(name for name in vars(RuntimeAPI) if not name.startswith("_"))
OWNED_IDS = ("session_id", "view_id")
SESSION_OPERATIONS: tuple[str, ...] = tuple(
    name for name in OPERATIONS
    if set(list(inspect.signature(getattr(RuntimeAPI, name)).parameters)[1:2]) & set(OWNED_IDS)
)
