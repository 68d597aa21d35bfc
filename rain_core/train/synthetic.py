"""Synthetic training clips: cartoon characters, their smooth motion, and the paired driving images.

Generated on the fly on the CPU for a small demo model. A clip is one character (head shape,
palette, clothes texture, hair, background) moving smoothly: head turns, tilts and nods,
blinks, talking, arm swings and a little body sway. Every frame is drawn *from* its landmarks
(`pose_at` -> `Landmarks` -> `draw_character`) and the driving image is `render_body` of the
same landmarks, so each pair is exact by construction.

    clip = make_clip(seed, frames=16, width=128, height=128)   # split="train" or "val"
    clip.reference, clip.frames, clip.driving, clip.landmarks

Coordinates follow `rain_core.driving.landmarks`: (x, y) normalised to the frame, y down;
iBUG 68 face points, OpenPose 18 body points. The head is a 3D template (the 68 points of
`neutral_face()` with a depth each, plus the two ears) rotated and projected orthographically.
Characters are laid out for square frames; other aspect ratios stretch them exactly as they
stretch the driving image.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, replace
from functools import lru_cache

import cv2
import numpy as np

from rain_core.driving.body_render import render_body
from rain_core.driving.landmarks import BODY_POINTS, Landmarks
from rain_core.driving.neutral import neutral_face

Colour = tuple[int, int, int]  # RGB

# Train and validation characters and motions come from separate random streams.
SPLIT_CODE = {"train": 0, "val": 1}

PATTERNS = ("plain", "stripes", "dots", "checks")
HAIR_STYLES = ("bald", "short", "long", "spiky", "bun")
SLEEVES = ("none", "short", "long")
BACKGROUNDS = ("plain", "gradient")

# Motion limits (degrees). Arms: 0 hangs down, 90 points sideways, 180 straight up.
MAX_YAW, MAX_PITCH, MAX_ROLL, MAX_LEAN = 35.0, 10.0, 15.0, 3.0
MAX_ARM_RAISE = 105.0
MIN_ELBOW, MAX_ELBOW = -40.0, 100.0  # forearm relative to the upper arm; positive bends outward and up
MAX_FOREARM = 175.0  # the forearm's direction never passes straight up
REST_ELBOW = 6.0
# Sideways sway of the whole body, in character units (before the character is fitted to the frame).
MAX_SWAY = 0.03
# Frame fraction kept free on every side; only the legs leave the frame, through the bottom.
MARGIN = 0.03
# Longest stretch of motion a clip may start in, in seconds.
MAX_START = 120.0
BLINK_SECONDS = 0.3


# --------------------------------------------------------------------------------------------
# The head: a 3D template of the 68 iBUG points and the ears.


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


_FACE_3D = _face_template()
_RIGHT_EAR, _LEFT_EAR = 68, 69
# The head turns about the top of the neck, behind the chin (template units).
_PIVOT = np.array([0.0, 0.2, -0.12])
# Bridge top (27) to the nose base (33): how the drawing measures the head's size from landmarks.
_NOSE_LENGTH = float(np.linalg.norm(_FACE_3D[27, :2] - _FACE_3D[33, :2]))
# Eye height over width of the open template eye.
_EYE_RATIO = float((_FACE_3D[41, 1] - _FACE_3D[37, 1]) / (_FACE_3D[39, 0] - _FACE_3D[36, 0]))
# Jaw points move down with the mouth, most at the chin (8), not at the ears (0, 16).
_JAW_DROP = np.cos(np.clip((np.arange(17) - 8) / 8, -1, 1) * np.pi / 2) ** 1.5
# How far the hair reaches beyond the cranium ellipse, per style.
_HAIR_REACH = {"bald": 1.0, "short": 1.1, "long": 1.14, "spiky": 1.3, "bun": 1.55}


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


# --------------------------------------------------------------------------------------------
# Characters


@dataclass(frozen=True)
class Character:
    """One cartoon character: its proportions (where the landmarks go), shapes and palette.

    Lengths marked "frame" are fractions of the frame side, already fitted so that the character
    stays inside the frame through any motion within the limits above. The drawing's own sizes
    are relative to what it measures from the landmarks ("s": the head's template scale, taken
    from the nose; "shoulders": the distance between the shoulders), so `draw_character` follows
    any landmarks, not only this character's.
    """

    # layout (frame)
    x: float  # hip centre at rest
    y: float
    torso_length: float  # neck point to hip centre
    shoulder_width: float  # half the distance between the shoulders
    shoulder_drop: float  # shoulders below the neck point
    hip_width: float  # half the distance between the hips
    neck_length: float  # neck point to the head's pivot
    upper_arm: float
    forearm: float
    face_scale: float  # template units -> frame
    sway_reach: float  # largest sideways sway
    rest_arm_angle: float  # degrees from hanging straight down
    # face shape, in the landmarks
    head_width: float  # horizontal scale of the face template
    eye_scale: float  # eye landmarks scaled about each eye's centre
    mouth_width: float  # horizontal scale of the lips
    # drawing shapes
    cranium_width: float  # semi-axes of the head ellipse (s)
    cranium_height: float
    cranium_lift: float  # ellipse centre above the ears' midpoint (s)
    ear_size: float  # ear radius (s)
    eye_width: float  # drawn eye width over the eye landmarks' width
    eye_roundness: float  # drawn open eye height over the eye landmarks' width
    iris_size: float  # iris radius over the drawn eye's half width
    brow_thickness: float  # (s)
    neck_width: float  # (s)
    arm_thickness: float  # (shoulders)
    hand_size: float  # hand radius over half the arm thickness
    pattern: str  # one of PATTERNS
    pattern_period: float  # (shoulders)
    pattern_angle: float  # degrees in the torso's frame
    hair_style: str  # one of HAIR_STYLES
    hair_part: tuple[float, float]  # where the hair's fringe ends on the right and left (radians above the ear line)
    sleeves: str  # one of SLEEVES
    blush: bool
    background: str  # one of BACKGROUNDS
    # palette (RGB)
    skin: Colour
    hair: Colour
    iris: Colour
    lips: Colour
    clothes: Colour
    clothes_accent: Colour  # stripes, dots, checks
    trousers: Colour
    outline: Colour
    background_top: Colour
    background_bottom: Colour


def _colour(h: float, s: float, v: float) -> Colour:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))
    return (round(r * 255), round(g * 255), round(b * 255))


def _distance(a: Colour, b: Colour) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=float)))


def _sample_skin(rng: np.random.Generator) -> Colour:
    if rng.random() < 0.15:  # fantasy skin: blue, green, lilac...
        return _colour(rng.random(), rng.uniform(0.25, 0.55), rng.uniform(0.6, 0.95))
    return _colour(rng.uniform(0.04, 0.1), rng.uniform(0.2, 0.6), rng.uniform(0.35, 0.98))


def _sample_hair(rng: np.random.Generator) -> Colour:
    kind = rng.choice(["black", "brown", "blonde", "red", "grey", "fantasy"], p=[0.2, 0.25, 0.15, 0.1, 0.1, 0.2])
    h, s, v = {
        "black": (rng.uniform(0.0, 1.0), rng.uniform(0.0, 0.3), rng.uniform(0.08, 0.2)),
        "brown": (rng.uniform(0.05, 0.1), rng.uniform(0.5, 0.8), rng.uniform(0.25, 0.5)),
        "blonde": (rng.uniform(0.1, 0.15), rng.uniform(0.4, 0.7), rng.uniform(0.75, 0.95)),
        "red": (rng.uniform(0.01, 0.05), rng.uniform(0.65, 0.9), rng.uniform(0.55, 0.85)),
        "grey": (rng.uniform(0.0, 1.0), rng.uniform(0.0, 0.06), rng.uniform(0.55, 0.85)),
        "fantasy": (rng.uniform(0.0, 1.0), rng.uniform(0.5, 0.9), rng.uniform(0.5, 0.9)),
    }[str(kind)]
    return _colour(h, s, v)


def _sample_iris(rng: np.random.Generator) -> Colour:
    h, s, v = [
        (0.07, 0.75, 0.35),  # brown
        (0.58, 0.65, 0.75),  # blue
        (0.33, 0.6, 0.55),  # green
        (0.55, 0.15, 0.55),  # grey
        (0.0, 0.0, 0.12),  # black
        (0.8, 0.55, 0.65),  # violet
    ][rng.integers(6)]
    return _colour(h + rng.uniform(-0.03, 0.03), s * rng.uniform(0.85, 1.1), v * rng.uniform(0.85, 1.1))


def _sample_palette(rng: np.random.Generator) -> dict[str, Colour]:
    skin = _sample_skin(rng)
    sh, ss, sv = colorsys.rgb_to_hsv(*(c / 255 for c in skin))
    clothes_hue = rng.random()
    clothes = _colour(clothes_hue, rng.uniform(0.35, 0.9), rng.uniform(0.35, 0.95))
    if rng.random() < 0.5:  # accent: a complementary hue, or the same hue lighter or darker
        accent = _colour(clothes_hue + rng.uniform(0.35, 0.65), rng.uniform(0.3, 0.9), rng.uniform(0.4, 1.0))
    else:
        ch, cs, cv = colorsys.rgb_to_hsv(*(c / 255 for c in clothes))
        accent = _colour(ch, cs * rng.uniform(0.2, 0.6), cv + 0.4) if cv < 0.6 else _colour(ch, cs, cv - 0.4)
    # The background differs clearly from the skin and the clothes, so the character stands out.
    for _ in range(20):
        top = _colour(rng.random(), rng.uniform(0.05, 0.5), rng.uniform(0.5, 0.97))
        if min(_distance(top, skin), _distance(top, clothes)) > 90:
            break
    th, ts, tv = colorsys.rgb_to_hsv(*(c / 255 for c in top))
    bottom = _colour(th + rng.uniform(-0.1, 0.1), ts + rng.uniform(0.0, 0.2), tv - rng.uniform(0.1, 0.35))
    return {
        "skin": skin,
        "hair": _sample_hair(rng),
        "iris": _sample_iris(rng),
        "lips": _colour(0.98 + rng.uniform(-0.03, 0.03), max(ss, 0.3) + rng.uniform(0.15, 0.35),
                        sv * rng.uniform(0.6, 0.85)),
        "clothes": clothes,
        "clothes_accent": accent,
        "trousers": _colour(rng.random(), rng.uniform(0.15, 0.6), rng.uniform(0.15, 0.5)),
        "outline": _colour(sh, 0.4, rng.uniform(0.08, 0.18)),
        "background_top": top,
        "background_bottom": bottom,
    }


def _arm_points(shoulder: np.ndarray, side: float, upper: float, forearm: float, raise_deg: np.ndarray,
                bend_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Elbow and wrist [..., 2] of an arm; side -1 for the right arm (image left), +1 for the left."""
    a = np.radians(raise_deg)
    f = np.radians(raise_deg + bend_deg)
    elbow = shoulder + upper * np.stack([side * np.sin(a), np.cos(a)], axis=-1)
    wrist = elbow + forearm * np.stack([side * np.sin(f), np.cos(f)], axis=-1)
    return elbow, wrist


