"""`rain-avatar gpu-check`: every GPU figure the project needs, from one command, within a time budget.

A lent GPU machine is rare and short-lived (minutes), so one run measures everything:

- the matmul peak in float16 and bfloat16: the device's practical ceiling, measured in the same run;
- the official profile (random weights, 512x512, G=P=4) eager, compiled, with CUDA graphs, and
  compiled with CUDA graphs: fps, ms per call, UNet TFLOP/s and its fraction of the peak, peak
  memory, first-frame latency, and the fast paths the model says it ran;
- several streams batched into one call (aggregate and per-stream fps);
- G x P variants of the queue;
- sections a caller adds (the CLI adds the server's model worker; `rain_core` knows no server);
- steady memory over many calls, last, since it takes whatever time is left.

Each section catches its own failure (its error text goes into the report and the next section
runs) and a section starts only when the budget still has the time it needs, else it is recorded as
skipped with that reason. The report (`check_report`) is written after every section.

Speed does not depend on the weights' values, so every model here has random weights
(`RainComponents.random`): nothing is downloaded. Every measured model is built afresh, so that what
one fast path does to the networks never leaks into another's figures.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import platform
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

# Left of the budget when the steady-memory loop stops: time to write the report and exit.
_FINISHING_S = 5.0


@dataclass(frozen=True)
class GpuCheckOptions:
    """What the check measures and for how long. The defaults are the GPU run the issue asks for."""

    profile: str = "official"
    device: str = "cuda"
    dtype: str = "float16"
    # G and P of the main measurements; None: the profile's.
    groups: int | None = None
    per_group: int | None = None
    # Seconds of each steady-state fps measurement, and its fewest calls whatever the time.
    seconds: float = 5.0
    min_calls: int = 5
    # Calls after the queue has filled and before timing (cuDNN autotuning, lazy compilation, capture).
    warmup_calls: int = 3
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    # (G, P) of the queue variants.
    variants: tuple[tuple[int, int], ...] = ((4, 1), (4, 2), (3, 4))
    worker_streams: int = 4
    # Calls of the steady-memory loop (the goal is 10,000; the budget cuts it short, and says so).
    steady_calls: int = 2000
    # Seconds for the whole check; sections that no longer fit are skipped with that reason.
    budget_s: float = 400.0
    # Seconds past the budget after which a section still running (a hung compile) ends the process,
    # with the report written; None: never (the dry run, which runs inside the test process).
    hard_stop_after_s: float | None = 45.0
    matmul_size: int = 8192
    sections: tuple[str, ...] = GPU_CHECK_SECTIONS
    # The fast paths of the streaming sections (batched, variants, steady memory); None: the device's.
    stream_paths: FastPaths | None = None
    seed: int = 0
    progress: bool = True
    # torch.compile's backend for the compiled sections; the dry run only traces ("eager"), since a
    # CPU inductor build of even the tiny model takes minutes on 2 cores.
    compile_backend: str = "inductor"
    dry_run: bool = False

    @classmethod
    def dry_run_defaults(cls) -> GpuCheckOptions:
        """The same sections on the CPU at the tiny profile, one or two calls each: seconds, for CI."""
        return cls(
            profile="tiny", device="cpu", dtype="float32", groups=2, per_group=2, seconds=0.0, min_calls=1,
            warmup_calls=1, batch_sizes=(1, 2), variants=((2, 1), (3, 2)), worker_streams=2, steady_calls=3,
            budget_s=300.0, hard_stop_after_s=None, matmul_size=256, dry_run=True, compile_backend="eager",
        )


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


@dataclass
class CheckContext:
    """What every section reads: the options, the budget, the main config, the measured peaks."""

    options: GpuCheckOptions
    budget: Budget
    config: RainConfig
    # Matmul TFLOP/s per dtype name, once the peak section has run.
    matmul_peaks: dict[str, float] = field(default_factory=dict)
    _flops: dict[tuple[int, int], int] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.config.torch_device

    @property
    def stream_paths(self) -> FastPaths:
        paths = self.options.stream_paths
        return default_fast_paths(self.device) if paths is None else paths

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


SectionRun = Callable[[CheckContext], list[dict[str, Any]]]


@dataclass(frozen=True)
class Section:
    name: str
    title: str
    run: SectionRun
    # Skipped, with the reason, when less of the budget is left than this.
    min_seconds: float
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
    """Steady-state calls of full queues for `options.seconds` (at least `min_calls`), synchronised at both ends."""
    options = ctx.options
    synchronize(ctx.device)
    calls, start = 0, time.perf_counter()
    with tqdm(desc=desc, unit="call", disable=not options.progress, file=sys.stderr, leave=False) as bar:
        while calls < options.min_calls or (time.perf_counter() - start < options.seconds and ctx.budget.left() > 0):
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


def _matmul_peak(ctx: CheckContext) -> list[dict[str, Any]]:
    # Both half precisions on a GPU (the issue compares against either), and always the check's own dtype.
    dtypes = ("float16", "bfloat16", ctx.config.dtype) if ctx.device.type == "cuda" else (ctx.config.dtype,)
    dtypes = tuple(dict.fromkeys(dtypes))
    rows = []
    for name in dtypes:
        tflops = measure_matmul_peak(ctx.device, getattr(torch, name), size=ctx.options.matmul_size)
        ctx.matmul_peaks[name] = tflops
        rows.append(dict(dtype=name, size=ctx.options.matmul_size, tflops=tflops))
    return rows


def _profile(paths_of: Callable[[FastPaths], FastPaths]) -> SectionRun:
    """A section measuring the main profile with the fast paths `paths_of` makes of the device's defaults."""

    def run(ctx: CheckContext) -> list[dict[str, Any]]:
        paths = paths_of(default_fast_paths(ctx.device))
        if paths.cuda_graphs and ctx.device.type != "cuda":
            raise SectionSkipped(f"CUDA graphs need a CUDA device, not {ctx.device}")
        config = ctx.config
        reset_peak_memory(ctx.device)
        model, prepare_s = prepared_model(ctx, config, paths)
        inputs = StreamInputs.random(config, ctx.options.seed)
        engines = open_streams(model, 1, inputs, ctx.options.seed)
        warmup_s = fill_and_warm(ctx, engines, inputs)
        latency_ms = first_frame_ms(ctx, model, inputs)
        timing = time_calls(ctx, engines, inputs, f"{config.name} {_paths_label(paths)}")
        return [dict(
            paths=_paths_label(paths),
            **stream_figures(ctx, config, timing, 1),
            peak_mem_mb=peak_memory_mb(ctx.device),
            first_frame_compute_ms=latency_ms,
            first_frame_after_frames=config.queue_length,
            prepare_s=prepare_s,
            warmup_s=warmup_s,
            fast_paths_requested=dataclasses.asdict(paths),
            fast_paths_ran=fast_paths_ran(model),
        )]

    return run


