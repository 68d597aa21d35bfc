"""CUDA graphs of the steady queue call: one graph per batch size, replayed per call.

A full-queue call has the same shapes at every call of a given batch size, so its whole kernel
sequence (pose guider, UNet, LCM step, decoder) is captured once and replayed, which removes the
per-kernel launch cost of the host. A graph reads and writes fixed addresses: each call's inputs
(the queue, the step noise, the decoder memory, and the conditioning, since every stream has its
own reference) are copied into the graph's static inputs before a replay, and the result handed
out is the graph's static outputs, valid until the next replay. The engine's `advance` copies
the queue state out of them at once (the newest pose features included); the frames are handed
out as a copy, since a caller may keep them past the next call. Calls of shapes not captured (a
filling queue, another batch size) run as the model itself does.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import torch

from rain_core.stream.engine import QueueCall, QueueCallResult

# Eager runs on a side stream before a capture: they settle lazy initialisation (cuDNN/cuBLAS
# handles and workspaces, compiled code's first-call work), which a capture must not contain.
WARMUP_RUNS = 2


def tensors_of(value: Any) -> list[torch.Tensor]:
    """Every tensor inside a call or result (dataclasses, mappings, sequences), in a fixed order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [t for field in dataclasses.fields(value) for t in tensors_of(getattr(value, field.name))]
    if isinstance(value, dict):
        return [t for key in sorted(value) for t in tensors_of(value[key])]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in tensors_of(item)]
    return []


def replace_tensors(value: Any, take: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """The same structure as `value` with each tensor replaced by `take(tensor)`, in `_tensors` order."""
    if isinstance(value, torch.Tensor):
        return take(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: replace_tensors(getattr(value, f.name), take) for f in dataclasses.fields(value)}
        return dataclasses.replace(value, **changes)
    if isinstance(value, dict):
        return {key: replace_tensors(value[key], take) for key in sorted(value)}
    if isinstance(value, (list, tuple)):
        return type(value)(replace_tensors(item, take) for item in value)
    return value


def _state_tensors(call: QueueCall) -> list[torch.Tensor]:
    """The call's tensors but its conditioning: the queue state a model may write into."""
    return tensors_of(dataclasses.replace(call, conditioning=None))


def _signature(call: QueueCall) -> tuple:
    """What a graph is specific to: the shape, dtype and layout of every input."""
    return tuple((tuple(t.shape), t.stride(), t.dtype, t.device) for t in tensors_of(call))


class _CapturedCall:
    """One captured call: its static inputs, its graph and its static result."""

    def __init__(self, run: Callable[[QueueCall], QueueCallResult], call: QueueCall,
                 pool: tuple[int, int] | None):
        # empty_strided keeps the caller's layout: the kernels captured are those a call of
        # that layout runs.
        self.static_call: QueueCall = replace_tensors(
            call, lambda t: torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device).copy_(t)
        )
        self.state = _state_tensors(self.static_call)
        self.conditioning = tensors_of(self.static_call.conditioning)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                run(self.static_call)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: the model worker keeps serving eager calls on its own thread while the
        # graphs are captured on the preparing thread; "global" would fail the capture on them.
        with torch.cuda.graph(self.graph, pool=pool, capture_error_mode="thread_local"):
            self.static_result = run(self.static_call)

    def __call__(self, call: QueueCall) -> QueueCallResult:
        state = _state_tensors(call)
        for static, source in zip(self.state + self.conditioning, state + tensors_of(call.conditioning), strict=True):
            static.copy_(source)
        self.graph.replay()
        # What the call writes into its inputs (the newest pose features) stays in the static
        # buffers: `StreamEngine.advance` copies it from the result, which holds those buffers.
        frames = self.static_result.frames
        return dataclasses.replace(self.static_result, frames=None if frames is None else frames.clone())


class GraphedCall:
    """The steady call of one batch size replayed as a CUDA graph: `run` (the model's eager or
    compiled call) is captured at the first call of each input layout, on the caller's thread, and
    replayed after. Installed in `QueueModel.fast_calls` by `prepare_model`."""

    def __init__(self, run: Callable[[QueueCall], QueueCallResult], device: torch.device,
                 pool: tuple[int, int] | None = None, lock: threading.RLock | None = None):
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, not {device}")
        self.run = run
        self.pool = pool
        # The model's `calls_lock`: a capture runs alone on the device (the served calls wait for it).
        self.lock = lock or threading.RLock()
        self._graphs: dict[tuple, _CapturedCall] = {}

    @property
    def captured(self) -> int:
        """How many layouts are captured (one, once the call has run)."""
        return len(self._graphs)

    @torch.inference_mode()
    def __call__(self, call: QueueCall) -> QueueCallResult:
        key = _signature(call)
        graph = self._graphs.get(key)
        if graph is None:
            with self.lock:
                graph = self._graphs[key] = _CapturedCall(self.run, call, self.pool)
        return graph(call)