def _elbow_limit(raise_deg: np.ndarray | float) -> np.ndarray | float:
    """The largest elbow bend at a given raise (the forearm stops short of pointing straight up)."""
    return np.minimum(MAX_ELBOW, MAX_FOREARM - raise_deg)


def _envelope(g: dict[str, float]) -> tuple[float, float, float]:
    """Half width, height above and depth below the hip centre that the character can ever cover,
    in the units of the proportions `g` (hip centre at the origin)."""
    # Arms, over a grid of every raise and bend within the limits.
    raise_deg = np.linspace(0.0, MAX_ARM_RAISE, 36)[:, None]
    bend01 = np.linspace(0.0, 1.0, 36)[None, :]
    bend_deg = MIN_ELBOW + (_elbow_limit(raise_deg) - MIN_ELBOW) * bend01
    shoulder = np.array([g["shoulder_width"], -g["torso_length"] + g["shoulder_drop"]])
    elbow, wrist = _arm_points(shoulder, 1.0, g["upper_arm"], g["forearm"], raise_deg, bend_deg)
    thickness = g["arm_thickness"] * 2 * g["shoulder_width"]
    hand = thickness / 2 * g["hand_size"]
    arm_x = max(elbow[..., 0].max() + thickness / 2, wrist[..., 0].max() + hand, shoulder[0] + thickness / 2)
    arm_top = min(elbow[..., 1].min() - thickness / 2, wrist[..., 1].min() - hand, shoulder[1] - thickness / 2)
    arm_bottom = max(elbow[..., 1].max() + thickness / 2, wrist[..., 1].max() + hand)
    # Head: a circle about its pivot holding the cranium, the hair and the ears at any rotation.
    cranium = 0.281 + g["cranium_lift"] + max(g["cranium_width"], g["cranium_height"]) * _HAIR_REACH[g["hair_style"]]
    ears = float(np.linalg.norm(_FACE_3D[_LEFT_EAR] * [g["head_width"], 1, 1] - _PIVOT)) + g["ear_size"]
    head = 1.05 * g["face_scale"] * (max(cranium, ears) + 0.02)
    pivot_y = -g["torso_length"] - g["neck_length"]
    half_width = max(arm_x, head, g["hip_width"] * 1.2)
    above = max(-arm_top, head - pivot_y)
    below = max(arm_bottom, 0.02)
    # Lean turns everything about the hip centre: a point moves at most (its distance x angle).
    reach = math.hypot(half_width, max(above, below))
    lean = reach * math.radians(MAX_LEAN)
    return half_width + lean + MAX_SWAY, above + lean, below + lean


