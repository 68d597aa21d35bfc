"""A session's driving pipeline, run on the server's driving thread pool."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import numpy as np
from av import VideoFrame

from rain_core.driving import DrivingPipeline, DrivingSettings

T = TypeVar("T")


class DrivingExtractor:
    """One session's `DrivingPipeline` on the shared pool: one call at a time, in order.

    Calls are shielded: a caller cancelled mid-call (the session closing) does not cut the call
    short, and `close` waits for it before it closes the pipeline under it.
    """

    def __init__(self, pool: Executor):
        self._pool = pool
        self._pipeline: DrivingPipeline | None = None
        self._lock = asyncio.Lock()
        self._calls: set[asyncio.Future] = set()
        self._t0: float | None = None
        self._last_timestamp = -1.0

    async def open(self, settings: DrivingSettings, *, width: int, height: int) -> None:
        """Build the pipeline (mediapipe's graphs load here, off the event loop)."""
        self._pipeline = await self._call(lambda: DrivingPipeline(settings, width=width, height=height))

    @property
    def settings(self) -> DrivingSettings:
        assert self._pipeline is not None
        return self._pipeline.settings

    async def extract(self, frame: VideoFrame, arrived: float) -> np.ndarray:
        """A webcam frame (arrived at `arrived`, monotonic seconds) -> its driving image."""
        return await self._call(self._extract, frame, arrived)

    async def update(self, settings: DrivingSettings) -> None:
        """Switch to other (validated) settings from the next frame on."""
        assert self._pipeline is not None
        await self._call(self._pipeline.update, settings.model_dump())

    async def close(self) -> None:
        await asyncio.gather(*self._calls, return_exceptions=True)
        if self._pipeline is not None:
            await self._call(self._pipeline.close)
            self._pipeline = None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._lock:
            future = asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
            self._calls.add(future)
            future.add_done_callback(self._calls.discard)
            return await asyncio.shield(future)

    def _extract(self, frame: VideoFrame, arrived: float) -> np.ndarray:
        assert self._pipeline is not None
        if self._t0 is None:
            self._t0 = arrived
        # The landmark tracker wants strictly increasing timestamps.
        timestamp = max(arrived - self._t0, self._last_timestamp + 1e-3)
        self._last_timestamp = timestamp
        # threads=1: FFmpeg's scaler would otherwise start worker threads that live as long as the frame.
        return self._pipeline(frame.to_ndarray(format="rgb24", threads=1), timestamp)