def _batched_streams(ctx: CheckContext) -> list[dict[str, Any]]:
    config, paths = ctx.config, ctx.stream_paths
    sizes = ctx.options.batch_sizes
    model, prepare_s = prepared_model(ctx, config, paths, sizes)
    inputs = StreamInputs.random(config, ctx.options.seed)
    rows: list[dict[str, Any]] = []
    for streams in sizes:
        row: dict[str, Any] = dict(streams=streams)
        try:
            reset_peak_memory(ctx.device)
            engines = open_streams(model, streams, inputs, ctx.options.seed)
            fill_and_warm(ctx, engines, inputs)
            figures = stream_figures(ctx, config, time_calls(ctx, engines, inputs, f"{streams} streams"), streams)
            fps = figures.pop("fps")
            row.update(aggregate_fps=fps, per_stream_fps=fps / streams, **figures)
            row["peak_mem_mb"] = peak_memory_mb(ctx.device)
        except Exception as exc:  # noqa: BLE001 - recorded; the other batch sizes still run
            row["error"] = error_text(exc)
        # Dropped before the next size, whose peak memory is then its own.
        engines = []
        free_memory(ctx.device)
        rows.append(row)
    rows[0]["prepare_s"] = prepare_s
    rows[0]["fast_paths_ran"] = fast_paths_ran(model)
    return rows


