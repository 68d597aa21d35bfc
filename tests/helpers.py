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


class ReplayNoise:
    """A noise source that hands out given tensors in order, checking each shape.

    Drives the engine with a fixture's noise instead of its seeded generator.
    """

    def __init__(self, tensors):
        self.tensors = list(tensors)

    def __call__(self, shape, *, device, dtype):
        assert self.tensors, f"engine asked for more noise than given ({tuple(shape)})"
        tensor = self.tensors.pop(0)
        assert tuple(tensor.shape) == tuple(shape), f"engine asked for {tuple(shape)}, next noise is {tuple(tensor.shape)}"
        return tensor.to(device=device, dtype=dtype)
