"""Small helpers shared by the tests."""

from __future__ import annotations

from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real test media (shared/media beside the clone).
MEDIA_DIR = REPO_ROOT.parent / "shared" / "media"

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
        assert tuple(tensor.shape) == tuple(shape), (
            f"engine asked for {tuple(shape)}, next noise is {tuple(tensor.shape)}"
        )
        return tensor.to(device=device, dtype=dtype)


def assert_animates_the_demo_character(frames: list) -> None:
    """Avatar frames (float RGB arrays) show the demo model's sample character, and change.

    Its own character, not just any: another held-out character is at least twice as far away.
    """
    import numpy as np
    from PIL import Image

    from rain_core.train.synthetic.clip import make_clip
    from rain_core.weights.profiles import DEMO_CHARACTER

    character = np.asarray(Image.open(DEMO_CHARACTER).convert("RGB"), np.float32)
    assert frames[0].shape == character.shape
    height, width = character.shape[:2]
    other = make_clip(1, frames=1, width=width, height=height, split="val").reference
    to_character = np.mean([np.abs(f - character).mean() for f in frames])
    to_other = np.mean([np.abs(f - other.astype(np.float32)).mean() for f in frames])
    assert to_character < to_other / 2, (to_character, to_other)
    assert max(np.abs(f - frames[0]).mean() for f in frames[1:]) > 0.5, "the avatar never moved"
