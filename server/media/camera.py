"""The webcam turned into the driving signal.

Latest frame wins: a reader task keeps only the newest webcam frame, and `DrivingTrack.recv()`
samples it at the session's frame rate and has the session's extractor turn it into a driving
image. A slow model therefore drops input frames; it never queues them up and falls behind.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from server.media.driving import DrivingExtractor
from server.media.pacing import FrameRate
from server.metrics import Metrics


@dataclass
class DrivingImage:
    image: np.ndarray  # [H, W, 3] uint8, the model's size
    arrived: float  # time.monotonic() when its webcam frame reached the server
    driven: float = 0.0  # time.monotonic() when this driving image was ready (sampled, extracted)


class FrameSampler:
    """Accepts frames at `fps` on average from a source of any rate (accept when due, then due += 1/fps).

    A quarter-period tolerance keeps e.g. 30 fps -> 16 fps even; when the source stalls for
    more than a period the schedule restarts at the next frame instead of bursting. A new `fps`
    counts from the last accepted slot: the next frame is due one new period after it, not one
    old period.
    """

    def __init__(self) -> None:
        self._due: float | None = None
        self._period = 0.0

    def accept(self, t: float, fps: float) -> bool:
        period = 1.0 / fps
        if self._due is not None and period != self._period:
            self._due += period - self._period
        self._period = period
        if self._due is None or t >= self._due + period:
            self._due = t
        if t < self._due - 0.25 * period:
            return False
        self._due += period
        return True


class DrivingTrack:
    """The driving signal of one session; `recv()` returns the next `DrivingImage` (style: a track)."""

    kind = "driving"

    def __init__(self, camera: MediaStreamTrack, extractor: DrivingExtractor, rate: FrameRate, metrics: Metrics):
        self._camera = camera
        self._extractor = extractor
        self._rate = rate
        self._metrics = metrics
        self._sampler = FrameSampler()
        self._latest: tuple[VideoFrame, float] | None = None
        self._new = asyncio.Event()
        self._ended = False
        self.frames_received = 0
        self.frames_extracted = 0
        self.received_at: deque[float] = deque(maxlen=128)
        self.last_frame_at: float | None = None
        # (arrival, pts) of the last webcam frames sampled: the pts is the sender's own (aiortc
        # counts a received track's pts from its first frame, as a sender's track starts them).
        self.sampled: deque[tuple[float, int | None]] = deque(maxlen=128)
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            while True:
                frame = await self._camera.recv()
                now = time.monotonic()
                self._latest = (frame, now)
                self.frames_received += 1
                self.last_frame_at = now
                self.received_at.append(now)
                self._metrics.camera_frames.inc()
                self._new.set()
        except MediaStreamError:
            pass
        finally:
            self._ended = True
            self._new.set()

    async def recv(self) -> DrivingImage:
        while True:
            await self._new.wait()
            self._new.clear()
            if self._latest is None:
                if self._ended:
                    raise MediaStreamError("the webcam track ended")
                continue
            frame, arrived = self._latest
            self._latest = None
            if not self._sampler.accept(arrived, self._rate.fps):
                continue
            self.sampled.append((arrived, frame.pts))
            image = await self._extractor.extract(frame, arrived)
            self.frames_extracted += 1
            self._metrics.driving_frames.inc()
            return DrivingImage(image=image, arrived=arrived, driven=time.monotonic())

    def longest_gap(self, now: float, window: float = 8.0) -> float | None:
        """The longest time between two driving frames (webcam frames sampled) in the last `window`
        seconds, the wait for the next one included; None before the first."""
        times = [arrived for arrived, _ in self.sampled if arrived > now - window]
        if not times:
            return None
        return max([b - a for a, b in zip(times, times[1:], strict=False)] + [now - times[-1]])

    def frame_interval(self, frames: int = 16) -> float | None:
        """The webcam's current frame interval (median over the last `frames`), None before two."""
        times = list(self.received_at)[-frames:]
        if len(times) < 2:
            return None
        return statistics.median(b - a for a, b in zip(times, times[1:], strict=False))

    async def stop(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
