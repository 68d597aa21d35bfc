"""The streaming engine through its public API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rain_core.config import tiny_config
from rain_core.stream.components import RainComponents
from rain_core.stream.engine import QueueModel, StreamEngine, frames_to_uint8, step_streams
from rain_core.stream.reference_encoder import ReferenceImageError
from tests.helpers import assert_close


@pytest.fixture(scope="module")
def tiny_model():
    return QueueModel(RainComponents.random(tiny_config(), seed=3))


@pytest.fixture(scope="module")
def reference_images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (96, 80, 3), dtype=np.uint8) for _ in range(2)]


def _driving(config, calls, seed=0):
    rng = np.random.default_rng(seed)
    p, h, w = config.frames_per_group, config.height, config.width
    return [rng.integers(0, 256, (p, h, w, 3), dtype=np.uint8) for _ in range(calls)]


def test_no_frame_before_the_queue_is_full(tiny_model, reference_images):
    config = tiny_model.config
    engine = StreamEngine(tiny_model, seed=1)
    engine.set_reference(reference_images[0])
    outputs = [engine.step(d) for d in _driving(config, config.noise_groups + 2)]
    assert all(o is None for o in outputs[: config.noise_groups - 1])
    assert all(o is not None for o in outputs[config.noise_groups - 1 :])
    assert engine.first_output_after == engine.first_frame_latency_frames == config.queue_length
    frames = outputs[-1]
    assert frames.shape == (config.frames_per_group, 3, config.height, config.width)
    assert float(frames.min()) >= 0 and float(frames.max()) <= 1
    assert frames_to_uint8(frames).shape == (config.frames_per_group, config.height, config.width, 3)


def _run(model, reference, drivings, seed):
    engine = StreamEngine(model, seed=seed)
    engine.set_reference(reference)
    return [engine.step(d) for d in drivings]


def test_same_seed_same_stream(tiny_model, reference_images):
    drivings = _driving(tiny_model.config, tiny_model.config.noise_groups + 1)
    first = _run(tiny_model, reference_images[0], drivings, seed=7)
    second = _run(tiny_model, reference_images[0], drivings, seed=7)
    other = _run(tiny_model, reference_images[0], drivings, seed=8)
    assert torch.equal(first[-1], second[-1])
    assert not torch.equal(first[-1], other[-1])


def test_reference_swap_takes_effect_on_the_next_call(tiny_model, reference_images):
    config = tiny_model.config
    drivings = _driving(config, config.noise_groups + 2)
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


def test_reset_starts_over_without_new_models(tiny_model, reference_images):
    config = tiny_model.config
    drivings = _driving(config, config.noise_groups)
    engine = StreamEngine(tiny_model, seed=2)
    engine.set_reference(reference_images[0])
    buffers = [engine._latents.data_ptr(), *(f.data_ptr() for f in engine._features)]
    first = [engine.step(d) for d in drivings]
    engine.reset()
    assert not engine.is_full and engine.frames_out == 0
    again = [engine.step(d) for d in drivings]
    assert again[:-1] == [None] * (config.noise_groups - 1)
    assert torch.equal(first[-1], again[-1])
    assert sorted(buffers) == sorted([engine._latents.data_ptr(), *(f.data_ptr() for f in engine._features)])


def test_two_streams_batched_equal_each_alone(tiny_model, reference_images):
    config = tiny_model.config
    calls = config.noise_groups + 1
    drivings = [_driving(config, calls, seed=s) for s in (10, 11)]
    alone = [_run(tiny_model, reference_images[i], drivings[i], seed=20 + i) for i in range(2)]
    engines = [StreamEngine(tiny_model, seed=20 + i) for i in range(2)]
    for engine, image in zip(engines, reference_images, strict=True):
        engine.set_reference(image)
    batched = [step_streams(engines, [drivings[0][c], drivings[1][c]]) for c in range(calls)]
    for c in range(calls):
        for i in range(2):
            if alone[i][c] is None:
                assert batched[c][i] is None
            else:
                assert_close(batched[c][i], alone[i][c], f"call {c} stream {i}", rtol=1e-5)


def test_bad_inputs_are_refused(tiny_model, reference_images):
    config = tiny_model.config
    engine = StreamEngine(tiny_model)
    with pytest.raises(RuntimeError, match="set a reference"):
        engine.step(_driving(config, 1)[0])
    engine.set_reference(reference_images[0])
    with pytest.raises(ValueError, match="expected 4 driving images of 3x64x64"):
        engine.step(np.zeros((2, config.height, config.width, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        engine.step(np.zeros((4, config.height, config.width, 3), np.float32))
    with pytest.raises(ReferenceImageError, match="at least 8x8"):
        engine.set_reference(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ReferenceImageError, match="must be an image"):
        engine.set_reference("not an image")
