"""`rain-avatar bench`: steady-state speed of the streaming engine, split by stage.

Measures, after the queue has filled and a few warm-up calls: output fps, the time of one call
and of its stages, first-frame latency, peak memory, and the UNet's FLOP count (counted with
`torch.utils.flop_counter` on the meta device) against its measured time. The same run repeats
the fps measurement with the reference K/V cache switched off. The model runs the fast paths
asked for (`rain_core.stream.fast_paths`); the result names them, and those the model says ran.
"""

from __future__ import annotations

import dataclasses
import logging
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from rain_core.config import RainConfig
from rain_core.stream.components import RainComponents
from rain_core.stream.engine import Conditioning, Networks, QueueModel, StreamEngine
from rain_core.stream.fast_paths import FastPaths, default_fast_paths
from rain_core.stream.preparation import prepare_model

logger = logging.getLogger(__name__)

WARMUP_CALLS = 3

_Output = TypeVar("_Output")


class StageTimer:
    """Wall time per stage of a call (pose guider, UNet, scheduler, decoder).

    On CUDA it synchronises around each stage, which costs overlap: only the stage split uses it.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        yield
        synchronize(self.device)
        self.seconds[stage] += time.perf_counter() - start
        self.counts[stage] += 1

    def mean_ms(self, stage: str) -> float:
        return 1000 * self.seconds[stage] / max(self.counts[stage], 1)


class TimedQueueModel(QueueModel):
    """A `QueueModel` that times each stage into `timer` while one is set; live use never pays for it."""

    timer: StageTimer | None = None

    def _timed(self, stage: str, run: Callable[..., _Output], *args) -> _Output:
        if self.timer is None:
            return run(*args)
        with self.timer(stage):
            return run(*args)

    def pose_features(self, pose: torch.Tensor, networks: Networks | None = None) -> torch.Tensor:
        return self._timed("pose_guider", super().pose_features, pose, networks)

    def unet(
        self, latents: torch.Tensor, timesteps: torch.Tensor, features: torch.Tensor, conditioning: Conditioning,
        networks: Networks | None = None,
    ) -> torch.Tensor:
        return self._timed("unet", super().unet, latents, timesteps, features, conditioning, networks)

    def scheduler_step(
        self, model_output: torch.Tensor, timesteps: torch.Tensor, latents: torch.Tensor, step_noise: torch.Tensor
    ) -> torch.Tensor:
        return self._timed("scheduler", super().scheduler_step, model_output, timesteps, latents, step_noise)

    def decode(
        self,
        latents: torch.Tensor,
        memory: Sequence[torch.Tensor],
        reference: tuple[torch.Tensor, torch.Tensor] | None = None,
        networks: Networks | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self._timed("decoder", super().decode, latents, memory, reference, networks)


@dataclass
class BenchResult:
    profile: str
    device: str
    dtype: str
    height: int
    width: int
    groups: int
    per_group: int
    torch_threads: int
    # Frames a second stepped as the server steps (the decode thread overlapping the next call
    # where it runs); `call_ms` and the stages: one call after another, each timed alone.
    fps: float
    call_ms: float
    pose_guider_ms: float
    unet_ms: float
    scheduler_ms: float
    decoder_ms: float
    first_frame_latency_frames: int
    first_frame_latency_ms: float
    peak_mem_mb: float
    fps_no_kv_cache: float
    kv_cache_speedup: float
    unet_tflop_per_call: float
    unet_tflops: float
    frame_tflop: float
    matmul_peak_tflops: float | None
    unet_fraction_of_peak: float | None
    # The fast paths asked for, and those the prepared model says it runs (None: it does not say).
    fast_paths_requested: dict[str, bool]
    fast_paths_ran: dict | str | None


def unet_flops_per_call(config: RainConfig) -> int:
    """FLOPs of one denoising-UNet call over the full queue, counted on the meta device."""
    components = RainComponents.build(config, device="meta")
    unet = components.denoising_unet
    g, p = config.noise_groups, config.frames_per_group
    h, w = config.latent_height, config.latent_width
    with torch.device("meta"):
        sample = torch.empty(1, config.unet.in_channels, g * p, h, w)
        features = torch.empty(1, config.pose_guider.conditioning_embedding_channels, g * p, h, w)
        clip = torch.empty(1, 1, config.clip_embed_dim)
        cond = torch.empty(1, config.denoising_unet.cond_proj_dim)
        latents = torch.empty(1, config.unet.in_channels, h, w)
        reference = unet.cache_reference(components.reference_unet.compute_banks(latents, clip))
        timesteps = torch.zeros(g * p, dtype=torch.long)
        counter = FlopCounterMode(display=False)
        with counter:
            unet(sample, timesteps, clip, pose_features=features, time_cond=cond, reference=reference)
    return counter.get_total_flops()


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, *, size: int = 8192, iterations: int = 20) -> float:
    """Achieved TFLOP/s of a large square matmul: the device's practical ceiling for this dtype.

    Random operands, not zeros: a GPU multiplies zeros measurably faster than real data.
    """
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iterations):
        a @ b
    synchronize(device)
    return 2 * size**3 * iterations / (time.perf_counter() - start) / 1e12


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a host clock read after it times that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fast_paths_ran(model: QueueModel) -> dict | str | None:
    """What `model` says it runs (`QueueModel.fast_paths`, where prepared models name it), as JSON-ready
    data; None when the model does not say, so that a report never claims a path it cannot see."""
    ran = getattr(model, "fast_paths", None)
    if ran is None:
        return None
    if dataclasses.is_dataclass(ran) and not isinstance(ran, type):
        return dataclasses.asdict(ran)
    if isinstance(ran, dict):
        return dict(ran)
    return str(ran)


def _steady_fps(engine: StreamEngine, drivings: list[np.ndarray], seconds: float, desc: str, progress: bool) -> float:
    """Frames a second of a stream stepped as the server steps it: with `submit`, so that a decode
    thread (where the model has one) decodes while the next call runs; the clock stops once the
    last call's frames are decoded."""
    device = engine.model.device
    for driving in drivings[:WARMUP_CALLS]:
        engine.step(driving)
    synchronize(device)
    calls, start = 0, time.perf_counter()
    with tqdm(desc=desc, unit="frame", disable=not progress, file=sys.stderr) as bar:
        while True:
            engine.submit(drivings[calls % len(drivings)])
            calls += 1
            bar.update(engine.frames_per_call)
            if calls >= 2 and time.perf_counter() - start >= seconds:
                break
    engine.settle_decoding()
    synchronize(device)
    return calls * engine.frames_per_call / (time.perf_counter() - start)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux: the process's peak resident memory.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_bench(
    components: RainComponents,
    *,
    paths: FastPaths | None = None,
    seconds: float = 5.0,
    progress: bool = True,
    seed: int = 0,
) -> BenchResult:
    """Measure `components` streaming with `paths` (default: those `default_fast_paths` picks here)."""
    config = components.config
    device = config.torch_device
    paths = default_fast_paths(device) if paths is None else paths
    model = prepare_model(components, paths, batch_sizes=(1,), progress=progress)
    rng = np.random.default_rng(seed)
    reference = rng.integers(0, 256, (config.height, config.width, 3), dtype=np.uint8)
    drivings = [
        rng.integers(0, 256, (config.frames_per_group, config.height, config.width, 3), dtype=np.uint8)
        for _ in range(4)
    ]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    # First-frame latency: from the first driving image to the first output frame.
    engine = StreamEngine(model, seed=seed)
    engine.set_reference(reference)
    synchronize(device)
    start = time.perf_counter()
    calls = 0
    while engine.frames_out == 0:
        engine.step(drivings[calls % len(drivings)])
        calls += 1
    synchronize(device)
    first_ms = 1000 * (time.perf_counter() - start)
    latency_frames = engine.first_output_after or 0

    fps = _steady_fps(engine, drivings, seconds, "bench (K/V cache)", progress)

    # Stage split: a separate pass, since timing each stage synchronises the GPU. It runs the same
    # networks stage by stage, so the paths that work on a whole call (CUDA graphs) are not in it.
    timer = StageTimer(device)
    timed = TimedQueueModel(components)
    if model.preparation is not None and model.preparation.networks is not None:
        timed.networks = model.preparation.networks  # the compiled networks, stage by stage
    split = StreamEngine(timed, seed=seed)
    split.set_reference(reference)
    for i in range(config.noise_groups):
        split.step(drivings[i % len(drivings)])
    timed.timer = timer
    start = time.perf_counter()
    split_calls = max(3, int(fps / config.frames_per_group))  # about a second of calls
    for i in range(split_calls):
        split.step(drivings[i % len(drivings)])
    synchronize(device)
    call_ms = 1000 * (time.perf_counter() - start) / split_calls
    timed.timer = None
    stage = {s: timer.mean_ms(s) for s in ("pose_guider", "unet", "scheduler", "decoder")}

    uncached = StreamEngine(model, seed=seed, cache_reference_kv=False)
    uncached.set_reference(reference)
    for i in range(config.noise_groups):
        uncached.step(drivings[i % len(drivings)])
    fps_uncached = _steady_fps(uncached, drivings, seconds, "bench (no K/V cache)", progress)

    flops = unet_flops_per_call(config)
    unet_tflops = flops / (stage["unet"] / 1000) / 1e12 if stage["unet"] else 0.0
    peak = measure_matmul_peak(device, config.torch_dtype) if device.type == "cuda" else None
    return BenchResult(
        profile=config.name,
        device=str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        dtype=config.dtype,
        height=config.height,
        width=config.width,
        groups=config.noise_groups,
        per_group=config.frames_per_group,
        torch_threads=torch.get_num_threads(),
        fps=fps,
        call_ms=call_ms,
        pose_guider_ms=stage["pose_guider"],
        unet_ms=stage["unet"],
        scheduler_ms=stage["scheduler"],
        decoder_ms=stage["decoder"],
        first_frame_latency_frames=latency_frames,
        first_frame_latency_ms=first_ms,
        peak_mem_mb=peak_memory_mb(device),
        fps_no_kv_cache=fps_uncached,
        kv_cache_speedup=fps / fps_uncached,
        unet_tflop_per_call=flops / 1e12,
        unet_tflops=unet_tflops,
        frame_tflop=flops / 1e12 / config.frames_per_group,
        matmul_peak_tflops=peak,
        unet_fraction_of_peak=(unet_tflops / peak) if peak else None,
        fast_paths_requested=dataclasses.asdict(paths),
        fast_paths_ran=fast_paths_ran(model),
    )