def _group_variants(ctx: CheckContext) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for groups, per_group in ctx.options.variants:
        row: dict[str, Any] = dict(variant=f"{groups}x{per_group}", groups=groups, per_group=per_group)
        try:
            config = ctx.variant_config(groups, per_group)
            reset_peak_memory(ctx.device)
            model, prepare_s = prepared_model(ctx, config, ctx.stream_paths)
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
        # Dropped before the next variant is built, whose peak memory is then its own.
        model = engines = None
        free_memory(ctx.device)
        rows.append(row)
    return rows


def _steady_memory(ctx: CheckContext) -> list[dict[str, Any]]:
    config, device = ctx.config, ctx.device
    model, _ = prepared_model(ctx, config, ctx.stream_paths)
    inputs = StreamInputs.random(config, ctx.options.seed)
    engines = open_streams(model, 1, inputs, ctx.options.seed)
    fill_and_warm(ctx, engines, inputs)
    gc.collect()
    before = _memory_now(device)
    reset_peak_memory(device)
    wanted, calls = ctx.options.steady_calls, 0
    with tqdm(total=wanted, desc="steady memory", unit="call", disable=not ctx.options.progress, file=sys.stderr,
              leave=False) as bar:
        while calls < wanted and (calls == 0 or ctx.budget.left() > _FINISHING_S):
            # Frames go to the host as the server sends them: a leak on either side shows.
            frames_to_uint8(step_all(engines, inputs, calls)[0])
            calls += 1
            bar.update()
    synchronize(device)
    gc.collect()
    after = _memory_now(device)
    row: dict[str, Any] = dict(calls=calls, calls_asked=wanted, cut_short_by_budget=calls < wanted)
    for key in before:
        row[f"{key}_before"] = before[key]
        row[f"{key}_growth"] = None if before[key] is None else after[key] - before[key]
    row["peak_allocated_mb_during"] = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return [row]


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
    on = [name for name, value in dataclasses.asdict(paths).items() if value]
    return "+".join(on) if on else "plain"


_PROFILE_NOTES = (
    "Random weights; one stream; frames stay on the device (the model worker section copies them out).",
    "unet_tflops: the UNet's counted FLOPs per call over the whole call's time, so a lower bound for the "
    "UNet alone; fraction_of_peak divides it by the matmul peak of the same dtype measured above.",
    "first_frame_compute_ms: compute from a new stream's first driving images to its first frame on a warm "
    "model (G calls); live latency adds the time the camera takes to deliver G*P frames.",
    "peak_mem_mb: the device's peak allocated memory since the section began (on a CPU: the process's peak RSS).",
)

MEASUREMENTS: tuple[Section, ...] = (
    Section("matmul_peak", "Matrix-product peak", _matmul_peak, min_seconds=5,
            notes=("A square matmul of random operands, timed after three warm-up products.",)),
    Section("profile_eager", "Main profile, eager",
            _profile(lambda d: dataclasses.replace(d, compile=False, cuda_graphs=False)), min_seconds=20,
            notes=_PROFILE_NOTES),
    Section("profile_compiled", "Main profile, compiled",
            _profile(lambda d: dataclasses.replace(d, compile=True, cuda_graphs=False)), min_seconds=45),
    Section("profile_cuda_graphs", "Main profile, CUDA graphs",
            _profile(lambda d: dataclasses.replace(d, compile=False, cuda_graphs=True)), min_seconds=20),
    Section("profile_compiled_cuda_graphs", "Main profile, compiled and CUDA graphs",
            _profile(lambda d: dataclasses.replace(d, compile=True, cuda_graphs=True)), min_seconds=45),
    Section("batched_streams", "Streams batched into one call", _batched_streams, min_seconds=30,
            notes=("All streams at the same fill level, stepped with `step_streams` as the model worker does; "
                   "the model is prepared for every batch size at once.",)),
    Section("group_variants", "G x P variants", _group_variants, min_seconds=30,
            notes=("A new model per variant; the per-frame UNet cost depends on G, not on P.",)),
)

