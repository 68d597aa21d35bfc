"""Filled dots on an RGB canvas, pixel for pixel as the reference draws them.

The reference draws its driving images with OpenCV's `cv2.circle(..., thickness=-1)`; at the
radii it uses (one to a few pixels) the exact footprint matters, since the pose guider was
trained on it and the golden fixture pins it. OpenCV fills such a circle with its integer
midpoint algorithm, whose footprint is exactly the disc x^2 + y^2 <= r^2 around the centre
pixel (checked against OpenCV for radii 0-199, and in the tests where OpenCV is installed).
Drawing that disc with numpy spans gives the same pixels without an OpenCV dependency.
"""

from __future__ import annotations

import functools
import math

import numpy as np


@functools.lru_cache(maxsize=128)
def dot_rows(radius: int) -> tuple[tuple[int, int], ...]:
    """The footprint of a filled dot of `radius`: (row offset, half width) pairs.

    Row `cy + offset` is covered from `cx - half_width` to `cx + half_width` inclusive: the
    integer points of the disc of that radius.
    """
    if radius < 0:
        raise ValueError(f"dot radius must be >= 0, got {radius}")
    return tuple((offset, math.isqrt(radius * radius - offset * offset)) for offset in range(-radius, radius + 1))


def draw_dots(canvas: np.ndarray, centres: np.ndarray, radius: int, colours: np.ndarray) -> None:
    """Draw filled dots on `canvas` ([H, W, 3] uint8) in place, in order (later dots on top).

    `centres`: [N, 2] integer pixel coordinates (x, y), anywhere: what falls outside the
    canvas is clipped. `colours`: [N, 3] uint8, in the canvas' channel order.
    """
    height, width = canvas.shape[:2]
    rows = dot_rows(radius)
    for (cx, cy), colour in zip(centres.tolist(), colours, strict=True):
        if cx + radius < 0 or cx - radius >= width or cy + radius < 0 or cy - radius >= height:
            continue
        for offset, half in rows:
            y = cy + offset
            if 0 <= y < height:
                x0, x1 = max(cx - half, 0), min(cx + half + 1, width)
                if x0 < x1:
                    canvas[y, x0:x1] = colour