def _between(rng: np.random.Generator, low: float, high: float) -> float:
    """Uniform in [low, high]; `low` where rounding left no room."""
    return low + max(0.0, high - low) * float(rng.random())


def sample_character(rng: np.random.Generator) -> Character:
    """A random character, fitted to stay inside the frame through any motion."""
    # 1. proportions, in units where a typical character just fits the frame
    g: dict = {
        "torso_length": rng.uniform(0.26, 0.36),
        "shoulder_width": rng.uniform(0.09, 0.15),
        "shoulder_drop": rng.uniform(0.005, 0.025),
        "neck_length": rng.uniform(0.05, 0.09),
        "upper_arm": rng.uniform(0.12, 0.17),
        "forearm": rng.uniform(0.11, 0.15),
        "face_scale": rng.uniform(0.42, 0.56),
        "head_width": rng.uniform(0.85, 1.15),
        "cranium_lift": rng.uniform(0.0, 0.04),
        "ear_size": rng.uniform(0.035, 0.06),
        "arm_thickness": rng.uniform(0.16, 0.3),
        "hand_size": rng.uniform(1.0, 1.4),
        "hair_style": str(rng.choice(HAIR_STYLES, p=[0.12, 0.33, 0.25, 0.15, 0.15])),
    }
    g["hip_width"] = g["shoulder_width"] * rng.uniform(0.55, 1.0)
    aspect = rng.uniform(0.8, 1.2)  # the head ellipse's height over its width
    g["cranium_width"] = 0.2 * g["head_width"] * rng.uniform(1.05, 1.3)
    g["cranium_height"] = float(np.clip(g["cranium_width"] * aspect, 0.27, 0.36))
    # 2. fit: scale down until the envelope fits (and a little more for some variety of size),
    #    then place it anywhere it fits
    half_width, above, below = _envelope(g)
    fit = min(1.0, (1 - 2 * MARGIN) / (2 * half_width), (1 - 2 * MARGIN) / (above + below)) * rng.uniform(0.85, 1.0)
    x = _between(rng, MARGIN + half_width * fit, 1 - MARGIN - half_width * fit)
    y = _between(rng, MARGIN + above * fit, 1 - MARGIN - below * fit)
    lengths = ("torso_length", "shoulder_width", "shoulder_drop", "neck_length", "upper_arm", "forearm",
               "face_scale", "hip_width")
    scaled = {k: g[k] * fit for k in lengths}
    # 3. looks
    return Character(
        x=x, y=y, **scaled, sway_reach=MAX_SWAY * fit, rest_arm_angle=rng.uniform(5.0, 12.0),
        head_width=g["head_width"], eye_scale=rng.uniform(1.0, 1.4), mouth_width=rng.uniform(0.8, 1.2),
        cranium_width=g["cranium_width"], cranium_height=g["cranium_height"], cranium_lift=g["cranium_lift"],
        ear_size=g["ear_size"], eye_width=rng.uniform(1.1, 1.4), eye_roundness=rng.uniform(0.55, 0.9),
        iris_size=rng.uniform(0.5, 0.7), brow_thickness=rng.uniform(0.012, 0.025),
        neck_width=rng.uniform(0.12, 0.2), arm_thickness=g["arm_thickness"], hand_size=g["hand_size"],
        pattern=str(rng.choice(PATTERNS)), pattern_period=rng.uniform(0.12, 0.25),
        pattern_angle=float(rng.choice([0.0, 90.0, 45.0, -45.0])), hair_style=g["hair_style"],
        hair_part=(rng.uniform(0.25, 0.6), rng.uniform(0.25, 0.6)), sleeves=str(rng.choice(SLEEVES)),
        blush=bool(rng.random() < 0.4), background=str(rng.choice(BACKGROUNDS)), **_sample_palette(rng),
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Motion


@dataclass(frozen=True)
class Wave:
    """A smooth signal in [-1, 1]: a sum of sinusoids whose amplitudes add up to 1."""

    amplitudes: tuple[float, ...]
    frequencies: tuple[float, ...]  # Hz
    phases: tuple[float, ...]  # radians

    def __call__(self, t: float) -> float:
        return float(sum(a * math.sin(2 * math.pi * f * t + p)
                         for a, f, p in zip(self.amplitudes, self.frequencies, self.phases, strict=True)))


def _sample_wave(rng: np.random.Generator, low_hz: float, high_hz: float, terms: int = 3) -> Wave:
    amplitudes = rng.uniform(0.2, 1.0, terms)
    return Wave(tuple((amplitudes / amplitudes.sum()).tolist()), tuple(rng.uniform(low_hz, high_hz, terms).tolist()),
                tuple(rng.uniform(0, 2 * math.pi, terms).tolist()))


@dataclass(frozen=True)
class Motion:
    """Smooth motion: each channel is a `Wave` times how much of its range this motion uses."""

    yaw: Wave
    pitch: Wave
    roll: Wave
    yaw_amount: float  # of MAX_YAW
    pitch_amount: float  # of MAX_PITCH
    roll_amount: float  # of MAX_ROLL
    sway: Wave
    lean: Wave
    sway_amount: float  # of the character's sway reach and of MAX_LEAN
    raise_right: Wave
    raise_left: Wave
    bend_right: Wave
    bend_left: Wave
    arm_amount: float  # of MAX_ARM_RAISE
    arm_rest: float  # exponent > 1: the arms spend more time down
    bend_amount: float  # of the elbow's range
    blink_period: float  # seconds between blinks
    blink_phase: float  # seconds
    talk: Wave
    talk_bias: float  # the mouth opens where talk + bias > 0
    talk_amount: float  # widest opening, of the largest
    smile: Wave
    smile_amount: float


def sample_motion(rng: np.random.Generator) -> Motion:
    """Random smooth motion within the limits (head, blinks, talking, arms, sway)."""
    blink_period = rng.uniform(1.5, 4.0)
    return Motion(
        yaw=_sample_wave(rng, 0.05, 0.4), pitch=_sample_wave(rng, 0.1, 0.5), roll=_sample_wave(rng, 0.05, 0.3),
        yaw_amount=rng.uniform(0.5, 1.0), pitch_amount=rng.uniform(0.3, 1.0), roll_amount=rng.uniform(0.3, 1.0),
        sway=_sample_wave(rng, 0.05, 0.25), lean=_sample_wave(rng, 0.05, 0.2), sway_amount=rng.uniform(0.2, 1.0),
        raise_right=_sample_wave(rng, 0.05, 0.35), raise_left=_sample_wave(rng, 0.05, 0.35),
        bend_right=_sample_wave(rng, 0.05, 0.35), bend_left=_sample_wave(rng, 0.05, 0.35),
        arm_amount=rng.uniform(0.3, 1.0), arm_rest=rng.uniform(1.0, 2.5), bend_amount=rng.uniform(0.3, 1.0),
        blink_period=blink_period, blink_phase=rng.uniform(0, blink_period),
        talk=_sample_wave(rng, 0.5, 2.5, terms=2), talk_bias=rng.uniform(-0.1, 0.3),
        talk_amount=rng.uniform(0.5, 1.0), smile=_sample_wave(rng, 0.02, 0.1, terms=2),
        smile_amount=rng.uniform(0.0, 0.8),
    )  # fmt: skip


@dataclass(frozen=True)
class _Pose:
    """The pose at one instant: angles in degrees, openings in [0, 1]."""

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    eyes_open: float = 1.0
    mouth_open: float = 0.0
    smile: float = 0.0
    sway: float = 0.0  # frame units
    lean: float = 0.0
    raise_right: float = 0.0
    raise_left: float = 0.0
    bend_right: float = REST_ELBOW
    bend_left: float = REST_ELBOW


def _pose(character: Character, motion: Motion, t: float) -> _Pose:
    m = motion

    def arm(raise_wave: Wave, bend_wave: Wave) -> tuple[float, float]:
        rest = character.rest_arm_angle
        lifted = ((1 + raise_wave(t)) / 2) ** m.arm_rest
        raise_deg = rest + (MAX_ARM_RAISE - rest) * m.arm_amount * lifted
        full = MIN_ELBOW + (_elbow_limit(raise_deg) - MIN_ELBOW) * (1 + bend_wave(t)) / 2
        return raise_deg, REST_ELBOW + (full - REST_ELBOW) * m.bend_amount

    since_blink = (t - m.blink_phase) % m.blink_period
    closed = math.sin(math.pi * since_blink / BLINK_SECONDS) ** 2 if since_blink < BLINK_SECONDS else 0.0
    talking = max(0.0, m.talk(t) + m.talk_bias) / (1 + m.talk_bias)
    raise_right, bend_right = arm(m.raise_right, m.bend_right)
    raise_left, bend_left = arm(m.raise_left, m.bend_left)
    return _Pose(
        yaw=MAX_YAW * m.yaw_amount * m.yaw(t), pitch=MAX_PITCH * m.pitch_amount * m.pitch(t),
        roll=MAX_ROLL * m.roll_amount * m.roll(t), eyes_open=1.0 - closed,
        mouth_open=min(1.0, m.talk_amount * talking**1.5), smile=m.smile_amount * max(0.0, m.smile(t)),
        sway=character.sway_reach * m.sway_amount * m.sway(t), lean=MAX_LEAN * m.sway_amount * m.lean(t),
        raise_right=raise_right, raise_left=raise_left, bend_right=bend_right, bend_left=bend_left,
    )  # fmt: skip


@lru_cache(maxsize=64)
def _shaped_face(head_width: float, eye_scale: float, mouth_width: float) -> np.ndarray:
    """The template with a character's face shape (read-only)."""
    p = _FACE_3D.copy()
    p[:, 0] *= head_width
    for eye in (slice(36, 42), slice(42, 48)):
        center = p[eye].mean(axis=0)
        p[eye] = center + eye_scale * (p[eye] - center)
    p[48:68, 0] *= mouth_width
    p.flags.writeable = False
    return p


def _expressed(face: np.ndarray, pose: _Pose) -> np.ndarray:
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
    p[0:17, 1] += 0.8 * drop * _JAW_DROP
    p[[48, 54, 60, 64], 1] -= 0.025 * pose.smile
    p[[48, 60], 0] -= 0.012 * pose.smile
    p[[54, 64], 0] += 0.012 * pose.smile
    return p


def _landmarks(character: Character, pose: _Pose, timestamp: float) -> Landmarks:
    c = character
    # 1. body, standing upright about the hip centre, then leaned and swayed
    hips = np.array([c.x + pose.sway, c.y])
    neck = hips + [0.0, -c.torso_length]
    shoulders_y = neck[1] + c.shoulder_drop
    right_shoulder = np.array([hips[0] - c.shoulder_width, shoulders_y])
    left_shoulder = np.array([hips[0] + c.shoulder_width, shoulders_y])
    right_elbow, right_wrist = _arm_points(right_shoulder, -1.0, c.upper_arm, c.forearm,
                                           np.float64(pose.raise_right), np.float64(pose.bend_right))
    left_elbow, left_wrist = _arm_points(left_shoulder, 1.0, c.upper_arm, c.forearm,
                                         np.float64(pose.raise_left), np.float64(pose.bend_left))
    pivot = neck + [0.0, -c.neck_length]
    upper = np.stack([neck, right_shoulder, right_elbow, right_wrist, left_shoulder, left_elbow, left_wrist, pivot])
    upper = _rotate2d(upper, hips, pose.lean)
    neck, pivot = upper[0], upper[7]
    # 2. head: shaped, expressed, rotated about its pivot, projected and placed on the neck
    face3d = _expressed(_shaped_face(c.head_width, c.eye_scale, c.mouth_width), pose)
    rotated = (face3d - _PIVOT) @ _rotation(pose.yaw, pose.pitch, pose.roll + pose.lean).T
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
    body[16, :2] = head[_RIGHT_EAR]
    body[17, :2] = head[_LEFT_EAR]
    return Landmarks(face=face, body=body, timestamp=timestamp)


def pose_at(character: Character, motion: Motion | None, t: float) -> Landmarks:
    """The character's landmarks at time `t` (seconds) of `motion`; `None` gives the rest pose
    (frontal, neutral expression, eyes open, mouth closed, arms down)."""
    pose = _Pose(raise_right=character.rest_arm_angle, raise_left=character.rest_arm_angle) if motion is None \
        else _pose(character, motion, t)
    return _landmarks(character, pose, float(t))


# --------------------------------------------------------------------------------------------
# Drawing (OpenCV, anti-aliased, coordinates with 4 fractional bits)

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
    s = float(np.linalg.norm(face[27] - face[33])) / _NOSE_LENGTH
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
    opening = min(1.2, gap / width / _EYE_RATIO)
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


def draw_character(character: Character, landmarks: Landmarks, width: int, height: int) -> np.ndarray:
    """The character in the pose of `landmarks` (face and body needed), RGB uint8 [height, width, 3].

    Everything is placed from the landmarks: the head from the jaw, ears and nose, the eyes from
    the eyelids, the mouth from the lips, the torso from the shoulders and hips, the arms from
    shoulder, elbow and wrist.
    """
    if landmarks.face is None or landmarks.body is None:
        raise ValueError("draw_character needs landmarks with both a face and a body")
    _check_size(width, height)
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
    if _distance(brow_colour, c.skin) < 60:
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


# --------------------------------------------------------------------------------------------
# Clips


@dataclass
class SyntheticClip:
    """One training clip: frames and their driving images, paired exactly, and the reference."""

    frames: np.ndarray  # uint8 [T, H, W, 3]
    driving: np.ndarray  # uint8 [T, H, W, 3]: render_body of the same landmarks
    reference: np.ndarray  # uint8 [H, W, 3]: the character at rest
    landmarks: list[Landmarks]  # timestamps from 0 at the clip's first frame
    character: Character
    motion: Motion
    start: float  # the clip's first frame is this many seconds into the motion


def _check_size(width: int, height: int) -> None:
    if not (isinstance(width, (int, np.integer)) and isinstance(height, (int, np.integer))) or width < 16 \
            or height < 16:
        raise ValueError(f"width and height must be integers of at least 16, got width={width!r}, height={height!r}")


def split_rng(seed: int, split: str) -> np.random.Generator:
    """The random stream of one clip: train and val streams never meet."""
    if split not in SPLIT_CODE:
        raise ValueError(f"split must be one of {sorted(SPLIT_CODE)}, got split={split!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got seed={seed!r}")
    return np.random.default_rng(np.random.SeedSequence([SPLIT_CODE[split], int(seed)]))


def make_clip(seed: int, *, frames: int, width: int, height: int, fps: float = 16.0,
              split: str = "train") -> SyntheticClip:
    """Clip `seed` of `split` ("train" or "val"): a new character and motion, starting at a random
    time of the motion; `frames` frames at `fps`."""
    rng = split_rng(seed, split)
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
        raise ValueError(f"frames must be a positive integer, got frames={frames!r}")
    _check_size(width, height)
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got fps={fps!r}")
    # Separate child streams: the character does not change when the motion's sampling does.
    character_rng, motion_rng, start_rng = (np.random.default_rng(s) for s in rng.bit_generator.seed_seq.spawn(3))
    character = sample_character(character_rng)
    motion = sample_motion(motion_rng)
    start = float(start_rng.uniform(0.0, MAX_START))
    landmarks = [replace(pose_at(character, motion, start + i / fps), timestamp=i / fps) for i in range(frames)]
    return SyntheticClip(
        frames=np.stack([draw_character(character, lm, width, height) for lm in landmarks]),
        driving=np.stack([render_body(lm, width, height) for lm in landmarks]),
        reference=draw_character(character, pose_at(character, None, 0.0), width, height),
        landmarks=landmarks,
        character=character,
        motion=motion,
        start=start,
    )


def contact_sheet(clips: list[SyntheticClip], every: int = 4) -> np.ndarray:
    """One image to look at: per clip, a row reference | every `every`-th frame, and under the
    frames their driving images. uint8 [H, W, 3]."""
    if not clips:
        raise ValueError("contact_sheet needs at least one clip")
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"every must be a positive integer, got every={every!r}")
    height, width = clips[0].reference.shape[:2]
    if any(clip.reference.shape[:2] != (height, width) for clip in clips):
        raise ValueError("contact_sheet needs clips of one frame size")
    gap, grey = 2, 40
    columns = 1 + max(len(range(0, len(clip.frames), every)) for clip in clips)
    sheet = np.full((len(clips) * (2 * height + gap) + gap, columns * (width + gap) + gap, 3), grey, np.uint8)
    for row, clip in enumerate(clips):
        top = gap + row * (2 * height + gap)
        sheet[top:top + height, gap:gap + width] = clip.reference
        sheet[top + height:top + 2 * height, gap:gap + width] = 0
        for column, index in enumerate(range(0, len(clip.frames), every), start=1):
            left = gap + column * (width + gap)
            sheet[top:top + height, left:left + width] = clip.frames[index]
            sheet[top + height:top + 2 * height, left:left + width] = clip.driving[index]
    return sheet
