"""The learning-rate schedule of every training here: linear warm-up, then cosine decay to 10%."""

from __future__ import annotations

import math

# Where the cosine ends, as a share of the peak rate: the last steps still learn a little.
FINAL_SHARE = 0.1


def learning_rate_at(peak: float, progress: float, *, step: int = 0, warmup_steps: int = 0) -> float:
    """The rate at `step` (warm-up: `peak` reached over the first `warmup_steps` steps), and after
    the warm-up at `progress`, the share of the run done (by steps or by a time budget); past 1 it
    stays at the end of the decay."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    return peak * (FINAL_SHARE + (1 - FINAL_SHARE) / 2 * (1 + math.cos(math.pi * min(1.0, progress))))
