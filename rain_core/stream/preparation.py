"""Preparing a `QueueModel` with its fast paths: applied, checked against eager, compiled and captured.

`prepare_model` returns at once a model that serves eager, with the cheap paths (channels-last codec,
bfloat16 decoder, decode thread) in place; the expensive ones (compiling, CUDA graphs) are prepared
by a `Preparation`: one batch size at a time, each installed in `QueueModel.fast_calls` as soon as it
is ready, on the caller's thread or, for a server, on a thread of its own while the model serves.

A path the device's defaults turned on (`FastPaths.checked`) has never been measured on some
devices (no GPU had run this code when this was written). So before it serves, it is run on one
steady call and compared with the eager call on the same inputs: if it raises, differs by more than
its tolerance (`PATH_CHECKS`) or is slower, it is dropped with one warning naming the path and the
reason, and the model serves on without it. A path asked for explicitly is not checked: it runs,
or preparing fails with an error naming it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from rain_core.stream.batching import Batcher, split_result
from rain_core.stream.components import RainComponents
from rain_core.stream.cuda_graphs import GraphedCall
from rain_core.stream.decode_thread import DecodeThread
from rain_core.stream.engine import Networks, QueueCall, QueueCallResult, QueueModel, StreamEngine
from rain_core.stream.fast_paths import FastPaths
from rain_core.stream.reference_encoder import ReferenceEncoding

logger = logging.getLogger(__name__)

# A checked path is dropped when its call takes longer than this many times the call without it
# (the fastest of `TIMED_RUNS` each, alternating). A margin for a busy host: on the 2-core VM under
# other jobs' load, channels-last and the bfloat16 decoder timed 10-16% slower than without them,
# though idle they are faster (docs/benchmarks.md); a path that costs a quarter more is a regression.
SLOWER_MARGIN = 1.25
TIMED_RUNS = 5


@dataclass(frozen=True)
class PathCheck:
    """How far a path's steady call may differ from the call without it, on the same inputs.

    `rtol`: relative L2 of the new latents and of the frames (None: not compared); `frame_mean` and
    `frame_max`: the frames' mean and largest absolute difference (pixels in [0, 1]). Half precision
    rounds each operation to 2**-11 (float16) or 2**-8 (bfloat16) where float32 rounds to 2**-24, and
    a compiler fuses and reorders what it rounds: where the queue or the decoder runs in half
    precision, the tolerance is `half_rtol` (the demo's compiled bfloat16 decoder: 1.1e-3).
    """

    rtol: float | None = None
    half_rtol: float | None = None
    frame_mean: float | None = None
    frame_max: float | None = None

    def mismatch(self, result: QueueCallResult, expected: QueueCallResult, dtype: torch.dtype,
                 decoder_dtype: torch.dtype) -> str | None:
        """Why `result` is not `expected` within this tolerance, or None. `dtype`: the queue's; the
        frames come from a decoder that may run in a dtype of its own (`FastPaths.bfloat16_decoder`)."""

        def rtol_in(kind: torch.dtype) -> float | None:
            return self.half_rtol if kind in (torch.float16, torch.bfloat16) else self.rtol

        pairs = [("latents", result.latents, expected.latents, rtol_in(dtype)),
                 ("frames", result.frames, expected.frames, rtol_in(decoder_dtype))]
        for name, actual, wanted, rtol in pairs:
            actual, wanted = actual.detach().double(), wanted.detach().double()
            if not torch.isfinite(actual).all():
                return f"its {name} are not finite"
            if rtol is not None:
                error = ((actual - wanted).norm() / wanted.norm().clamp_min(1e-30)).item()
                if error >= rtol:
                    return f"its {name} differ from eager by {error:.1e} (relative L2; tolerance {rtol:.0e})"
        difference = (result.frames.double() - expected.frames.double()).abs()
        if self.frame_mean is not None and difference.mean().item() >= self.frame_mean:
            return f"its frames differ from eager by {difference.mean().item() * 255:.2f} levels of 255 on average"
        if self.frame_max is not None and difference.max().item() >= self.frame_max:
            return f"a pixel of its frames differs from eager by {difference.max().item() * 255:.1f} levels of 255"
        return None


# Each checked path's tolerance: those its tests hold it to over whole streaming runs (tests/rain_core/
# stream/test_fast_paths.py), which a single call meets with room to spare.
PATH_CHECKS: dict[str, PathCheck] = {
    "channels_last": PathCheck(rtol=1e-5, half_rtol=1e-2),
    "bfloat16_decoder": PathCheck(frame_mean=1 / 255, frame_max=8 / 255),
    "compile": PathCheck(rtol=1e-3, half_rtol=2e-2),
    "cuda_graphs": PathCheck(rtol=1e-3, half_rtol=2e-2),
}


class PathFailure(RuntimeError):
    """A fast path asked for explicitly ("on") failed while the model was prepared."""


def warm_up_encoding(config, seed: int = 0) -> ReferenceEncoding:
    """A random reference, for the throwaway streams that compile, capture and check."""
    generator = torch.Generator().manual_seed(seed)
    return ReferenceEncoding(
        clip_embeds=torch.randn(1, 1, config.clip_embed_dim, generator=generator),
        latents=torch.randn(1, config.unet.in_channels, config.latent_height, config.latent_width, generator=generator),
        pixels=torch.rand(1, 3, config.height, config.width, generator=generator),
    )


def _driving(config, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (config.frames_per_group, config.height, config.width, 3), dtype=np.uint8)


class SteadyCall:
    """One steady call's inputs of `streams` throwaway streams, kept to be run again and again, by
    eager and by each fast path, on copies (a call writes into its pose features)."""

    def __init__(self, model: QueueModel, streams: int = 1):
        config = model.config
        rng = np.random.default_rng(0)
        encoding = warm_up_encoding(config)
        engines = [StreamEngine(model, seed=i) for i in range(streams)]
        for engine in engines:
            engine.set_reference_encoding(encoding)
        # A Batcher of its own: the model's (`batcher_of`) may be stepping served streams meanwhile.
        self._batcher = Batcher(model) if streams > 1 else None
        self.engines = engines
        while not engines[0].is_full:
            self._advance(model.compute, rng)
        self.call = self._inputs(rng)

    def _inputs(self, rng: np.random.Generator) -> QueueCall:
        poses = [engine.prepare_driving(_driving(engine.config, rng)) for engine in self.engines]
        if self._batcher is None:
            return self.engines[0].call_inputs(poses[0])
        return self._batcher.call(self.engines, poses)

    def _advance(self, run: Callable[[QueueCall], QueueCallResult], rng: np.random.Generator) -> None:
        result = run(self._inputs(rng))
        for engine, share in zip(self.engines, split_result(result, len(self.engines)), strict=True):
            engine.advance(share)

    def step(self, run: Callable[[QueueCall], QueueCallResult], calls: int) -> None:
        """Step the streams `calls` steady calls through `run` (a compile or a capture happens in the first)."""
        rng = np.random.default_rng(1)
        for _ in range(calls):
            self._advance(run, rng)

    def run(self, run: Callable[[QueueCall], QueueCallResult], decoder_dtype: torch.dtype) -> QueueCallResult:
        """`run` on the kept call, its decoder inputs in `decoder_dtype`; its outputs copied out. The
        call writes only the newest pose features: they get a copy of their own each time."""
        call = self.call
        reference = call.conditioning.decoder_reference
        if reference is not None:
            reference = tuple(r.to(decoder_dtype) for r in reference)
        call = dataclasses.replace(
            call, pose_features=call.pose_features.clone(),
            decoder_memory=[m.to(decoder_dtype, copy=True) for m in call.decoder_memory],
            conditioning=dataclasses.replace(call.conditioning, decoder_reference=reference),
        )
        result = run(call)
        return dataclasses.replace(result, frames=result.frames.float().clone(), latents=result.latents.clone())


# A way to run the probe's call: puts the model in its state (a path applied or undone in place; nothing
# for compiled callables beside the modules) and returns the call and the decoder's dtype.
Variant = Callable[[], tuple[Callable[[QueueCall], QueueCallResult], torch.dtype]]


def _timed(probe: SteadyCall, variant: Variant, device: torch.device) -> float:
    run, decoder_dtype = variant()
    start = time.perf_counter()
    probe.run(run, decoder_dtype)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def check_path(name: str, probe: SteadyCall, without: Variant, with_path: Variant, *, dtype: torch.dtype,
               device: torch.device) -> str | None:
    """Why path `name` must not run, against the same call `without` it; None when it may (the model
    is then left `with_path`). Both run on the probe's inputs: once to compare (the path's first call
    also compiles or captures), then `TIMED_RUNS` times each, alternating, so that a busy host slows
    both alike, and their fastest are compared."""
    try:
        run, decoder_dtype = without()
        expected = probe.run(run, decoder_dtype)
        run, decoder_dtype = with_path()
        reason = PATH_CHECKS[name].mismatch(probe.run(run, decoder_dtype), expected, dtype, decoder_dtype)
        if reason is not None:
            return reason
        plain, fast = [], []
        for _ in range(TIMED_RUNS):
            plain.append(_timed(probe, without, device))
            fast.append(_timed(probe, with_path, device))
    except Exception as exc:  # noqa: BLE001 - whatever a path raises drops it
        return _raised(exc)
    if min(fast) > SLOWER_MARGIN * min(plain):
        return f"it was slower ({min(fast) * 1e3:.1f} ms a call against {min(plain) * 1e3:.1f} ms without it)"
    return None


def _toggle(components: RainComponents, apply: Callable[[RainComponents], Callable[[], None]]
            ) -> tuple[Variant, Variant]:
    """An in-place path as two variants, off and on: each undoes or applies it as needed."""
    undo: list[Callable[[], None]] = []

    def state(on: bool) -> tuple[Callable[[QueueCall], QueueCallResult], torch.dtype]:
        if on and not undo:
            undo.append(apply(components))
        elif not on and undo:
            undo.pop()()
        model = QueueModel(components)
        return model.compute, model.decoder_dtype

    return functools.partial(state, False), functools.partial(state, True)


class Preparation:
    """Compiles and captures the model's steady call for each batch size and installs it in
    `QueueModel.fast_calls`, batch size 1 first (checked against eager there, for the paths `checked`)."""

    def __init__(self, model: QueueModel, batch_sizes: Sequence[int], *, compile_backend: str = "inductor",
                 progress: bool = True):
        self.model = model
        self.batch_sizes = tuple(batch_sizes)
        self.compile_backend = compile_backend
        self.progress = progress
        self.ready: list[int] = []
        self.failed: str | None = None
        self.seconds = 0.0
        self._runner: Callable[[QueueCall], QueueCallResult] | None = None
        # The compiled networks the prepared calls run (None: eager), once checked.
        self.networks: Networks | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._cancelled = threading.Event()

    @property
    def what(self) -> str:
        paths = self.model.fast_paths
        return " + ".join(name for name, on in (("compiling", paths.compile),
                                                ("capturing CUDA graphs", paths.cuda_graphs)) if on) or "nothing"

    @property
    def pending(self) -> list[int]:
        return [] if self.failed is not None else [b for b in self.batch_sizes if b not in self.ready]

    def status(self) -> dict:
        """JSON-ready progress: batch sizes ready and pending, whether it is done, and any failure."""
        return {"preparing": self.what, "ready_batch_sizes": list(self.ready), "pending_batch_sizes": self.pending,
                "done": self._done.is_set(), "failed": self.failed, "seconds": round(self.seconds, 1)}

    def start(self) -> None:
        """Prepare the pending batch sizes on a thread of its own (the model serves eager meanwhile)."""
        self._thread = threading.Thread(target=self._run_logged, name="rain-prepare", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        """Prepare no further batch size (the one being compiled finishes: a compile cannot be cut)."""
        self._cancelled.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every batch size is prepared (or preparing stopped); whether it has."""
        return self._done.wait(timeout)

    def _run_logged(self) -> None:
        try:
            self.run()
        except Exception as exc:  # noqa: BLE001 - the model serves on eager; the status says why
            logger.error("preparing the fast paths failed; serving without them: %s", exc)

    def run(self, batch_sizes: Sequence[int] | None = None) -> None:
        """Prepare `batch_sizes` (default: every pending one); raises `PathFailure` for a path asked for."""
        started = time.perf_counter()
        sizes = self.pending if batch_sizes is None else [b for b in batch_sizes if b in self.pending]
        if sizes:
            # The compile of the first call (minutes on a CPU when the cache is cold) shows no bar of its own.
            logger.info("%s for batch sizes %s (every call runs eager until its batch size is ready)",
                        self.what, sizes)
        try:
            self._prepare(sizes)
        except Exception as exc:
            self.failed = f"{type(exc).__name__}: {exc}"[:500]
            raise
        finally:
            self.seconds += time.perf_counter() - started
            if not self.pending:
                self._done.set()
        if sizes and self.ready:
            logger.info("%s for batch sizes %s took %.1f s", self.what, self.ready, self.seconds)

    def _make_runner(self, networks: Networks | None) -> Callable[[QueueCall], QueueCallResult]:
        model = self.model
        run = functools.partial(model.compute, networks=networks)
        if model.fast_paths.cuda_graphs:
            # One pool for every batch size's graph; captured while the model's calls wait.
            return GraphedCall(run, model.device, torch.cuda.graph_pool_handle(), lock=model.calls_lock)
        return run

    def _prepare(self, sizes: Sequence[int]) -> None:
        model = self.model
        if self._runner is None:
            networks = None
            if model.fast_paths.compile:
                from rain_core.stream.compiled import compiled_networks

                try:
                    networks = compiled_networks(model.components, backend=self.compile_backend)
                except Exception as exc:
                    if "compile" not in model.fast_paths.checked:
                        raise PathFailure(f"compile (asked for) failed: {exc}") from exc
                    model.fast_paths = _drop(model.fast_paths, "compile", _raised(exc))  # type: ignore[attr-defined]
            self._runner = self._check(networks)
            self.networks = networks if model.fast_paths.compile else None
            if self._runner is None:
                self.failed = "every checked path was dropped: " + "; ".join(model.fast_paths.notes)
                return
        asked = [name for name in ("compile", "cuda_graphs")
                 if getattr(model.fast_paths, name) and name not in model.fast_paths.checked]
        with tqdm(sizes, desc=f"{self.what} ({model.config.name}, batch sizes)", unit="batch size",
                  file=sys.stderr, disable=not self.progress) as bar:
            for batch in bar:
                if self._cancelled.is_set():
                    return
                bar.set_postfix_str(f"{batch} stream{'s' if batch > 1 else ''}")
                try:
                    # Two calls: the first compiles (or loads from the cache) and captures.
                    SteadyCall(model, batch).step(self._runner, 2)
                except Exception as exc:
                    if asked:
                        raise PathFailure(f"{' and '.join(asked)} (asked for) failed at batch size {batch}: "
                                          f"{exc}") from exc
                    logger.warning("%s failed at batch size %d, which runs eager: %s", self.what, batch, exc)
                    self.failed = f"batch size {batch}: {type(exc).__name__}: {exc}"[:500]
                    return
                model.fast_calls[batch] = self._runner
                self.ready.append(batch)

    def _check(self, networks: Networks | None) -> Callable[[QueueCall], QueueCallResult] | None:
        """Check compile, then CUDA graphs over what remains, where `checked`; the runner to prepare,
        or None when nothing remains."""
        model = self.model
        paths = model.fast_paths
        checked = [name for name in ("compile", "cuda_graphs") if name in paths.checked and getattr(paths, name)]
        if checked:
            probe = SteadyCall(model)
            check = functools.partial(check_path, probe=probe, dtype=model.dtype, device=model.device)

            def variant(run: Callable[[QueueCall], QueueCallResult]) -> Variant:
                return lambda: (run, model.decoder_dtype)

            eager = variant(model.compute)
            if "compile" in checked:
                compiled = variant(functools.partial(model.compute, networks=networks))
                reason = check("compile", without=eager, with_path=compiled)
                if reason is None:
                    eager = compiled  # what CUDA graphs are compared with
                else:
                    model.fast_paths = paths = _drop(paths, "compile", reason)  # type: ignore[attr-defined]
                    networks = None
            if "cuda_graphs" in checked:
                graphed = self._make_runner(networks)
                reason = check("cuda_graphs", without=eager, with_path=variant(graphed))
                if reason is None:
                    return graphed  # captured at batch size 1 already
                model.fast_paths = paths = _drop(paths, "cuda_graphs", reason)  # type: ignore[attr-defined]
        if not (paths.compile or paths.cuda_graphs):
            return None
        return self._make_runner(networks)


