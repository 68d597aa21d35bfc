"""The fast paths a `QueueModel` can run with, and which of them run on a device.

`FastPaths` names the paths, `default_fast_paths` picks those measured (or, where nothing was
measured yet, expected) faster on a device, and `choose_fast_paths` applies a user's switches.
`rain_core.stream.preparation.prepare_model` returns the `QueueModel` that runs them; its
`fast_paths` names what it actually runs, with the reason for each path that does not.

Precision is not a path here: it is the config's `dtype` (see `default_dtype`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch

from rain_core.config import ConfigError
from rain_core.options import Switch


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
    # The paths on by the device's default ("auto") rather than asked for: `prepare_model` runs each on
    # the first prepared call and compares it with eager on the same inputs, and drops it if it
    # raises, mismatches (beyond its tolerance, `PATH_CHECKS`) or is slower.
    checked: tuple[str, ...] = ()
    # The checked paths that failed their check (set on `QueueModel.fast_paths`); `notes` says why.
    dropped: tuple[str, ...] = ()
    # Why a path asked for does not run (set on `QueueModel.fast_paths` by `prepare_model`).
    notes: tuple[str, ...] = ()

    def running(self) -> dict[str, bool]:
        """Each path's name -> whether it runs (or is being prepared to)."""
        return {name: getattr(self, name) for name in PATH_NAMES}


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


# The switchable paths, in the order `prepare_model` applies and checks them.
SWITCHED_PATHS = ("channels_last", "bfloat16_decoder", "decode_thread", "compile", "cuda_graphs")
PATH_NAMES = ("merged_reference_attention", *SWITCHED_PATHS)
# Paths whose numbers or speed can differ from eager, so that an "auto" one is checked at warm-up. The
# decode thread runs the same operations on another thread, in the same order per stream.
CHECKED_PATHS = frozenset({"channels_last", "bfloat16_decoder", "compile", "cuda_graphs"})


def default_fast_paths(device: torch.device, *, serving: bool = False) -> FastPaths:
    """The paths measured faster on this kind of device, or expected to be and checked at warm-up.

    CPU: the codec in channels-last memory (the demo's decoder 33 -> 23 ms per call at one thread),
    and the decode thread when torch's threads leave as many cores free as they use (the server's
    one thread of 2 cores: the demo's steady call 137 -> 106-115 ms); with fewer cores to spare its
    threads would only compete with torch's, which is not measured. The decoder in bfloat16 where
    the CPU has bfloat16 instructions (on an AVX-512 BF16 EPYC the tiny fixture's decoder 75 -> 37 ms
    a call at 2 threads, the demo's 19 -> 9 ms).
    Compiling makes the demo model's steady call 1.6-1.8x faster at one thread (v3: 132-166 -> 80-100
    ms, 20-25 fps) but costs minutes of compilation at a first start on 2 cores. A server (`serving`)
    compiles in the background while it serves eager (`prepare_model(background=True)`), so there it
    is on; a one-shot tool (animate, bench) would wait for it, so there it is off.
    CUDA: compiled and replayed as CUDA graphs, never yet measured on a GPU: both are checked against
    eager at warm-up (`FastPaths.checked`) and dropped, with the reason, if they fail; channels-last
    is not measured there, so it stays off.
    """
    if device.type == "cuda":
        paths = FastPaths(compile=True, cuda_graphs=True)
    else:
        paths = FastPaths(channels_last=True, decode_thread=2 * torch.get_num_threads() <= available_cores(),
                          bfloat16_decoder=has_bfloat16_instructions(), compile=serving)
    # Defaults are what nobody asked for: each that can differ from eager is checked at warm-up.
    return dataclasses.replace(paths, checked=tuple(name for name in SWITCHED_PATHS
                                                    if name in CHECKED_PATHS and getattr(paths, name)))


def choose_fast_paths(device: torch.device, *, compile: Switch = "auto", cuda_graphs: Switch = "auto",
                      channels_last: Switch = "auto", decode_thread: Switch = "auto",
                      bfloat16_decoder: Switch = "auto", merged_reference_attention: bool = True,
                      serving: bool = False) -> FastPaths:
    """The device's default paths with those switched on or off explicitly; CUDA graphs asked
    for on another device, or the decode thread or bfloat16 decoder on a GPU, are a `ConfigError`
    (not silently skipped). A path on by default ("auto") is `checked` at warm-up; one asked for
    ("on") is not: it runs, or preparing the model fails."""
    if cuda_graphs == "on" and device.type != "cuda":
        raise ConfigError(f"CUDA graphs need a CUDA device, not {device}")
    if decode_thread == "on" and device.type != "cpu":
        raise ConfigError(f"the decode thread is a CPU path (a {device} call runs behind the host already)")
    if bfloat16_decoder == "on" and device.type != "cpu":
        raise ConfigError(f"the bfloat16 decoder is a CPU path (choose the {device} model's dtype with --dtype)")
    default = default_fast_paths(device, serving=serving)
    switches = dict(compile=compile, cuda_graphs=cuda_graphs, channels_last=channels_last,
                    decode_thread=decode_thread, bfloat16_decoder=bfloat16_decoder)
    chosen = {name: getattr(default, name) if switch == "auto" else switch == "on" for name, switch in switches.items()}
    checked = tuple(name for name in default.checked if switches[name] == "auto")
    return FastPaths(merged_reference_attention=merged_reference_attention, checked=checked, **chosen)


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


