"""The avatar with its matte packed beside it (`server.media.alpha`), made only while a viewer asks.

`MatteSource` is a session's second relayed source: created with its first `alpha=matte` viewer,
stopped with its last. Its `MatteTrack` reads the avatar relay newest-frame-only and computes each
matte on a thread pool, one frame at a time: while one is computed the relay keeps only the newest
frame, so a slow matte drops stale frames instead of falling behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from server.media.alpha import RGB, colour_matte, pack_matte, remove_background
from server.media.relay import TrackRelay


def packed_frame(frame: VideoFrame, key: RGB) -> VideoFrame:
    """An avatar frame -> the same frame with its matte packed beside it (yuv420p, twice as wide)."""
    rgb = frame.to_ndarray(format="rgb24")
    matte = colour_matte(rgb, key)
    packed = VideoFrame.from_ndarray(pack_matte(remove_background(rgb, matte, key), matte), format="rgb24")
    out = packed.reformat(format="yuv420p")
    out.pts = frame.pts
    if frame.time_base is not None:
        out.time_base = frame.time_base
    return out


class MatteTrack(MediaStreamTrack):
    """`source`'s frames with their mattes, computed on `pool` against the current key colour."""

    kind = "video"

    def __init__(self, source: MediaStreamTrack, key: Callable[[], RGB], pool: Executor):
        super().__init__()
        self._source = source
        self._key = key
        self._pool = pool
        self._waiting: asyncio.Future | None = None

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        # Waited on as a future of its own so that `stop` can end the wait: a relay subscription
        # that is stopped never wakes its reader, and the relay reading this track would hang.
        self._waiting = asyncio.ensure_future(self._source.recv())
        try:
            frame = await self._waiting
        except asyncio.CancelledError:
            if self.readyState != "live":
                raise MediaStreamError from None
            raise
        finally:
            self._waiting = None
        return await asyncio.get_running_loop().run_in_executor(self._pool, packed_frame, frame, self._key())

    def stop(self) -> None:
        super().stop()
        if self._waiting is not None:
            self._waiting.cancel()
        self._source.stop()


class MatteSource:
    """The packed avatar for a session's `alpha=matte` viewers, alive while at least one watches."""

    def __init__(self, avatar: TrackRelay, key: Callable[[], RGB], pool: Executor):
        self._avatar = avatar
        self._key = key
        self._pool = pool
        self._track: MatteTrack | None = None
        self._relay: TrackRelay | None = None
        self.users = 0

    @property
    def running(self) -> bool:
        return self._track is not None

    def subscribe(self) -> MediaStreamTrack:
        """A new viewer's track; the first one starts the matte."""
        if self._relay is None:
            self._track = MatteTrack(self._avatar.subscribe(), self._key, self._pool)
            self._relay = TrackRelay(self._track)
        self.users += 1
        return self._relay.subscribe()

    def release(self) -> None:
        """A viewer left; the last one stops the matte (and its relay, which ends with its source)."""
        self.users -= 1
        if self.users <= 0:
            self.close()

    def close(self) -> None:
        if self._track is not None:
            self._track.stop()
        self._track = self._relay = None
        self.users = 0
