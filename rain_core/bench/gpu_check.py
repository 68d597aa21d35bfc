"""`rain-avatar gpu-check`: every GPU figure the project needs, from one command, in a fixed time.

A lent GPU machine is rare and short-lived (minutes), so one run measures everything, the most
valuable figure first:

- the official profile (random weights, 512x512, G=P=4) eager: fps, ms per call, UNet TFLOP/s and
  its fraction of the peak, peak memory, first-frame latency;
- the matmul peak in float16 and bfloat16: the device's practical ceiling, measured in the same run;
- the same profile with the paths the server would serve (the device's defaults), then compiled,
  with CUDA graphs, and both, each measured once (a path set measured already is not measured again);
- several streams batched into one call (aggregate and per-stream fps);
- G x P variants of the queue;
- sections a caller adds (the CLI adds the server's model worker; `rain_core` knows no server);
- steady memory over many calls, last, on the served-paths model kept from its section.

Every section has its own time limit (`SECTION_LIMITS_S`), so the whole check fits its total by
construction. A section's loops stop when its limit is reached and keep what they measured
(status "timeout"); one still running `hang_grace_s` later (a compile cannot be told to stop) is
interrupted, and one that outlives even that ends the process with the report written. Only the
served-paths and compiled sections compile, each at batch size 1; batched streams, variants and
the model worker run uncompiled, so a GPU run makes one cold compile (the compiled sections after
it compile the same graphs, which inductor's cache serves). The report (`check_report`) is
written after every section, with the graphs each section compiled, counted.

Each section catches its own failure (its error text goes into the report and the next section
runs). Speed does not depend on the weights' values, so every model here has random weights
(`RainComponents.random`): nothing is downloaded. Every measured model is built afresh, so that what
one fast path does to the networks never leaks into another's figures; steady memory alone reuses
the served-paths model, so that it measures what a server runs without compiling it again.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rain_core.bench.check_report import CheckReport, SectionReport
from rain_core.bench.engine import (
    fast_paths_ran,
    measure_matmul_peak,
    peak_memory_mb,
    synchronize,
    unet_flops_per_call,
)
from rain_core.choices import GPU_CHECK_SECTIONS
from rain_core.config import ConfigError, RainConfig, profile_config
from rain_core.stream.batching import step_streams
from rain_core.stream.components import RainComponents
from rain_core.stream.engine import QueueModel, StreamEngine, frames_to_uint8
from rain_core.stream.fast_paths import FastPaths, default_fast_paths
from rain_core.stream.preparation import prepare_model

# Seconds each section may take on the device machine (official profile, float16, one GPU). The
# whole check's budget is their sum (360 s) and two hang graces (30 s): sections that overran eat
# into it, and the last one can outlive it by two graces more (interrupted, then the process
# ended), 420 s at worst; with the process's start (imports, CUDA context, the wheels' install:
# under 20 s) the command fits 8 minutes. docs/benchmarks.md ("GPU check") gives the table.
SECTION_LIMITS_S: dict[str, float] = {
    "profile_eager": 30.0,
    "matmul_peak": 10.0,
    # The one cold compile (batch size 1) and CUDA-graph capture of the served paths.
    "profile_defaults": 110.0,
    # The same graphs as profile_defaults' compile, from inductor's cache, where that section compiled.
    "profile_compiled": 40.0,
    "profile_cuda_graphs": 20.0,
    "profile_compiled_cuda_graphs": 40.0,
    "batched_streams": 30.0,
    "group_variants": 25.0,
    "model_worker": 30.0,
    "steady_memory": 20.0,
}

# Left of the steady-memory section's limit when its loop stops: time to measure memory and write.
_FINISHING_S = 2.0


@dataclass(frozen=True)
class GpuCheckOptions:
    """What the check measures and for how long. The defaults are the GPU run the issue asks for."""

    profile: str = "official"
    device: str = "cuda"
    dtype: str = "float16"
    # G and P of the main measurements; None: the profile's.
    groups: int | None = None
    per_group: int | None = None
    # Seconds of each steady-state fps measurement, and its fewest calls whatever the time (a
    # section's time limit still ends it).
    seconds: float = 3.0
    min_calls: int = 5
    # Calls after the queue has filled and before timing (cuDNN autotuning, lazy compilation, capture).
    warmup_calls: int = 3
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    # (G, P) of the queue variants.
    variants: tuple[tuple[int, int], ...] = ((4, 1), (4, 2), (3, 4))
    worker_streams: int = 4
    # Calls of the steady-memory loop (the goal is 10,000; its time limit cuts it short, and says so).
    steady_calls: int = 2000
    # Every section's limit (`SECTION_LIMITS_S`) times this: 1 on the GPU the limits were set for.
    limit_scale: float = 1.0
    # (section, seconds): limits that replace the scaled table's.
    limits_s: tuple[tuple[str, float], ...] = ()
    # Seconds for the whole check; None: the chosen sections' limits and two hang graces. A section
    # is skipped, with that reason, when less than half its limit is left; it gets at most what is left.
    budget_s: float | None = None
    # Seconds past its limit after which a running section is interrupted (a section inside a
    # compile does not see its limit), and as many again after which the check ends the process
    # with the report written (exit status 3). None: neither (the dry run inside the test process).
    hang_grace_s: float | None = 15.0
    matmul_size: int = 8192
    sections: tuple[str, ...] = GPU_CHECK_SECTIONS
    # The fast paths the server would serve (the served-paths and steady-memory sections; batched
    # streams, variants and the model worker take them uncompiled); None: the device's.
    stream_paths: FastPaths | None = None
    seed: int = 0
    progress: bool = True
    # torch.compile's backend for the compiled sections; the dry run only traces ("eager"), since a
    # CPU inductor build of even the tiny model takes minutes on 2 cores.
    compile_backend: str = "inductor"
    dry_run: bool = False

    @classmethod
    def dry_run_defaults(cls) -> GpuCheckOptions:
        """The same sections on the CPU at the tiny profile, one or two calls each: seconds, for CI.

        Its limits are scaled far beyond what it needs: a loaded CI machine must not cut a section.
        """
        return cls(
            profile="tiny", device="cpu", dtype="float32", groups=2, per_group=2, seconds=0.0, min_calls=1,
            warmup_calls=1, batch_sizes=(1, 2), variants=((2, 1), (3, 2)), worker_streams=2, steady_calls=3,
            limit_scale=10.0, hang_grace_s=None, matmul_size=256, dry_run=True, compile_backend="eager",
        )

    def limit_s(self, section: str) -> float:
        given = dict(self.limits_s)
        return given[section] if section in given else SECTION_LIMITS_S[section] * self.limit_scale


class Budget:
    """The check's wall-clock allowance, counted from its start."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()


