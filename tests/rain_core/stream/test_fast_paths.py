"""The fast paths give the eager float32 path's frames, within their stated tolerances."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rain_core.config import TAESDVConfig, UNetConfig, tiny_config
from rain_core.stream.components import RainComponents
from rain_core.stream.engine import StreamEngine
from rain_core.stream.fast_paths import (
    FastPaths,
    default_dtype,
    default_fast_paths,
    has_bfloat16_instructions,
)
from rain_core.stream.preparation import prepare_model
from tests.helpers import BFLOAT16_DECODER_MAX, BFLOAT16_DECODER_MEAN, random_driving, relative_error

# Compiled float32 against eager float32, per output frame batch (relative L2): inductor fuses
# and reorders reductions (GroupNorm, softmax, convolutions), and the queue carries each call's
# rounding into the next ones, so this is looser than the golden 1e-4 of a single call.
COMPILED_RTOL = 1e-3
# bfloat16 against float32: 8 mantissa bits (relative rounding 2**-9 per operation) through a
# UNet of ~30 layers and the queue's calls.
BFLOAT16_RTOL = 5e-2
# Channels-last codec against the same codec in NCHW, float32: the convolutions sum in another
# order (about 1e-7 relative per layer), carried through the decoder's memory across calls.
CHANNELS_LAST_RTOL = 1e-5
# Through a full streaming run: the queue fills (G-1 calls, eager), then steady calls.
STEADY_CALLS = 3


def _compile_test_config():
    """The tiny profile cut to two resolutions, one layer per block and G = P = 2: every kind of
    block is still there (spatial + reference attention, motion modules, memory blocks), at a
    fraction of the kernels to compile (a cold compile of the tiny profile takes minutes on 2 cores)."""
    return tiny_config(
        unet=UNetConfig(block_out_channels=(32, 32), layers_per_block=1, cross_attention_dim=32,
                        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
        taesdv=TAESDVConfig(channels=16, blocks_per_stage=1),
        noise_groups=2, num_inference_steps=2, frames_per_group=2,
    )


def _gated(config):
    """`config` with the demo's codec: it encodes the references too, and its decoder reads them."""
    return config.with_overrides(
        taesdv=TAESDVConfig(channels=16, blocks_per_stage=1, patch_path=True, reference_gate=True),
        reference_encoder="taesdv",
    )


def _stream(model, reference, calls: int) -> list[torch.Tensor]:
    config = model.config
    engine = StreamEngine(model, seed=7)
    engine.set_reference(reference)
    outputs = [engine.step(d) for d in random_driving(config, calls, seed=1)]
    return [o for o in outputs if o is not None]


def _assert_streams_close(actual, expected, rtol: float) -> None:
    assert len(actual) == len(expected) > 0
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        error = relative_error(a.float(), e.float())
        assert error < rtol, f"output {i}: relative L2 error {error:.2e} >= {rtol:.0e}"


def _assert_bfloat16_decoder_close(actual, expected) -> None:
    """Frames of a bfloat16 decoder against the float32 decoder's, within that path's stated tolerance."""
    assert len(actual) == len(expected) > 0
    for i, (frames, want) in enumerate(zip(actual, expected, strict=True)):
        assert frames.dtype == torch.float32
        difference = (frames - want).abs()
        assert difference.mean() < BFLOAT16_DECODER_MEAN, f"output {i}: mean difference {difference.mean():.2e}"
        assert difference.max() < BFLOAT16_DECODER_MAX, f"output {i}: largest difference {difference.max():.2e}"


@pytest.fixture(scope="module")
def eager_frames(reference_images):
    model = prepare_model(RainComponents.random(tiny_config(), seed=3), FastPaths())
    return _stream(model, reference_images[0], tiny_config().noise_groups + STEADY_CALLS)


