"""OpenPose-style driving images for whole-body models (AnimateAnyone and its kin).

The conventions these models were trained on: 17 limbs as filled ellipses in the standard
18-colour rainbow at 60% brightness, joints as dots in full colour, hand bones in an HSV
rainbow with blue joints, face landmarks as white dots, all on black.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np

from rain_core.driving.landmarks import Landmarks

# OpenPose limbs as pairs of the 18 COCO keypoints (0 nose, 1 neck, 2-4 right arm, 5-7 left arm,
# 8-10 right leg, 11-13 left leg, 14/15 eyes, 16/17 ears).
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
HAND_BONES = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
    (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
)  # fmt: skip
# Joints less certain than this are left out (mediapipe's visibility).
MIN_CONFIDENCE = 0.3
# Sizes at 512 px; other sizes scale with the shorter side.
_REFERENCE_SIDE = 512
_STICK, _JOINT, _HAND_LINE, _HAND_JOINT, _FACE_DOT = 4, 4, 2, 4, 3


def _scaled(size: int, at_512: int) -> int:
    return max(1, round(at_512 * size / _REFERENCE_SIDE))


def _pixels(points: np.ndarray, width: int, height: int) -> np.ndarray:
    return points[:, :2] * np.array([width, height])


def render_body(landmarks: Landmarks, width: int, height: int, *, draw_face: bool = True,
                draw_hands: bool = True) -> np.ndarray:
    """Landmarks -> OpenPose-style RGB uint8 image [height, width, 3]."""
    import cv2

    canvas = np.zeros((height, width, 3), np.uint8)
    side = min(width, height)
    if landmarks.body is not None:
        body = landmarks.body
        points = _pixels(body, width, height)
        visible = body[:, 2] >= MIN_CONFIDENCE
        stick = _scaled(side, _STICK)
        for (a, b), color in zip(LIMBS, COLORS[: len(LIMBS)], strict=True):
            if not (visible[a] and visible[b]):
                continue
            (xa, ya), (xb, yb) = points[a], points[b]
            length = math.hypot(xb - xa, yb - ya)
            angle = math.degrees(math.atan2(yb - ya, xb - xa))
            polygon = cv2.ellipse2Poly(
                (int((xa + xb) / 2), int((ya + yb) / 2)), (int(length / 2), stick), int(angle), 0, 360, 1
            )
            cv2.fillConvexPoly(canvas, polygon, tuple(int(c * 0.6) for c in color))
        for index, color in enumerate(COLORS):
            if visible[index]:
                cv2.circle(canvas, tuple(int(v) for v in points[index]), _scaled(side, _JOINT), color, -1)
    if draw_hands:
        for hand in (landmarks.left_hand, landmarks.right_hand):
            if hand is None:
                continue
            points = _pixels(hand, width, height)
            for i, (a, b) in enumerate(HAND_BONES):
                rgb = colorsys.hsv_to_rgb(i / len(HAND_BONES), 1.0, 1.0)
                cv2.line(canvas, tuple(int(v) for v in points[a]), tuple(int(v) for v in points[b]),
                         tuple(int(c * 255) for c in rgb), _scaled(side, _HAND_LINE))
            for point in points:
                cv2.circle(canvas, tuple(int(v) for v in point), _scaled(side, _HAND_JOINT), (0, 0, 255), -1)
    if draw_face and landmarks.face is not None:
        for point in _pixels(landmarks.face, width, height):
            cv2.circle(canvas, tuple(int(v) for v in point), _scaled(side, _FACE_DOT), (255, 255, 255), -1)
    return canvas
