"""What the routes ask of a runtime, as one awaitable interface (`RuntimeAPI`).

Two things implement it: `LocalRuntime`, the box's own `Runtime` in this process (the
single-box server), and `server.cluster.ingress.ClusterRuntime`, the avatar replicas of a Ray
Serve cluster reached through deployment handles. Every method is a coroutine because a remote
runtime answers over the network; the local one answers at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from server.runtime import OpenedSession, OpenedViewer, Runtime


@dataclass(frozen=True)
class UploadedReference:
    reference_id: str
    width: int
    height: int


@dataclass(frozen=True)
class RecordingFile:
    """A finished recording to send: a file this process can read (`path`), or, when another
    process owns it (a cluster's replica), `chunks()`, its bytes read piece by piece from there."""

    size: int
    path: Path | None = None
    chunks: Callable[[], AsyncIterator[bytes]] | None = None


class RuntimeAPI(Protocol):
    async def open_session(
        self, sdp: str, type_: str, *, reference_id: str | None = None, params: Any = None
    ) -> OpenedSession: ...

    async def stats(self, session_id: str) -> dict[str, Any]: ...

    async def swap_reference(self, session_id: str, reference_id: str) -> str: ...

    async def close_session(self, session_id: str) -> None: ...

    async def authorize_viewer(self, session_id: str, token: str | None) -> None: ...

    async def add_viewer(
        self, session_id: str, token: str | None, sdp: str, *, matte: bool = False
    ) -> OpenedViewer: ...

    async def view(self, session_id: str, token: str | None) -> dict[str, Any]: ...

    async def remove_viewer(self, session_id: str, viewer_id: str) -> None: ...

    async def start_recording(self, session_id: str) -> dict[str, Any]: ...

    async def stop_recording(self, session_id: str) -> dict[str, Any]: ...

    async def recordings(self, session_id: str) -> list[dict[str, Any]]: ...

    async def recording_file(self, session_id: str, recording_id: str) -> RecordingFile: ...

    async def upload_reference(self, data: bytes) -> UploadedReference: ...

    async def health(self) -> dict[str, Any]: ...

    async def client_config(self) -> dict[str, Any]: ...

    async def metrics(self) -> bytes: ...


class LocalRuntime:
    """The box's own `Runtime` behind `RuntimeAPI` (it keeps its synchronous reads for in-process callers)."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    async def open_session(
        self, sdp: str, type_: str, *, reference_id: str | None = None, params: Any = None
    ) -> OpenedSession:
        return await self.runtime.open_session(sdp, type_, reference_id=reference_id, params=params)

    async def stats(self, session_id: str) -> dict[str, Any]:
        return self.runtime.stats(session_id)

    async def swap_reference(self, session_id: str, reference_id: str) -> str:
        return (await self.runtime.swap_reference(session_id, reference_id)).id

    async def close_session(self, session_id: str) -> None:
        await self.runtime.close_session(session_id)

    async def authorize_viewer(self, session_id: str, token: str | None) -> None:
        self.runtime.authorize_viewer(session_id, token)

    async def add_viewer(self, session_id: str, token: str | None, sdp: str, *, matte: bool = False) -> OpenedViewer:
        return await self.runtime.add_viewer(session_id, token, sdp, matte=matte)

    async def view(self, session_id: str, token: str | None) -> dict[str, Any]:
        return self.runtime.view(session_id, token)

    async def remove_viewer(self, session_id: str, viewer_id: str) -> None:
        await self.runtime.remove_viewer(session_id, viewer_id)

    async def start_recording(self, session_id: str) -> dict[str, Any]:
        return await self.runtime.start_recording(session_id)

    async def stop_recording(self, session_id: str) -> dict[str, Any]:
        return await self.runtime.stop_recording(session_id)

    async def recordings(self, session_id: str) -> list[dict[str, Any]]:
        return self.runtime.recordings(session_id)

    async def recording_file(self, session_id: str, recording_id: str) -> RecordingFile:
        path = self.runtime.recording_file(session_id, recording_id)
        return RecordingFile(size=path.stat().st_size, path=path)

    async def upload_reference(self, data: bytes) -> UploadedReference:
        reference = await self.runtime.upload_reference(data)
        return UploadedReference(reference.id, reference.image.width, reference.image.height)

    async def health(self) -> dict[str, Any]:
        return self.runtime.health()

    async def client_config(self) -> dict[str, Any]:
        return self.runtime.client_config()

    async def metrics(self) -> bytes:
        return self.runtime.metrics.render()
