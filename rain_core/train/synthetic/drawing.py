"""Drawing a character from landmarks (OpenCV, anti-aliased, coordinates with 4 fractional bits)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from rain_core.driving.landmarks import Landmarks
from rain_core.train.synthetic.character import Character
from rain_core.train.synthetic.palette import Colour, colour_distance
from rain_core.train.synthetic.skeleton import EYE_RATIO, NOSE_LENGTH

_SHIFT = 4
_ONE = 1 << _SHIFT


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(float(p[0]) * _ONE)), int(round(float(p[1]) * _ONE))


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points) * _ONE).astype(np.int32)


def _len(v: float) -> int:
    return max(0, int(round(v * _ONE)))


def _shade(colour: Colour, factor: float) -> Colour:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in colour)  # type: ignore[return-value]


def _mix(a: Colour, b: Colour, weight: float) -> Colour:
    return tuple(int(round(x * (1 - weight) + y * weight)) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


@lru_cache(maxsize=16)
def _background_cached(top: Colour, bottom: Colour, width: int, height: int) -> np.ndarray:
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    image = np.round(np.asarray(top) * (1 - ramp) + np.asarray(bottom) * ramp).astype(np.uint8)
    image = np.ascontiguousarray(np.broadcast_to(image, (height, width, 3)))
    image.flags.writeable = False
    return image


def draw_background(character: Character, width: int, height: int) -> np.ndarray:
    """The character's background alone, uint8 [height, width, 3]."""
    bottom = character.background_bottom if character.background == "gradient" else character.background_top
    return _background_cached(character.background_top, bottom, width, height).copy()


@dataclass(frozen=True)
class _Head:
    """The head's frame measured from the face landmarks (pixels)."""

    s: float  # pixels per template unit
    angle: float  # degrees: the ear line's direction
    up: np.ndarray
    across: np.ndarray
    center: np.ndarray  # the cranium ellipse's centre
    axes: tuple[float, float]

    def at(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Points [N, 2] at (u across, v down) from the centre, in units of the ellipse's axes."""
        return self.center + np.outer(u * self.axes[0], self.across) - np.outer(v * self.axes[1], self.up)


def _head(character: Character, face: np.ndarray) -> _Head:
    s = float(np.linalg.norm(face[27] - face[33])) / NOSE_LENGTH
    ears = face[16] - face[0]
    across = ears / max(float(np.linalg.norm(ears)), 1e-9)
    up = np.array([across[1], -across[0]])
    center = (face[0] + face[16]) / 2 + up * character.cranium_lift * s
    axes = (character.cranium_width * s, character.cranium_height * s)
    return _Head(s, math.degrees(math.atan2(across[1], across[0])), up, across, center, axes)


def _ellipse(image: np.ndarray, head: _Head, scale: float, colour: Colour, grow: float = 0.0) -> None:
    axes = (_len(head.axes[0] * scale + grow), _len(head.axes[1] * scale + grow))
    cv2.ellipse(image, _pt(head.center), axes, head.angle, 0, 360, colour, -1, cv2.LINE_AA, _SHIFT)


def _filled(image: np.ndarray, points: np.ndarray, colour: Colour, outline: Colour | None = None,
            width: int = 1) -> None:
    poly = [_fixed(points)]
    if outline is not None:
        cv2.polylines(image, poly, True, outline, 2 * width, cv2.LINE_AA, _SHIFT)
    cv2.fillPoly(image, poly, colour, cv2.LINE_AA, _SHIFT)


def _draw_hair_back(image: np.ndarray, c: Character, head: _Head, line: int) -> None:
    """Long hair behind the head and shoulders."""
    theta = np.linspace(math.pi, 2 * math.pi, 20)
    arc = head.at(1.14 * np.cos(theta), 1.12 * np.sin(theta))
    points = np.vstack([arc, head.at(np.array([1.14, 0.95, -0.95, -1.14]), np.array([1.2, 1.3, 1.3, 1.2]))])
    _filled(image, points, c.hair, c.outline, line)


def _draw_hair_top(image: np.ndarray, c: Character, head: _Head, line: int) -> None:
    right, left = c.hair_part
    theta = np.linspace(math.pi + right, 2 * math.pi - left, 24)
    cap = head.at(1.08 * np.cos(theta), 1.08 * np.sin(theta))
    if c.hair_style == "spiky":
        tips = np.linspace(math.pi + 0.5, 2 * math.pi - 0.5, 5)
        for a in tips:
            base = head.at(np.cos([a - 0.22, a + 0.22]), np.sin([a - 0.22, a + 0.22]))
            tip = head.at(np.array([1.3 * math.cos(a)]), np.array([1.3 * math.sin(a)]))
            _filled(image, np.vstack([base[0], tip[0], base[1]]), c.hair, c.outline, line)
    elif c.hair_style == "bun":
        bun = head.at(np.array([0.0]), np.array([-1.22]))[0]
        radius = 0.3 * head.axes[0]
        cv2.circle(image, _pt(bun), _len(radius + line), c.outline, -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(image, _pt(bun), _len(radius), c.hair, -1, cv2.LINE_AA, _SHIFT)
    _filled(image, cap, c.hair, c.outline, line)


def _draw_eye(image: np.ndarray, c: Character, eye: np.ndarray, line: int) -> None:
    """One eye from its six landmarks: white, iris, pupil and a highlight; a lid line when closed."""
    center = eye.mean(axis=0)
    corner = eye[3] - eye[0]
    width = float(np.linalg.norm(corner))
    if width < 1e-6:
        return
    gap = (np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4])) / 2
    opening = min(1.2, gap / width / EYE_RATIO)
    angle = math.degrees(math.atan2(corner[1], corner[0]))
    rx = width / 2 * c.eye_width
    ry = width / 2 * c.eye_roundness * opening
    if ry < 0.25 * rx * c.eye_roundness:  # closed: a lid line
        cv2.ellipse(image, _pt(center), (_len(rx), _len(rx * 0.25)), angle, 0, 180, c.outline, line, cv2.LINE_AA,
                    _SHIFT)
        return
    cv2.ellipse(image, _pt(center), (_len(rx + line), _len(ry + line)), angle, 0, 360, c.outline, -1, cv2.LINE_AA,
                _SHIFT)
    cv2.ellipse(image, _pt(center), (_len(rx), _len(ry)), angle, 0, 360, (255, 255, 255), -1, cv2.LINE_AA, _SHIFT)
    iris = rx * c.iris_size
    cv2.ellipse(image, _pt(center), (_len(iris), _len(min(iris, ry))), angle, 0, 360, c.iris, -1, cv2.LINE_AA,
                _SHIFT)
    pupil = iris * 0.5
    cv2.ellipse(image, _pt(center), (_len(pupil), _len(min(pupil, ry * 0.6))), angle, 0, 360, (15, 15, 20), -1,
                cv2.LINE_AA, _SHIFT)
    glint = center + np.array([-0.35 * iris, -0.35 * min(iris, ry)])
    cv2.circle(image, _pt(glint), _len(max(0.6, 0.22 * iris)), (255, 255, 255), -1, cv2.LINE_AA, _SHIFT)


