"""Incoming tracks nobody asked for (an extra camera, audio, a viewer's own media)."""

from __future__ import annotations

import asyncio

from aiortc.contrib.media import MediaBlackhole
from aiortc.mediastreams import MediaStreamTrack


class DiscardedTracks:
    """Reads and drops each track it is given: aiortc queues a received track's frames until
    someone reads them, so an unread track would grow without bound."""

    def __init__(self) -> None:
        self._sinks: list[MediaBlackhole] = []

    def add(self, track: MediaStreamTrack) -> None:
        sink = MediaBlackhole()
        sink.addTrack(track)
        self._sinks.append(sink)
        # `start` only creates the reading task; it returns at once.
        asyncio.ensure_future(sink.start())

    async def stop(self) -> None:
        for sink in self._sinks:
            await sink.stop()
        self._sinks.clear()
