"""Pacing: a change of frame rate takes effect at once, and stopping a track ends its wait."""

from __future__ import annotations

import asyncio

import pytest
from aiortc.mediastreams import VIDEO_CLOCK_RATE, MediaStreamError

from server.media.avatar import DrivingPreviewTrack
from server.media.pacing import FrameRate

HANG_GUARD = 30  # seconds: a test that would wait for the old period fails here instead of hanging


async def _waiting_for_next_frame(track: DrivingPreviewTrack) -> asyncio.Task:
    waiting = asyncio.ensure_future(track.recv())
    for _ in range(5):
        await asyncio.sleep(0)  # let it reach its wait
    assert not waiting.done()
    return waiting


async def test_a_new_rate_takes_effect_at_once() -> None:
    rate = FrameRate(1e-3)  # one frame every 1000 s
    track = DrivingPreviewTrack(16, 16, rate)
    first = await track.recv()
    waiting = await _waiting_for_next_frame(track)
    rate.set(100.0)
    second = await asyncio.wait_for(waiting, HANG_GUARD)
    # The next frame counts from the last one at the new rate, not 1000 s after it.
    assert 0 < second.pts - first.pts < VIDEO_CLOCK_RATE
    third = await asyncio.wait_for(track.recv(), HANG_GUARD)
    assert third.pts > second.pts
    track.stop()


async def test_stopping_a_track_ends_its_wait() -> None:
    rate = FrameRate(1e-3)
    track = DrivingPreviewTrack(16, 16, rate)
    await track.recv()
    waiting = await _waiting_for_next_frame(track)
    track.stop()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(waiting, HANG_GUARD)
    rate.set(16.0)  # a stopped track no longer follows the rate