class SectionSkipped(Exception):
    """A section that cannot run here (e.g. CUDA graphs on a CPU); the message says why."""


class SectionTimeout(BaseException):
    """Raised in the check's thread when a section outlives its limit and grace.

    A BaseException, so that the sections' per-row `except Exception` cannot swallow it.
    """


@dataclass
class CheckContext:
    """What every section reads: the options, the budget, the main config, the measured peaks;
    and what a section writes: its rows, as it measures them."""

    options: GpuCheckOptions
    budget: Budget
    config: RainConfig
    # Matmul TFLOP/s per dtype name, once the peak section has run.
    matmul_peaks: dict[str, float] = field(default_factory=dict)
    # The running section's rows, added as they are measured, so that a section cut at its limit
    # keeps them; and when its limit ends (perf_counter seconds).
    rows: list[dict[str, Any]] = field(default_factory=list)
    deadline: float = float("inf")
    # Set when a loop stopped early at the section's limit.
    cut: bool = False
    section_name: str = ""
    # Fast paths measured by a profile section so far (their `_paths_key`) -> that section's name.
    measured_paths: dict[tuple, str] = field(default_factory=dict)
    # The served-paths model, kept from its section for steady memory (None when not kept).
    kept_model: QueueModel | None = None
    kept_mb: float = 0.0
    _flops: dict[tuple[int, int], int] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.config.torch_device

    @property
    def stream_paths(self) -> FastPaths:
        paths = self.options.stream_paths
        return default_fast_paths(self.device) if paths is None else paths

    @property
    def uncompiled_paths(self) -> FastPaths:
        """The served paths without compilation: each batch size or G x P shape would be a cold compile."""
        return dataclasses.replace(self.stream_paths, compile=False)

    def add_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """Add a row now (and fill it in after), so a section cut short keeps what it measured."""
        self.rows.append(row)
        return row

    def seconds_left(self) -> float:
        return self.deadline - time.perf_counter()

    def time_up(self) -> bool:
        """Whether the section's limit is reached; marks the section as cut when it is."""
        if self.seconds_left() > 0:
            return False
        self.cut = True
        return True

    def variant_config(self, groups: int, per_group: int) -> RainConfig:
        return self.config.with_overrides(noise_groups=groups, num_inference_steps=groups, frames_per_group=per_group)

    def unet_flops(self, config: RainConfig) -> int:
        """UNet FLOPs of one call over the full queue of one stream (counted once per G x P)."""
        key = (config.noise_groups, config.frames_per_group)
        if key not in self._flops:
            self._flops[key] = unet_flops_per_call(config)
        return self._flops[key]

    def fraction_of_peak(self, tflops: float) -> float | None:
        peak = self.matmul_peaks.get(self.config.dtype)
        return tflops / peak if peak else None

    def release_kept_model(self) -> None:
        if self.kept_model is not None:
            release(self.kept_model)
        self.kept_model, self.kept_mb = None, 0.0