def _raised(exc: BaseException) -> str:
    """A drop reason for an exception: its type and the first line of its message, bounded."""
    message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return f"it raised {type(exc).__name__}: {message}"


def _drop(paths: FastPaths, name: str, reason: str) -> FastPaths:
    logger.warning("fast path %s switched off: %s; serving without it", name, reason)
    return dataclasses.replace(paths, **{name: False}, dropped=(*paths.dropped, name),
                               notes=(*paths.notes, f"{name}: dropped at warm-up: {reason}"))


def _apply_channels_last(components: RainComponents) -> Callable[[], None]:
    """The weights' layout is enough: a convolution with channels-last weights gives channels-last
    output, which every later operation of the decoder keeps (its frames then leave as HWC for
    free). The encoder, run once per reference, keeps NCHW: the encodings stay dense."""
    modules = components.decoder.decoding_modules()
    for module in modules:
        module.to(memory_format=torch.channels_last)

    def undo() -> None:
        for module in modules:
            module.to(memory_format=torch.contiguous_format)

    return undo


def _apply_bfloat16_decoder(components: RainComponents) -> Callable[[], None]:
    modules = components.decoder.decoding_modules()
    # bfloat16 -> float32 does not give the weights back: keep them to restore.
    kept = [copy.deepcopy(module.state_dict()) for module in modules]
    for module in modules:
        module.to(torch.bfloat16)

    def undo() -> None:
        for module, state in zip(modules, kept, strict=True):
            module.to(torch.float32)
            module.load_state_dict(state)

    return undo


