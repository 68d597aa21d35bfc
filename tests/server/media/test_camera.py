"""The camera side: sampling a webcam of any rate at the session's frame rate."""

from __future__ import annotations

import numpy as np

from server.media.camera import FrameSampler


def test_sampler_takes_30_fps_down_to_16_evenly() -> None:
    sampler = FrameSampler()
    accepted = [t for t in np.arange(0, 10, 1 / 30) if sampler.accept(float(t), 16.0)]
    assert 155 <= len(accepted) <= 161
    assert max(np.diff(accepted)) < 2 / 30 + 1e-9  # never skips two camera frames in a row


def test_sampler_passes_a_slower_camera_and_restarts_after_a_stall() -> None:
    sampler = FrameSampler()
    assert all(sampler.accept(t / 10, 16.0) for t in range(20))  # 10 fps in: every frame
    assert sampler.accept(100.0, 16.0)  # a stall, then no burst of catch-up accepts
    assert not sampler.accept(100.01, 16.0)


def test_sampler_follows_a_new_rate_at_once() -> None:
    sampler = FrameSampler()
    assert sampler.accept(0.0, 1e-3)  # the next frame is due in 1000 s
    assert not sampler.accept(0.1, 1e-3)
    # Back to 16 fps: due 1/16 s after the last accepted frame, not 1000 s.
    assert sampler.accept(0.2, 16.0)
    assert not sampler.accept(0.21, 16.0)
    assert sampler.accept(0.2 + 1 / 16, 16.0)
