"""The fast paths a `QueueModel` can run with, and preparing a model with them.

Interface only for now (the speed issue fills it in): `FastPaths` names the paths,
`default_fast_paths` picks those measured faster on a device, and `prepare_model` returns the
`QueueModel` that runs them, with `QueueModel.fast_paths` naming what it actually runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rain_core.stream.components import RainComponents
from rain_core.stream.engine import QueueModel


@dataclass(frozen=True)
class FastPaths:
    """Which fast paths to run; every one is equal to the eager float32 path within its tolerance."""

    # Attend every frame to one shared reference K/V (merged by log-sum-exp) instead of copies.
    merged_reference_attention: bool = True
    # Regional torch.compile of the repeated blocks (inductor), cached on disk.
    compile: bool = False
    # One CUDA graph per batch-size bucket, replayed per call (CUDA only).
    cuda_graphs: bool = False


def default_fast_paths(device: torch.device) -> FastPaths:
    """The paths measured faster on this kind of device."""
    return FastPaths()


def prepare_model(
    components: RainComponents, paths: FastPaths, *, batch_sizes: Sequence[int] = (1,), progress: bool = True
) -> QueueModel:
    """A `QueueModel` over `components` that runs `paths` (compiled / captured for `batch_sizes`)."""
    return QueueModel(components)
