"""Body mode's framing: the person placed where a character stands, whatever the camera sees.

A webcam frames a seated person's head and shoulders large and close; characters, and the
poses a body model was trained on, stand smaller in the middle of the picture. Drawn as the
camera sees them, the driving pose is one the model has never met, and the character does not
follow it. Framing moves and scales the landmarks (one uniform scale, no rotation, so the
person's own proportions and gestures are kept) so that the neck lands on a fixed point and
the shoulders span a fixed width: arms, head and hands then move about the character's body
as they move about the person's.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from rain_core.driving.body_render import MIN_CONFIDENCE
from rain_core.driving.landmarks import LEFT_SHOULDER, NECK, RIGHT_SHOULDER, Landmarks
from rain_core.driving.settings import BodyFraming

# Shoulders closer than this (a person side-on to the camera) give no usable scale.
_MIN_SHOULDER_SPAN = 1e-3
# Bounds on the scale, so that one bad detection cannot blow the pose up or shrink it away.
_SCALE_RANGE = (0.1, 10.0)


def framing_transform(body: np.ndarray, framing: BodyFraming) -> tuple[float, np.ndarray] | None:
    """(scale, offset) mapping a point p to scale * p + offset, or None when the neck and both
    shoulders are not all visible (the pose is then drawn as found)."""
    if body[[NECK, RIGHT_SHOULDER, LEFT_SHOULDER], 2].min() < MIN_CONFIDENCE:
        return None
    span = float(np.linalg.norm(body[LEFT_SHOULDER, :2] - body[RIGHT_SHOULDER, :2]))
    if span < _MIN_SHOULDER_SPAN:
        return None
    scale = float(np.clip(framing.shoulder_width / span, *_SCALE_RANGE))
    offset = np.array([framing.neck_x, framing.neck_y]) - scale * body[NECK, :2]
    return scale, offset


def frame_body(landmarks: Landmarks, framing: BodyFraming) -> Landmarks:
    """The landmarks with the person moved and scaled into `framing` (unchanged when it is
    off, or when the neck and shoulders were not found)."""
    if not framing.enabled or landmarks.body is None:
        return landmarks
    transform = framing_transform(landmarks.body, framing)
    if transform is None:
        return landmarks
    scale, offset = transform

    def moved(points: np.ndarray | None) -> np.ndarray | None:
        if points is None:
            return None
        out = points.copy()
        out[:, :2] = scale * points[:, :2] + offset
        return out

    return replace(landmarks, face=moved(landmarks.face), body=moved(landmarks.body),
                   left_hand=moved(landmarks.left_hand), right_hand=moved(landmarks.right_hand))
