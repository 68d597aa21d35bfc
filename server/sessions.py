"""Sessions: one webcam peer connection each, with its driving pipeline, engine and output tracks.

A session's media path: webcam track -> `DrivingTrack` (latest frame wins, sampled at the
session's fps, extracted in the driving thread pool) -> batches of P driving images -> the
model worker (`ModelWorker.step`, batched across sessions) -> `AvatarTrack` (paced at the
session's fps) -> `MediaRelay` -> the webcam page and any WHEP viewers.

Sessions are isolated: a failure in one session's tasks closes that session only. The
`SessionManager` owns every session (the app-owned registry), reaps the failed, closed and
silent ones, and closes them all at shutdown.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import itertools
import json
import logging
import secrets
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
from aiortc import RTCPeerConnection
from aiortc.contrib.media import MediaBlackhole, MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from rain_core.driving import DrivingPipeline, DrivingSettings, DrivingSettingsError
from rain_core.stream.engine import StreamEngine
from server.core.config import Settings
from server.metrics import Metrics
from server.references import Reference, ReferenceStore
from server.tracks import AvatarTrack, DrivingPreviewTrack, DrivingTrack, subscribe
from server.webrtc import answer_offer, create_answer, parse_offer, rtc_configuration
from server.worker import ModelWorker

logger = logging.getLogger(__name__)

# Batches handed to the model worker and not yet back, per session; past it new batches are dropped.
MAX_PENDING_STEPS = 2
CONTROL_TYPES = ("params", "pause", "resume", "reset")
_labels = itertools.count(1)


def _malloc_trim() -> ctypes._CFuncPtr | None:
    """glibc's `malloc_trim`, or None elsewhere (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


MALLOC_TRIM = _malloc_trim()


class CapacityError(RuntimeError):
    """No room for one more session (or viewer); try again later."""


class UnknownSession(KeyError):
    def __str__(self) -> str:
        return "unknown or expired session"


class BadViewToken(PermissionError):
    def __str__(self) -> str:
        return "invalid view token"


class ParamsError(ValueError):
    """Session parameters that cannot be applied; the message names the field."""


class _Prefixed(logging.LoggerAdapter):
    """Prefixes every message with the connection's label (never its secret id)."""

    def process(self, msg, kwargs):
        return f"[{self.extra['label']}] {msg}", kwargs


