"""Landmarks in the layouts the driving renderers (and the models' training data) use.

All coordinates are (x, y) normalised to the analysed (cropped, square) frame: [0, 1] inside
it, with y pointing down. Face: 68 iBUG points (DWPose order, what RAIN-v0.1 was trained on).
Body: 18 OpenPose points with a confidence each. Hands: 21 points each.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

FACE_POINTS = 68
BODY_POINTS = 18
HAND_POINTS = 21

# mediapipe face mesh (478 points with refined irises) -> iBUG 68. iBUG numbers the subject's
# right side first (image left for a frontal face), as does mediapipe's "right" eye (33).
MEDIAPIPE_TO_IBUG68 = np.array(
    [
        # jaw 0-16, from the right ear down to the chin and up to the left ear
        127, 234, 93, 132, 58, 172, 136, 149, 152, 378, 365, 397, 288, 361, 323, 454, 356,
        # right brow 17-21 (outer to inner), left brow 22-26 (inner to outer)
        70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
        # nose bridge 27-30 (top to tip), nostrils 31-35 (right to left)
        168, 197, 5, 4, 98, 97, 2, 326, 327,
        # right eye 36-41: outer corner, upper outer, upper inner, inner corner, lower inner, lower outer
        33, 160, 158, 133, 153, 144,
        # left eye 42-47: inner corner, upper inner, upper outer, outer corner, lower outer, lower inner
        362, 385, 387, 263, 373, 380,
        # outer lips 48-59: right corner, upper lip to the left corner, lower lip back
        61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,
        # inner lips 60-67
        78, 81, 13, 311, 308, 402, 14, 178,
    ]
)  # fmt: skip

# mediapipe pose (33 points) -> OpenPose 18 (COCO order). The neck (1) is the shoulders' midpoint.
MEDIAPIPE_POSE_TO_OPENPOSE = {
    0: 0,  # nose
    2: 12, 3: 14, 4: 16,  # right shoulder, elbow, wrist
    5: 11, 6: 13, 7: 15,  # left shoulder, elbow, wrist
    8: 24, 9: 26, 10: 28,  # right hip, knee, ankle
    11: 23, 12: 25, 13: 27,  # left hip, knee, ankle
    14: 5, 15: 2,  # right eye, left eye
    16: 8, 17: 7,  # right ear, left ear
}  # fmt: skip
NECK, RIGHT_SHOULDER, LEFT_SHOULDER = 1, 2, 5

# The iBUG index each point becomes in the horizontal mirror image (left and right swap names).
IBUG68_MIRROR = np.array(
    list(range(16, -1, -1))  # jaw
    + list(range(26, 16, -1))  # brows
    + [27, 28, 29, 30]  # bridge
    + [35, 34, 33, 32, 31]  # nostrils
    + [45, 44, 43, 42, 47, 46]  # right eye <- left eye
    + [39, 38, 37, 36, 41, 40]  # left eye <- right eye
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65]  # inner lips
)


@dataclass(frozen=True)
class Landmarks:
    """What the extractor found in one frame; a part is None when it was not found."""

    face: np.ndarray | None = None  # [68, 2]
    body: np.ndarray | None = None  # [18, 3]: x, y, confidence
    left_hand: np.ndarray | None = None  # [21, 2], the subject's left hand
    right_hand: np.ndarray | None = None  # [21, 2]
    timestamp: float = 0.0
    # "found" in this frame, "held" from an earlier one, or the "neutral" fallback pose.
    source: str = "found"

    def held(self) -> Landmarks:
        return replace(self, source="held")


def face_from_mediapipe(points: np.ndarray) -> np.ndarray:
    """mediapipe face mesh points [468 or 478, >=2] -> iBUG 68 [68, 2]."""
    return points[MEDIAPIPE_TO_IBUG68, :2].astype(np.float64)


def body_from_mediapipe(points: np.ndarray) -> np.ndarray:
    """mediapipe pose [33, 3] (x, y, visibility) -> OpenPose 18 [18, 3]."""
    body = np.zeros((BODY_POINTS, 3))
    for openpose, mediapipe in MEDIAPIPE_POSE_TO_OPENPOSE.items():
        body[openpose] = points[mediapipe, :3]
    shoulders = body[[RIGHT_SHOULDER, LEFT_SHOULDER]]
    body[NECK, :2] = shoulders[:, :2].mean(axis=0)
    body[NECK, 2] = shoulders[:, 2].min()
    return body
