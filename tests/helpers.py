"""Small helpers shared by the tests."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from rain_core.config import RainConfig
    from rain_core.stream.engine import StreamEngine

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real test media (shared/media beside the clone).
MEDIA_DIR = REPO_ROOT.parent / "shared" / "media"

# The acceptance tolerance of the golden fixtures (float32, CPU).
GOLDEN_RTOL = 1e-4
# The codec's decoder in bfloat16 (`FastPaths.bfloat16_decoder`) against float32, in output pixels
# of [0, 1]: its rounding (2**-9 relative per operation) moved a pixel by a quarter of a level of
# 255 on average with random weights, a twentieth with the bundled demo model's, 5 levels at most.
# Stated: under 1 level on average and 8 at most, per frame group.
BFLOAT16_DECODER_MEAN = 1 / 255
BFLOAT16_DECODER_MAX = 8 / 255


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected||, after checking the shapes agree."""
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
    actual = actual.detach().to(torch.float64)
    expected = expected.detach().to(torch.float64)
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-30))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, name: str, rtol: float = GOLDEN_RTOL) -> None:
    error = relative_error(actual, expected)
    assert error < rtol, f"{name}: relative L2 error {error:.3e} >= {rtol:.0e}"


def random_driving(config: RainConfig, calls: int, seed: int = 0) -> list[np.ndarray]:
    """`calls` groups of P random driving images [P, H, W, 3] uint8 at the config's size."""
    rng = np.random.default_rng(seed)
    p, h, w = config.frames_per_group, config.height, config.width
    return [rng.integers(0, 256, (p, h, w, 3), dtype=np.uint8) for _ in range(calls)]


def stream_alone(model, reference, drivings, seed: int) -> list:
    """One new stream of `model` with `reference`, stepped once per driving batch: its outputs."""
    from rain_core.stream.engine import StreamEngine

    engine = StreamEngine(model, seed=seed)
    engine.set_reference(reference)
    return [engine.step(d) for d in drivings]


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


def restore_queue(engine: StreamEngine, latents: torch.Tensor, pose_features: torch.Tensor) -> None:
    """Make `engine`'s queue the full queue of a golden fixture: latents [1, C, G*P, h, w] and the
    pose features of all but the newest group [1, C0, (G-1)*P, h, w]; the decoder memory stays
    zero, as the fixtures start.

    White-box: it writes the engine's buffers, because only a test starts a stream from a queue
    computed elsewhere.
    """
    assert engine.frames_in == 0, "restore a new engine"
    # The engine keeps room for the newest group's features, which the next call computes.
    older = engine._features[:, :, : -engine.config.frames_per_group]
    assert (latents.shape, pose_features.shape) == (engine._latents.shape, older.shape), (
        f"fixture queue {tuple(latents.shape)} / {tuple(pose_features.shape)} does not fit the engine's "
        f"{tuple(engine._latents.shape)} / {tuple(older.shape)}"
    )
    engine._latents.copy_(latents)
    older.copy_(pose_features)
    engine._groups = engine.config.noise_groups


def queue_latents(engine: StreamEngine) -> torch.Tensor:
    """A copy of `engine`'s queue latents [1, C, G*P, h, w] (white-box, like `restore_queue`)."""
    return engine._latents.clone()


def assert_animates_the_demo_character(frames: list) -> None:
    """Avatar frames (float RGB arrays) show the demo model's sample character, and change.

    Its own character, not just any: another held-out character is at least twice as far away.
    """
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