STEADY_MEMORY = Section(
    "steady_memory", "Steady memory", _steady_memory, min_seconds=15,
    notes=("Growth from after the warm-up to after the last call; the goal is none over 10,000 calls. The "
           "loop stops early when the time budget runs out, and says so.",),
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


def run_section(section: Section, ctx: CheckContext) -> SectionReport:
    """Run one section, whatever happens in it: its figures, its error, or why it was skipped."""
    left = ctx.budget.left()
    notes = list(section.notes)
    if left < section.min_seconds:
        reason = f"time budget: {left:.0f} s left, the section needs about {section.min_seconds:.0f} s"
        return SectionReport(section.name, section.title, "skipped", 0.0, notes=notes, reason=reason)
    start = time.perf_counter()
    try:
        rows = section.run(ctx)
    except SectionSkipped as skip:
        return SectionReport(section.name, section.title, "skipped", time.perf_counter() - start, notes=notes,
                             reason=str(skip))
    except Exception as exc:  # noqa: BLE001 - one broken path must not lose the other figures
        notes.append("traceback: " + traceback.format_exc(limit=-8))
        return SectionReport(section.name, section.title, "error", time.perf_counter() - start, notes=notes,
                             reason=error_text(exc))
    return SectionReport(section.name, section.title, "ok", time.perf_counter() - start, rows=rows, notes=notes)


def run_gpu_check(options: GpuCheckOptions, *, extra_sections: Sequence[Section] = (),
                  out_dirs: Sequence[Path] = (), on_hard_stop: Callable[[CheckReport], None] | None = None
                  ) -> CheckReport:
    """Run the chosen sections in order (`extra_sections` before steady memory), writing the report
    into `out_dirs` after each one; returns the finished report.

    A section still running `options.hard_stop_after_s` after the budget ran out is recorded as
    such, the report written and handed to `on_hard_stop`, and the process ends (exit status 3):
    torch cannot interrupt a compilation, and the machine's time limit would lose the whole report.
    """
    config = check_config(options)
    budget = Budget(options.budget_s)
    ctx = CheckContext(options=options, budget=budget, config=config)
    report = CheckReport(environment=describe_environment(config.torch_device), options=_options_json(options))
    report.environment["stream_paths"] = dataclasses.asdict(ctx.stream_paths)
    directories = list(out_dirs)
    # The report is written by this thread after each section, and by the hard stop's timer thread.
    lock = threading.Lock()
    running: list[tuple[Section, float]] = []

    def hard_stop() -> None:
        with lock:
            for section, started in running:
                report.sections.append(SectionReport(
                    section.name, section.title, "error", time.perf_counter() - started, notes=list(section.notes),
                    reason=f"still running {options.hard_stop_after_s:.0f} s after the time budget ran out: "
                           "the check stopped here"))
            report.elapsed_s = budget.elapsed()
            report.write(directories)
            if on_hard_stop is not None:
                on_hard_stop(report)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(3)

    timer = None
    if options.hard_stop_after_s is not None:
        timer = threading.Timer(max(options.budget_s, 0.0) + options.hard_stop_after_s, hard_stop)
        timer.daemon = True
        timer.start()
    try:
        for section in [*MEASUREMENTS, *extra_sections, STEADY_MEMORY]:
            if section.name not in options.sections:
                continue
            if options.progress:
                sys.stderr.write(f"gpu-check: {section.title} ({budget.left():.0f} s of the budget left)\n")
            with lock:
                running.append((section, time.perf_counter()))
            result = run_section(section, ctx)
            free_memory(ctx.device)
            with lock:
                running.clear()
                report.sections.append(result)
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
        if timer is not None:
            timer.cancel()
    return report


def _options_json(options: GpuCheckOptions) -> dict[str, Any]:
    data = dataclasses.asdict(options)
    data["variants"] = [f"{g}x{p}" for g, p in options.variants]
    return data
