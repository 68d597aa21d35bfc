"""Retargeting a human face's 68 landmarks to anime proportions, as RAIN-v0.1 was trained.

RAIN-v0.1 never saw human faces: its driving images were drawn from landmarks whose eyes are
much taller and wider, whose mouth is narrower and whose face is shorter than a person's. A
live face must be reshaped the same way before it is drawn, or the avatar's eyes and mouth
misbehave. The reshaping is a fixed sequence of 17 region warps built from the 13 numbers of
`FaceCalibration` (the reference demo's calibration sliders). The warps run in order, each on
the result of the previous ones, so the order is part of the behaviour.

Landmarks are the iBUG 68-point layout (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth
48-67), x and y normalised to [0, 1] of the image width and height.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from rain_core.driving.settings import FaceCalibration

NUM_FACE_LANDMARKS = 68


@dataclass(frozen=True)
class RegionWarp:
    """Scale and shift one contiguous run of landmarks about its own centre.

    The region is turned so that the line through two of its landmarks (`axis`, indices
    counted from `start`) lies horizontal, so "width" and "height" follow a tilted head; it is
    then scaled, shifted, and turned back. Shifts are in units of the distance between two
    landmarks of the whole face (`unit`, absolute indices, read after the earlier warps), so
    that a correction means the same on a near and a far face; without `unit` they are in
    normalised image units.
    """

    start: int
    stop: int
    scale_x: float = 1.0
    scale_y: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    axis: tuple[int, int] | None = None
    unit: tuple[int, int] | None = None

    def apply(self, face: np.ndarray) -> np.ndarray:
        """The warped region, [stop - start, 2]; `face` ([68, 2], float64) is not changed."""
        region = face[self.start : self.stop]
        length = 1.0 if self.unit is None else _distance(face[self.unit[0]], face[self.unit[1]])
        centre = region.mean(axis=0)
        local = region - centre[None, :]
        if self.axis is not None:
            to_axis, from_axis = _axis_rotations(region[self.axis[0]], region[self.axis[1]])
            local = local @ to_axis
        local[:, 0] = local[:, 0] * self.scale_x + self.shift_x * length
        local[:, 1] = local[:, 1] * self.scale_y + self.shift_y * length
        if self.axis is not None:
            local = local @ from_axis
        return centre[None, :] + local


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    # Written out rather than math.hypot: the reference's rounding, so that dots land on the
    # same pixels.
    return math.sqrt((float(a[0]) - float(b[0])) ** 2 + (float(a[1]) - float(b[1])) ** 2)


def _axis_rotations(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Right-multiplied rotations: the first turns the direction a -> b onto +x, the second back."""
    pitch = math.atan2(float(b[1]) - float(a[1]), float(b[0]) - float(a[0]))
    cos, sin = math.cos(pitch), math.sin(pitch)
    to_axis = np.array([[cos, -sin], [sin, cos]])
    from_axis = np.array([[cos, sin], [-sin, cos]])
    return to_axis, from_axis


# Landmark runs of the iBUG layout that the warps move.
_WHOLE_FACE = (0, 68)
_RIGHT_EYE = (36, 42)  # the subject's right eye: left in the image
_LEFT_EYE = (42, 48)
_INNER_MOUTH = (60, 68)
_NOSE = (27, 36)
_LOWER_JAW = (4, 13)

# Axes, relative to each run's start: jaw 2 -> 14, eye corners 0 -> 3, inner-mouth corners
# 60 -> 64, nostril wings 31 -> 35, jaw 4 -> 12.
_FACE_AXIS = (2, 14)
_EYE_AXIS = (0, 3)
_MOUTH_AXIS = (0, 4)
_NOSE_AXIS = (4, 8)
_JAW_AXIS = (0, 8)

# Distances that make the shifts scale with the face. Nose tip to the jaw side at 13 (image
# right) or 3 (image left): a head turned sideways shortens one and lengthens the other, so
# a shift of +s in units of one plus -s in units of the other moves a region by s times their
# difference: nothing on a frontal face, more the further the head turns.
_NOSE_TO_RIGHT_JAW = (33, 13)
_NOSE_TO_LEFT_JAW = (33, 3)
_NOSE_BRIDGE_TO_CHIN = (27, 8)


