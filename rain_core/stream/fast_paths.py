"""The fast paths a `QueueModel` can run with, and preparing a model with them.

`FastPaths` names the paths, `default_fast_paths` picks those measured faster on a device, and
`prepare_model` returns the `QueueModel` that runs them, compiled and captured at load time for
the batch sizes the caller steps; its `fast_paths` names what it actually runs, with the reason
for each path asked for that does not run.

Precision is not a path here: it is the config's `dtype` (see `default_dtype`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from rain_core.config import ConfigError
from rain_core.stream.batching import step_streams
from rain_core.stream.compiled import CompiledQueueModel, compile_components
from rain_core.stream.components import RainComponents
from rain_core.stream.cuda_graphs import GraphedQueueModel
from rain_core.stream.decode_thread import DecodeThread
from rain_core.stream.engine import QueueModel, StreamEngine
from rain_core.stream.reference_encoder import ReferenceEncoding

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FastPaths:
    """Which fast paths to run; every one is equal to the eager float32 path within its tolerance."""

    # Attend every frame to one shared reference K/V (merged by log-sum-exp) instead of copies.
    merged_reference_attention: bool = True
    # torch.compile (inductor) of the UNet, pose guider and decoder for the steady call, cached on disk.
    compile: bool = False
    # One CUDA graph per batch size, replayed per call (CUDA only).
    cuda_graphs: bool = False
    # The codec's decoder in channels-last memory (NHWC): oneDNN runs its full-resolution convolutions of
    # few channels 1.4-1.8x faster so on CPU than in NCHW; only the convolutions' summation order changes.
    channels_last: bool = False
    # Decode each call's finished frames on a thread of their own while the next call's UNet runs
    # (CPU; `rain_core.stream.decode_thread`): for callers that step with `StreamEngine.submit`.
    decode_thread: bool = False
    # The codec's decoder in bfloat16 (CPU; the rest of the model stays in its dtype): its full-resolution
    # convolutions are compute-bound, and a CPU with bfloat16 instructions runs them about twice as fast.
    bfloat16_decoder: bool = False
    # Why a path asked for does not run (set on `QueueModel.fast_paths` by `prepare_model`).
    notes: tuple[str, ...] = ()


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS says, else every core)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_torch_threads(device: torch.device) -> int | None:
    """Torch's CPU threads for a streaming model when none are named: on a CPU every core but one,
    which is left to the camera, the codecs and the event loop (and to the decode thread, which
    runs on it); None on other devices (torch's default)."""
    if device.type == "cuda":
        return None
    return max(1, available_cores() - 1)


def has_bfloat16_instructions() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX-512 BF16 or AMX), where oneDNN's bfloat16
    convolutions beat float32; elsewhere it converts to float32 and back, which is slower."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def default_fast_paths(device: torch.device) -> FastPaths:
    """The paths measured faster on this kind of device.

    CPU: the codec in channels-last memory (the demo's decoder 33 -> 23 ms per call at one thread),
    and the decode thread when torch's threads leave as many cores free as they use (the server's
    one thread of 2 cores: the demo's steady call 137 -> 106-115 ms); with fewer cores to spare its
    threads would only compete with torch's, which is not measured. The decoder in bfloat16 where
    the CPU has bfloat16 instructions (on an AVX-512 BF16 EPYC the tiny fixture's decoder 75 -> 37 ms
    a call at 2 threads, the demo's 19 -> 9 ms).
    Compiling makes the demo model's steady call 1.6-1.8x faster at one thread (v3: 132-166 -> 80-100
    ms, 20-25 fps) but costs 3.6 minutes of compilation at the first start on 2 cores (about 30 s at
    later starts, from the disk cache), and every test or tool that starts a model would pay it: it
    is left to whoever serves for long (`--compile`, `RAIN_COMPILE=on`). CUDA: compiled and replayed
    as CUDA graphs; channels-last is not measured there yet, so it stays off.
    """
    if device.type == "cuda":
        return FastPaths(compile=True, cuda_graphs=True)
    return FastPaths(channels_last=True, decode_thread=2 * torch.get_num_threads() <= available_cores(),
                     bfloat16_decoder=has_bfloat16_instructions())