def prepare_model(
    components: RainComponents, paths: FastPaths, *, batch_sizes: Sequence[int] = (1,), progress: bool = True,
    compile_backend: str = "inductor", background: bool = False,
) -> QueueModel:
    """A `QueueModel` over `components` that runs `paths`, compiled and captured for `batch_sizes`.

    The cheap paths are applied (and checked, when `paths.checked` names them) at once. Compiling and
    capturing steps throwaway streams through the exact calls the worker makes at each batch size,
    with a progress line; with `background`, on a thread of its own (`model.preparation`) while the
    returned model serves every call eager until its batch size is ready; a path asked for ("on")
    is then still checked to work at batch size 1 before this returns, so that it fails at start.
    The components are changed in place (layout, dtype, attention): prepare one model per set.
    """
    device = components.config.torch_device
    batch_sizes = tuple(sorted(set(batch_sizes)))
    if not batch_sizes or batch_sizes[0] < 1:
        raise ValueError(f"batch_sizes must be positive, got {batch_sizes}")
    notes = list(paths.notes)

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
    ran = dataclasses.replace(paths, merged_reference_attention=merged, cuda_graphs=graphs,
                              decode_thread=decode_thread, bfloat16_decoder=bfloat16_decoder, notes=tuple(notes))

    model = QueueModel(components)
    cheap = [("channels_last", _apply_channels_last, ran.channels_last),
             ("bfloat16_decoder", _apply_bfloat16_decoder, bfloat16_decoder and decoder_dtype == torch.float32)]
    probe = SteadyCall(model) if any(on and name in ran.checked for name, _, on in cheap) else None
    for name, apply, wanted in cheap:
        if not wanted:
            continue
        if probe is None or name not in ran.checked:
            apply(components)
            continue
        off, on = _toggle(components, apply)
        reason = check_path(name, probe, off, on, dtype=model.dtype, device=device)
        if reason is not None:
            off()
            ran = _drop(ran, name, reason)
    model = QueueModel(components)
    if ran.decode_thread:
        model.decode_thread = DecodeThread()
    model.fast_paths = ran  # type: ignore[attr-defined]
    model.preparation = None  # type: ignore[attr-defined]
    if not (ran.compile or ran.cuda_graphs):
        return model
    preparation = Preparation(model, batch_sizes, compile_backend=compile_backend, progress=progress)
    model.preparation = preparation  # type: ignore[attr-defined]
    asked = [name for name in ("compile", "cuda_graphs") if getattr(ran, name) and name not in ran.checked]
    if not background:
        preparation.run()
    else:
        if asked:
            # What was asked for fails at start, not later: batch size 1 first, the rest behind.
            preparation.run(batch_sizes[:1])
        preparation.start()
    return model