@pytest.mark.parametrize("bfloat16_decoder", [False, True], ids=["float32", "bfloat16-decoder"])
def test_compiled_stream_equals_eager(reference_images, tmp_path, monkeypatch, bfloat16_decoder):
    # A fresh cache: the test compiles, as a first start does.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    config = _compile_test_config()
    eager = prepare_model(RainComponents.random(config, seed=3), FastPaths())
    expected = _stream(eager, reference_images[0], config.noise_groups + STEADY_CALLS)
    # As `--compile` runs on a CPU: compiled, with the CPU's channels-last codec and decode thread
    # (the server's worker steps with `submit`, which decodes there), and its decoder in float32 or,
    # as on a CPU with bfloat16 instructions, in bfloat16.
    paths = dataclasses.replace(default_fast_paths(torch.device("cpu")), compile=True, decode_thread=True,
                                bfloat16_decoder=bfloat16_decoder, checked=())
    model = prepare_model(RainComponents.random(config, seed=3), paths, progress=False)
    assert model.fast_paths.compile and model.fast_paths.channels_last and model.fast_paths.decode_thread
    assert model.fast_paths.bfloat16_decoder == bfloat16_decoder
    engine = StreamEngine(model, seed=7)
    engine.set_reference(reference_images[0])
    drivings = random_driving(config, config.noise_groups + STEADY_CALLS, seed=1)
    outputs = [engine.submit(d) for d in drivings[: config.noise_groups - 1]]
    # The steady calls run what prepare_model compiled, the decoder on the decode thread: none compiles again.
    with torch.compiler.set_stance("fail_on_recompile"):
        outputs += [engine.submit(d) for d in drivings[config.noise_groups - 1 :]]
        engine.settle_decoding()
    outputs = [o if o is None or isinstance(o, torch.Tensor) else o.result() for o in outputs]
    frames = [o for o in outputs if o is not None]
    if bfloat16_decoder:
        _assert_bfloat16_decoder_close(frames, expected)
    else:
        _assert_streams_close(frames, expected, COMPILED_RTOL)


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
def test_channels_last_codec_stream_equals_eager(reference_images, gated):
    config = _compile_test_config()
    if gated:
        config = _gated(config)
    eager = prepare_model(RainComponents.random(config, seed=3), FastPaths())
    expected = _stream(eager, reference_images[0], config.noise_groups + STEADY_CALLS)
    model = prepare_model(RainComponents.random(config, seed=3), FastPaths(channels_last=True))
    assert model.fast_paths.channels_last
    assert next(model.components.decoder.decoder.parameters()).is_contiguous(memory_format=torch.channels_last)
    frames = _stream(model, reference_images[0], config.noise_groups + STEADY_CALLS)
    _assert_streams_close(frames, expected, CHANNELS_LAST_RTOL)


def _decode_thread_script(model, references, drivings, *, defer: bool) -> list[torch.Tensor]:
    """Two streams of `model` through every way a served stream moves: stepped alone (deferred
    decodes when `defer`), a reference change, batched together (decoded at once, after the
    streams' pending decodes), alone again, and a reset. Returns every output frame group in order."""
    from rain_core.stream.batching import step_streams

    engines = [StreamEngine(model, seed=seed) for seed in (7, 8)]
    for engine, reference in zip(engines, references, strict=True):
        engine.set_reference(reference)
    config = model.config
    outputs = []
    feed = iter(drivings)

    def alone(calls: int) -> None:
        for _ in range(calls):
            for engine in engines:
                outputs.extend(step_streams([engine], [next(feed)], defer_decode=defer))

    alone(config.noise_groups + 1)
    engines[0].set_reference(references[1])
    alone(1)
    for _ in range(2):
        outputs.extend(step_streams(engines, [next(feed), next(feed)], defer_decode=defer))
    alone(1)
    engines[1].reset()
    alone(config.noise_groups + 1)
    return [o if isinstance(o, torch.Tensor) else o.result() for o in outputs if o is not None]


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
def test_decode_thread_gives_the_frames_of_decoding_in_turn(reference_images, gated):
    from rain_core.stream.decode_thread import PendingFrames

    config = _compile_test_config()
    if gated:
        config = _gated(config)
    references = reference_images[:2]
    drivings = random_driving(config, 4 * config.noise_groups + 12, seed=1)
    eager = prepare_model(RainComponents.random(config, seed=3), FastPaths())
    expected = _decode_thread_script(eager, references, drivings, defer=True)  # no decode thread: in turn
    model = prepare_model(RainComponents.random(config, seed=3), FastPaths(decode_thread=True))
    assert model.fast_paths.decode_thread and model.decode_thread is not None
    # Deferred decodes do come back pending, and `step` still returns frames.
    engine = StreamEngine(model, seed=7)
    engine.set_reference(references[0])
    pending = [engine.submit(d) for d in drivings[: config.noise_groups]][-1]
    assert isinstance(pending, PendingFrames)
    assert isinstance(engine.step(drivings[0]), torch.Tensor)
    frames = _decode_thread_script(model, references, drivings, defer=True)
    _assert_streams_close(frames, expected, CHANNELS_LAST_RTOL)