# How a setting or option asks for a path: the device's default, or forced on or off.
Switch = Literal["auto", "on", "off"]
SWITCHES: tuple[Switch, ...] = ("auto", "on", "off")


def choose_fast_paths(device: torch.device, *, compile: Switch = "auto", cuda_graphs: Switch = "auto",
                      channels_last: Switch = "auto", decode_thread: Switch = "auto",
                      bfloat16_decoder: Switch = "auto", merged_reference_attention: bool = True) -> FastPaths:
    """The device's default paths with those switched on or off explicitly; CUDA graphs asked
    for on another device, or the decode thread or bfloat16 decoder on a GPU, are a `ConfigError`
    (not silently skipped)."""
    if cuda_graphs == "on" and device.type != "cuda":
        raise ConfigError(f"CUDA graphs need a CUDA device, not {device}")
    if decode_thread == "on" and device.type != "cpu":
        raise ConfigError(f"the decode thread is a CPU path (a {device} call runs behind the host already)")
    if bfloat16_decoder == "on" and device.type != "cpu":
        raise ConfigError(f"the bfloat16 decoder is a CPU path (choose the {device} model's dtype with --dtype)")
    default = default_fast_paths(device)

    def chosen(switch: Switch, default_on: bool) -> bool:
        return default_on if switch == "auto" else switch == "on"

    return FastPaths(
        merged_reference_attention=merged_reference_attention,
        compile=chosen(compile, default.compile),
        cuda_graphs=chosen(cuda_graphs, default.cuda_graphs),
        channels_last=chosen(channels_last, default.channels_last),
        decode_thread=chosen(decode_thread, default.decode_thread),
        bfloat16_decoder=chosen(bfloat16_decoder, default.bfloat16_decoder),
    )


# The profile whose time goes into large products: on a CPU with bfloat16 instructions it runs in bfloat16.
LARGE_PRODUCT_PROFILES = frozenset({"official"})


def default_dtype(device: torch.device, profile: str | None = None) -> str:
    """The dtype a model of `profile` runs in when none is named.

    float16 on CUDA (the official model's precision). On a CPU with bfloat16 instructions the
    official widths run in bfloat16: their time is large convolutions and products, which run at
    about twice float32's rate there (one call at 256x256 on the 2-core AVX-512 BF16 EPYC: 15.5-16.3 s
    against 28.1 s). Smaller models stay float32 on every CPU: their time goes into many small
    operations, and bfloat16 was slower (the demo model 14.0-14.3 fps against 16.4-17.0 on that
    EPYC; 6.1 against 7.3 fps on an AMX Xeon, issue #14). Their decoder alone, compute-bound at full
    resolution, does run twice as fast in bfloat16: that is `FastPaths.bfloat16_decoder`.
    """
    if device.type == "cuda":
        return "float16"
    return "bfloat16" if profile in LARGE_PRODUCT_PROFILES and has_bfloat16_instructions() else "float32"


class CompiledGraphedQueueModel(GraphedQueueModel, CompiledQueueModel):
    """Compiled networks, the steady call of each batch size captured as a CUDA graph."""

    def __init__(self, components: RainComponents, batch_sizes: Sequence[int]):
        # Each base sets up QueueModel and its own batch sizes (QueueModel's set-up is cheap).
        CompiledQueueModel.__init__(self, components, batch_sizes)
        GraphedQueueModel.__init__(self, components, batch_sizes)


