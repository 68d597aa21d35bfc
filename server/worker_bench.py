"""The GPU check's model-worker section: the server's `ModelWorker` stepping several streams.

The worker runs as the server runs it: its own thread loads the model from `Settings`, every
stream submits batches of P driving images with at most two in flight (as a session's pump
does), queued steps of different streams are batched into one call, and every frame comes back
to the host as uint8. The figures are what sessions would get: frames per second on the host,
the worker's mean batch and step time (from its own metrics).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import numpy as np
import torch

from rain_core.bench.engine import fast_paths_ran, peak_memory_mb
from rain_core.bench.gpu_check import CheckContext, Section, StreamInputs, reset_peak_memory
from rain_core.options import ModelOptions
from rain_core.stream.engine import StreamEngine
from server.core.config import Settings
from server.metrics import Metrics
from server.model_worker import ModelWorker

# As server/media/pump.py's MAX_PENDING_STEPS (not imported: that module needs aiortc, which the
# GPU check does without): a session never has more batches at the worker.
PENDING_STEPS_PER_STREAM = 2


def model_worker_section() -> Section:
    return Section(
        "model_worker", "The model worker, stepping streams as the server does", _run,
        notes=(
            "The server's ModelWorker on its own thread, with the model it loads itself; each stream keeps "
            f"{PENDING_STEPS_PER_STREAM} steps in flight, as a session does, and gets uint8 frames on the host.",
            "Uncompiled (COMPILE=off) and prepared for as many batch sizes as streams (MAX_BATCH): compiling "
            "each batch size would be a cold compile each, more than the check's time allows.",
        ),
    )


def _run(ctx: CheckContext) -> None:
    ctx.add_row(asyncio.run(_measure(ctx)))


async def _measure(ctx: CheckContext) -> dict[str, Any]:
    options, config = ctx.options, ctx.config
    settings = Settings(
        _env_file=None, MODEL=ModelOptions(profile=options.profile, random_weights=True, device=options.device,
                                           dtype=options.dtype, groups=config.noise_groups,
                                           per_group=config.frames_per_group, seed=options.seed, compile="off"),
        # The check's own thread count: the worker would otherwise set the process's to cores - 1.
        TORCH_THREADS=torch.get_num_threads(),
        MAX_BATCH=options.worker_streams,
    )
    metrics = Metrics()
    worker = ModelWorker(settings, metrics)
    reset_peak_memory(ctx.device)
    started = time.perf_counter()
    model = await worker.start()
    load_s = time.perf_counter() - started
    try:
        # The server answers once loaded and compiles behind; the figures are those of the prepared model.
        preparation = model.preparation
        if preparation is not None:
            await asyncio.to_thread(preparation.wait, max(1.0, ctx.budget.left()))
        prepared_s = time.perf_counter() - started
        inputs = StreamInputs.random(config, options.seed)
        engines = [await worker.open_engine(seed=options.seed + i) for i in range(options.worker_streams)]
        for engine in engines:
            await worker.run(engine.set_reference, inputs.reference)
        warm = config.noise_groups + options.warmup_calls
        await asyncio.gather(*(_stream(worker, engine, inputs, calls=warm) for engine in engines))

        batches_before = _sample(metrics, "rain_step_batch_size")
        steps_before = _sample(metrics, "rain_step_seconds")
        start = time.perf_counter()
        # The section's limit ends the measurement too, with at least min_calls per stream.
        deadline = min(start + options.seconds, ctx.deadline)
        frames = await asyncio.gather(
            *(_stream(worker, engine, inputs, calls=options.min_calls, until=deadline) for engine in engines)
        )
        seconds = time.perf_counter() - start
        batches = [a - b for a, b in zip(_sample(metrics, "rain_step_batch_size"), batches_before, strict=True)]
        steps = [a - b for a, b in zip(_sample(metrics, "rain_step_seconds"), steps_before, strict=True)]
        per_stream = [count / seconds for count in frames]
        return dict(
            streams=len(engines),
            aggregate_fps=sum(frames) / seconds,
            per_stream_fps_min=min(per_stream),
            per_stream_fps_mean=sum(per_stream) / len(per_stream),
            mean_batch=batches[1] / batches[0] if batches[0] else None,
            step_ms_mean=1000 * steps[1] / steps[0] if steps[0] else None,
            worker_steps=int(steps[0]),
            peak_mem_mb=peak_memory_mb(ctx.device),
            load_s=load_s,
            prepared_s=prepared_s,
            fast_paths_ran=fast_paths_ran(model),
            preparation=None if model.preparation is None else model.preparation.status(),
        )
    finally:
        await worker.stop()


async def _stream(worker: ModelWorker, engine: StreamEngine, inputs: StreamInputs, *, calls: int,
                  until: float | None = None) -> int:
    """Step one stream `calls` times, then on until `until`, with the pump's steps in flight; its frames out."""
    pending: deque[asyncio.Future] = deque()
    submitted = frames = 0

    def more() -> bool:
        return submitted < calls or (until is not None and time.perf_counter() < until)

    while more() or pending:
        while more() and len(pending) < PENDING_STEPS_PER_STREAM:
            pending.append(worker.step(engine, inputs.drivings[submitted % len(inputs.drivings)]))
            submitted += 1
        out = await pending.popleft()
        if out is not None:
            if out.dtype != np.uint8:
                raise TypeError(f"the worker gave {out.dtype} frames, not uint8")
            frames += len(out)
    return frames


def _sample(metrics: Metrics, histogram: str) -> tuple[float, float]:
    """A histogram's (count, sum) so far."""
    registry = metrics.registry
    count = registry.get_sample_value(f"{histogram}_count") or 0.0
    return count, registry.get_sample_value(f"{histogram}_sum") or 0.0
