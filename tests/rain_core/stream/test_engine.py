"""The streaming engine through its public API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rain_core.stream.engine import StreamEngine, frames_to_uint8
from rain_core.stream.reference_encoder import ReferenceImageError, as_rgb_image
from tests.helpers import random_driving, stream_alone


def test_no_frame_before_the_queue_is_full(tiny_model, reference_images):
    config = tiny_model.config
    engine = StreamEngine(tiny_model, seed=1)
    engine.set_reference(reference_images[0])
    outputs, levels = [], []
    for driving in random_driving(config, config.noise_groups + 2):
        levels.append(engine.fill_level)
        outputs.append(engine.step(driving))
    assert levels == [*range(1, config.noise_groups + 1), config.noise_groups, config.noise_groups]
    assert all(o is None for o in outputs[: config.noise_groups - 1])
    assert all(o is not None for o in outputs[config.noise_groups - 1 :])
    assert engine.first_output_after == engine.first_frame_latency_frames == config.queue_length
    frames = outputs[-1]
    assert frames.shape == (config.frames_per_group, 3, config.height, config.width)
    assert float(frames.min()) >= 0 and float(frames.max()) <= 1
    assert frames_to_uint8(frames).shape == (config.frames_per_group, config.height, config.width, 3)


def test_same_seed_same_stream(tiny_model, reference_images):
    drivings = random_driving(tiny_model.config, tiny_model.config.noise_groups + 1)
    first = stream_alone(tiny_model, reference_images[0], drivings, seed=7)
    second = stream_alone(tiny_model, reference_images[0], drivings, seed=7)
    other = stream_alone(tiny_model, reference_images[0], drivings, seed=8)
    assert torch.equal(first[-1], second[-1])
    assert not torch.equal(first[-1], other[-1])


def test_reference_swap_takes_effect_on_the_next_call(tiny_model, reference_images):
    config = tiny_model.config
    drivings = random_driving(config, config.noise_groups + 2)
    a = StreamEngine(tiny_model, seed=5)
    b = StreamEngine(tiny_model, seed=5)
    a.set_reference(reference_images[0])
    b.set_reference(reference_images[0])
    swap_at = config.noise_groups
    for i, driving in enumerate(drivings):
        if i == swap_at:
            b.set_reference(reference_images[1])  # mid-stream, queue kept
        out_a, out_b = a.step(driving), b.step(driving)
        if i < swap_at:
            assert torch.equal(out_a, out_b) if out_a is not None else out_b is None
        else:
            assert out_b is not None and not torch.equal(out_a, out_b)
    assert b.frames_out == a.frames_out  # the stream never restarted


def test_reset_starts_over_with_the_same_reference(tiny_model, reference_images):
    config = tiny_model.config
    drivings = random_driving(config, config.noise_groups)
    engine = StreamEngine(tiny_model, seed=2)
    engine.set_reference(reference_images[0])
    first = [engine.step(d) for d in drivings]
    engine.reset()
    assert engine.fill_level == 1 and not engine.is_full and engine.frames_out == 0
    again = [engine.step(d) for d in drivings]
    assert again[:-1] == [None] * (config.noise_groups - 1)
    assert torch.equal(first[-1], again[-1])


def test_bad_inputs_are_refused(tiny_model, reference_images):
    config = tiny_model.config
    engine = StreamEngine(tiny_model)
    with pytest.raises(RuntimeError, match="set a reference"):
        engine.step(random_driving(config, 1)[0])
    engine.set_reference(reference_images[0])
    p, h, w = config.frames_per_group, config.height, config.width
    with pytest.raises(ValueError, match=f"expected {p} driving images of 3x{h}x{w}"):
        engine.step(np.zeros((p + 1, h, w, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        engine.step(np.zeros((p, h, w, 3), np.float32))
    with pytest.raises(ReferenceImageError, match="at least 8x8"):
        engine.set_reference(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ReferenceImageError, match="must be an image"):
        engine.set_reference("not an image")


def test_reference_pixel_limit_is_the_callers_to_set():
    image = np.zeros((30, 40, 3), np.uint8)
    assert as_rgb_image(image, max_pixels=30 * 40).size == (40, 30)
    with pytest.raises(ReferenceImageError, match="40x30; at most 1199 pixels"):
        as_rgb_image(image, max_pixels=30 * 40 - 1)