# A section adds its rows with `ctx.add_row` as it measures them.
SectionRun = Callable[[CheckContext], None]


@dataclass(frozen=True)
class Section:
    name: str
    title: str
    run: SectionRun
    notes: tuple[str, ...] = ()


# Measuring streams ----------------------------------------------------------------------


@dataclass
class StreamInputs:
    reference: np.ndarray  # [H, W, 3] uint8
    drivings: list[np.ndarray]  # groups of P driving images [P, H, W, 3] uint8

    @classmethod
    def random(cls, config: RainConfig, seed: int) -> StreamInputs:
        # Random images, not blank ones: kernels can run faster on zeros than on real data.
        rng = np.random.default_rng(seed)
        h, w, p = config.height, config.width, config.frames_per_group
        return cls(
            reference=rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
            drivings=[rng.integers(0, 256, (p, h, w, 3), dtype=np.uint8) for _ in range(4)],
        )


@dataclass
class Timing:
    calls: int
    seconds: float

    @property
    def call_ms(self) -> float:
        return 1000 * self.seconds / self.calls


def prepared_model(ctx: CheckContext, config: RainConfig, paths: FastPaths, batch_sizes: Sequence[int] = (1,)
                   ) -> tuple[QueueModel, float]:
    """A fresh random-weights model prepared with `paths`; and the seconds `prepare_model` took
    (compilation, capture)."""
    components = RainComponents.random(config, seed=ctx.options.seed)
    start = time.perf_counter()
    model = prepare_model(components, paths, batch_sizes=tuple(batch_sizes), progress=ctx.options.progress,
                          compile_backend=ctx.options.compile_backend)
    return model, time.perf_counter() - start


def open_streams(model: QueueModel, count: int, inputs: StreamInputs, seed: int) -> list[StreamEngine]:
    engines = [StreamEngine(model, seed=seed + i) for i in range(count)]
    for engine in engines:
        engine.set_reference(inputs.reference)
    return engines


def step_all(engines: Sequence[StreamEngine], inputs: StreamInputs, call: int) -> list[torch.Tensor | None]:
    """One call of every stream, batched as the server batches them."""
    drivings = inputs.drivings
    return step_streams(engines, [drivings[(call + i) % len(drivings)] for i in range(len(engines))])


def fill_and_warm(ctx: CheckContext, engines: Sequence[StreamEngine], inputs: StreamInputs) -> float:
    """Fill the streams' queues and run the warm-up calls; returns the seconds it took."""
    start = time.perf_counter()
    for call in range(engines[0].config.noise_groups + ctx.options.warmup_calls):
        step_all(engines, inputs, call)
    synchronize(ctx.device)
    return time.perf_counter() - start


def time_calls(ctx: CheckContext, engines: Sequence[StreamEngine], inputs: StreamInputs, desc: str) -> Timing:
    """Steady-state calls of full queues for `options.seconds` (at least `min_calls`, at least one
    whatever the section's limit says), synchronised at both ends."""
    options = ctx.options
    synchronize(ctx.device)
    calls, start = 0, time.perf_counter()
    with tqdm(desc=desc, unit="call", disable=not options.progress, file=sys.stderr, leave=False) as bar:
        while calls == 0 or (
            (calls < options.min_calls or time.perf_counter() - start < options.seconds) and not ctx.time_up()
        ):
            step_all(engines, inputs, calls)
            calls += 1
            bar.update()
    synchronize(ctx.device)
    return Timing(calls, time.perf_counter() - start)


