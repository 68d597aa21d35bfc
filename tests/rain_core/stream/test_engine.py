"""The streaming engine through its public API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rain_core.config import tiny_config
from rain_core.stream.components import RainComponents
from rain_core.stream.engine import QueueModel, StreamEngine, frames_to_uint8
from rain_core.stream.reference_encoder import ReferenceImageError, as_rgb_image
from tests.helpers import random_driving, relative_error, stream_alone


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


# Engine against the plain computation, float64: layouts and buffers must not change a number, so
# only reduction order could (about 1e-14 here, see test_batching.py); another noise draw or a
# misplaced group moves the frames at order 1.
PLAIN_RTOL = 1e-9


def plain_queue_frames(model: QueueModel, reference, drivings, seed: int) -> list:
    """The queue computed the plain way, as the engine first did: fresh tensors and concatenations
    every call, noise drawn with `torch.randn` from the stream's seeded generator in the engine's
    order (the first group at reset; on every call the step noise, then the new group)."""
    config = model.config
    p, g = config.frames_per_group, config.noise_groups
    shape = (config.unet.in_channels, config.latent_height, config.latent_width)
    generator = torch.Generator().manual_seed(seed)

    def noise(frames: int) -> torch.Tensor:
        return torch.randn(1, shape[0], frames, *shape[1:], generator=generator, dtype=model.dtype)

    with torch.inference_mode():
        conditioning = model.conditioning(model.encode_reference(reference), cache_kv=True)
        latents = noise(p)
        features = torch.empty(1, config.pose_guider.conditioning_embedding_channels, 0, *shape[1:],
                               dtype=model.dtype)
        memory = model.components.decoder.initial_memory(1, *shape[1:], device=model.device, dtype=model.dtype)
        outputs = []
        for driving in drivings:
            # Contiguous images: a convolution's reduction order depends on the layout it is given.
            pose = torch.from_numpy(driving).permute(3, 0, 1, 2).float().div(255).to(model.dtype).contiguous()
            features = torch.cat([features, model.pose_features(pose.unsqueeze(0))], dim=2)
            latents = model.denoise(latents, features, conditioning, noise(latents.shape[2]))
            if latents.shape[2] == g * p:
                frames, memory = model.decode(latents[:, :, :p], memory)
                outputs.append(frames[0])
                latents, features = latents[:, :, p:], features[:, :, p:]
            else:
                outputs.append(None)
            latents = torch.cat([latents, noise(p)], dim=2)
    return outputs


def test_a_stream_computes_the_plain_queue(float64_model, reference_images):
    """The engine's in-place buffers, sliding feature window (wrapping every G + 1 calls) and noise
    drawn into its own memory give the frames of the plain computation with `torch.randn` draws:
    the same seed gives the same stream as before."""
    config = float64_model.config
    drivings = random_driving(config, 2 * config.noise_groups + 2, seed=4)
    expected = plain_queue_frames(float64_model, reference_images[0], drivings, seed=9)
    got = stream_alone(float64_model, reference_images[0], drivings, seed=9)
    for call, (frames, want) in enumerate(zip(got, expected, strict=True)):
        if want is None:
            assert frames is None, f"call {call}: a frame while the queue fills"
        else:
            error = relative_error(frames, want)
            assert error < PLAIN_RTOL, f"call {call}: relative L2 error {error:.3e} >= {PLAIN_RTOL:.0e}"


def _buffer_addresses(engine: StreamEngine) -> list[int]:
    """Where the engine's per-stream state lives (white-box: what a steady call must not reallocate)."""
    tensors = [engine._latents, engine._feature_store, engine._noise, *engine._memory]
    return [t.data_ptr() for t in tensors]


def test_steady_calls_run_on_the_streams_own_buffers(tiny_model, reference_images):
    """Once the queue is full, a call reads the stream's queue in place (no copy handed out) and
    leaves its state where it was: no queue buffer is allocated or moved, call after call."""
    config = tiny_model.config
    engine = StreamEngine(tiny_model, seed=1)
    engine.set_reference(reference_images[0])
    drivings = random_driving(config, 3 * config.noise_groups + 2)
    for driving in drivings[: config.noise_groups]:
        engine.step(driving)
    assert engine.is_full
    addresses = _buffer_addresses(engine)
    for driving in drivings[config.noise_groups :]:
        call = engine.call_inputs(engine.prepare_driving(driving))
        assert call.latents.data_ptr() == engine._latents.data_ptr()
        assert call.pose_features.data_ptr() == engine._features.data_ptr()
        assert [m.data_ptr() for m in call.decoder_memory] == [m.data_ptr() for m in engine._memory]
        assert engine.advance(tiny_model.run(call)) is not None
        assert _buffer_addresses(engine) == addresses


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_a_streaming_call_projects_tokens_in_single_matrix_products(reference_images, dtype):
    """Every linear layer of a call gets dense rows, so matmul folds the frames into one product.
    A strided view would make it expand the weight once per frame (or spatial position) into a
    batched product instead, which on a CPU in bfloat16 copies that expanded weight: at official
    widths, 9 of a call's 26 seconds."""
    from torch.profiler import profile

    config = tiny_config(dtype="bfloat16" if dtype == torch.bfloat16 else "float32")
    engine = StreamEngine(RainComponents.random(config, seed=3), seed=0)
    engine.set_reference(reference_images[0])
    drivings = random_driving(config, config.noise_groups + 1, seed=1)
    for driving in drivings[:-1]:
        engine.step(driving)
    with profile() as recorded:
        assert engine.step(drivings[-1]) is not None
    batched = [event.key for event in recorded.key_averages() if event.key in ("aten::bmm", "aten::baddbmm")]
    assert not batched, "a projection ran as a batched product over an expanded weight"