def check_fps(value: Any, max_fps: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= max_fps:
        raise ParamsError(f"fps: must be a number above 0 and at most {max_fps:g} (got {value!r})")
    return float(value)


def check_params(params: Any, *, max_fps: float, base: DrivingSettings) -> tuple[float | None, DrivingSettings]:
    """Validate session parameters (`fps` plus driving-settings changes) without applying them."""
    if not isinstance(params, dict):
        raise ParamsError(f"params must be an object, got {type(params).__name__}")
    changes = dict(params)
    fps = check_fps(changes.pop("fps"), max_fps) if "fps" in changes else None
    try:
        return fps, base.updated(changes)
    except DrivingSettingsError as exc:
        raise ParamsError(str(exc)) from None


class Session:
    """One webcam peer connection and everything that serves it."""

    def __init__(self, manager: SessionManager, *, fps: float, reference: Reference):
        self.manager = manager
        self.id = secrets.token_urlsafe(16)
        self.view_token = secrets.token_urlsafe(16)
        self.label = f"session {next(_labels)}"
        self.log = _Prefixed(logger, {"label": self.label})
        self.created = time.monotonic()
        self.fps = fps
        self.paused = False
        self.reference = reference
        self.closed = False
        self.close_reason: str | None = None
        self.answer: str | None = None
        self.pc = RTCPeerConnection(configuration=manager.rtc_config)
        self.relay = MediaRelay()
        self.viewers: dict[str, RTCPeerConnection] = {}
        self.pipeline: DrivingPipeline | None = None
        self.engine: StreamEngine | None = None
        self.avatar: AvatarTrack | None = None
        self.preview: DrivingPreviewTrack | None = None
        self.driving: DrivingTrack | None = None
        self._pipeline_lock = asyncio.Lock()
        self._pipeline_calls: set[asyncio.Future] = set()
        self._tasks: set[asyncio.Task] = set()
        self._sinks: list[MediaBlackhole] = []
        self._control: asyncio.Queue = asyncio.Queue()
        self._results: asyncio.Queue = asyncio.Queue()
        self._in_queue: list[list[float]] = []  # arrival times of the batches inside the engine's queue
        self._pending = 0
        self._generation = 0
        self.frames_dropped = 0
        self.frames_out = 0
        self.first_camera_at: float | None = None
        self.first_frame_seconds: float | None = None

    # Opening ---------------------------------------------------------------------------
    async def open(self, offer, driving_settings: DrivingSettings) -> str:
        """Build the pipeline, the engine and the tracks, then answer `offer`; returns the answer SDP."""
        manager, worker = self.manager, self.manager.worker
        config = worker.config
        pc = self.pc

        @pc.on("connectionstatechange")
        async def on_connectionstatechange() -> None:
            self.log.info("connection %s", pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                await manager.close(self, f"connection {pc.connectionState}")

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and self.driving is None:
                self.log.info("webcam track received")
                self._attach_camera(track)
            else:
                self.log.info("ignoring an extra %s track", track.kind)
                self._discard(track)

        @pc.on("datachannel")
        def on_datachannel(channel) -> None:
            if channel.label != "control":
                self.log.info("ignoring data channel %r", channel.label)
                return

            @channel.on("message")
            def on_message(message) -> None:
                self._control.put_nowait((channel, message))

        self.pipeline = await self._in_driving_pool(
            partial(DrivingPipeline, driving_settings, width=config.width, height=config.height)
        )
        self.engine = await worker.open_engine()
        await self._use_reference(self.reference)
        self.avatar = AvatarTrack(
            config.width, config.height, lambda: self.fps,
            max_backlog=config.frames_per_group + 1, warmup=self._warmup, metrics=manager.metrics,
        )
        self.preview = DrivingPreviewTrack(config.width, config.height, lambda: self.fps)

        await answer_offer(pc, offer)
        # First video section: webcam in, avatar out. An optional second one gets the driving preview.
        videos = [t for t in pc.getTransceivers() if t.kind == "video"]
        pc.addTrack(subscribe(self.relay, self.avatar))
        if len(videos) > 1:
            pc.addTrack(self.preview)
        answer = await create_answer(pc, manager.settings.PUBLIC_IP)
        self._spawn(self._serve_control(), "control")
        return answer

    async def _in_driving_pool(self, fn, *args):
        """Run a pipeline call in the driving pool, one at a time for this session, in order.

        Shielded: a caller cancelled mid-call (the session closing) does not cut the call short,
        and `close` waits for it before it closes the pipeline under it.
        """
        async with self._pipeline_lock:
            future = asyncio.get_running_loop().run_in_executor(self.manager.driving_pool, fn, *args)
            self._pipeline_calls.add(future)
            future.add_done_callback(self._pipeline_calls.discard)
            return await asyncio.shield(future)

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{self.label} {name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if task.cancelled() or self.closed:
            return
        exc = task.exception()
        if exc is not None:
            what = task.get_name().removeprefix(f"{self.label} ")
            self.log.error("%s failed: %r", what, exc, exc_info=exc)
            asyncio.ensure_future(self.manager.close(self, f"{what} failed: {exc}"))

    def _discard(self, track: MediaStreamTrack) -> None:
        sink = MediaBlackhole()
        sink.addTrack(track)
        self._sinks.append(sink)
        self._spawn(sink.start(), "sink")

    def _attach_camera(self, track: MediaStreamTrack) -> None:
        self.driving = DrivingTrack(
            track, self.pipeline, self._in_driving_pool, fps=lambda: self.fps, metrics=self.manager.metrics
        )
        self._spawn(self._drive(), "driving")
        self._spawn(self._deliver(), "delivery")

    # Media -----------------------------------------------------------------------------
    async def _drive(self) -> None:
        """Driving images -> batches of P -> the model worker (never more than MAX_PENDING_STEPS in flight)."""
        assert self.driving is not None and self.engine is not None and self.preview is not None
        per_call = self.engine.frames_per_call
        images: list[np.ndarray] = []
        arrivals: list[float] = []
        while True:
            try:
                driving = await self.driving.recv()
            except MediaStreamError:
                await self.manager.close(self, "webcam track ended")
                return
            if self.first_camera_at is None:
                self.first_camera_at = driving.arrived
            self.preview.show(driving.image)
            if self.paused:
                images, arrivals = [], []
                continue
            images.append(driving.image)
            arrivals.append(driving.arrived)
            if len(images) < per_call:
                continue
            if self._pending >= MAX_PENDING_STEPS:
                self.frames_dropped += per_call
                self.manager.metrics.dropped_frames.inc(per_call)
            else:
                self._pending += 1
                future = self.manager.worker.step(self.engine, np.stack(images))
                self._results.put_nowait((future, arrivals, self._generation))
            images, arrivals = [], []

    async def _deliver(self) -> None:
        """The worker's results, in order -> the avatar track."""
        assert self.avatar is not None
        metrics = self.manager.metrics
        while True:
            future, arrivals, generation = await self._results.get()
            try:
                frames = await future
            finally:
                self._pending -= 1
            if generation != self._generation:
                continue  # stepped before a reset
            self._in_queue.append(arrivals)
            if frames is None:
                continue
            out_arrivals = self._in_queue.pop(0)  # the engine returns its oldest group
            if self.first_frame_seconds is None and self.first_camera_at is not None:
                self.first_frame_seconds = time.monotonic() - self.first_camera_at
                metrics.first_frame_seconds.observe(self.first_frame_seconds)
                self.log.info("first avatar frame %.2f s after the first webcam frame", self.first_frame_seconds)
            self.frames_out += len(frames)
            metrics.output_frames.inc(len(frames))
            self.avatar.push(frames, out_arrivals)

    def _warmup(self) -> float:
        engine = self.engine
        if engine is None:
            return 0.0
        return min(1.0, engine.frames_in / engine.first_frame_latency_frames)

    # Control ---------------------------------------------------------------------------
    async def _serve_control(self) -> None:
        while True:
            channel, message = await self._control.get()
            reply = await self.handle_control(message)
            if channel.readyState == "open":
                channel.send(json.dumps(reply))

    async def handle_control(self, message: str | bytes) -> dict:
        """One control message (JSON text) -> its reply: `{"id", "type", "ok": true, "params"}` or an error."""
        if isinstance(message, bytes):
            return {"id": None, "type": None, "ok": False, "error": "control messages must be JSON text, not binary"}
        try:
            request = json.loads(message)
        except json.JSONDecodeError as exc:
            return {"id": None, "type": None, "ok": False, "error": f"control message is not valid JSON: {exc}"}
        if not isinstance(request, dict):
            return {"id": None, "type": None, "ok": False, "error": "control message must be a JSON object"}
        request_id, kind = request.get("id"), request.get("type")
        try:
            if kind == "params":
                await self.apply_params(request.get("params"))
            elif kind == "pause":
                self.paused = True
            elif kind == "resume":
                self.paused = False
            elif kind == "reset":
                await self.reset()
            else:
                raise ParamsError(f"unknown message type {kind!r}; expected one of: {', '.join(CONTROL_TYPES)}")
        except ParamsError as exc:
            return {"id": request_id, "type": kind, "ok": False, "error": str(exc)}
        self.log.info("control: %s", kind)
        return {"id": request_id, "type": kind, "ok": True, "params": self.params(), "paused": self.paused}

    def params(self) -> dict:
        assert self.pipeline is not None
        return {"fps": self.fps, **self.pipeline.settings.model_dump()}

    async def apply_params(self, params: Any) -> None:
        """Validate everything first; apply only if all of it is valid."""
        if not isinstance(params, dict):
            raise ParamsError(f"params must be an object, got {type(params).__name__}")
        changes = dict(params)
        fps = check_fps(changes.pop("fps"), self.manager.settings.MAX_FPS) if "fps" in changes else None
        if changes:
            assert self.pipeline is not None
            try:
                await self._in_driving_pool(self.pipeline.update, changes)
            except DrivingSettingsError as exc:
                raise ParamsError(str(exc)) from None
        if fps is not None:
            self.fps = fps

    async def reset(self) -> None:
        """Empty the engine's queue: the avatar warms up again from the next frames."""
        assert self.engine is not None and self.avatar is not None
        self._generation += 1
        self._in_queue.clear()
        self.avatar.restart()
        self.first_frame_seconds = None
        self.first_camera_at = None
        await self.manager.worker.run(self.engine.reset)

    async def set_reference(self, reference: Reference) -> None:
        await self._use_reference(reference)
        self.reference = reference
        self.log.info("reference changed")

    async def _use_reference(self, reference: Reference) -> None:
        worker = self.manager.worker
        encoding = await worker.run(reference.encoding, worker.model)
        await worker.run(self.engine.set_reference_encoding, encoding)

    # Stats -----------------------------------------------------------------------------
    def stats(self) -> dict:
        now = time.monotonic()
        avatar, driving = self.avatar, self.driving
        latencies = sorted(avatar.latencies) if avatar is not None else []
        return {
            "state": self.pc.connectionState,
            "uptime_s": round(now - self.created, 3),
            "paused": self.paused,
            "params": self.params() if self.pipeline is not None else None,
            "reference_id": self.reference.id,
            "frames": {
                "camera": driving.frames_received if driving else 0,
                "driving": driving.frames_extracted if driving else 0,
                "dropped": self.frames_dropped,
                "engine_out": self.frames_out,
                "sent": avatar.frames_sent if avatar else 0,
                "repeated": avatar.frames_repeated if avatar else 0,
                "skipped": avatar.frames_skipped if avatar else 0,
            },
            "fps": {
                "camera": _rate(driving.received_at, now) if driving else 0.0,
                "output": _rate(avatar.sent_at, now) if avatar else 0.0,
                "target": self.fps,
            },
            "latency_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
            "first_frame_s": None if self.first_frame_seconds is None else round(self.first_frame_seconds, 3),
            "queue": {
                "warmup": round(self._warmup(), 3),
                "engine_pending": self._pending,
                "output_backlog": avatar.backlog if avatar else 0,
            },
            "viewers": len(self.viewers),
        }

    def silent_for(self, now: float) -> float:
        last = self.driving.last_frame_at if self.driving is not None else None
        return now - (last if last is not None else self.created)

    # Closing ---------------------------------------------------------------------------
    async def close(self, reason: str) -> None:
        """Free everything: tasks, tracks, viewers, the peer connection, the engine, the pipeline."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.log.info("closing: %s", reason)
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.driving is not None:
            await self.driving.stop()
        for track in (self.avatar, self.preview):
            if track is not None:
                track.stop()
        for viewer_id in list(self.viewers):
            await self.manager.close_viewer(self, viewer_id)
        await self.pc.close()
        for sink in self._sinks:
            await sink.stop()
        self._sinks.clear()
        if self.engine is not None:
            await self.manager.worker.close_engine(self.engine)
            self.engine = None
        await asyncio.gather(*self._pipeline_calls, return_exceptions=True)
        if self.pipeline is not None:
            await self._in_driving_pool(self.pipeline.close)
        # Break the reference cycles this session made (event handlers and fps callbacks that
        # point back at it), so that most of it is freed at once rather than at the next full
        # garbage collection.
        self.pc.remove_all_listeners()
        self.pipeline = self.driving = self.avatar = self.preview = None
        self.relay = None


def _rate(times, now: float, window: float = 2.0) -> float:
    recent = [t for t in times if t > now - window]
    if len(recent) < 2:
        return 0.0
    return round((len(recent) - 1) / max(recent[-1] - recent[0], 1e-6), 2)


class SessionManager:
    """The app-owned registry of sessions and their viewers."""

    def __init__(
        self,
        settings: Settings,
        worker: ModelWorker,
        references: ReferenceStore,
        metrics: Metrics,
        default_reference: Reference,
    ):
        self.settings = settings
        self.worker = worker
        self.references = references
        self.metrics = metrics
        self.default_reference = default_reference
        self.rtc_config = rtc_configuration(settings.ICE_SERVERS)
        self.driving_pool = ThreadPoolExecutor(settings.DRIVING_THREADS, thread_name_prefix="rain-driving")
        self.sessions: dict[str, Session] = {}
        # Every session object still in memory, live or not: none may outlive its clean-up.
        self.in_memory: weakref.WeakSet[Session] = weakref.WeakSet()
        self._opening = 0
        self._reaper: asyncio.Task | None = None
        self._collector: asyncio.Task | None = None

    def start(self) -> None:
        self._reaper = asyncio.ensure_future(self._reap_silent())

    async def shutdown(self) -> None:
        for task in (self._reaper, self._collector):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*(self.close(s, "server shutting down") for s in list(self.sessions.values())))
        self.driving_pool.shutdown(wait=True)

    @property
    def viewer_count(self) -> int:
        return sum(len(s.viewers) for s in self.sessions.values())

    def get(self, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None or session.closed:
            raise UnknownSession(session_id)
        return session

    async def open(self, sdp: str, type_: str, *, reference_id: str | None, params: Any) -> Session:
        """Check the request, then open a session and answer its offer (`session.answer`)."""
        offer = parse_offer(sdp, type_, need="send")
        reference = self.references.get(reference_id) if reference_id is not None else self.default_reference
        fps, driving_settings = check_params(params if params is not None else {}, max_fps=self.settings.MAX_FPS,
                                             base=self.worker.driving_defaults)
        if len(self.sessions) + self._opening >= self.settings.MAX_SESSIONS:
            self.metrics.offers_rejected.labels("capacity").inc()
            raise CapacityError(f"the server is full ({self.settings.MAX_SESSIONS} sessions); try again later")
        self._opening += 1
        session = Session(self, fps=fps or self.settings.FPS, reference=reference)
        self.in_memory.add(session)
        try:
            session.answer = await session.open(offer, driving_settings)
        except BaseException:
            await session.close("failed to open")
            raise
        finally:
            self._opening -= 1
        self.sessions[session.id] = session
        self.metrics.sessions.set(len(self.sessions))
        self.metrics.sessions_started.inc()
        session.log.info("opened (%d live)", len(self.sessions))
        return session

    async def close(self, session: Session, reason: str) -> None:
        if session.closed:
            return
        await session.close(reason)
        if self.sessions.pop(session.id, None) is not None:
            self.metrics.sessions_ended.labels(reason.split(":")[0]).inc()
        self.metrics.sessions.set(len(self.sessions))
        self.metrics.viewers.set(self.viewer_count)
        if self._collector is None or self._collector.done():
            self._collector = asyncio.ensure_future(self._collect_garbage())

    async def _collect_garbage(self, delay: float = 1.0) -> None:
        """Give a closed session's memory back, shortly after sessions end (once for several).

        1. A full garbage collection: aiortc's objects form reference cycles, and a closed
           connection's codecs, jitter buffers and DTLS state would otherwise wait for Python's
           next full collection, however far off. The app froze its start-up objects
           (`gc.freeze`), so this only scans what came after.
        2. `malloc_trim`: the codecs, mediapipe and torch allocate on several pool threads, and
           glibc keeps what they free in per-thread arenas; measured over 10 rounds of 3
           sessions, RSS climbed ~25 MB a round without it and stayed flat with it. ctypes
           releases the GIL, so it runs on a thread beside the event loop.
        """
        await asyncio.sleep(delay)
        started = time.perf_counter()
        found = gc.collect()
        if MALLOC_TRIM is not None:
            await asyncio.to_thread(MALLOC_TRIM, 0)
        elapsed_ms = 1000 * (time.perf_counter() - started)
        logger.debug("memory given back (%d objects collected) in %.1f ms", found, elapsed_ms)

    async def _reap_silent(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.settings.SILENCE_TIMEOUT / 4))
            await self._reap_once()

    async def _reap_once(self) -> None:
        # A method of its own: a loop variable left in the sleeping loop above would keep the
        # last session it saw in memory.
        timeout, now = self.settings.SILENCE_TIMEOUT, time.monotonic()
        for session in [s for s in self.sessions.values() if s.silent_for(now) > timeout]:
            await self.close(session, f"silent: no webcam frame for {timeout:g} s")

    # Viewers (WHEP) ----------------------------------------------------------------------
    def check_view_token(self, session: Session, token: str | None) -> None:
        if token is None or not secrets.compare_digest(token.encode(), session.view_token.encode()):
            raise BadViewToken()

    async def open_viewer(self, session: Session, sdp: str) -> tuple[str, str]:
        """Answer a viewer's receive-only offer with the session's avatar; returns (viewer id, answer)."""
        offer = parse_offer(sdp, "offer", need="receive")
        if len(session.viewers) >= self.settings.MAX_VIEWERS:
            raise CapacityError(f"this session has its maximum of {self.settings.MAX_VIEWERS} viewers")
        viewer_id = secrets.token_urlsafe(16)
        pc = RTCPeerConnection(configuration=self.rtc_config)
        session.viewers[viewer_id] = pc
        log = _Prefixed(logger, {"label": f"{session.label} viewer {len(session.viewers)}"})

        @pc.on("connectionstatechange")
        async def on_connectionstatechange() -> None:
            log.info("connection %s", pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                await self.close_viewer(session, viewer_id)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            session._discard(track)

        try:
            await answer_offer(pc, offer)
            pc.addTrack(subscribe(session.relay, session.avatar))
            answer = await create_answer(pc, self.settings.PUBLIC_IP)
        except BaseException:
            await self.close_viewer(session, viewer_id)
            raise
        self.metrics.viewers.set(self.viewer_count)
        log.info("viewer opened")
        return viewer_id, answer

    async def close_viewer(self, session: Session, viewer_id: str) -> bool:
        pc = session.viewers.pop(viewer_id, None)
        if pc is None:
            return False
        await pc.close()
        pc.remove_all_listeners()
        self.metrics.viewers.set(self.viewer_count)
        return True
