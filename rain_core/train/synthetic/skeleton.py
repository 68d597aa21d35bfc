"""The character's skeleton: a 3D template of the head (the 68 iBUG points and the ears) and the
arms' joints. The head is rotated and projected orthographically (see `landmarks`)."""

from __future__ import annotations

import numpy as np

from rain_core.driving.neutral import neutral_face


def _face_template() -> np.ndarray:
    """[70, 3] template points (x right, y down, z toward the camera): iBUG 68, right ear, left ear."""
    xy = neutral_face(0.0, 0.0, 1.0)
    z = np.empty(68)
    z[0:17] = -0.14 + 0.16 * np.sin(np.pi - np.pi * np.arange(17) / 16)  # ears back, chin forward
    z[17:27] = 0.035 - 1.5 * xy[17:27, 0] ** 2  # brows
    z[27:31] = [0.03, 0.05, 0.07, 0.09]  # nose bridge down to the tip
    z[31:36] = [0.045, 0.055, 0.06, 0.055, 0.045]  # nostrils
    z[36:48] = 0.012 - 1.5 * xy[36:48, 0] ** 2  # eyes, slightly back
    z[48:68] = 0.045 - 2.5 * xy[48:68, 0] ** 2  # lips
    ears = [(-0.21, -0.06, -0.16), (0.21, -0.06, -0.16)]
    return np.vstack([np.column_stack([xy, z]), ears])


FACE_3D = _face_template()
RIGHT_EAR, LEFT_EAR = 68, 69
# The head turns about the top of the neck, behind the chin (template units).
PIVOT = np.array([0.0, 0.2, -0.12])
# Bridge top (27) to the nose base (33): how the drawing measures the head's size from landmarks.
NOSE_LENGTH = float(np.linalg.norm(FACE_3D[27, :2] - FACE_3D[33, :2]))
# Eye height over width of the open template eye.
EYE_RATIO = float((FACE_3D[41, 1] - FACE_3D[37, 1]) / (FACE_3D[39, 0] - FACE_3D[36, 0]))
# Jaw points move down with the mouth, most at the chin (8), not at the ears (0, 16).
JAW_DROP = np.cos(np.clip((np.arange(17) - 8) / 8, -1, 1) * np.pi / 2) ** 1.5


def arm_points(shoulder: np.ndarray, side: float, upper: float, forearm: float, raise_deg: np.ndarray,
               bend_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Elbow and wrist [..., 2] of an arm; side -1 for the right arm (image left), +1 for the left."""
    a = np.radians(raise_deg)
    f = np.radians(raise_deg + bend_deg)
    elbow = shoulder + upper * np.stack([side * np.sin(a), np.cos(a)], axis=-1)
    wrist = elbow + forearm * np.stack([side * np.sin(f), np.cos(f)], axis=-1)
    return elbow, wrist
