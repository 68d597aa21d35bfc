"""The runtime of one box: everything a serving replica owns, and the operations it offers.

It holds the model worker, the sessions, the uploaded references and the metrics, and knows
nothing of HTTP: the FastAPI app hosts one (`server.main`), and each avatar replica of a Ray
cluster hosts one (`server.cluster.avatar`). Its errors are the domain's own (`UnknownSession`,
`CapacityError`, `OfferError`, ...: `DOMAIN_ERRORS`); the API turns them into statuses
(`server.api.errors`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from rain_core.driving import DrivingSettings
from rain_core.weights.profiles import sample_character
from server.core.config import MIN_FPS, Settings
from server.metrics import Metrics
from server.model_worker import ModelWorker, fast_path_status
from server.references import (
    BadDimensions,
    NotAnImage,
    Reference,
    ReferenceStore,
    UnknownReference,
    UploadTooLarge,
    grey_card,
    load_reference_file,
)
from server.rtc.ice import PortsExhausted, include_loopback, use_port_range
from server.rtc.receiver import loss_repair_policy, use_loss_repair
from server.rtc.sdp import OfferError, parse_offer
from server.rtc.trickle import (
    FragmentError,
    IceRestartRefused,
    StaleIceSession,
    add_trickled_candidates,
    parse_ice_fragment,
)
from server.rtc.turn import ice_servers
from server.sessions.control import ParamsError, check_params, notice
from server.sessions.errors import BadViewToken, CapacityError, NoViewToken, UnknownSession, UnknownViewer
from server.sessions.recordings import Recording, RecordingConflict, RecordingsFull, UnknownRecording
from server.sessions.registry import SessionRegistry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenedSession:
    session_id: str  # controls the session: only its client may know it
    view_id: str  # names the session to its viewers, and to nothing else
    view_token: str  # lets viewers watch it
    answer: str  # the complete answer SDP


@dataclass(frozen=True)
class OpenedViewer:
    viewer_id: str
    answer: str


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


# The errors the operations raise for what a client asked (each one a 4xx or 503 at the API,
# `server.api.errors`); anything else is a fault of the server.
DOMAIN_ERRORS: tuple[type[Exception], ...] = (
    OfferError, NoViewToken, BadViewToken, UnknownSession, UnknownViewer, UnknownReference, UnknownRecording,
    RecordingConflict, UploadTooLarge, NotAnImage, BadDimensions, ParamsError, CapacityError, PortsExhausted,
    RecordingsFull, FragmentError, IceRestartRefused, StaleIceSession,
)
# Between a cluster replica's name and its own token in a session id (`Runtime(name=...)`).
SESSION_ID_SEPARATOR = "."
# Seconds between looks at the sessions left while draining.
DRAIN_POLL_S = 1.0

# Fetches an uploaded reference's image kept elsewhere (a cluster's library), by id.
ReferenceFetch = Callable[[str], Awaitable[Image.Image]]


class Runtime:
    """One box's serving state: `start()` loads the model, `stop()` closes every session.

    Its public coroutines are the routes' interface (`server.api.runtime_api.RuntimeAPI`), the
    same on a single box and in each replica of a cluster. A replica passes its `name` (its
    session ids then start with it, so that a client's id says where the session lives, and
    health and stats name it) and `fetch_reference` (uploads kept by the cluster's library).
    """

    def __init__(
        self, settings: Settings, *, name: str | None = None, node: str | None = None, address: str | None = None,
        fetch_reference: ReferenceFetch | None = None,
    ):
        self.settings = settings
        self.name = name
        self.node = node  # where a replica runs: Ray's node id and the node's address
        self.address = address
        self._metrics = Metrics()
        self.worker = ModelWorker(settings, self._metrics)
        self.references = ReferenceStore(
            max_items=settings.MAX_REFERENCES, ttl=settings.REFERENCE_TTL, directory=settings.REFERENCES_DIR
        )
        self._fetch_reference = fetch_reference
        self._sessions: SessionRegistry | None = None
        self._default_reference: Reference | None = None

    # Life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        settings = self.settings
        image = load_reference_file(settings.REFERENCE_IMAGE) if settings.REFERENCE_IMAGE else None
        include_loopback(settings.ICE_LOOPBACK)
        use_port_range(settings.ICE_PORT_RANGE)
        use_loss_repair(loss_repair_policy(settings))
        try:
            await self.worker.start()
            if image is None:
                bundled = sample_character(self.worker.config)
                image = load_reference_file(bundled) if bundled is not None else grey_card()
        except BaseException:
            await self.worker.stop()
            include_loopback(False)
            use_port_range(None)
            use_loss_repair(None)
            raise
        self._default_reference = Reference(id="default", image=image)
        prefix = f"{self.name}{SESSION_ID_SEPARATOR}" if self.name is not None else ""
        # A replica writes its recordings in a folder of its own (replicas may share a disk).
        folder = settings.RECORDINGS_DIR / f"replica-{self.name}" if self.name is not None else None
        self._sessions = SessionRegistry(
            settings, self.worker, self._metrics, id_prefix=prefix, recordings_dir=folder
        )
        self._sessions.start()
        # Start-up objects (torch, diffusers, the models) live as long as the process: keep them out
        # of every later garbage collection, which then only scans what sessions create.
        gc.collect()
        gc.freeze()
        logger.info("ready: profile %s, at most %d sessions", self.worker.config.name, settings.MAX_SESSIONS)

    async def stop(self) -> None:
        if self._sessions is not None:
            logger.info("shutting down: closing %d sessions", len(self._sessions))
            await self._sessions.shutdown()
            self.references.clear()
            gc.unfreeze()
        await self.worker.stop()
        include_loopback(False)
        use_port_range(None)
        use_loss_repair(None)

    async def drain(self, timeout: float) -> None:
        """Taken out of service (a cluster's scale-down): no new session comes (the caller sees
        to that); serve the live ones until they end, at most `timeout` seconds, then close the
        rest. Each page is told at once, so that it can start a new stream elsewhere."""
        registry = self._registry
        reached = registry.notify_all(notice(
            "draining", seconds=timeout,
            message=f"this server is being taken out of service: the stream ends within {timeout:g} s; "
                    "start a new one to continue on another server",
        ))
        logger.info("draining: %d sessions (%d pages told), at most %g s", len(registry), reached, timeout)
        deadline = time.monotonic() + timeout
        while len(registry) and (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(DRAIN_POLL_S, left))
        if len(registry):
            logger.info("drained: closing the %d sessions left", len(registry))
        await registry.close_all("server drained")

    @property
    def _registry(self) -> SessionRegistry:
        assert self._sessions is not None, "the runtime is not started"
        return self._sessions

    @property
    def session_count(self) -> int:
        return len(self._registry)

    # Sessions --------------------------------------------------------------------------
    async def open_session(
        self, sdp: str, type_: str, *, reference_id: str | None = None, params: Any = None, whip: bool = False
    ) -> OpenedSession:
        """Check a webcam offer, its character and its parameters, then open a session if there is
        room; `whip`: a WHIP publisher's offer (the session is then listed by `whip_sessions`)."""
        offer = parse_offer(sdp, type_, need="send")
        reference = await self._reference(reference_id) if reference_id is not None else self._default_reference
        assert reference is not None
        checked = check_params(
            params if params is not None else {}, max_fps=self.settings.MAX_FPS, current=self.worker.driving_defaults
        )
        session = await self._registry.open(offer, reference=reference, params=checked, whip=whip)
        assert session.answer is not None
        return OpenedSession(
            session_id=session.id, view_id=session.view_id, view_token=session.view_token, answer=session.answer
        )

    async def whip_sessions(self) -> list[dict[str, Any]]:
        """The live sessions published over WHIP, oldest first, each with its session id (which
        controls it: for the holder of the WHIP token only), view link and a short status."""
        named = {"replica": self.name} if self.name is not None else {}
        live = [s for s in self._registry.sessions.values() if s.whip and not s.closed]
        return [{**s.summary(), **named} for s in sorted(live, key=lambda s: s.created)]

    async def control(self, session_id: str, message: str | bytes) -> dict[str, Any]:
        """A control message, as on the session's data channel -> its reply (for clients without
        the channel: WHIP publishers, the page watching one)."""
        return await self._registry.get(session_id).handle_control(message)

    async def stats(self, session_id: str) -> dict[str, Any]:
        stats = self._registry.get(session_id).stats()
        return stats if self.name is None else {**stats, "replica": self.name}

    async def set_params(self, session_id: str, params: Any) -> dict[str, Any]:
        """Change a session's parameters as a control channel's `params` message does (the same
        check, all or nothing) -> all its parameters now; for clients without the channel (WHIP)."""
        session = self._registry.get(session_id)
        await session.apply_params(params)
        return session.params()

    async def swap_reference(self, session_id: str, reference_id: str) -> str:
        session = self._registry.get(session_id)  # an unknown session is a 404 before the reference is looked for
        reference = await self._reference(reference_id)
        await session.set_reference(reference)
        return reference.id

    async def close_session(self, session_id: str) -> None:
        await self._registry.close(self._registry.get(session_id), "ended by the client")

    async def trickle_ice(self, session_id: str, fragment: str, if_match: str | None = None) -> int:
        """Candidates a publisher found after its offer (trickle ICE: a WHIP resource's PATCH, an
        `application/trickle-ice-sdpfrag` body) -> how many were given to the session's ICE agent."""
        session = self._registry.get(session_id)
        added = await add_trickled_candidates(session.pc, parse_ice_fragment(fragment), if_match)
        session.trickled_candidates += added
        return added

    # Recordings ------------------------------------------------------------------------
    async def start_recording(self, session_id: str) -> dict[str, Any]:
        return (await self._registry.get(session_id).start_recording()).describe()

    async def stop_recording(self, session_id: str) -> dict[str, Any]:
        return (await self._registry.get(session_id).stop_recording()).describe()

    async def recordings(self, session_id: str) -> list[dict[str, Any]]:
        """A session's recordings, while it runs and `RECORDING_TTL` after it ended."""
        return [r.describe() for r in self._recordings_of(session_id)]

    async def recording_file(self, session_id: str, recording_id: str) -> RecordingFile:
        """The finished file of one of the session's recordings."""
        path = self._recording_path(session_id, recording_id)
        return RecordingFile(size=path.stat().st_size, path=path)

    async def recording_chunk(self, session_id: str, recording_id: str, offset: int, size: int) -> bytes:
        """`size` bytes of a finished recording from `offset` (for a process that cannot read the file)."""
        path = self._recording_path(session_id, recording_id)
        with path.open("rb") as file:
            file.seek(offset)
            return file.read(size)

    def _recording_path(self, session_id: str, recording_id: str) -> Path:
        self._recordings_of(session_id)  # UnknownSession unless live, or its files still kept
        recording = self._registry.recordings.get(session_id, recording_id)
        if recording.state == "recording":
            raise RecordingConflict("this recording is still under way; stop it first")
        if recording.state != "finished" or not recording.path.is_file():
            raise UnknownRecording(recording_id)
        return recording.path

    def _recordings_of(self, session_id: str) -> list[Recording]:
        store = self._registry.recordings
        try:
            self._registry.get(session_id)
        except UnknownSession:
            return store.ended_session(session_id)  # UnknownSession unless its files are still kept
        return store.of_session(session_id)

    # Viewers ---------------------------------------------------------------------------
    # Named by the session's view id: a view link grants watching and nothing else.
    async def authorize_viewer(self, view_id: str, token: str | None) -> None:
        """May the holder of `token` watch the session (before anything else is read from them)."""
        self._registry.get_view(view_id).check_view_token(token)

    async def add_viewer(self, view_id: str, token: str | None, sdp: str, *, matte: bool = False) -> OpenedViewer:
        """A WHEP viewer; `matte`: the avatar with its matte packed beside it (twice as wide)."""
        session = self._registry.get_view(view_id)
        session.check_view_token(token)
        assert session.viewers is not None
        viewer_id, answer = await session.viewers.add(sdp, matte=matte)
        return OpenedViewer(viewer_id=viewer_id, answer=answer)

    async def view(self, view_id: str, token: str | None) -> dict[str, Any]:
        """What an OBS view needs beside the stream: the key colour of the session's character."""
        session = self._registry.get_view(view_id)
        session.check_view_token(token)
        red, green, blue = session.reference.key_colour()
        return {"key_colour": f"{red:02x}{green:02x}{blue:02x}"}

    async def remove_viewer(self, view_id: str, viewer_id: str) -> None:
        viewers = self._registry.get_view(view_id).viewers
        assert viewers is not None
        await viewers.remove(viewer_id)

    # References ------------------------------------------------------------------------
    async def upload_reference(self, data: bytes) -> UploadedReference:
        """An uploaded image file -> a stored reference (checked cheapest first, decoded off the loop)."""
        settings = self.settings
        reference = await asyncio.to_thread(
            self.references.add_upload, data,
            max_bytes=settings.MAX_UPLOAD_BYTES, max_pixels=settings.MAX_REFERENCE_PIXELS,
        )
        return UploadedReference(reference.id, reference.image.width, reference.image.height)

    async def _reference(self, reference_id: str) -> Reference:
        """An uploaded reference by id: kept here, or fetched (once) from where the cluster keeps them."""
        try:
            return await asyncio.to_thread(self.references.get, reference_id)
        except UnknownReference:
            if self._fetch_reference is None:
                raise
        image = await self._fetch_reference(reference_id)
        return await asyncio.to_thread(self.references.add, image, reference_id)

    # Health ----------------------------------------------------------------------------
    async def health(self) -> dict[str, Any]:
        config = self.worker.config
        named = {"replica": self.name, "node": self.node, "address": self.address} if self.name is not None else {}
        return {
            **named,
            "status": "ok",
            "profile": config.name,
            "device": str(config.device),
            "dtype": config.dtype,
            "sessions": len(self._registry),
            "max_sessions": self.settings.MAX_SESSIONS,
            "engines": len(self.worker.engines),
            "viewers": self._registry.viewer_count,
            "references": len(self.references),
            "fast_paths": fast_path_status(self.worker.model),
            "process": self._process(),
        }

    def _process(self) -> dict[str, Any]:
        """What a leak would grow: threads (all, and Python's), resident memory, asyncio tasks, and
        the session and engine objects still in memory (open or not)."""
        try:
            with open("/proc/self/statm") as statm:
                rss: int | None = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            threads = len(os.listdir("/proc/self/task"))
        except (OSError, ValueError, IndexError):
            rss, threads = None, threading.active_count()
        return {
            "threads": threads,
            "python_threads": threading.active_count(),
            "rss_bytes": rss,
            "tasks": len(asyncio.all_tasks()),
            "session_objects": len(self._registry.in_memory),
            "engine_objects": len(self.worker.in_memory),
        }

    async def metrics(self) -> bytes:
        """Prometheus text format."""
        return self._metrics.render()

    async def client_config(self) -> dict[str, Any]:
        """What the pages need: ICE servers, the stream's size and rates, the parameters and their ranges."""
        config, settings = self.worker.config, self.settings
        return {
            "ice_servers": [s.model_dump(exclude_none=True) for s in ice_servers(settings, "page")],
            "profile": config.name,
            "width": config.width,
            "height": config.height,
            "frames_per_call": config.frames_per_group,
            "first_frame_latency_frames": config.queue_length,
            "fps": settings.FPS,
            "min_fps": MIN_FPS,
            "max_fps": settings.MAX_FPS,
            "max_upload_bytes": settings.MAX_UPLOAD_BYTES,
            "params": {"fps": settings.FPS, **self.worker.driving_defaults.model_dump()},
            "params_schema": DrivingSettings.model_json_schema(),
        }
