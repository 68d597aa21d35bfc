"""Small helpers shared by the tests."""

from __future__ import annotations

import torch

# The acceptance tolerance of the golden fixtures (float32, CPU).
GOLDEN_RTOL = 1e-4


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected||, after checking the shapes agree."""
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
    actual = actual.detach().to(torch.float64)
    expected = expected.detach().to(torch.float64)
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-30))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, name: str, rtol: float = GOLDEN_RTOL) -> None:
    error = relative_error(actual, expected)
    assert error < rtol, f"{name}: relative L2 error {error:.3e} >= {rtol:.0e}"
