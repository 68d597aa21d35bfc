"""The avatar track: paced, repeating when the engine is late, with a bounded backlog."""

from __future__ import annotations

import itertools

import numpy as np

from server.media.avatar import AvatarTrack
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