def _draw_mouth(image: np.ndarray, c: Character, face: np.ndarray, line: int) -> None:
    outer, inner = face[48:60], face[60:68]
    width = float(np.linalg.norm(face[54] - face[48]))
    _filled(image, outer, c.lips)
    opening = float(np.linalg.norm(face[66] - face[62]))
    if opening > 0.12 * width:
        _filled(image, inner, (70, 20, 30))
        tongue = (face[65] + face[66] + face[67]) / 3 + (face[62] - face[66]) * 0.15
        cv2.ellipse(image, _pt(tongue), (_len(width * 0.18), _len(opening * 0.2)),
                    math.degrees(math.atan2(*(face[64] - face[60])[::-1])), 180, 360, (205, 90, 100), -1,
                    cv2.LINE_AA, _SHIFT)
    else:
        cv2.polylines(image, [_fixed(face[60:65])], False, _shade(c.lips, 0.55), line, cv2.LINE_AA, _SHIFT)


def _draw_torso(image: np.ndarray, c: Character, body: np.ndarray, line: int) -> tuple[float, np.ndarray]:
    """Trousers and the shirt with its texture; returns the arm thickness and the torso's `across`."""
    right_shoulder, left_shoulder, right_hip, left_hip = body[2], body[5], body[8], body[11]
    shoulders = float(np.linalg.norm(left_shoulder - right_shoulder))
    across = (left_shoulder - right_shoulder) / max(shoulders, 1e-9)
    down = np.array([-across[1], across[0]])
    thickness = c.arm_thickness * shoulders
    r = thickness / 2
    # Trousers: two legs straight down from the hips, out through the bottom of the frame.
    hip_width = float(np.linalg.norm(left_hip - right_hip))
    far = image.shape[0] * 2.0
    for hip, side in ((right_hip, -1.0), (left_hip, 1.0)):
        outer = hip + side * across * 0.35 * hip_width
        inner = hip - side * across * 0.12 * hip_width
        leg = np.array([outer - down * r, inner - down * r, inner + [0, far], outer + [0, far]])
        _filled(image, leg, c.trousers, c.outline, line)
    # Shirt: shoulders to hips, round at the shoulders, then its texture.
    hem = down * 0.25 * r
    shirt = np.array([
        right_shoulder - across * r + down * r, right_shoulder - down * r * 0.8,
        left_shoulder - down * r * 0.8, left_shoulder + across * r + down * r,
        left_hip + across * 0.45 * hip_width + hem, right_hip - across * 0.45 * hip_width + hem,
    ])  # fmt: skip
    for shoulder in (right_shoulder, left_shoulder):
        cv2.circle(image, _pt(shoulder), _len(r + line), c.outline, -1, cv2.LINE_AA, _SHIFT)
    cv2.polylines(image, [_fixed(shirt)], True, c.outline, 2 * line, cv2.LINE_AA, _SHIFT)
    for shoulder in (right_shoulder, left_shoulder):
        cv2.circle(image, _pt(shoulder), _len(r), c.clothes, -1, cv2.LINE_AA, _SHIFT)
    cv2.fillPoly(image, [_fixed(shirt)], c.clothes, cv2.LINE_AA, _SHIFT)
    if c.pattern != "plain":
        _draw_pattern(image, c, shirt, body[1], across, c.pattern_period * shoulders)
    # Collar: the neck's skin in a small V at the top of the shirt.
    neck = body[1]
    collar = np.array([neck - across * r * 0.9 - down * r * 0.8, neck + across * r * 0.9 - down * r * 0.8,
                       neck + down * r * 0.9])
    _filled(image, collar, _shade(c.skin, 0.9))
    return thickness, across