@functools.lru_cache(maxsize=64)
def warps_from_calibration(calibration: FaceCalibration) -> tuple[RegionWarp, ...]:
    """The 17 region warps, in the order they run, for one calibration (cached: it is per frame)."""
    c = calibration
    # Each eye gets +h x |nose, right jaw| and -h x |nose, left jaw|: net h x (their
    # difference), zero on a frontal face, sliding both eyes towards the longer side on a
    # turned one. `eye_distance_correction` d is taken off one term of each eye, which
    # moves each eye outwards by d x its own side's distance: wider-set eyes.
    eye_shift_less_distance = c.eye_horizontal_correction - c.eye_distance_correction
    return (
        # 1. proportions: a shorter face, bigger eyes, a smaller mouth
        RegionWarp(*_WHOLE_FACE, scale_y=c.face_length_ratio, axis=_FACE_AXIS),
        RegionWarp(*_RIGHT_EYE, scale_x=c.eye_width_ratio, scale_y=c.eye_height_ratio, axis=_EYE_AXIS),
        RegionWarp(*_LEFT_EYE, scale_x=c.eye_width_ratio, scale_y=c.eye_height_ratio, axis=_EYE_AXIS),
        RegionWarp(*_INNER_MOUTH, scale_x=c.mouth_width_ratio, scale_y=c.mouth_height_ratio, axis=_MOUTH_AXIS),
        # 2. eyes follow a turned head, and sit further apart
        RegionWarp(*_RIGHT_EYE, shift_x=eye_shift_less_distance, axis=_EYE_AXIS, unit=_NOSE_TO_RIGHT_JAW),
        RegionWarp(*_LEFT_EYE, shift_x=c.eye_horizontal_correction, axis=_EYE_AXIS, unit=_NOSE_TO_RIGHT_JAW),
        RegionWarp(*_RIGHT_EYE, shift_x=-c.eye_horizontal_correction, axis=_EYE_AXIS, unit=_NOSE_TO_LEFT_JAW),
        RegionWarp(*_LEFT_EYE, shift_x=-eye_shift_less_distance, axis=_EYE_AXIS, unit=_NOSE_TO_LEFT_JAW),
        # 3. eyes lower, in units of brow-to-jaw distances on their own side (19 -> 6, 24 -> 10)
        RegionWarp(*_RIGHT_EYE, shift_y=c.eye_vertical_correction, axis=_EYE_AXIS, unit=(19, 6)),
        RegionWarp(*_LEFT_EYE, shift_y=c.eye_vertical_correction, axis=_EYE_AXIS, unit=(24, 10)),
        # 4. the mouth follows a turned head, and moves down the face
        RegionWarp(*_INNER_MOUTH, shift_x=c.mouth_horizontal_correction, axis=_MOUTH_AXIS, unit=_NOSE_TO_RIGHT_JAW),
        RegionWarp(*_INNER_MOUTH, shift_x=-c.mouth_horizontal_correction, axis=_MOUTH_AXIS, unit=_NOSE_TO_LEFT_JAW),
        RegionWarp(*_INNER_MOUTH, shift_y=c.mouth_vertical_correction, axis=_MOUTH_AXIS, unit=_NOSE_BRIDGE_TO_CHIN),
        # 5. the nose: down the face, and with a turned head (brow-to-jaw distances, 22 -> 16
        #    on the image right, 21 -> 0 on the left)
        RegionWarp(*_NOSE, shift_y=c.nose_vertical_correction, axis=_NOSE_AXIS, unit=_NOSE_BRIDGE_TO_CHIN),
        RegionWarp(*_NOSE, shift_x=c.nose_horizontal_correction, axis=_NOSE_AXIS, unit=(22, 16)),
        RegionWarp(*_NOSE, shift_x=-c.nose_horizontal_correction, axis=_NOSE_AXIS, unit=(21, 0)),
        # 6. a narrower lower jaw
        RegionWarp(*_LOWER_JAW, scale_x=c.jaw_width_ratio, axis=_JAW_AXIS),
    )


def check_face_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """`landmarks` as a new float64 [68, 2] array; ValueError naming the problem otherwise."""
    array = np.asarray(landmarks)
    if array.shape != (NUM_FACE_LANDMARKS, 2):
        raise ValueError(
            f"face landmarks must have shape ({NUM_FACE_LANDMARKS}, 2) (x, y per point), got {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"face landmarks must be real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)  # always a copy: callers' arrays are never written
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise ValueError(f"face landmarks contain NaN or infinite values at indices {np.flatnonzero(bad).tolist()}")
    return array


def retarget_face(landmarks: np.ndarray, calibration: FaceCalibration) -> np.ndarray:
    """Retargeted landmarks, [68, 2] float64 in normalised image units (a new array).

    `landmarks`: [68, 2], x and y in [0, 1] (points outside are allowed: a face half out of
    the frame). ValueError on a wrong shape or NaN/infinite values.
    """
    face = check_face_landmarks(landmarks)
    for warp in warps_from_calibration(calibration):
        face[warp.start : warp.stop] = warp.apply(face)
    return face
