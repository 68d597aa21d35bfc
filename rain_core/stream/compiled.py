"""The compiled model: torch.compile (inductor) of the UNet, pose guider and streaming decoder.

Only the steady call is compiled: a full queue (G*P frames) for each batch size the caller names
(`QueueModel.fast_calls`). The G-1 calls that fill a new stream's queue have other shapes; they run
the modules eager, so that no shape but the steady one is ever compiled (a filling call costs one
eager call, once per stream).

Granularity, measured on the demo profile (2 CPU cores, float32, one call; eager 189 ms):
the whole UNet compiled as one graph 106 ms; each down/mid/up block compiled alone 160 ms; each
resnet / spatial transformer / motion module alone slower than eager (each region a separate
graph of few operations, with a guard check per call, and their shapes differ too much to reuse
graphs). The UNet is therefore compiled whole; the decoder's `decode_stream` and the pose guider too.

Compiled artifacts (inductor's FX graph cache and the AOTAutograd cache, both on by default) go to
`inductor_cache_dir()`: `$TORCHINDUCTOR_CACHE_DIR` when set, else `~/.cache/rain-avatar/inductor`
(under `$XDG_CACHE_HOME` when set); triton's kernels (CUDA) to `triton/` beside it unless
`$TRITON_CACHE_DIR` says otherwise. A restart then skips inductor's code generation, the C++
build and triton's autotuning; tracing the model still runs. Delete that directory to clear it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from rain_core.stream.components import RainComponents
from rain_core.stream.engine import Networks

CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
TRITON_CACHE_ENV = "TRITON_CACHE_DIR"
# Each batch size is one more graph of each compiled network; the worker batches up to
# MAX_BATCH streams (8 by default), so dynamo's default of 8 graphs per function would be hit.
RECOMPILE_LIMIT = 64


def inductor_cache_dir() -> Path:
    """Where compiled artifacts are kept across restarts."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "rain-avatar" / "inductor"


def enable_compile_cache() -> Path:
    """Point inductor's on-disk caches at `inductor_cache_dir()` (before the first compile)."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    directory = inductor_cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    # Inductor reads the variable whenever it opens its cache; triton reads its own at its first compile.
    os.environ[CACHE_ENV] = str(directory)
    os.environ.setdefault(TRITON_CACHE_ENV, str(directory / "triton"))
    inductor_config.fx_graph_cache = True
    functorch_config.enable_autograd_cache = True
    return directory


def compiled_networks(components: RainComponents, *, backend: str = "inductor") -> Networks:
    """The networks of a queue call compiled (static shapes; compiled lazily at their first call).

    The modules stay as they are: eager calls (a filling queue, a batch size not prepared, the check
    that compares a fast path with eager) run them directly, on any thread, while these compile.
    `backend="eager"` only traces them (dynamo's graphs run as they are): seconds instead of
    minutes, for dry runs and tests that check that the model still compiles without measuring it."""
    enable_compile_cache()
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    # Inductor's C++ wrapper (one C++ file per graph) is left off: its single file of a whole UNet
    # kept one compiler process busy for over 7 minutes on 2 cores, where the Python wrapper builds
    # its kernels in parallel and runs the demo's steady call about as fast (115 against 107 ms).
    eager = Networks.of(components)
    return Networks(
        pose_guider=torch.compile(eager.pose_guider, dynamic=False, backend=backend),
        denoising_unet=torch.compile(eager.denoising_unet, dynamic=False, backend=backend),
        decode_stream=torch.compile(eager.decode_stream, dynamic=False, backend=backend),
    )
