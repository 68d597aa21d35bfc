"""Several streams stepped in one batched call give what each gives alone.

What this must prove is that nothing of one stream reaches another. A leak (another stream's
reference, driving images, noise or decoder memory) moves a stream's frames at order 1e-3 to
1 (`test_each_streams_own_inputs_show_in_its_frames`); a batched kernel's other reduction order
moves them at order 1e-6 in float32, which a tolerance cannot tell from a small leak on every CPU.
So the comparison runs in float64, where reduction order stays near 1e-12, and the tolerance sits
between the two.

Why not float32: with the tiny test model, a difference of 6e-6 in the queue became 1.5e-3 in
the frames one call later on an Intel Xeon with AVX-512/AMX (rtol was 1e-5). The amplifier is
GroupNorm at the UNet's deepest level: a 64x64 image is a 1x1 grid there, and 64 channels in 32
groups leave 2 values per group, so a group whose 2 values nearly tie (measured: -2.1188 and
-2.1180) is normalised to +-1 by a division by their tiny spread, which multiplies any rounding
difference by thousands (the whole UNet by about 260). The scheduler at t=999 and the decoder do
not amplify. Real profiles normalise hundreds to thousands of values per group: the demo model
with float16-sized per-operation noise (1e-3) stays 1.1e-3 off over 14 calls, without growth.
"""

from __future__ import annotations

import pytest
import torch

from rain_core.stream.batching import batcher_of, step_streams
from rain_core.stream.engine import QueueModel, StreamEngine
from tests.helpers import random_driving, relative_error, stream_alone

# Batched against alone, float64: reduction order gives about 1e-14 here even with the tiny
# model's amplification (measured with 1e-16 noise after every layer; 1e-13 gives 3e-11).
BATCH_RTOL = 1e-9
# Any one of a stream's inputs taken from the other stream moves its frames by more than this.
LEAK_FLOOR = 1e-3


def test_batched_streams_equal_eachstream_alone(float64_model, reference_images):
    """Two streams from the first call, a third joining two calls later (another fill level)."""
    config = float64_model.config
    calls = config.noise_groups + 1
    starts = [0, 0, 2]
    references = [reference_images[0], reference_images[1], reference_images[0]]
    drivings = [random_driving(config, calls - starts[i], seed=10 + i) for i in range(3)]
    alone = [stream_alone(float64_model, references[i], drivings[i], seed=20 + i) for i in range(3)]
    engines = [StreamEngine(float64_model, seed=20 + i) for i in range(3)]
    for engine, image in zip(engines, references, strict=True):
        engine.set_reference(image)
    batched = [[], [], []]
    for c in range(calls):
        stepping = [i for i in range(3) if c >= starts[i]]
        if c == starts[2]:
            assert engines[2].fill_level != engines[0].fill_level
        outputs = step_streams([engines[i] for i in stepping], [drivings[i][c - starts[i]] for i in stepping])
        for i, out in zip(stepping, outputs, strict=True):
            batched[i].append(out)
    for i in range(3):
        assert len(batched[i]) == len(alone[i])
        for c, (got, expected) in enumerate(zip(batched[i], alone[i], strict=True)):
            if expected is None:
                assert got is None, f"call {c} stream {i}: a frame while the queue fills"
            else:
                error = relative_error(got, expected)
                assert error < BATCH_RTOL, f"call {c} stream {i}: relative L2 error {error:.3e} >= {BATCH_RTOL:.0e}"


def test_each_streams_own_inputs_show_in_its_frames(float64_model, reference_images):
    """The other stream's reference, driving images or noise in place of a stream's own would
    move its frames far beyond `BATCH_RTOL`: the test above would catch such a leak."""
    config = float64_model.config
    calls = config.noise_groups + 1
    own_driving, other_driving = random_driving(config, calls, seed=10), random_driving(config, calls, seed=11)
    own = stream_alone(float64_model, reference_images[0], own_driving, seed=20)
    leaks = {
        "reference": stream_alone(float64_model, reference_images[1], own_driving, seed=20),
        "driving images": stream_alone(float64_model, reference_images[0], other_driving, seed=20),
        "noise": stream_alone(float64_model, reference_images[0], own_driving, seed=21),
    }
    for name, frames in leaks.items():
        error = relative_error(frames[-1], own[-1])
        assert error > LEAK_FLOOR, f"another stream's {name} moves the frames by only {error:.1e}"


def test_a_refused_batch_moves_no_stream(tiny_model, reference_images):
    """Every input is checked before any stream moves, so the server can step each again alone."""
    config = tiny_model.config
    drivings = random_driving(config, config.noise_groups, seed=3)
    engines = [StreamEngine(tiny_model, seed=30 + i) for i in range(2)]
    for engine, image in zip(engines, reference_images, strict=True):
        engine.set_reference(image)
    with pytest.raises(ValueError, match="driving images"):
        step_streams(engines, [drivings[0], drivings[0][:1]])
    assert [e.fill_level for e in engines] == [1, 1]
    retried = [engines[0].step(d) for d in drivings]
    assert torch.equal(retried[-1], stream_alone(tiny_model, reference_images[0], drivings, seed=30)[-1])


def test_streams_of_different_models_are_refused(tiny_model, reference_images):
    other = QueueModel(tiny_model.components)
    engines = [StreamEngine(tiny_model), StreamEngine(other)]
    for engine in engines:
        engine.set_reference(reference_images[0])
    driving = random_driving(tiny_model.config, 1)[0]
    with pytest.raises(ValueError, match="share one QueueModel"):
        step_streams(engines, [driving, driving])
    mixed = [StreamEngine(tiny_model), StreamEngine(tiny_model, cache_reference_kv=False)]
    with pytest.raises(ValueError, match="K/V cache"):
        step_streams(mixed, [driving, driving])


def test_a_reference_change_reaches_the_cached_batched_conditioning(float64_model, reference_images):
    """The batch's concatenated conditioning is made once per set of streams and reused; a stream
    that changes its reference between batched calls gets its new reference in the next one, as it
    does stepped alone."""
    config = float64_model.config
    calls, swap_at = config.noise_groups + 2, config.noise_groups
    drivings = [random_driving(config, calls, seed=40 + i) for i in range(2)]
    engines = [StreamEngine(float64_model, seed=50 + i) for i in range(2)]
    alone = [StreamEngine(float64_model, seed=50 + i) for i in range(2)]
    for engine, single in zip(engines, alone, strict=True):
        engine.set_reference(reference_images[0])
        single.set_reference(reference_images[0])
    batcher = batcher_of(float64_model)
    for c in range(calls):
        if c == swap_at:
            before = batcher.conditioning([e.conditioning for e in engines])
            engines[1].set_reference(reference_images[1])
            alone[1].set_reference(reference_images[1])
        batched = step_streams(engines, [d[c] for d in drivings])
        expected = [single.step(d[c]) for single, d in zip(alone, drivings, strict=True)]
        for i, (got, want) in enumerate(zip(batched, expected, strict=True)):
            if want is None:
                assert got is None
            else:
                error = relative_error(got, want)
                assert error < BATCH_RTOL, f"call {c} stream {i}: relative L2 error {error:.3e} >= {BATCH_RTOL:.0e}"
    assert batcher.conditioning([e.conditioning for e in engines]) is batcher.conditioning(
        [e.conditioning for e in engines]
    ), "the concatenation of one set of streams is made once"
    after = batcher.conditioning([e.conditioning for e in engines])
    assert after is not before
    assert torch.equal(after.clip_embeds[1:], engines[1].conditioning.clip_embeds)
    assert torch.equal(after.clip_embeds[:1], before.clip_embeds[:1])