def first_frame_ms(ctx: CheckContext, model: QueueModel, inputs: StreamInputs) -> float:
    """Compute time from a new stream's first driving images to its first frame, on a warm model."""
    engine = open_streams(model, 1, inputs, ctx.options.seed + 1000)[0]
    synchronize(ctx.device)
    start, call = time.perf_counter(), 0
    while engine.frames_out == 0:
        step_all([engine], inputs, call)
        call += 1
    synchronize(ctx.device)
    return 1000 * (time.perf_counter() - start)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def free_memory(device: torch.device) -> None:
    """Return what the last section held, so that the next one's peak memory is its own."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def release(model: QueueModel) -> None:
    """End what a prepared model runs beside it (its decode thread), before it is dropped."""
    decode_thread = getattr(model, "decode_thread", None)
    if decode_thread is not None:
        decode_thread.close()


def graphs_compiled() -> int | None:
    """Graphs torch.compile has compiled in this process so far (dynamo's own count); None where
    this torch does not keep it. A section's difference of two readings is the compiles it made."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return None
    return int(counters["stats"]["unique_graphs"])


def stream_figures(ctx: CheckContext, config: RainConfig, timing: Timing, streams: int) -> dict[str, Any]:
    """fps, ms per call and the UNet's achieved rate of `streams` streams stepped in one call.

    The UNet's FLOPs are divided by the whole call's time (pose guider, scheduler, decoder and
    launch gaps included): the rate the stream achieves, a lower bound for the UNet alone.
    """
    fps = streams * config.frames_per_group * timing.calls / timing.seconds
    tflops = streams * ctx.unet_flops(config) / (timing.seconds / timing.calls) / 1e12
    return dict(
        fps=fps,
        call_ms=timing.call_ms,
        unet_tflops=tflops,
        fraction_of_peak=ctx.fraction_of_peak(tflops),
        calls_timed=timing.calls,
    )


def error_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


# Sections -------------------------------------------------------------------------------


def _matmul_peak(ctx: CheckContext) -> None:
    # Both half precisions on a GPU (the issue compares against either), and always the check's own dtype.
    dtypes = ("float16", "bfloat16", ctx.config.dtype) if ctx.device.type == "cuda" else (ctx.config.dtype,)
    for name in dict.fromkeys(dtypes):
        tflops = measure_matmul_peak(ctx.device, getattr(torch, name), size=ctx.options.matmul_size)
        ctx.matmul_peaks[name] = tflops
        ctx.add_row(dict(dtype=name, size=ctx.options.matmul_size, tflops=tflops))


def _paths_key(paths: FastPaths) -> tuple:
    """What a set of fast paths runs (which paths, not whether they are checked or why any did not run):
    equal keys measure the same thing."""
    return tuple(paths.running().items())


def _profile(paths_of: Callable[[CheckContext], FastPaths], *, keep: bool = False) -> SectionRun:
    """A section measuring the main profile with the fast paths `paths_of` chooses. A set of paths
    an earlier section measured is not measured again. `keep`: the model stays for steady memory."""

    def run(ctx: CheckContext) -> None:
        paths = paths_of(ctx)
        if paths.cuda_graphs and ctx.device.type != "cuda":
            raise SectionSkipped(f"CUDA graphs need a CUDA device, not {ctx.device}")
        key = _paths_key(paths)
        if key in ctx.measured_paths:
            raise SectionSkipped(f"the same fast paths as {ctx.measured_paths[key]} ({_paths_label(paths)}), "
                                 "measured there")
        config = ctx.config
        reset_peak_memory(ctx.device)
        model, prepare_s = prepared_model(ctx, config, paths)
        try:
            row = ctx.add_row(dict(paths=_paths_label(paths), prepare_s=prepare_s))
            inputs = StreamInputs.random(config, ctx.options.seed)
            engines = open_streams(model, 1, inputs, ctx.options.seed)
            row["warmup_s"] = fill_and_warm(ctx, engines, inputs)
            latency_ms = first_frame_ms(ctx, model, inputs)
            timing = time_calls(ctx, engines, inputs, f"{config.name} {_paths_label(paths)}")
            row.update(
                **stream_figures(ctx, config, timing, 1),
                peak_mem_mb=peak_memory_mb(ctx.device),
                first_frame_compute_ms=latency_ms,
                first_frame_after_frames=config.queue_length,
                fast_paths_requested=dataclasses.asdict(paths),
                fast_paths_ran=fast_paths_ran(model),
            )
            ctx.measured_paths[key] = ctx.section_name
            if keep and "steady_memory" in ctx.options.sections:
                engines = []
                gc.collect()
                ctx.kept_model = model
                ctx.kept_mb = torch.cuda.memory_allocated(ctx.device) / 2**20 if ctx.device.type == "cuda" else 0.0
        finally:
            if ctx.kept_model is not model:
                release(model)

    return run


def _named(ctx: CheckContext, *, compile: bool, cuda_graphs: bool) -> FastPaths:
    """The device's defaults with compiling and CUDA graphs as named, unchecked: these sections measure
    exactly what they name (a failure is the section's error), where the defaults section measures what
    `serve` runs, checks included."""
    return dataclasses.replace(default_fast_paths(ctx.device), compile=compile, cuda_graphs=cuda_graphs, checked=())


def _eager(ctx: CheckContext) -> FastPaths:
    return _named(ctx, compile=False, cuda_graphs=False)


def _compiled(ctx: CheckContext) -> FastPaths:
    return _named(ctx, compile=True, cuda_graphs=False)


def _cuda_graphs(ctx: CheckContext) -> FastPaths:
    return _named(ctx, compile=False, cuda_graphs=True)


def _compiled_cuda_graphs(ctx: CheckContext) -> FastPaths:
    return _named(ctx, compile=True, cuda_graphs=True)


def _served(ctx: CheckContext) -> FastPaths:
    return ctx.stream_paths


def _batched_streams(ctx: CheckContext) -> None:
    config, paths = ctx.config, ctx.uncompiled_paths
    sizes = ctx.options.batch_sizes
    model, prepare_s = prepared_model(ctx, config, paths, sizes)
    try:
        inputs = StreamInputs.random(config, ctx.options.seed)
        for streams in sizes:
            if ctx.time_up():
                break
            row = ctx.add_row(dict(streams=streams))
            try:
                reset_peak_memory(ctx.device)
                engines = open_streams(model, streams, inputs, ctx.options.seed)
                fill_and_warm(ctx, engines, inputs)
                timing = time_calls(ctx, engines, inputs, f"{streams} streams")
                figures = stream_figures(ctx, config, timing, streams)
                fps = figures.pop("fps")
                row.update(aggregate_fps=fps, per_stream_fps=fps / streams, **figures)
                row["peak_mem_mb"] = peak_memory_mb(ctx.device)
            except Exception as exc:  # noqa: BLE001 - recorded; the other batch sizes still run
                row["error"] = error_text(exc)
            # Dropped before the next size, whose peak memory is then its own.
            engines = []
            free_memory(ctx.device)
        if ctx.rows:
            ctx.rows[0].update(prepare_s=prepare_s, fast_paths_ran=fast_paths_ran(model))
    finally:
        release(model)


def _group_variants(ctx: CheckContext) -> None:
    for groups, per_group in ctx.options.variants:
        if ctx.time_up():
            break
        row = ctx.add_row(dict(variant=f"{groups}x{per_group}", groups=groups, per_group=per_group))
        model = engines = None
        try:
            config = ctx.variant_config(groups, per_group)
            reset_peak_memory(ctx.device)
            model, prepare_s = prepared_model(ctx, config, ctx.uncompiled_paths)
            inputs = StreamInputs.random(config, ctx.options.seed)
            engines = open_streams(model, 1, inputs, ctx.options.seed)
            fill_and_warm(ctx, engines, inputs)
            latency_ms = first_frame_ms(ctx, model, inputs)
            row.update(stream_figures(ctx, config, time_calls(ctx, engines, inputs, f"G x P {groups}x{per_group}"), 1))
            row.update(
                unet_tflop_per_call=ctx.unet_flops(config) / 1e12,
                first_frame_compute_ms=latency_ms,
                first_frame_after_frames=config.queue_length,
                peak_mem_mb=peak_memory_mb(ctx.device),
                prepare_s=prepare_s,
            )
        except Exception as exc:  # noqa: BLE001 - recorded; the other variants still run
            row["error"] = error_text(exc)
        finally:
            if model is not None:
                release(model)
        # Dropped before the next variant is built, whose peak memory is then its own.
        model = engines = None
        free_memory(ctx.device)


def _steady_memory(ctx: CheckContext) -> None:
    config, device = ctx.config, ctx.device
    model, reused = ctx.kept_model, ctx.kept_model is not None
    # Without the served model (its section did not finish, or did not run), an uncompiled one:
    # a compile here would be a cold one, more than this section's limit.
    paths = ctx.stream_paths if reused else ctx.uncompiled_paths
    if model is None:
        model, _ = prepared_model(ctx, config, paths)
    try:
        inputs = StreamInputs.random(config, ctx.options.seed)
        engines = open_streams(model, 1, inputs, ctx.options.seed)
        fill_and_warm(ctx, engines, inputs)
        gc.collect()
        before = _memory_now(device)
        reset_peak_memory(device)
        wanted, calls = ctx.options.steady_calls, 0
        with tqdm(total=wanted, desc="steady memory", unit="call", disable=not ctx.options.progress,
                  file=sys.stderr, leave=False) as bar:
            # Running until the limit is this section's plan, not a cut: the row says how far it got.
            while calls < wanted and (calls == 0 or ctx.seconds_left() > _FINISHING_S):
                # Frames go to the host as the server sends them: a leak on either side shows.
                frames_to_uint8(step_all(engines, inputs, calls)[0])
                calls += 1
                bar.update()
        synchronize(device)
        gc.collect()
        after = _memory_now(device)
        row = ctx.add_row(dict(paths=_paths_label(paths), model_from_served_section=reused, calls=calls,
                               calls_asked=wanted, cut_short_by_limit=calls < wanted))
        for key in before:
            row[f"{key}_before"] = before[key]
            row[f"{key}_growth"] = None if before[key] is None else after[key] - before[key]
        row["peak_allocated_mb_during"] = (torch.cuda.max_memory_allocated(device) / 2**20
                                           if device.type == "cuda" else None)
    finally:
        if reused:
            ctx.release_kept_model()
        else:
            release(model)


def _memory_now(device: torch.device) -> dict[str, float | None]:
    cuda = device.type == "cuda"
    return dict(
        allocated_mb=torch.cuda.memory_allocated(device) / 2**20 if cuda else None,
        reserved_mb=torch.cuda.memory_reserved(device) / 2**20 if cuda else None,
        host_rss_mb=_host_rss_mb(),
    )


def _host_rss_mb() -> float | None:
    """The process's resident memory now (Linux); None elsewhere."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _paths_label(paths: FastPaths) -> str:
    on = [name for name, value in dataclasses.asdict(paths).items() if value and name != "notes"]
    return "+".join(on) if on else "plain"


_PROFILE_NOTES = (
    "Random weights; one stream; frames stay on the device (the model worker section copies them out).",
    "unet_tflops: the UNet's counted FLOPs per call over the whole call's time, so a lower bound for the "
    "UNet alone; fraction_of_peak divides it by the matmul peak of the same dtype measured in this run.",
    "first_frame_compute_ms: compute from a new stream's first driving images to its first frame on a warm "
    "model (G calls); live latency adds the time the camera takes to deliver G*P frames.",
    "peak_mem_mb: the device's peak allocated memory since the section began (on a CPU: the process's peak RSS).",
)

_UNCOMPILED = ("Uncompiled (the served paths less compilation): compiling every batch size or G x P shape "
               "would be a cold compile each, more than the check's time allows; profile_defaults against "
               "profile_eager gives compilation's gain.")

MEASUREMENTS: tuple[Section, ...] = (
    Section("profile_eager", "Main profile, eager", _profile(_eager), notes=_PROFILE_NOTES),
    Section("matmul_peak", "Matrix-product peak", _matmul_peak,
            notes=("A square matmul of random operands, timed after three warm-up products.",)),
    Section("profile_defaults", "Main profile, the served fast paths (the device's defaults)",
            _profile(_served, keep=True),
            notes=("The paths `serve` would run here (with the command's fast-path switches); the model is "
                   "kept for the steady-memory section.",)),
    Section("profile_compiled", "Main profile, compiled", _profile(_compiled)),
    Section("profile_cuda_graphs", "Main profile, CUDA graphs", _profile(_cuda_graphs)),
    Section("profile_compiled_cuda_graphs", "Main profile, compiled and CUDA graphs",
            _profile(_compiled_cuda_graphs)),
    Section("batched_streams", "Streams batched into one call", _batched_streams,
            notes=("All streams at the same fill level, stepped with `step_streams` as the model worker does; "
                   "the model is prepared for every batch size at once.", _UNCOMPILED)),
    Section("group_variants", "G x P variants", _group_variants,
            notes=("A new model per variant; the per-frame UNet cost depends on G, not on P.", _UNCOMPILED)),
)

STEADY_MEMORY = Section(
    "steady_memory", "Steady memory", _steady_memory,
    notes=("Growth from after the warm-up to after the last call; the goal is none over 10,000 calls. The "
           "loop stops at the section's time limit, and says so.",),
)


# Running the check ----------------------------------------------------------------------


def check_config(options: GpuCheckOptions) -> RainConfig:
    """The main measurements' config; a `ConfigError` when the options cannot run here."""
    device = torch.device(options.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {options.device}: this machine has no CUDA device (--dry-run checks the "
                          "check itself on the CPU)")
    overrides: dict[str, Any] = dict(device=options.device, dtype=options.dtype)
    if options.groups is not None:
        overrides.update(noise_groups=options.groups, num_inference_steps=options.groups)
    if options.per_group is not None:
        overrides["frames_per_group"] = options.per_group
    return profile_config(options.profile).with_overrides(**overrides)


def describe_environment(device: torch.device) -> dict[str, Any]:
    environment: dict[str, Any] = dict(
        python=platform.python_version(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        device=str(device),
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        commit=_git_commit(),
    )
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        environment.update(
            gpu=props.name,
            compute_capability=f"{props.major}.{props.minor}",
            gpu_memory_gb=props.total_memory / 2**30,
            multiprocessors=props.multi_processor_count,
            cudnn=torch.backends.cudnn.version(),
        )
    return environment


def _git_commit() -> str | None:
    """The checkout's commit, where the check runs from one (a copied tree has no .git)."""
    try:
        result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def _fill_fractions(report: CheckReport, ctx: CheckContext) -> None:
    """The fraction of the peak for rows measured before the peak was (the eager profile runs first)."""
    for section in report.sections:
        for row in section.rows:
            if row.get("fraction_of_peak") is None and isinstance(row.get("unet_tflops"), float):
                row["fraction_of_peak"] = ctx.fraction_of_peak(row["unet_tflops"])


class _Watchdog:
    """Watches the running section from a thread of its own: past its limit and the grace, it
    interrupts the check's thread (`SectionTimeout`, raised by a signal handler, so it lands even in
    a compile's Python code); as long again after that, it calls `hard_stop`, which ends the process.

    Interrupting needs the check to run on the main thread (only it runs signal handlers); elsewhere
    the first stage is the hard stop.
    """

    def __init__(self, grace_s: float, hard_stop: Callable[[], None]):
        self.grace_s = grace_s
        self.hard_stop = hard_stop
        self.lock = threading.Lock()
        self.section: str | None = None
        self.deadline = 0.0
        self.interrupted = False
        self._stop = threading.Event()
        self._old_handler: Any = None
        self.can_interrupt = threading.current_thread() is threading.main_thread() and hasattr(signal, "pthread_kill")
        if self.can_interrupt:
            self._old_handler = signal.signal(signal.SIGUSR1, self._on_signal)
        self._thread = threading.Thread(target=self._watch, name="gpu-check-watchdog", daemon=True)
        self._thread.start()

    def enter(self, section: str, deadline: float) -> None:
        with self.lock:
            self.section, self.deadline, self.interrupted = section, deadline, False

    def leave(self) -> None:
        with self.lock:
            self.section = None

    def close(self) -> None:
        self.leave()
        self._stop.set()
        self._thread.join()
        if self.can_interrupt:
            signal.signal(signal.SIGUSR1, self._old_handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        # A signal sent just as its section ended finds none running, and is dropped.
        with self.lock:
            section = self.section if self.interrupted else None
        if section is not None:
            raise SectionTimeout(f"{section} was still running {self.grace_s:.0f} s after its time limit, "
                                 "and was interrupted")

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            with self.lock:
                if self.section is None:
                    continue
                late = time.perf_counter() - self.deadline
                interrupt = self.can_interrupt and not self.interrupted and late > self.grace_s
                if interrupt:
                    self.interrupted = True
                stop = late > (2 if self.can_interrupt else 1) * self.grace_s
            if interrupt:
                signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
            elif stop:
                self.hard_stop()


def run_section(section: Section, ctx: CheckContext) -> SectionReport:
    """Run one section within its time limit, whatever happens in it: its figures, its error, its
    timeout, or why it was skipped."""
    options = ctx.options
    limit = options.limit_s(section.name)
    left = ctx.budget.left()
    notes = list(section.notes)
    if left < limit / 2:
        reason = f"time budget: {left:.0f} s left, the section's limit is {limit:.0f} s"
        return SectionReport(section.name, section.title, "skipped", 0.0, notes=notes, reason=reason, limit_s=limit)
    limit = min(limit, left)
    if ctx.kept_model is not None and ctx.device.type == "cuda":
        notes.append(f"peak_mem_mb includes the {ctx.kept_mb:.0f} MB allocated while the served-paths model "
                     "is kept for the steady-memory section.")
    ctx.rows, ctx.cut, ctx.section_name = [], False, section.name
    compiled_before = graphs_compiled()
    start = time.perf_counter()
    ctx.deadline = start + limit

    def report(status: str, reason: str | None = None) -> SectionReport:
        compiled_after = graphs_compiled()
        compiled = None if compiled_before is None or compiled_after is None else compiled_after - compiled_before
        return SectionReport(section.name, section.title, status, time.perf_counter() - start,  # type: ignore[arg-type]
                             rows=list(ctx.rows), notes=notes, reason=reason, limit_s=limit,
                             compiled_graphs=compiled)

    try:
        section.run(ctx)
    except SectionSkipped as skip:
        return report("skipped", str(skip))
    except SectionTimeout as timeout:
        return report("timeout", f"{timeout}; the figures are those measured before")
    except Exception as exc:  # noqa: BLE001 - one broken path must not lose the other figures
        notes.append("traceback: " + traceback.format_exc(limit=-8))
        return report("error", error_text(exc))
    if ctx.cut:
        return report("timeout", f"its time limit ({limit:.0f} s) ran out; the figures are those measured before")
    return report("ok")


def run_gpu_check(options: GpuCheckOptions, *, extra_sections: Sequence[Section] = (),
                  out_dirs: Sequence[Path] = (), on_hard_stop: Callable[[CheckReport], None] | None = None
                  ) -> CheckReport:
    """Run the chosen sections in order (`extra_sections` before steady memory), each within its
    time limit, writing the report into `out_dirs` after each one; returns the finished report.

    A section still running `options.hang_grace_s` past its limit is interrupted; one that
    outlives twice that (stuck where no Python runs) is recorded as such, the report written and
    handed to `on_hard_stop`, and the process ends (exit status 3): torch cannot be made to drop a
    compilation, and the machine's time limit would lose the whole report.
    """
    config = check_config(options)
    chosen = [section for section in [*MEASUREMENTS, *extra_sections, STEADY_MEMORY]
              if section.name in options.sections]
    total = sum(options.limit_s(section.name) for section in chosen)
    # Room for two sections' overruns (each at most one grace, then interrupted) before the budget
    # starts skipping what follows.
    budget = Budget(total + 2 * (options.hang_grace_s or 0.0) if options.budget_s is None else options.budget_s)
    ctx = CheckContext(options=options, budget=budget, config=config)
    report = CheckReport(environment=describe_environment(config.torch_device), options=_options_json(options))
    report.environment["stream_paths"] = dataclasses.asdict(ctx.stream_paths)
    report.environment["limits_total_s"] = total
    directories = list(out_dirs)
    # The report is written by this thread after each section, and by the watchdog's hard stop.
    lock = threading.Lock()
    running: list[tuple[Section, float]] = []

    def hard_stop() -> None:
        with lock:
            names = [section.name for section in chosen]
            for section, started in running:
                report.sections.append(SectionReport(
                    section.name, section.title, "timeout", time.perf_counter() - started, rows=list(ctx.rows),
                    notes=list(section.notes), limit_s=options.limit_s(section.name),
                    reason=f"still running {2 * (options.hang_grace_s or 0):.0f} s after its time limit, even "
                           "when interrupted: the check stopped here"))
                for later in chosen[names.index(section.name) + 1:]:
                    report.sections.append(SectionReport(
                        later.name, later.title, "skipped", 0.0, limit_s=options.limit_s(later.name),
                        reason=f"the check stopped at {section.name}"))
            report.elapsed_s = budget.elapsed()
            report.write(directories)
            if on_hard_stop is not None:
                on_hard_stop(report)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(3)

    watchdog = None if options.hang_grace_s is None else _Watchdog(options.hang_grace_s, hard_stop)
    try:
        for section in chosen:
            if options.progress:
                sys.stderr.write(f"gpu-check: {section.title} (limit {options.limit_s(section.name):.0f} s, "
                                 f"{budget.left():.0f} s of the budget left)\n")
            with lock:
                running.append((section, time.perf_counter()))
            result = _run_watched(section, ctx, watchdog)
            free_memory(ctx.device)
            with lock:
                running.clear()
                report.sections.append(result)
                _fill_fractions(report, ctx)
                report.elapsed_s = budget.elapsed()
                report.write(directories)
            if options.progress:
                sys.stderr.write(f"gpu-check: {section.name} {result.status} in {result.seconds:.1f} s"
                                 + (f": {result.reason}" if result.reason else "") + "\n")
        with lock:
            report.finished = True
            report.elapsed_s = budget.elapsed()
            report.write(directories)
    finally:
        if watchdog is not None:
            watchdog.close()
        ctx.release_kept_model()
    return report


def _run_watched(section: Section, ctx: CheckContext, watchdog: _Watchdog | None) -> SectionReport:
    if watchdog is None:
        return run_section(section, ctx)
    result = None
    try:
        watchdog.enter(section.name, time.perf_counter() + min(ctx.options.limit_s(section.name),
                                                                max(ctx.budget.left(), 0.0)))
        result = run_section(section, ctx)
        watchdog.leave()
    except SectionTimeout as timeout:
        # Raised after the section had returned, before the watchdog heard so: its result stands.
        watchdog.leave()
        if result is None:
            result = SectionReport(section.name, section.title, "timeout", 0.0, rows=list(ctx.rows),
                                   notes=list(section.notes), reason=str(timeout))
    return result


def _options_json(options: GpuCheckOptions) -> dict[str, Any]:
    data = dataclasses.asdict(options)
    data["variants"] = [f"{g}x{p}" for g, p in options.variants]
    return data
