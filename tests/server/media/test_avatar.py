"""The avatar track: paced, repeating when the engine is late, with a bounded backlog."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from server.media.avatar import LATENCY_PARTS, AvatarTrack, FrameStages
from server.media.pacing import FrameRate
from server.metrics import Metrics


async def test_avatar_track_paces_repeats_and_bounds_its_backlog() -> None:
    metrics = Metrics()
    track = AvatarTrack(16, 16, FrameRate(200.0), max_backlog=5, metrics=metrics)
    card = await track.recv()
    assert card.format.name == "yuv420p" and (card.width, card.height) == (16, 16)
    frames = np.stack([np.full((16, 16, 3), 10 * i, np.uint8) for i in range(4)])
    track.push(frames, [0.0] * 4)
    track.push(frames, [0.0] * 4)  # 8 queued, 5 kept: latency stays bounded
    assert track.backlog == 5 and track.frames_skipped == 3
    pts = [card.pts]
    for _ in range(7):
        pts.append((await track.recv()).pts)
    assert all(b > a for a, b in itertools.pairwise(pts))
    assert track.frames_sent == 5 and track.frames_repeated == 2
    track.restart()
    assert track.backlog == 0
    track.stop()


def test_a_frame_latency_splits_into_parts_that_add_up_to_it() -> None:
    track = AvatarTrack(8, 8, FrameRate(16), max_backlog=4, metrics=Metrics())
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    base = time.monotonic()
    stages = [FrameStages(arrived=base - 0.5 + i * 0.01, driven=base - 0.45, submitted=base - 0.2, called=base - 0.1,
                          ready=base - 0.05) for i in range(2)]
    track.push(frames, [s.arrived for s in stages], stages)
    track.next_image()
    (parts,) = track.parts
    assert set(parts) == set(LATENCY_PARTS) and all(value >= 0 for value in parts.values())
    assert sum(parts.values()) == pytest.approx(track.latencies[-1])
    assert parts["queue"] == pytest.approx(0.25) and parts["call"] == pytest.approx(0.1)
