"""The neutral pose shown when nobody has been in view for a while.

Built from simple geometry (a frontal, symmetric face with open eyes and a closed mouth; a
person standing with arms down) rather than stored coordinates, so it is easy to read and
adjust.
"""

from __future__ import annotations

import math

import numpy as np

from rain_core.driving.landmarks import BODY_POINTS, IBUG68_MIRROR


def neutral_face(center_x: float = 0.5, center_y: float = 0.5, scale: float = 1.0) -> np.ndarray:
    """68 iBUG points of a frontal face centred at (center_x, center_y); scale 1 spans about 0.4 wide."""
    points = np.zeros((68, 2))
    # Jaw: the lower half of an ellipse from ear to ear through the chin.
    for i in range(17):
        angle = math.pi - math.pi * i / 16
        points[i] = (0.2 * math.cos(angle), -0.08 + 0.33 * math.sin(angle))
    # Right brow (subject's right = image left), slightly arched.
    for i in range(5):
        t = i / 4
        points[17 + i] = (-0.17 + 0.13 * t, -0.14 - 0.02 * math.sin(math.pi * t))
    points[27:31] = [(0.0, -0.08 + 0.045 * i) for i in range(4)]
    points[31:36] = [(-0.04 + 0.02 * i, 0.085 + (0.01 if i in (1, 2, 3) else 0.0)) for i in range(5)]
    # Right eye: outer corner, upper outer, upper inner, inner corner, lower inner, lower outer.
    points[36:42] = [
        (-0.13, -0.06),
        (-0.11, -0.072),
        (-0.085, -0.072),
        (-0.065, -0.06),
        (-0.085, -0.05),
        (-0.11, -0.05),
    ]
    # Outer lips: right corner, upper lip, left corner, lower lip; inner lips closed.
    points[48:60] = [
        (-0.07, 0.17),
        (-0.045, 0.155),
        (-0.02, 0.15),
        (0.0, 0.155),
        (0.02, 0.15),
        (0.045, 0.155),
        (0.07, 0.17),
        (0.045, 0.19),
        (0.02, 0.2),
        (0.0, 0.2),
        (-0.02, 0.2),
        (-0.045, 0.19),
    ]
    points[60:68] = [
        (-0.055, 0.17),
        (-0.02, 0.168),
        (0.0, 0.168),
        (0.02, 0.168),
        (0.055, 0.17),
        (0.02, 0.172),
        (0.0, 0.172),
        (-0.02, 0.172),
    ]
    # The subject's left brow and eye mirror the right ones.
    for i in [*range(22, 27), *range(42, 48)]:
        points[i] = (-points[IBUG68_MIRROR[i]][0], points[IBUG68_MIRROR[i]][1])
    return np.array([center_x, center_y]) + scale * points


def neutral_body() -> np.ndarray:
    """18 OpenPose points [x, y, confidence] of a person standing, arms down, legs out of view."""
    body = np.array(
        [
            (0.50, 0.30, 1), (0.50, 0.46, 1),  # nose, neck
            (0.38, 0.47, 1), (0.33, 0.66, 1), (0.33, 0.84, 1),  # right shoulder, elbow, wrist
            (0.62, 0.47, 1), (0.67, 0.66, 1), (0.67, 0.84, 1),  # left shoulder, elbow, wrist
            (0.43, 0.86, 1), (0.43, 1.2, 0), (0.43, 1.5, 0),  # right hip, knee, ankle
            (0.57, 0.86, 1), (0.57, 1.2, 0), (0.57, 1.5, 0),  # left hip, knee, ankle
            (0.47, 0.27, 1), (0.53, 0.27, 1),  # right eye, left eye
            (0.44, 0.28, 1), (0.56, 0.28, 1),  # right ear, left ear
        ],
        dtype=np.float64,
    )  # fmt: skip
    assert body.shape == (BODY_POINTS, 3)
    return body
