"""The bench's stage split times the same work as a live stream does."""

from __future__ import annotations

import numpy as np
import torch

from rain_core.bench.engine import StageTimer, TimedQueueModel
from rain_core.config import tiny_config
from rain_core.stream.components import RainComponents
from rain_core.stream.engine import QueueModel, StreamEngine
from tests.helpers import random_driving


def test_timed_stages_change_no_frame():
    components = RainComponents.random(tiny_config(), seed=1)
    config = components.config
    reference = np.random.default_rng(0).integers(0, 256, (config.height, config.width, 3), dtype=np.uint8)
    drivings = random_driving(config, config.noise_groups + 1)
    timed = TimedQueueModel(components)
    timed.timer = StageTimer(config.torch_device)
    frames = {}
    for name, model in (("plain", QueueModel(components)), ("timed", timed)):
        engine = StreamEngine(model, seed=4)
        engine.set_reference(reference)
        frames[name] = [engine.step(d) for d in drivings]
    assert torch.equal(frames["plain"][-1], frames["timed"][-1])
    calls = len(drivings)
    decoding_calls = calls - (config.noise_groups - 1)  # the queue is full from the G-th call on
    expected = {"pose_guider": calls, "unet": calls, "scheduler": calls, "decoder": decoding_calls}
    assert dict(timed.timer.counts) == expected
    assert all(timed.timer.mean_ms(stage) > 0 for stage in timed.timer.counts)
