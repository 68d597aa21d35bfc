"""What a session sends: the avatar, and the newest driving image as a preview."""

from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from server.media.pacing import FrameRate, PacedVideoTrack
from server.metrics import Metrics


@dataclass(frozen=True)
class FrameStages:
    """When one avatar frame passed each stage on the server (time.monotonic())."""

    arrived: float  # its webcam frame handed over by the receiver
    driven: float  # its driving image ready (sampled, landmarks, drawn)
    submitted: float  # the batch of the call that brought it out handed to the model worker
    called: float  # that call returned
    ready: float  # its pixels decoded and on the host


# The parts of the server's latency, in the order a frame meets them: each from one stage to the next.
LATENCY_PARTS = ("camera", "queue", "call", "decode", "pacing")


def latency_parts(stages: FrameStages, sent: float) -> dict[str, float]:
    """One frame's latency (sent - arrived) split into `LATENCY_PARTS` (seconds, adding up to it)."""
    times = (stages.arrived, stages.driven, stages.submitted, stages.called, stages.ready, sent)
    return {name: max(0.0, end - start) for name, start, end in zip(LATENCY_PARTS, times[:-1], times[1:], strict=True)}


class AvatarTrack(PacedVideoTrack):
    """The engine's frames in order, paced at the session's frame rate, at most `max_backlog`
    of them waiting. It repeats the last frame when the engine is late, and shows a "warming
    up" card, with the engine's progress towards its first frame, until that frame exists."""

    def __init__(self, width: int, height: int, rate: FrameRate, *, max_backlog: int, metrics: Metrics):
        super().__init__(rate)
        self.width, self.height = width, height
        self.max_backlog = max_backlog
        self._metrics = metrics
        self._queue: deque[tuple[np.ndarray, float, FrameStages | None]] = deque()
        self._last: np.ndarray | None = None
        self._warmup = 0.0
        self.frames_sent = 0  # distinct engine frames sent
        self.frames_repeated = 0
        self.frames_skipped = 0  # dropped from the backlog to keep latency bounded
        self.latencies: deque[float] = deque(maxlen=64)
        self.sent_at: deque[float] = deque(maxlen=128)
        # (pts, webcam arrival) of the last distinct frames sent: which webcam frame each came from.
        self.origins: deque[tuple[int, float]] = deque(maxlen=64)
        # The latency of the last distinct frames sent, split into `LATENCY_PARTS` (seconds).
        self.parts: deque[dict[str, float]] = deque(maxlen=32)

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def push(self, frames: np.ndarray, arrivals: list[float], stages: list[FrameStages] | None = None) -> None:
        """Queue the engine's frames [P, H, W, 3] with the arrival times of their webcam frames (and
        when they passed each stage, for the latency's parts)."""
        for image, arrived, stage in zip(frames, arrivals, stages or [None] * len(arrivals), strict=True):
            self._queue.append((image, arrived, stage))
        while len(self._queue) > self.max_backlog:
            self._queue.popleft()
            self.frames_skipped += 1

    def latency(self, frames: int = 5) -> float | None:
        """The current glass-to-glass latency: the median over the last `frames` distinct frames
        (what the voice's delay follows: a short window, as a loaded model's latency can move by
        hundreds of ms within a second). None before the first frame."""
        if not self.latencies:
            return None
        return statistics.median(list(self.latencies)[-frames:])

    def warming_up(self, progress: float) -> None:
        """How far the engine is towards its first frame (0 to 1), for the card."""
        self._warmup = progress

    def restart(self) -> None:
        """Back to the warming-up card (the engine's queue was emptied)."""
        self._queue.clear()
        self._last = None
        self._warmup = 0.0

    def next_image(self) -> np.ndarray:
        if self._queue:
            image, arrived, stages = self._queue.popleft()
            self._last = image
            now = time.monotonic()
            self.frames_sent += 1
            self.sent_at.append(now)
            self.latencies.append(now - arrived)
            if stages is not None:
                self.parts.append(latency_parts(stages, now))
            if self.pts is not None:
                self.origins.append((self.pts, arrived))
            self._metrics.latency_seconds.observe(now - arrived)
            return image
        if self._last is not None:
            self.frames_repeated += 1
            self._metrics.repeated_frames.inc()
            return self._last
        return warming_up_card(self.width, self.height, round(self._warmup * 20) / 20)


class DrivingPreviewTrack(PacedVideoTrack):
    """The newest driving image (black before the first)."""

    def __init__(self, width: int, height: int, rate: FrameRate):
        super().__init__(rate)
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
