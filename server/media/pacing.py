"""A session's frame rate, and the video tracks paced by it."""

from __future__ import annotations

import asyncio
import contextlib
import time

import numpy as np
from aiortc.mediastreams import VIDEO_CLOCK_RATE, VIDEO_TIME_BASE, MediaStreamError, MediaStreamTrack
from av import VideoFrame
from av.video.reformatter import VideoReformatter


class FrameRate:
    """A session's frame rate: the control channel sets it, the camera sampler and the paced
    tracks read it at every frame.

    A change takes effect at once: it wakes every paced track waiting for its next frame, which
    then waits by the new rate, not out the rest of a period of the old one.
    """

    def __init__(self, fps: float):
        self._fps = fps
        self._wakers: set[asyncio.Event] = set()

    @property
    def fps(self) -> float:
        return self._fps

    def set(self, fps: float) -> None:
        self._fps = fps
        for waker in self._wakers:
            waker.set()

    def follow(self, waker: asyncio.Event) -> None:
        """Set `waker` on every change (until `unfollow`)."""
        self._wakers.add(waker)

    def unfollow(self, waker: asyncio.Event) -> None:
        self._wakers.discard(waker)


class PacedVideoTrack(MediaStreamTrack):
    """A video track that emits one frame every 1/fps seconds (fps may change), pts on the 90 kHz clock."""

    kind = "video"

    def __init__(self, rate: FrameRate):
        super().__init__()  # don't forget this!
        self._rate = rate
        self._wake = asyncio.Event()  # a new frame rate, or stopped
        rate.follow(self._wake)
        self._start: float | None = None
        self._last_due = 0.0  # when the last frame was due
        self.pts: int | None = None  # of the frame being made (`next_image` may record it)
        self._to_yuv = VideoReformatter()

    async def _next_timestamp(self) -> int:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = self._last_due = time.monotonic()
            return 0
        while True:
            # The period is read again after every wake-up: a new rate counts from the last frame.
            period = 1.0 / self._rate.fps
            due, now = self._last_due + period, time.monotonic()
            if due <= now:
                break
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):  # due: the usual end of the wait
                await asyncio.wait_for(self._wake.wait(), due - now)
            if self.readyState != "live":
                raise MediaStreamError
        if due < now - period:
            due = now  # the loop stalled: carry on from now rather than burst
        self._last_due = due
        return int((due - self._start) * VIDEO_CLOCK_RATE)

    def stop(self) -> None:
        super().stop()
        self._rate.unfollow(self._wake)
        self._wake.set()  # a wait for the next frame ends now, not a period later

    async def recv(self) -> VideoFrame:
        pts = self.pts = await self._next_timestamp()
        # yuv420p, what the encoders take: converted once here rather than once per consumer. One
        # scaler thread: an automatic count starts worker threads per track (2 on 2 cores).
        rgb = VideoFrame.from_ndarray(self.next_image(), format="rgb24")
        frame = self._to_yuv.reformat(rgb, format="yuv420p", threads=1)
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        return frame

    def next_image(self) -> np.ndarray:
        raise NotImplementedError
