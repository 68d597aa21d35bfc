"""A character's pose as landmarks: the shaped, expressed head rotated onto the swayed body."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from rain_core.driving.landmarks import BODY_POINTS, Landmarks
from rain_core.train.synthetic.character import Character
from rain_core.train.synthetic.motion import Motion, Pose, pose_of
from rain_core.train.synthetic.skeleton import FACE_3D, JAW_DROP, LEFT_EAR, PIVOT, RIGHT_EAR, arm_points


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """[3, 3] rotation (degrees): yaw about the vertical axis, then pitch (nod), then roll (tilt)."""
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


def _rotate2d(points: np.ndarray, center: np.ndarray, degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    m = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return center + (points - center) @ m.T


@lru_cache(maxsize=64)
def _shaped_face(head_width: float, eye_scale: float, mouth_width: float) -> np.ndarray:
    """The template with a character's face shape (read-only)."""
    p = FACE_3D.copy()
    p[:, 0] *= head_width
    for eye in (slice(36, 42), slice(42, 48)):
        center = p[eye].mean(axis=0)
        p[eye] = center + eye_scale * (p[eye] - center)
    p[48:68, 0] *= mouth_width
    p.flags.writeable = False
    return p


def _expressed(face: np.ndarray, pose: Pose) -> np.ndarray:
    """Eyelids, mouth and smile applied to the template points [70, 3] (a new array)."""
    p = face.copy()
    for start in (36, 42):
        corners, upper, lower = [start, start + 3], [start + 1, start + 2], [start + 4, start + 5]
        corner_y, lower_y = p[corners, 1].mean(), p[lower, 1].mean()
        meet = corner_y + 0.3 * (lower_y - corner_y)  # the lids close a little below the corners
        p[upper, 1] = meet + (p[upper, 1] - meet) * pose.eyes_open
        p[lower, 1] = meet + (p[lower, 1] - meet) * pose.eyes_open
    drop = 0.07 * pose.mouth_open
    p[55:60, 1] += drop
    p[65:68, 1] += 0.93 * drop
    p[[48, 54, 60, 64], 1] += 0.35 * drop
    p[0:17, 1] += 0.8 * drop * JAW_DROP
    p[[48, 54, 60, 64], 1] -= 0.025 * pose.smile
    p[[48, 60], 0] -= 0.012 * pose.smile
    p[[54, 64], 0] += 0.012 * pose.smile
    return p


def _landmarks(character: Character, pose: Pose, timestamp: float) -> Landmarks:
    c = character
    # 1. body, standing upright about the hip centre, then leaned and swayed
    hips = np.array([c.x + pose.sway, c.y])
    neck = hips + [0.0, -c.torso_length]
    shoulders_y = neck[1] + c.shoulder_drop
    right_shoulder = np.array([hips[0] - c.shoulder_width, shoulders_y])
    left_shoulder = np.array([hips[0] + c.shoulder_width, shoulders_y])
    right_elbow, right_wrist = arm_points(right_shoulder, -1.0, c.upper_arm, c.forearm,
                                           np.float64(pose.raise_right), np.float64(pose.bend_right))
    left_elbow, left_wrist = arm_points(left_shoulder, 1.0, c.upper_arm, c.forearm,
                                         np.float64(pose.raise_left), np.float64(pose.bend_left))
    pivot = neck + [0.0, -c.neck_length]
    upper = np.stack([neck, right_shoulder, right_elbow, right_wrist, left_shoulder, left_elbow, left_wrist, pivot])
    upper = _rotate2d(upper, hips, pose.lean)
    neck, pivot = upper[0], upper[7]
    # 2. head: shaped, expressed, rotated about its pivot, projected and placed on the neck
    face3d = _expressed(_shaped_face(c.head_width, c.eye_scale, c.mouth_width), pose)
    rotated = (face3d - PIVOT) @ _rotation(pose.yaw, pose.pitch, pose.roll + pose.lean).T
    head = pivot + c.face_scale * rotated[:, :2]
    face = head[:68]
    # 3. OpenPose body: legs below the frame and not visible, as in `neutral_body()`
    body = np.zeros((BODY_POINTS, 3))
    body[:, 2] = 1.0
    body[0, :2] = face[30]
    body[1, :2] = neck
    body[2:8, :2] = upper[1:7]
    hip_line = _rotate2d(hips + np.array([[-c.hip_width, 0.0], [c.hip_width, 0.0]]), hips, pose.lean)
    for index, hip in ((8, hip_line[0]), (11, hip_line[1])):
        body[index, :2] = hip
        body[index + 1] = (hip[0], hip[1] + 0.4, 0.0)
        body[index + 2] = (hip[0], hip[1] + 0.8, 0.0)
    body[14, :2] = face[36:42].mean(axis=0)
    body[15, :2] = face[42:48].mean(axis=0)
    body[16, :2] = head[RIGHT_EAR]
    body[17, :2] = head[LEFT_EAR]
    return Landmarks(face=face, body=body, timestamp=timestamp)


def pose_at(character: Character, motion: Motion | None, t: float) -> Landmarks:
    """The character's landmarks at time `t` (seconds) of `motion`; `None` gives the rest pose
    (frontal, neutral expression, eyes open, mouth closed, arms down)."""
    pose = Pose(raise_right=character.rest_arm_angle, raise_left=character.rest_arm_angle) if motion is None \
        else pose_of(character, motion, t)
    return _landmarks(character, pose, float(t))
