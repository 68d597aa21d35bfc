"""A tiny model with random weights (in float32 and in float64) and two reference images, shared by the
stream tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rain_core.config import tiny_config
from rain_core.stream.components import RainComponents
from rain_core.stream.engine import QueueModel


@pytest.fixture(scope="module")
def tiny_model() -> QueueModel:
    return QueueModel(RainComponents.random(tiny_config(), seed=3))


@pytest.fixture(scope="module")
def float64_model() -> QueueModel:
    """The tiny model in float64, where comparisons see layouts and batching only through
    reduction order (see test_batching.py)."""
    return QueueModel(RainComponents.random(tiny_config(), seed=3).to("cpu", torch.float64))


@pytest.fixture(scope="module")
def reference_images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (96, 80, 3), dtype=np.uint8) for _ in range(2)]
