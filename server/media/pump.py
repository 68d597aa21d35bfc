"""The pump between a session's driving signal and its avatar: the model worker in the middle."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
from aiortc.mediastreams import MediaStreamError

from rain_core.stream.engine import StreamEngine
from server.media.avatar import AvatarTrack, DrivingPreviewTrack, FrameStages
from server.media.camera import DrivingTrack
from server.metrics import Metrics
from server.model_worker import ModelWorker, StepTiming

# Batches handed to the model worker and not yet back, per session; past it new batches are dropped.
MAX_PENDING_STEPS = 2


class EnginePump:
    """Driving images -> batches of P -> the model worker -> the avatar track, for one session.

    Two tasks: `drive` hands batches to the worker (never more than MAX_PENDING_STEPS in
    flight: a slow model drops input, it never queues it), `deliver` takes the results in order
    and pushes their frames to the avatar.
    """

    def __init__(
        self,
        engine: StreamEngine,
        worker: ModelWorker,
        avatar: AvatarTrack,
        preview: DrivingPreviewTrack,
        *,
        metrics: Metrics,
        log: logging.LoggerAdapter,
    ):
        self.engine = engine
        self._worker = worker
        self._avatar = avatar
        self._preview = preview
        self._metrics = metrics
        self._log = log
        self.paused = False
        self.pending = 0  # batches at the worker
        self.frames_dropped = 0
        self.frames_out = 0
        self.first_camera_at: float | None = None
        self.first_frame_seconds: float | None = None
        self._results: asyncio.Queue[tuple[asyncio.Future, list[tuple[float, float]], StepTiming, int]] = (
            asyncio.Queue()
        )
        # (webcam arrival, driving image ready) of the frames of each batch inside the engine's queue.
        self._in_queue: list[list[tuple[float, float]]] = []
        self._generation = 0  # bumped by a reset: results stepped before it are dropped

    @property
    def warmup(self) -> float:
        """How far the engine's queue is towards the first frame (0 to 1)."""
        return min(1.0, self.engine.frames_in / self.engine.first_frame_latency_frames)

    async def drive(self, driving: DrivingTrack) -> None:
        """Driving images -> batches of P -> the model worker; returns when the webcam track ends."""
        per_call = self.engine.frames_per_call
        images: list[np.ndarray] = []
        arrivals: list[tuple[float, float]] = []
        while True:
            try:
                image = await driving.recv()
            except MediaStreamError:
                return
            if self.first_camera_at is None:
                self.first_camera_at = image.arrived
            self._preview.show(image.image)
            if self.paused:
                images, arrivals = [], []
                continue
            images.append(image.image)
            arrivals.append((image.arrived, image.driven))
            if len(images) < per_call:
                continue
            if self.pending >= MAX_PENDING_STEPS:
                self.frames_dropped += per_call
                self._metrics.dropped_frames.inc(per_call)
            else:
                self.pending += 1
                timing = StepTiming(submitted=time.monotonic())
                future = self._worker.step(self.engine, np.stack(images), timing)
                self._results.put_nowait((future, arrivals, timing, self._generation))
            images, arrivals = [], []

    async def deliver(self) -> None:
        """The worker's results, in order -> the avatar track."""
        while True:
            future, arrivals, timing, generation = await self._results.get()
            try:
                frames = await future
            finally:
                self.pending -= 1
            if generation != self._generation:
                continue  # stepped before a reset
            self._in_queue.append(arrivals)
            if frames is None:
                self._avatar.warming_up(self.warmup)
                continue
            out_arrivals = self._in_queue.pop(0)  # the engine returns its oldest group
            if self.first_frame_seconds is None and self.first_camera_at is not None:
                self.first_frame_seconds = time.monotonic() - self.first_camera_at
                self._metrics.first_frame_seconds.observe(self.first_frame_seconds)
                self._log.info("first avatar frame %.2f s after the first webcam frame", self.first_frame_seconds)
            self.frames_out += len(frames)
            self._metrics.output_frames.inc(len(frames))
            pushed = time.monotonic()
            ready = timing.ready or pushed
            # A step split by the batch fallback has no call time: its decode counts as the call.
            called = min(timing.called or ready, ready)
            stages = [
                FrameStages(arrived=arrived, driven=driven, submitted=timing.submitted, called=called, ready=ready)
                for arrived, driven in out_arrivals
            ]
            self._avatar.push(frames, [arrived for arrived, _ in out_arrivals], stages)

    async def reset(self) -> None:
        """Empty the engine's queue: the avatar warms up again from the next frames."""
        self._generation += 1
        self._in_queue.clear()
        self._avatar.restart()
        self.first_frame_seconds = None
        self.first_camera_at = None
        await self._worker.run(self.engine.reset)