def prepare_model(
    components: RainComponents, paths: FastPaths, *, batch_sizes: Sequence[int] = (1,), progress: bool = True,
    compile_backend: str = "inductor",
) -> QueueModel:
    """A `QueueModel` over `components` that runs `paths`, compiled and captured for `batch_sizes`.

    Compiles (and captures) at once, by stepping throwaway streams through the exact calls the
    worker makes at each batch size; a progress line shows it. The components are changed in
    place (compiled, attention switched): prepare one model per set of components.
    """
    device = components.config.torch_device
    batch_sizes = tuple(sorted(set(batch_sizes)))
    if not batch_sizes or batch_sizes[0] < 1:
        raise ValueError(f"batch_sizes must be positive, got {batch_sizes}")
    notes = []

    merged = paths.merged_reference_attention
    switch = getattr(components.denoising_unet, "set_reference_attention", None)
    if switch is not None:
        switch(merged=merged)
    elif merged:
        merged = False
        notes.append("merged_reference_attention: this model's attention has no merged form yet")

    graphs = paths.cuda_graphs
    if graphs and device.type != "cuda":
        graphs = False
        notes.append(f"cuda_graphs: needs a CUDA device, the model runs on {device}")
    decode_thread = paths.decode_thread
    if decode_thread and device.type != "cpu":
        decode_thread = False
        notes.append(f"decode_thread: a CPU path, the model runs on {device}")

    bfloat16_decoder = paths.bfloat16_decoder
    decoder_dtype = components.decoder.decoding_dtype
    if bfloat16_decoder and device.type != "cpu":
        bfloat16_decoder = False
        notes.append(f"bfloat16_decoder: a CPU path, the model runs on {device}")
    elif bfloat16_decoder and decoder_dtype not in (torch.float32, torch.bfloat16):
        bfloat16_decoder = False
        notes.append(f"bfloat16_decoder: for a float32 model, this one's decoder runs in {decoder_dtype}")
    if bfloat16_decoder and decoder_dtype == torch.float32:
        for module in components.decoder.decoding_modules():
            module.to(torch.bfloat16)
    if paths.channels_last:
        # The weights' layout is enough: a convolution with channels-last weights gives channels-last
        # output, which every later operation of the decoder keeps (its frames then leave as HWC for
        # free). The encoder, run once per reference, keeps NCHW: the encodings stay dense.
        for module in components.decoder.decoding_modules():
            module.to(memory_format=torch.channels_last)
    if paths.compile:
        compile_components(components, backend=compile_backend)
    if paths.compile and graphs:
        model: QueueModel = CompiledGraphedQueueModel(components, batch_sizes)
    elif graphs:
        model = GraphedQueueModel(components, batch_sizes)
    elif paths.compile:
        model = CompiledQueueModel(components, batch_sizes)
    else:
        model = QueueModel(components)
    if decode_thread:
        model.decode_thread = DecodeThread()
    model.fast_paths = FastPaths(  # type: ignore[attr-defined]
        merged_reference_attention=merged, compile=paths.compile, cuda_graphs=graphs,
        channels_last=paths.channels_last, decode_thread=decode_thread, bfloat16_decoder=bfloat16_decoder,
        notes=tuple(notes),
    )
    if paths.compile or graphs:
        warm_up(model, batch_sizes, progress=progress)
    return model


def warm_up(model: QueueModel, batch_sizes: Sequence[int], *, progress: bool = True) -> None:
    """Step throwaway streams, `b` at a time for each `b` in `batch_sizes`, until each batch size
    has made two full-queue calls: the first compiles (or loads from the cache) and captures."""
    config = model.config
    rng = np.random.default_rng(0)
    encoding = ReferenceEncoding(
        clip_embeds=torch.randn(1, 1, config.clip_embed_dim),
        latents=torch.randn(1, config.unet.in_channels, config.latent_height, config.latent_width),
        pixels=torch.rand(1, 3, config.height, config.width),
    )
    driving = rng.integers(0, 256, (config.frames_per_group, config.height, config.width, 3), dtype=np.uint8)
    what = " + ".join(name for name, on in (("compiling", model.fast_paths.compile),
                                            ("capturing CUDA graphs", model.fast_paths.cuda_graphs)) if on)
    started = time.perf_counter()
    with tqdm(batch_sizes, desc=f"{what} ({config.name}, batch sizes)", unit="batch size", file=sys.stderr,
              disable=not progress) as bar:
        for batch in bar:
            bar.set_postfix_str(f"{batch} stream{'s' if batch > 1 else ''}")
            engines = [StreamEngine(model, seed=i) for i in range(batch)]
            for engine in engines:
                engine.set_reference_encoding(encoding)
            for _ in range(config.noise_groups + 1):
                step_streams(engines, [driving] * batch)
    logger.info("%s for batch sizes %s took %.1f s", what, list(batch_sizes), time.perf_counter() - started)

