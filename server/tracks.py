"""The media of a session as tracks.

- `DrivingTrack`: the webcam turned into the driving signal. Latest frame wins: a reader
  task keeps only the newest webcam frame, and `recv()` samples it at the session's fps and
  runs the driving extraction in a thread pool. A slow model therefore drops input frames;
  it never queues them up and falls behind.
- `AvatarTrack`: the engine's frames, paced at the session's fps with their pts; it repeats
  the last frame when the engine is late and shows a "warming up" card until the first
  frame exists. Fanned out to the webcam page and the viewers through `MediaRelay`, each
  consumer reading its own copy of every frame (`subscribe`).
- `DrivingPreviewTrack`: the newest driving image, for the page's small preview.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import VIDEO_CLOCK_RATE, VIDEO_TIME_BASE, MediaStreamError, MediaStreamTrack
from av import VideoFrame
from av.video.reformatter import VideoReformatter
from PIL import Image, ImageDraw, ImageFont

from rain_core.driving import DrivingPipeline
from server.metrics import Metrics

logger = logging.getLogger(__name__)


@dataclass
class DrivingImage:
    image: np.ndarray  # [H, W, 3] uint8, the model's size
    arrived: float  # time.monotonic() when its webcam frame reached the server


class FrameSampler:
    """Accepts frames at `fps` on average from a source of any rate (accept when due, then due += 1/fps).

    A quarter-period tolerance keeps e.g. 30 fps -> 16 fps even; when the source stalls for
    more than a period the schedule restarts at the next frame instead of bursting.
    """

    def __init__(self) -> None:
        self._due: float | None = None

    def accept(self, t: float, fps: float) -> bool:
        period = 1.0 / fps
        if self._due is None or t >= self._due + period:
            self._due = t
        if t < self._due - 0.25 * period:
            return False
        self._due += period
        return True


class DrivingTrack:
    """The driving signal of one session; `recv()` returns the next `DrivingImage` (style: a track)."""

    kind = "driving"

    def __init__(
        self,
        camera: MediaStreamTrack,
        pipeline: DrivingPipeline,
        run: Callable[..., Awaitable],
        *,
        fps: Callable[[], float],
        metrics: Metrics,
    ):
        """`run(fn, *args)` runs a pipeline call off the event loop, one at a time per session."""
        self.pipeline = pipeline
        self._camera = camera
        self._run = run
        self._fps = fps
        self._metrics = metrics
        self._sampler = FrameSampler()
        self._latest: tuple[object, float] | None = None
        self._new = asyncio.Event()
        self._ended = False
        self._t0: float | None = None
        self._last_timestamp = -1.0
        self.frames_received = 0
        self.frames_extracted = 0
        self.received_at: deque[float] = deque(maxlen=128)
        self.last_frame_at: float | None = None
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
            if not self._sampler.accept(arrived, self._fps()):
                continue
            image = await self._run(self._extract, frame, arrived)
            self.frames_extracted += 1
            self._metrics.driving_frames.inc()
            return DrivingImage(image=image, arrived=arrived)

    def _extract(self, frame, arrived: float) -> np.ndarray:
        if self._t0 is None:
            self._t0 = arrived
        # The landmark tracker wants strictly increasing timestamps.
        timestamp = max(arrived - self._t0, self._last_timestamp + 1e-3)
        self._last_timestamp = timestamp
        # threads=1: FFmpeg's scaler would otherwise start worker threads that live as long as the frame.
        return self.pipeline(frame.to_ndarray(format="rgb24", threads=1), timestamp)

    async def stop(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


class PacedVideoTrack(MediaStreamTrack):
    """A video track that emits one frame every 1/fps seconds (fps may change), pts on the 90 kHz clock."""

    kind = "video"

    def __init__(self, fps: Callable[[], float]):
        super().__init__()  # don't forget this!
        self._fps = fps
        self._start: float | None = None
        self._next = 0.0
        self._to_yuv = VideoReformatter()

    async def _next_timestamp(self) -> int:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = self._next = now
        else:
            period = 1.0 / self._fps()
            self._next += period
            if self._next < now - period:
                self._next = now  # the loop stalled: carry on from now rather than burst
            await asyncio.sleep(max(0.0, self._next - now))
        return int((self._next - self._start) * VIDEO_CLOCK_RATE)

    async def recv(self) -> VideoFrame:
        pts = await self._next_timestamp()
        # yuv420p, what the encoders take: converted once here rather than once per consumer. One
        # scaler thread: an automatic count starts worker threads per track (2 on 2 cores).
        rgb = VideoFrame.from_ndarray(self.next_image(), format="rgb24")
        frame = self._to_yuv.reformat(rgb, format="yuv420p", threads=1)
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        return frame

    def next_image(self) -> np.ndarray:
        raise NotImplementedError


class SubscriberTrack(MediaStreamTrack):
    """One consumer's copy of a relayed video track.

    `MediaRelay` hands every consumer the same `VideoFrame`, and aiortc encodes on executor
    threads with PyAV, which rebases a frame's pts in place (and reformats through a per-frame
    context): two encoders sharing frames race, and one of the streams stalls. So each consumer
    reads its own copy (a few kB at the model's resolution).
    """

    kind = "video"

    def __init__(self, source: MediaStreamTrack):
        super().__init__()
        self._source = source

    async def recv(self) -> VideoFrame:
        shared = await self._source.recv()
        frame = VideoFrame.from_ndarray(shared.to_ndarray(), format=shared.format.name)
        frame.pts = shared.pts
        frame.time_base = shared.time_base
        return frame

    def stop(self) -> None:
        super().stop()
        self._source.stop()


def subscribe(relay: MediaRelay, track: MediaStreamTrack) -> SubscriberTrack:
    """A new consumer of `track`: newest frame only (never a queue), in its own frames."""
    return SubscriberTrack(relay.subscribe(track, buffered=False))


class AvatarTrack(PacedVideoTrack):
    """The avatar: the engine's frames in order, at most `max_backlog` of them waiting."""

    def __init__(
        self,
        width: int,
        height: int,
        fps: Callable[[], float],
        *,
        max_backlog: int,
        warmup: Callable[[], float],
        metrics: Metrics,
    ):
        super().__init__(fps)
        self.width, self.height = width, height
        self.max_backlog = max_backlog
        self._warmup = warmup
        self._metrics = metrics
        self._queue: deque[tuple[np.ndarray, float]] = deque()
        self._last: np.ndarray | None = None
        self.frames_sent = 0  # distinct engine frames sent
        self.frames_repeated = 0
        self.frames_skipped = 0  # dropped from the backlog to keep latency bounded
        self.latencies: deque[float] = deque(maxlen=64)
        self.sent_at: deque[float] = deque(maxlen=128)

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def push(self, frames: np.ndarray, arrivals: list[float]) -> None:
        """Queue the engine's frames [P, H, W, 3] with the arrival times of their webcam frames."""
        for image, arrived in zip(frames, arrivals, strict=True):
            self._queue.append((image, arrived))
        while len(self._queue) > self.max_backlog:
            self._queue.popleft()
            self.frames_skipped += 1

    def restart(self) -> None:
        """Back to the warming-up card (the engine's queue was emptied)."""
        self._queue.clear()
        self._last = None

    def next_image(self) -> np.ndarray:
        if self._queue:
            image, arrived = self._queue.popleft()
            self._last = image
            now = time.monotonic()
            self.frames_sent += 1
            self.sent_at.append(now)
            self.latencies.append(now - arrived)
            self._metrics.latency_seconds.observe(now - arrived)
            return image
        if self._last is not None:
            self.frames_repeated += 1
            self._metrics.repeated_frames.inc()
            return self._last
        return warming_up_card(self.width, self.height, round(self._warmup() * 20) / 20)


class DrivingPreviewTrack(PacedVideoTrack):
    """The newest driving image (black before the first)."""

    def __init__(self, width: int, height: int, fps: Callable[[], float]):
        super().__init__(fps)
        self._image = np.zeros((height, width, 3), np.uint8)

    def show(self, image: np.ndarray) -> None:
        self._image = image

    def next_image(self) -> np.ndarray:
        return self._image


@lru_cache(maxsize=64)
def warming_up_card(width: int, height: int, progress: float) -> np.ndarray:
    """Dark card with "warming up" and a bar filling as the engine's queue fills."""
    image = Image.new("RGB", (width, height), (20, 22, 34))
    draw = ImageDraw.Draw(image)
    text = "warming up"
    size = max(6, width // 8)
    font = ImageFont.load_default(size=size)
    box = draw.textbbox((0, 0), text, font=font)
    draw.text(((width - (box[2] - box[0])) / 2, height / 2 - (box[3] - box[1])), text, fill=(230, 230, 240), font=font)
    margin, bar = max(2, width // 10), max(2, height // 16)
    top = int(height * 0.62)
    draw.rectangle((margin, top, width - margin, top + bar), outline=(120, 120, 150))
    filled = margin + int((width - 2 * margin) * min(max(progress, 0.0), 1.0))
    if filled > margin:
        draw.rectangle((margin, top, filled, top + bar), fill=(110, 170, 255))
    return np.asarray(image, dtype=np.uint8)
