"""A session: one webcam peer connection and the objects that serve it, wired together.

The media path (see `server.media`): webcam -> `DrivingTrack` -> `EnginePump` (the model
worker) -> `AvatarTrack` -> `TrackRelay` -> the page and the `Viewers`; beside it, when the page
sends its microphone: `VoiceDelay` -> `DelayedVoiceTrack` (as late as the avatar) -> `TrackRelay`
-> the same consumers. The control channel changes the session's `FrameRate`, the extractor's
driving settings and the pump's pause (which pauses the voice too).

A failure in one of the session's tasks closes this session only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from rain_core.driving import DrivingSettings
from rain_core.stream.engine import StreamEngine
from server.media.avatar import LATENCY_PARTS, AvatarTrack, DrivingPreviewTrack
from server.media.camera import DrivingTrack
from server.media.discard import DiscardedTracks
from server.media.driving import DrivingExtractor
from server.media.matte import MatteSource
from server.media.pacing import FrameRate
from server.media.pump import EnginePump
from server.media.recorder import Recorder, RecordingFailed
from server.media.relay import SubscriberTrack, TrackRelay
from server.media.voice import DelayedVoiceTrack, VoiceDelay
from server.references import Reference
from server.rtc.receiver import RepairingReceiver
from server.rtc.sdp import answer_offer, create_answer, offer_directions
from server.sessions.control import (
    ControlError,
    ControlRequest,
    ParamsError,
    check_params,
    error_reply,
    ok_reply,
    parse_request,
)
from server.sessions.errors import BadViewToken, NoViewToken
from server.sessions.logs import Prefixed
from server.sessions.recordings import Recording, RecordingConflict, RecordingsFull
from server.sessions.viewers import Viewers
from server.tokens import new_token, same_token

if TYPE_CHECKING:
    from server.sessions.registry import SessionRegistry

logger = logging.getLogger(__name__)
_labels = itertools.count(1)
# The longest a closing session waits for its recording's file to be finished.
RECORDING_STOP_SECONDS = 30.0


class Session:
    """One webcam peer connection and everything that serves it."""

    def __init__(self, registry: SessionRegistry, *, fps: float, reference: Reference, whip: bool = False):
        self.registry = registry
        self.whip = whip  # published over WHIP (no control channel): listed for the WHIP token's holder
        # A cluster's replica names its sessions `{replica}.{token}`: the id routes itself (`Runtime`).
        self.id = registry.id_prefix + new_token()
        # Viewers name the session by a second id of its own, so that a view link (OBS, WHEP) never
        # carries the session id, which controls the session; it routes itself in a cluster too.
        self.view_id = registry.id_prefix + new_token()
        self.view_token = new_token()
        self.label = f"session {next(_labels)}"
        self.log = Prefixed(logger, {"label": self.label})
        self.created = time.monotonic()
        self.started_at = time.time()
        self.rate = FrameRate(fps)
        self.reference = reference
        self.closed = False
        self.close_reason: str | None = None
        self.answer: str | None = None
        self.pc = RTCPeerConnection(configuration=registry.rtc_config())
        self.extractor = DrivingExtractor(registry.driving_pool)
        self.engine: StreamEngine | None = None
        self.avatar: AvatarTrack | None = None
        self.preview: DrivingPreviewTrack | None = None
        self.relay: TrackRelay | None = None
        self.viewers: Viewers | None = None
        self.pump: EnginePump | None = None
        self.driving: DrivingTrack | None = None
        self.voice: VoiceDelay | None = None  # the microphone, when the page sends one
        self.voice_track: DelayedVoiceTrack | None = None
        self.voice_relay: TrackRelay | None = None
        self.recording: Recording | None = None  # the latest recording, under way or not
        self.page_track: SubscriberTrack | None = None  # the avatar as the page's connection sends it
        self.camera_receiver: RepairingReceiver | None = None  # the webcam's, when loss repair is on
        self.trickled_candidates = 0  # received after the offer, by PATCH (WHIP trickle ICE)
        self._discarded = DiscardedTracks()
        self._tasks: set[asyncio.Task] = set()
        self._control: asyncio.Queue = asyncio.Queue()
        self._channel: Any = None  # the control data channel, once the page opens it

    # Opening ---------------------------------------------------------------------------
    async def open(self, offer: RTCSessionDescription, driving_settings: DrivingSettings) -> str:
        """Build the pipeline, the engine and the tracks, then answer `offer`; returns the answer SDP."""
        registry, worker, settings = self.registry, self.registry.worker, self.registry.settings
        config = worker.config
        pc = self.pc

        @pc.on("connectionstatechange")
        async def on_connectionstatechange() -> None:
            self.log.info("connection %s", pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                await registry.close(self, f"connection {pc.connectionState}")

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and self.driving is None:
                self.log.info("webcam track received")
                self._attach_camera(track)
                receiver = next((t.receiver for t in pc.getTransceivers() if t.receiver.track is track), None)
                if isinstance(receiver, RepairingReceiver):
                    self.camera_receiver = receiver
            elif track.kind == "audio" and self.voice is None:
                self.log.info("microphone track received")
                self._attach_microphone(track)
            else:
                self.log.info("ignoring an extra %s track", track.kind)
                self._discarded.add(track)

        @pc.on("datachannel")
        def on_datachannel(channel) -> None:
            if channel.label != "control":
                self.log.info("ignoring data channel %r", channel.label)
                return

            self._channel = channel

            @channel.on("message")
            def on_message(message) -> None:
                self._control.put_nowait((channel, message))

        await self.extractor.open(driving_settings, width=config.width, height=config.height)
        self.engine = await worker.open_engine()
        await self._use_reference(self.reference)
        self.avatar = AvatarTrack(
            config.width, config.height, self.rate, max_backlog=config.frames_per_group + 1, metrics=registry.metrics
        )
        self.preview = DrivingPreviewTrack(config.width, config.height, self.rate)
        self.relay = TrackRelay(self.avatar)
        # The key colour is read per frame: a new character brings its own background.
        matte = MatteSource(self.relay, lambda: self.reference.key_colour(), registry.matte_pool)
        self.viewers = Viewers(
            self.label, self.relay, matte, limit=settings.MAX_VIEWERS, rtc_config=registry.rtc_config,
            public_ip=settings.PUBLIC_IP, metrics=registry.metrics,
        )
        self.pump = EnginePump(self.engine, worker, self.avatar, self.preview, metrics=registry.metrics, log=self.log)

        await answer_offer(pc, offer)
        # First video section: webcam in, avatar out. An optional second one gets the driving preview.
        # A publisher that only sends (WHIP: sendonly) gets nothing back: its viewers watch instead.
        receives = {kind: [d in ("sendrecv", "recvonly") for d in directions]
                    for kind, directions in offer_directions(offer.sdp).items()}
        videos = receives.get("video", [])
        if videos and videos[0]:
            self.page_track = self.relay.subscribe()
            pc.addTrack(self.page_track)
        if len(videos) > 1 and videos[1]:
            pc.addTrack(self.preview)
        if self.voice_relay is not None and any(receives.get("audio", [])):
            pc.addTrack(self.voice_relay.subscribe())  # into the microphone's section: sendrecv
        answer = await create_answer(pc, settings.PUBLIC_IP)
        self._spawn(self._serve_control(), "control")
        return answer

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
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
            asyncio.ensure_future(self.registry.close(self, f"{what} failed: {exc}"))

    def _attach_camera(self, track: MediaStreamTrack) -> None:
        assert self.pump is not None
        self.driving = DrivingTrack(track, self.extractor, self.rate, self.registry.metrics)
        self._spawn(self._drive(self.pump, self.driving), "driving")
        self._spawn(self.pump.deliver(), "delivery")

    def _attach_microphone(self, track: MediaStreamTrack) -> None:
        assert self.viewers is not None
        self.voice = VoiceDelay(track, max_delay=self.registry.settings.VOICE_MAX_DELAY, paused=self._paused)
        self.voice_track = DelayedVoiceTrack(self.voice, target=self._latency, paused=self._paused)
        self.voice_relay = self.viewers.voice = TrackRelay(self.voice_track)

    def _paused(self) -> bool:
        return self.pump is not None and self.pump.paused

    def _latency(self) -> float | None:
        """How long after its webcam frame reached the server an avatar frame leaves it (what the
        voice is delayed by). The avatar's latency counts from when the receiver handed the webcam
        frame over. aiortc's own video receiver (loss repair off) hands a frame over only once the
        next frame's first packet has come (its jitter buffer knows a frame is complete only then):
        one webcam frame interval after the frame itself came. The repairing receiver hands it
        over at its last packet."""
        latency = self.avatar.latency() if self.avatar is not None else None
        interval = None
        if self.driving is not None and self.camera_receiver is None:
            interval = self.driving.frame_interval()
        return None if latency is None else latency + (interval or 0.0)

    async def _drive(self, pump: EnginePump, driving: DrivingTrack) -> None:
        await pump.drive(driving)
        await self.registry.close(self, "webcam track ended")

    # Control ---------------------------------------------------------------------------
    async def _serve_control(self) -> None:
        while True:
            channel, message = await self._control.get()
            try:
                reply = await self.handle_control(message)
            except Exception:  # noqa: BLE001 - a message must never end its session
                self.log.exception("control message failed")
                reply = error_reply("the server failed to handle this message", request_id=None, kind=None)
            if channel.readyState == "open":
                channel.send(json.dumps(reply))

    def notify(self, message: dict) -> bool:
        """Send a notice of the server's own on the control channel -> whether it went out (a
        WHIP publisher has no channel)."""
        channel = self._channel
        if channel is None or channel.readyState != "open":
            return False
        channel.send(json.dumps(message))
        return True

    async def handle_control(self, message: str | bytes) -> dict:
        """One control message -> its reply (see `server.sessions.control`)."""
        try:
            request = parse_request(message)
        except ControlError as exc:
            return error_reply(str(exc), request_id=exc.request_id, kind=exc.kind)
        try:
            await self._apply(request)
        except (ParamsError, RecordingConflict, RecordingsFull) as exc:
            return error_reply(str(exc), request_id=request.id, kind=request.type)
        self.log.info("control: %s", request.type)
        assert self.pump is not None
        extra = {"recording": self.recording.describe()} if request.type.endswith("_recording") else {}
        return ok_reply(request, params=self.params(), paused=self.pump.paused, **extra)

    async def _apply(self, request: ControlRequest) -> None:
        assert self.pump is not None
        if request.type == "params":
            await self.apply_params(request.params)
        elif request.type == "pause":
            self.pump.paused = True
        elif request.type == "resume":
            self.pump.paused = False
        elif request.type == "reset":
            await self.pump.reset()
        elif request.type == "start_recording":
            await self.start_recording()
        elif request.type == "stop_recording":
            await self.stop_recording()

    def params(self) -> dict:
        return {"fps": self.rate.fps, **self.extractor.settings.model_dump()}

    async def apply_params(self, params: Any) -> None:
        """All or nothing: everything is checked before anything changes."""
        change = check_params(params, max_fps=self.registry.settings.MAX_FPS, current=self.extractor.settings)
        if change.driving != self.extractor.settings:
            await self.extractor.update(change.driving)
        if change.fps is not None:
            self.rate.set(change.fps)

    # Recording -------------------------------------------------------------------------
    async def start_recording(self) -> Recording:
        """Record the avatar (and the voice, when the session has one) to a new MP4 file."""
        if self.recording is not None and self.recording.state == "recording":
            raise RecordingConflict("this session is already recording; stop it first")
        assert self.relay is not None
        registry, settings = self.registry, self.registry.settings
        store, config = registry.recordings, registry.worker.config
        recording = store.new(self.id, fps=self.rate.fps)
        recording.recorder = Recorder(
            self.relay.subscribe(), recording.path, fps=recording.fps, width=config.width, height=config.height,
            audio=self.recording_audio(), max_seconds=settings.MAX_RECORDING_SECONDS,
            max_bytes=store.room_for(recording), prefer_nvenc=str(config.device).startswith("cuda"),
        )
        store.add(recording)
        recording.task = asyncio.ensure_future(self._record(recording))
        self.recording = recording
        self.log.info("recording started")
        return recording

    def recording_audio(self) -> MediaStreamTrack | None:
        """The audio a new recording takes beside the avatar: a track of `av.AudioFrame`s of its
        own (a relay subscription, never the track a peer connection sends), or None: no voice.

        The session's delayed voice is already in step with the avatar: the recorder lines the two
        up as they reach it.
        """
        return self.voice_relay.subscribe() if self.voice_relay is not None else None

    async def stop_recording(self, reason: str = "stopped") -> Recording:
        """Finish the recording under way; returns once its file is complete and in place."""
        recording = self.recording
        if recording is None or recording.state != "recording":
            raise RecordingConflict("this session is not recording")
        assert recording.recorder is not None and recording.task is not None
        recording.recorder.stop(reason)
        await asyncio.shield(recording.task)
        return recording

    async def _record(self, recording: Recording) -> None:
        assert recording.recorder is not None
        try:
            await recording.recorder.run()
        except RecordingFailed as exc:
            recording.state = "failed"
            self.log.warning("recording failed: %s", exc)
        except Exception:  # noqa: BLE001 - a recording's failure must not end its session
            recording.state = "failed"
            self.log.exception("recording failed")
        else:
            recording.state = "finished"
            recorder = recording.recorder
            progress = recorder.progress
            self.log.info(
                "recording finished (%s): %d frames over %.2f s of stream at %g fps, %d repeated, %d dropped, %d bytes",
                recorder.stop_reason, progress.frames, progress.span_seconds, recording.fps,
                progress.frames_repeated, progress.frames_dropped, progress.bytes,
            )

    # References and viewers --------------------------------------------------------------
    async def set_reference(self, reference: Reference) -> None:
        await self._use_reference(reference)
        self.reference = reference
        self.log.info("reference changed")

    async def _use_reference(self, reference: Reference) -> None:
        worker = self.registry.worker
        encoding = await worker.run(reference.encoding, worker.model)
        await worker.run(self.engine.set_reference_encoding, encoding)

    def check_view_token(self, token: str | None) -> None:
        if token is None:
            raise NoViewToken()
        if not same_token(token, self.view_token):
            raise BadViewToken()

    # Stats -----------------------------------------------------------------------------
    def stats(self) -> dict:
        now = time.monotonic()
        avatar, driving, pump = self.avatar, self.driving, self.pump
        assert avatar is not None and pump is not None and self.viewers is not None
        latencies = sorted(avatar.latencies)
        return {
            "state": self.pc.connectionState,
            "trickled_candidates": self.trickled_candidates,
            "uptime_s": round(now - self.created, 3),
            "paused": pump.paused,
            "params": self.params(),
            "reference_id": self.reference.id,
            "frames": {
                "camera": driving.frames_received if driving else 0,
                "driving": driving.frames_extracted if driving else 0,
                "dropped": pump.frames_dropped,
                "engine_out": pump.frames_out,
                "sent": avatar.frames_sent,
                "repeated": avatar.frames_repeated,
                "skipped": avatar.frames_skipped,
            },
            "fps": {
                "camera": _rate(driving.received_at, now) if driving else 0.0,
                "output": _rate(avatar.sent_at, now),
                "target": self.rate.fps,
            },
            "latency_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
            "latency_parts_ms": self._latency_parts(),
            "camera": self._camera_stats(now),
            "first_frame_s": None if pump.first_frame_seconds is None else round(pump.first_frame_seconds, 3),
            "queue": {
                "warmup": round(pump.warmup, 3),
                "engine_pending": pump.pending,
                "output_backlog": avatar.backlog,
            },
            "viewers": len(self.viewers),
            "voice": self._voice_stats(),
            "frame_origins": self._frame_origins(),
            "recording": self.recording.describe() if self.recording is not None else None,
            "matte_viewers": self.viewers.matte.users,  # while any, the matte is computed
        }

    def summary(self) -> dict:
        """What a list of sessions shows of one (`GET /api/whip/sessions`): its ids, when it
        started, and a short status taken from its stats."""
        stats = self.stats()
        recording = stats["recording"]
        return {
            "session_id": self.id,
            "view_id": self.view_id,
            "view_token": self.view_token,
            "started": datetime.fromtimestamp(self.started_at, UTC).isoformat(timespec="seconds"),
            **{key: stats[key] for key in ("state", "uptime_s", "paused", "fps", "viewers", "reference_id")},
            "frames": {key: stats["frames"][key] for key in ("camera", "engine_out")},
            "recording": recording is not None and recording["state"] == "recording",
        }

    def _latency_parts(self) -> dict | None:
        """Where the time goes, in ms, averaged over the last distinct avatar frames (means, so
        that they add up): from the webcam frame handed over by the receiver to the avatar frame
        handed to the page's encoder (`server`, the sum of `camera` sampling and landmarks, the
        engine's `queue` of G*P frames, the model `call` with its wait at the worker, `decode`,
        `pacing` to the frame's slot), then the `encoder` (encode and send, after `server`)."""
        avatar, config = self.avatar, self.registry.worker.config
        if avatar is None or not avatar.parts:
            return None
        recent = list(avatar.parts)
        parts = {name: 1000 * sum(p[name] for p in recent) / len(recent) for name in LATENCY_PARTS}
        handling = list(self.page_track.handling) if self.page_track is not None else []
        out = {name: round(value, 1) for name, value in parts.items()}
        out["server"] = round(sum(parts.values()), 1)
        out["encoder"] = round(1000 * sum(handling) / len(handling), 1) if handling else None
        out["frames"] = len(recent)
        out["queue_frames"] = config.frames_per_group * config.noise_groups
        return out

    def _camera_stats(self, now: float) -> dict:
        """The webcam as received: the longest wait between driving frames lately, and what the
        loss repair did (null when it is off)."""
        gap = self.driving.longest_gap(now) if self.driving is not None else None
        repair = self.camera_receiver.repair if self.camera_receiver is not None else None
        return {
            "gap_max_ms": None if gap is None else round(1000 * gap, 1),
            "repair": None if repair is None else dataclasses.asdict(repair.counts),
        }

    def _voice_stats(self) -> dict | None:
        voice, track = self.voice, self.voice_track
        if voice is None or track is None:
            return None
        return {
            "delay_ms": None if track.delay is None else round(1000 * track.delay, 1),
            "target_ms": None if track.target_delay is None else round(1000 * track.target_delay, 1),
            "max_delay_ms": round(1000 * voice.max_delay),
            "frames_received": voice.frames_received,
            "adjustments": track.adjustments,
            "jumps": track.jumps,
            "gaps_filled": voice.gaps_filled,
        }

    def _frame_origins(self) -> list[list[int]]:
        """[avatar pts, webcam pts] of the last distinct avatar frames sent: which webcam frame
        each shows (pts as the receivers count them, 90 kHz from each track's first frame)."""
        if self.avatar is None or self.driving is None:
            return []
        webcam = dict(self.driving.sampled)
        return [[pts, webcam[arrived]] for pts, arrived in self.avatar.origins if webcam.get(arrived) is not None]

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
        if self.recording is not None and self.recording.state == "recording":
            # Bounded: an encoder that hangs must not keep the session from closing (the
            # recording then ends as failed, or finishes in the background).
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop_recording("the session ended"), RECORDING_STOP_SECONDS)
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.driving is not None:
            await self.driving.stop()
        if self.voice is not None:
            await self.voice.stop()
        for track in (self.avatar, self.preview, self.voice_track):
            if track is not None:
                track.stop()
        if self.viewers is not None:
            await self.viewers.close()
        await self.pc.close()
        await self._discarded.stop()
        if self.engine is not None:
            await self.registry.worker.close_engine(self.engine)
            self.engine = None
        await self.extractor.close()
        # Break the reference cycles this session made (the event handlers point back at it), so
        # that most of it is freed at once rather than at the next full garbage collection.
        self.pc.remove_all_listeners()
        self.driving = self.avatar = self.preview = self.relay = self.viewers = self.pump = None
        self.page_track = self.camera_receiver = None
        self.voice = self.voice_track = self.voice_relay = None


def _rate(times, now: float, window: float = 2.0) -> float:
    recent = [t for t in times if t > now - window]
    if len(recent) < 2:
        return 0.0
    return round((len(recent) - 1) / max(recent[-1] - recent[0], 1e-6), 2)