def _draw_pattern(image: np.ndarray, c: Character, shirt: np.ndarray, origin: np.ndarray, across: np.ndarray,
                  period: float) -> None:
    """Stripes, dots or checks in the torso's own frame, so the texture moves with the body."""
    height, width = image.shape[:2]
    x0, y0 = np.maximum(np.floor(shirt.min(axis=0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(shirt.max(axis=0)).astype(int) + 1, [width, height])
    if x1 <= x0 or y1 <= y0 or period < 1.5:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [_fixed(shirt - [x0, y0])], 1, cv2.LINE_8, _SHIFT)
    ys, xs = np.nonzero(mask)
    dx, dy = xs + x0 + 0.5 - origin[0], ys + y0 + 0.5 - origin[1]
    a = math.radians(c.pattern_angle)
    ux, uy = across[0] * math.cos(a) - across[1] * math.sin(a), across[0] * math.sin(a) + across[1] * math.cos(a)
    u = (dx * ux + dy * uy) / period
    v = (-dx * uy + dy * ux) / period
    if c.pattern == "stripes":
        on = (v % 1.0) < 0.45
    elif c.pattern == "dots":
        on = ((u % 1.0) - 0.5) ** 2 + (((v + 0.5 * np.floor(u)) % 1.0) - 0.5) ** 2 < 0.28**2
    else:  # checks
        on = (np.floor(u) + np.floor(v)) % 2 == 0
    image[ys[on] + y0, xs[on] + x0] = c.clothes_accent


def _draw_arm(image: np.ndarray, c: Character, shoulder: np.ndarray, elbow: np.ndarray, wrist: np.ndarray,
              thickness: float, line: int) -> None:
    fore = thickness * 0.85
    hand = thickness / 2 * c.hand_size
    upper_colour = c.skin if c.sleeves == "none" else c.clothes
    fore_colour = c.clothes if c.sleeves == "long" else c.skin
    for a, b, t in ((shoulder, elbow, thickness), (elbow, wrist, fore)):
        cv2.line(image, _pt(a), _pt(b), c.outline, max(1, round(t + 2 * line)), cv2.LINE_AA, _SHIFT)
    cv2.circle(image, _pt(wrist), _len(hand + line), c.outline, -1, cv2.LINE_AA, _SHIFT)
    cv2.line(image, _pt(elbow), _pt(wrist), fore_colour, max(1, round(fore)), cv2.LINE_AA, _SHIFT)
    cv2.line(image, _pt(shoulder), _pt(elbow), upper_colour, max(1, round(thickness)), cv2.LINE_AA, _SHIFT)
    cv2.circle(image, _pt(wrist), _len(hand), c.skin, -1, cv2.LINE_AA, _SHIFT)


def check_size(width: int, height: int) -> None:
    """A frame size the drawing can use: integers, at least 16 pixels each."""
    if not (isinstance(width, (int, np.integer)) and isinstance(height, (int, np.integer))) or width < 16 \
            or height < 16:
        raise ValueError(f"width and height must be integers of at least 16, got width={width!r}, height={height!r}")


def draw_character(character: Character, landmarks: Landmarks, width: int, height: int) -> np.ndarray:
    """The character in the pose of `landmarks` (face and body needed), RGB uint8 [height, width, 3].

    Everything is placed from the landmarks: the head from the jaw, ears and nose, the eyes from
    the eyelids, the mouth from the lips, the torso from the shoulders and hips, the arms from
    shoulder, elbow and wrist.
    """
    if landmarks.face is None or landmarks.body is None:
        raise ValueError("draw_character needs landmarks with both a face and a body")
    check_size(width, height)
    c = character
    image = draw_background(c, width, height)
    scale = np.array([width, height], dtype=np.float64)
    face = landmarks.face[:, :2] * scale
    body = landmarks.body[:, :2] * scale
    line = max(1, round(min(width, height) / 128))
    head = _head(c, face)
    # 1. behind: long hair, neck
    if c.hair_style == "long":
        _draw_hair_back(image, c, head, line)
    neck_width = c.neck_width * head.s
    for colour, grow in ((c.outline, 2 * line), (_shade(c.skin, 0.9), 0)):
        cv2.line(image, _pt(body[1]), _pt(head.center), colour, max(1, round(neck_width + grow)), cv2.LINE_AA, _SHIFT)
    # 2. body: trousers, shirt, arms
    thickness, _ = _draw_torso(image, c, body, line)
    _draw_arm(image, c, body[2], body[3], body[4], thickness, line)
    _draw_arm(image, c, body[5], body[6], body[7], thickness, line)
    # 3. head: ears, then the cranium ellipse and the jaw as one outlined shape
    for ear in (body[16], body[17]):
        radius = c.ear_size * head.s
        cv2.circle(image, _pt(ear), _len(radius + line), c.outline, -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(image, _pt(ear), _len(radius), c.skin, -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(image, _pt(ear), _len(radius * 0.5), _shade(c.skin, 0.8), -1, cv2.LINE_AA, _SHIFT)
    jaw = [_fixed(face[0:17])]
    _ellipse(image, head, 1.0, c.outline, grow=line)
    cv2.polylines(image, jaw, False, c.outline, 2 * line + 1, cv2.LINE_AA, _SHIFT)
    _ellipse(image, head, 1.0, c.skin)
    cv2.fillPoly(image, jaw, c.skin, cv2.LINE_AA, _SHIFT)
    if c.blush:
        for cheek in ((face[2] + face[31] + face[48]) / 3, (face[14] + face[35] + face[54]) / 3):
            cv2.circle(image, _pt(cheek), _len(0.045 * head.s), _mix(c.skin, (235, 110, 120), 0.45), -1,
                       cv2.LINE_AA, _SHIFT)
    # 4. hair over the top of the head
    if c.hair_style != "bald":
        _draw_hair_top(image, c, head, line)
    # 5. face: brows, eyes, nose, mouth
    brow = max(1, round(c.brow_thickness * head.s))
    brow_colour = c.hair if c.hair_style != "bald" else c.outline
    if colour_distance(brow_colour, c.skin) < 60:
        brow_colour = _shade(brow_colour, 0.6)
    for part in (face[17:22], face[22:27]):
        cv2.polylines(image, [_fixed(part)], False, brow_colour, brow, cv2.LINE_AA, _SHIFT)
    _draw_eye(image, c, face[36:42], line)
    _draw_eye(image, c, face[42:48], line)
    nose = _shade(c.skin, 0.72)
    cv2.polylines(image, [_fixed(face[31:36])], False, nose, line, cv2.LINE_AA, _SHIFT)
    cv2.circle(image, _pt(face[30]), _len(0.02 * head.s), _shade(c.skin, 0.85), -1, cv2.LINE_AA, _SHIFT)
    _draw_mouth(image, c, face, line)
    return image

