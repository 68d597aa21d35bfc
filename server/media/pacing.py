"""A session's frame rate, and the video tracks paced by it."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from aiortc.mediastreams import VIDEO_CLOCK_RATE, VIDEO_TIME_BASE, MediaStreamError, MediaStreamTrack
from av import VideoFrame
from av.video.reformatter import VideoReformatter


class FrameRate:
    """A session's frame rate: the control channel sets it, the camera sampler and the paced
    tracks read it at every frame."""

    def __init__(self, fps: float):
        self.fps = fps


class PacedVideoTrack(MediaStreamTrack):
    """A video track that emits one frame every 1/fps seconds (fps may change), pts on the 90 kHz clock."""

    kind = "video"

    def __init__(self, rate: FrameRate):
        super().__init__()  # don't forget this!
        self._rate = rate
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
            period = 1.0 / self._rate.fps
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