def test_bfloat16_stream_is_close_to_float32(reference_images, eager_frames):
    components = RainComponents.random(tiny_config(), seed=3).to("cpu", torch.bfloat16)
    model = prepare_model(components, FastPaths())
    assert model.dtype == torch.bfloat16
    frames = _stream(model, reference_images[0], tiny_config().noise_groups + STEADY_CALLS)
    _assert_streams_close(frames, eager_frames, BFLOAT16_RTOL)


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
def test_bfloat16_decoder_is_close_to_float32(reference_images, gated):
    config = _gated(_compile_test_config()) if gated else _compile_test_config()
    calls = config.noise_groups + STEADY_CALLS
    expected = _stream(prepare_model(RainComponents.random(config, seed=3), FastPaths()), reference_images[0], calls)
    paths = FastPaths(channels_last=True, bfloat16_decoder=True)
    model = prepare_model(RainComponents.random(config, seed=3), paths)
    assert model.fast_paths.bfloat16_decoder and model.decoder_dtype == torch.bfloat16
    # Only the decoder: the UNet and the reference encoder keep the model's float32.
    assert model.dtype == torch.float32 and next(model.components.decoder.encoder.parameters()).dtype == torch.float32
    _assert_bfloat16_decoder_close(_stream(model, reference_images[0], calls), expected)
    # Its bfloat16 memory passes from decode to decode on the decode thread as in turn.
    drivings = random_driving(config, 4 * config.noise_groups + 12, seed=1)
    in_turn = _decode_thread_script(model, reference_images[:2], drivings, defer=False)
    threaded = prepare_model(RainComponents.random(config, seed=3), dataclasses.replace(paths, decode_thread=True))
    deferred = _decode_thread_script(threaded, reference_images[:2], drivings, defer=True)
    _assert_streams_close(deferred, in_turn, CHANNELS_LAST_RTOL)


def test_cpu_defaults_and_paths_that_cannot_run_say_why():
    cpu = torch.device("cpu")
    assert not default_fast_paths(cpu).cuda_graphs and default_fast_paths(cpu).channels_last
    assert default_fast_paths(cpu).bfloat16_decoder == has_bfloat16_instructions()
    assert default_dtype(cpu) == default_dtype(cpu, "demo") == default_dtype(cpu, "tiny") == "float32"
    assert default_dtype(cpu, "official") == ("bfloat16" if has_bfloat16_instructions() else "float32")
    cuda = torch.device("cuda")
    assert default_fast_paths(cuda).cuda_graphs and default_fast_paths(cuda).compile
    assert default_dtype(cuda) == "float16"

    model = prepare_model(RainComponents.random(tiny_config(), seed=3), FastPaths(cuda_graphs=True))
    assert not model.fast_paths.cuda_graphs
    assert any(note.startswith("cuda_graphs") for note in model.fast_paths.notes)
    # A bfloat16 model's decoder runs in bfloat16 already; one in another dtype keeps it, and says so.
    components = RainComponents.random(tiny_config(), seed=3).to("cpu", torch.bfloat16)
    model = prepare_model(components, FastPaths(bfloat16_decoder=True))
    assert model.fast_paths.bfloat16_decoder and not model.fast_paths.notes
    components = RainComponents.random(tiny_config(), seed=3).to("cpu", torch.float64)
    model = prepare_model(components, FastPaths(bfloat16_decoder=True))
    assert not model.fast_paths.bfloat16_decoder and model.decoder_dtype == torch.float64
    assert any(note.startswith("bfloat16_decoder") for note in model.fast_paths.notes)


def test_batch_sizes_must_be_positive():
    with pytest.raises(ValueError, match="batch_sizes"):
        prepare_model(RainComponents.random(tiny_config(), seed=3), FastPaths(), batch_sizes=(0,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device; none here")
@pytest.mark.parametrize("compile_model", [False, True], ids=["eager", "compiled"])
def test_cuda_graphs_equal_eager_on_cuda(reference_images, compile_model):
    config = tiny_config(device="cuda", dtype="float32")
    calls = config.noise_groups + STEADY_CALLS
    eager = prepare_model(RainComponents.random(config, seed=3), FastPaths())
    expected = _stream(eager, reference_images[0], calls)
    paths = FastPaths(cuda_graphs=True, compile=compile_model)
    graphed = prepare_model(RainComponents.random(config, seed=3), paths, batch_sizes=(1, 2), progress=False)
    assert graphed.fast_paths.cuda_graphs
    assert sorted(graphed.fast_calls) == [1, 2] and graphed.fast_calls[1].captured == 2
    # Two streams with their own references through the same graph: each gets its own frames.
    _assert_streams_close(_stream(graphed, reference_images[0], calls), expected, COMPILED_RTOL)
    other = _stream(eager, reference_images[1], calls)
    _assert_streams_close(_stream(graphed, reference_images[1], calls), other, COMPILED_RTOL)
