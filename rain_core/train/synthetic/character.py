"""Characters: their proportions, shapes and palette, fitted to stay inside the frame through any motion."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rain_core.train.synthetic.motion import MAX_ARM_RAISE, MAX_LEAN, MAX_SWAY, MIN_ELBOW, elbow_limit
from rain_core.train.synthetic.palette import Colour, sample_palette
from rain_core.train.synthetic.skeleton import FACE_3D, LEFT_EAR, PIVOT, arm_points

PATTERNS = ("plain", "stripes", "dots", "checks")
HAIR_STYLES = ("bald", "short", "long", "spiky", "bun")
SLEEVES = ("none", "short", "long")
BACKGROUNDS = ("plain", "gradient")
# Frame fraction kept free on every side; only the legs leave the frame, through the bottom.
MARGIN = 0.03
# How far the hair reaches beyond the cranium ellipse, per style.
_HAIR_REACH = {"bald": 1.0, "short": 1.1, "long": 1.14, "spiky": 1.3, "bun": 1.55}


@dataclass(frozen=True)
class Character:
    """One cartoon character: its proportions (where the landmarks go), shapes and palette.

    Lengths marked "frame" are fractions of the frame side, already fitted so that the character
    stays inside the frame through any motion within the limits of `motion`. The drawing's own sizes
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


def _envelope(g: dict[str, float]) -> tuple[float, float, float]:
    """Half width, height above and depth below the hip centre that the character can ever cover,
    in the units of the proportions `g` (hip centre at the origin)."""
    # Arms, over a grid of every raise and bend within the limits.
    raise_deg = np.linspace(0.0, MAX_ARM_RAISE, 36)[:, None]
    bend01 = np.linspace(0.0, 1.0, 36)[None, :]
    bend_deg = MIN_ELBOW + (elbow_limit(raise_deg) - MIN_ELBOW) * bend01
    shoulder = np.array([g["shoulder_width"], -g["torso_length"] + g["shoulder_drop"]])
    elbow, wrist = arm_points(shoulder, 1.0, g["upper_arm"], g["forearm"], raise_deg, bend_deg)
    thickness = g["arm_thickness"] * 2 * g["shoulder_width"]
    hand = thickness / 2 * g["hand_size"]
    arm_x = max(elbow[..., 0].max() + thickness / 2, wrist[..., 0].max() + hand, shoulder[0] + thickness / 2)
    arm_top = min(elbow[..., 1].min() - thickness / 2, wrist[..., 1].min() - hand, shoulder[1] - thickness / 2)
    arm_bottom = max(elbow[..., 1].max() + thickness / 2, wrist[..., 1].max() + hand)
    # Head: a circle about its pivot holding the cranium, the hair and the ears at any rotation.
    cranium = 0.281 + g["cranium_lift"] + max(g["cranium_width"], g["cranium_height"]) * _HAIR_REACH[g["hair_style"]]
    ears = float(np.linalg.norm(FACE_3D[LEFT_EAR] * [g["head_width"], 1, 1] - PIVOT)) + g["ear_size"]
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
        blush=bool(rng.random() < 0.4), background=str(rng.choice(BACKGROUNDS)), **sample_palette(rng),
    )  # fmt: skip
