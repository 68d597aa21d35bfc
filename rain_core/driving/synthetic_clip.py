"""A synthetic "webcam" clip from one photograph: the photo rotates, shifts and scales over time.

Used to test and benchmark the driving pipeline on real image content with known motion: each
frame comes with the 2x3 affine map from photo pixels to frame pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClipMotion:
    """Peak amplitudes of the smooth motion, and its period in frames."""

    degrees: float = 8.0
    shift: float = 0.06  # fraction of the frame width
    zoom: float = 0.08  # relative scale change
    period: int = 48


def photo_to_frame(
    photo_size: tuple[int, int], frame_size: tuple[int, int], t: float, motion: ClipMotion
) -> np.ndarray:
    """The 2x3 affine map (photo pixels -> frame pixels) at frame index t."""
    pw, ph = photo_size
    fw, fh = frame_size
    phase = 2 * math.pi * t / motion.period
    angle = math.radians(motion.degrees * math.sin(phase))
    scale = fh / ph * (1 + motion.zoom * math.sin(phase / 2))
    dx = motion.shift * fw * math.sin(phase + 1.0)
    dy = 0.5 * motion.shift * fh * math.cos(phase)
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    # Rotate and scale about the photo's centre, then put that centre at the frame's (shifted) centre.
    cx, cy = pw / 2, ph / 2
    tx, ty = fw / 2 + dx, fh / 2 + dy
    return np.array([[cos, -sin, tx - cos * cx + sin * cy], [sin, cos, ty - sin * cx - cos * cy]])


def synthetic_clip(
    photo: np.ndarray,
    frames: int,
    frame_size: tuple[int, int] = (640, 480),
    motion: ClipMotion | None = ClipMotion(),
    noise: float = 0.0,
    seed: int = 0,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames [H, W, 3] uint8 and their affine maps. `motion=None` keeps the photo still;
    `noise` adds per-frame Gaussian sensor noise (standard deviation in 0-255 levels)."""
    import cv2

    rng = np.random.default_rng(seed)
    still = ClipMotion(degrees=0, shift=0, zoom=0)
    out, maps = [], []
    for t in range(frames):
        affine = photo_to_frame((photo.shape[1], photo.shape[0]), frame_size, t, motion or still)
        frame = cv2.warpAffine(photo, affine, frame_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if noise:
            frame = np.clip(frame + rng.normal(0, noise, frame.shape), 0, 255).astype(np.uint8)
        out.append(frame)
        maps.append(affine)
    return out, maps
