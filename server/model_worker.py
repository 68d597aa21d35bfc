"""The model worker: one thread that owns the models and runs every torch call of the server.

Torch work never runs on the event loop (signaling and media would stall behind it) nor on
several threads at once. Jobs run in submission order, except that queued `step` jobs of
different streams are pulled forward and stepped together in one batched UNet call
(`step_streams`); the jobs of one stream keep their order.

A step's frames go to the host asynchronously (`frames_to_host`): on CUDA the worker launches
the next batch before it waits for the previous batch's copy, so that the copy overlaps the
next call; when it has nothing else to launch it hands every frame over at once. On a CPU with
the decode thread (`FastPaths.decode_thread`), a lone stream's frames are decoded there while the
worker runs the next call, and handed over by the decode thread as soon as they are done.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rain_core.config import RainConfig, default_device
from rain_core.driving import DrivingSettings
from rain_core.stream.batching import step_streams
from rain_core.stream.compiled import CACHE_ENV
from rain_core.stream.components import RainComponents
from rain_core.stream.decode_thread import PendingFrames
from rain_core.stream.engine import QueueModel, StreamEngine
from rain_core.stream.fast_paths import default_torch_threads
from rain_core.stream.preparation import prepare_model
from rain_core.stream.transfer import HostFrames, frames_to_host, frames_to_uint8
from rain_core.weights.profiles import load_model
from server.core.config import Settings
from server.metrics import Metrics

logger = logging.getLogger(__name__)


def load_components(settings: Settings) -> RainComponents:
    model = settings.MODEL
    return load_model(model.profile, model.weights, random_weights=model.random_weights, **model.runtime())


def prepare_served_model(components: RainComponents, settings: Settings) -> QueueModel:
    """The model with the fast paths the settings ask for, ready to serve within seconds.

    The cheap paths are applied (and checked, where the device's defaults chose them) at once;
    compiling and capturing run in the background (`model.preparation`) while the model serves
    eager, batch size 1 first, each batch size used as soon as it is ready. A path asked for
    ("on") is prepared for batch size 1 before this returns, so that it fails at start if it fails.
    On CUDA every batch size the worker makes (1..MAX_BATCH) is prepared. On a CPU only single
    streams: a call of several streams there already misses the frame rate, and each batch size
    would cost minutes of compilation on the cores that serve; batched calls run eager.
    """
    device = components.config.torch_device
    if settings.MODEL.compile_cache_dir is not None:
        # Before the first compile: inductor reads it when it opens its cache (and sets triton's beside it).
        os.environ[CACHE_ENV] = str(settings.MODEL.compile_cache_dir)
    paths = settings.MODEL.fast_paths(device, serving=True)
    batch_sizes = range(1, settings.MAX_BATCH + 1) if device.type == "cuda" else (1,)
    return prepare_model(components, paths, batch_sizes=batch_sizes, progress=True, background=True)


def fast_path_status(model: QueueModel) -> dict[str, Any]:
    """What health and bench report: each path on or off, those dropped at warm-up and why, and how
    far compiling and capturing have come."""
    paths = model.fast_paths
    preparation = getattr(model, "preparation", None)
    return {
        "paths": paths.running(),
        "checked": list(paths.checked),
        "dropped": list(paths.dropped),
        "notes": list(paths.notes),
        "preparation": None if preparation is None else preparation.status(),
    }


@dataclass
class _Call:
    fn: Callable[..., Any]
    args: tuple
    future: concurrent.futures.Future


@dataclass
class StepTiming:
    """When one step went through the worker (time.monotonic(); filled in by the model thread)."""

    submitted: float  # handed to the worker
    started: float | None = None  # its batched call began
    called: float | None = None  # the call returned (frames computed; decoded too without a decode thread)
    ready: float | None = None  # its frames decoded and on the host


@dataclass
class _Step:
    engine: StreamEngine
    driving: np.ndarray  # [P, H, W, 3] uint8
    future: concurrent.futures.Future
    timing: StepTiming | None = None


_STOP = object()


class ModelWorker:
    """Owns the `QueueModel` on its own thread; every engine of the server lives and runs here."""

    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        self.max_batch = settings.MAX_BATCH
        self._jobs: deque = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self.model: QueueModel | None = None
        self.engines: set[StreamEngine] = set()
        # Every engine still in memory, open or not (their buffers are the per-session model state).
        self.in_memory: weakref.WeakSet[StreamEngine] = weakref.WeakSet()
        # Steps computed whose frames are still on their way to the host (model thread only).
        self._landing: list[tuple[_Step, HostFrames | None]] = []
        # Frames being decoded on the decode thread, which hands them over itself (model thread only).
        self._decoding: list[PendingFrames] = []

    # Life cycle ------------------------------------------------------------------------
    async def start(self) -> QueueModel:
        """Start the thread and load the models on it; returns once they are loaded."""
        ready: concurrent.futures.Future = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="rain-model", daemon=True)
        self._thread.start()
        self.model = await asyncio.wrap_future(ready)
        return self.model

    async def stop(self) -> None:
        if self._thread is None:
            return
        preparation = getattr(self.model, "preparation", None)
        if preparation is not None:
            preparation.cancel()
        with self._cond:
            self._jobs.append(_STOP)
            self._cond.notify()
        await asyncio.to_thread(self._thread.join, 30)
        self._thread = None
        self.engines.clear()
        self.model = None

    @property
    def config(self) -> RainConfig:
        assert self.model is not None, "the worker is not started"
        return self.model.config

    @property
    def driving_defaults(self) -> DrivingSettings:
        """A session's driving settings before it changes any: the kind of driving image the
        model was trained on (the demo model knows body poses, RAIN-v0.1 face patterns)."""
        return DrivingSettings(mode=self.config.driving_mode)

    # Jobs ------------------------------------------------------------------------------
    def _submit(self, job) -> concurrent.futures.Future:
        if self._thread is None:
            raise RuntimeError("the model worker is not running")
        with self._cond:
            self._jobs.append(job)
            self._cond.notify()
        return job.future

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` on the model thread, in order with every other job."""
        return await asyncio.wrap_future(self._submit(_Call(fn, args, concurrent.futures.Future())))

    def step(self, engine: StreamEngine, driving: np.ndarray, timing: StepTiming | None = None) -> asyncio.Future:
        """Queue P driving images for `engine`; resolves to P frames [P, H, W, 3] uint8 or None.
        `timing`, when given, is filled in as the step goes through (for the latency's parts)."""
        return asyncio.wrap_future(self._submit(_Step(engine, driving, concurrent.futures.Future(), timing)))

    async def open_engine(self, seed: int | None = None) -> StreamEngine:
        engine = await self.run(self._new_engine, seed)
        self.engines.add(engine)
        self.in_memory.add(engine)
        return engine

    async def close_engine(self, engine: StreamEngine) -> None:
        """Forget an engine once its queued jobs have run (its buffers go with the last reference)."""
        try:
            await self.run(lambda: None)
        finally:
            self.engines.discard(engine)

    def _new_engine(self, seed: int | None) -> StreamEngine:
        assert self.model is not None
        return StreamEngine(self.model, seed=seed)

    # The thread ------------------------------------------------------------------------
    def _run(self, ready: concurrent.futures.Future) -> None:
        try:
            started = time.perf_counter()
            device = self.settings.MODEL.device or default_device()
            threads = self.settings.TORCH_THREADS
            if threads is None:
                threads = default_torch_threads(torch.device(device))
            if threads is not None:
                torch.set_num_threads(threads)
            model = prepare_served_model(load_components(self.settings), self.settings)
            self.model = model
            self.metrics.watch_fast_paths(functools.partial(fast_path_status, model))
            if model.preparation is not None and model.preparation.pending:
                logger.info("%s for batch sizes %s in the background; each runs eager until it is ready",
                            model.preparation.what, model.preparation.pending)
            logger.info("model %s loaded on %s (%s, %d CPU threads, %s) in %.1f s", model.config.name, model.device,
                        model.dtype, torch.get_num_threads(), model.fast_paths, time.perf_counter() - started)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting lifespan
            ready.set_exception(exc)
            return
        ready.set_result(model)
        while True:
            with self._cond:
                idle = not self._jobs
            if idle:
                self._hand_over(self._take_landing())  # nothing to overlap the copies with
            with self._cond:
                while not self._jobs:
                    self._cond.wait()
                job = self._jobs.popleft()
                batch = self._take_batch(job) if isinstance(job, _Step) else None
            if job is _STOP:
                break
            if batch is not None:
                self._step(batch)
            else:
                # A call runs after every step before it, decodes included.
                self._hand_over(self._take_landing())
                self._settle_decoding()
                self._call(job)
        self._hand_over(self._take_landing())
        self._settle_decoding()
        if model.decode_thread is not None:
            model.decode_thread.close()
        # Whatever is still queued will never run.
        with self._cond:
            pending, self._jobs = list(self._jobs), deque()
        for job in pending:
            if job is not _STOP:
                job.future.set_exception(RuntimeError("the model worker stopped"))

    def _take_batch(self, first: _Step) -> list[_Step]:
        """`first` plus queued steps of other engines, up to the first non-step job (called under the lock)."""
        batch, seen, keep = [first], {id(first.engine)}, deque()
        while self._jobs and len(batch) < self.max_batch:
            job = self._jobs[0]
            if not isinstance(job, _Step):
                break
            self._jobs.popleft()
            if id(job.engine) in seen:
                keep.append(job)  # a later step of a stream already in the batch: next round
            else:
                batch.append(job)
            seen.add(id(job.engine))
        keep.extend(self._jobs)
        self._jobs = keep
        return batch

    def _call(self, job: _Call) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            job.future.set_result(job.fn(*job.args))
        except BaseException as exc:  # noqa: BLE001 - the caller gets it
            job.future.set_exception(exc)

    def _step(self, batch: list[_Step]) -> None:
        batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
        if not batch:
            return
        started = time.perf_counter()
        _stamp(batch, "started")
        try:
            outputs = step_streams([job.engine for job in batch], [job.driving for job in batch], defer_decode=True)
        except Exception as exc:
            if len(batch) == 1:
                logger.warning("stepping a stream failed: %s", exc)
                batch[0].future.set_exception(exc)
                return
            # Find the stream at fault: step each alone, so that one bad stream ends only its session.
            logger.warning("a batched step of %d streams failed; stepping them one by one", len(batch))
            for job in batch:
                try:
                    out = step_streams([job.engine], [job.driving])[0]
                    job.future.set_result(None if out is None else frames_to_uint8(out))
                except Exception as alone:  # noqa: BLE001 - that stream's session ends
                    job.future.set_exception(alone)
            return
        self.metrics.step_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(len(batch))
        _stamp(batch, "called")
        earlier = self._take_landing()
        self._decoding = [pending for pending in self._decoding if not pending.done()]
        for job, out in zip(batch, outputs, strict=True):
            if isinstance(out, PendingFrames):
                self._decoding.append(out)
                out.add_done_callback(functools.partial(_hand_over_decoded, job))
            else:
                self._landing.append((job, None if out is None else frames_to_host(out)))
        # The device computed the earlier batch's frames before this one's: waiting for them now
        # overlaps their copy with this batch. This batch's wait too, unless they are there already
        # (always so on the CPU, where nothing runs behind the worker's back).
        self._hand_over(earlier)
        if all(frames is None or frames.ready for _, frames in self._landing):
            self._hand_over(self._take_landing())

    def _settle_decoding(self) -> None:
        for pending in self._decoding:
            pending.wait()
        self._decoding = []

    def _take_landing(self) -> list[tuple[_Step, HostFrames | None]]:
        landing, self._landing = self._landing, []
        return landing

    @staticmethod
    def _hand_over(landing: list[tuple[_Step, HostFrames | None]]) -> None:
        """Resolve steps with their frames [P, H, W, 3] uint8 (or None), waiting for the copies."""
        for job, frames in landing:
            try:
                result = None if frames is None else frames.numpy()
                _stamp([job], "ready")
                job.future.set_result(result)
            except Exception as exc:  # noqa: BLE001 - a failed copy ends that step, not the worker
                job.future.set_exception(exc)


def _hand_over_decoded(job: _Step, frames: PendingFrames) -> None:
    """Resolve a step with its frames [P, H, W, 3] uint8 once decoded (runs on the decode thread)."""
    try:
        result = frames_to_uint8(frames.result())
        _stamp([job], "ready")
        job.future.set_result(result)
    except Exception as exc:  # noqa: BLE001 - a failed decode ends that step, not the worker
        job.future.set_exception(exc)


def _stamp(jobs: list[_Step], moment: str) -> None:
    now = time.monotonic()
    for job in jobs:
        if job.timing is not None:
            setattr(job.timing, moment, now)
