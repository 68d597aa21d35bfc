"""Smooth motion within fixed limits, and the pose it gives a character at one instant."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from rain_core.train.synthetic.character import Character

# Motion limits (degrees). Arms: 0 hangs down, 90 points sideways, 180 straight up.
MAX_YAW, MAX_PITCH, MAX_ROLL, MAX_LEAN = 35.0, 10.0, 15.0, 3.0
MAX_ARM_RAISE = 105.0
MIN_ELBOW, MAX_ELBOW = -40.0, 100.0  # forearm relative to the upper arm; positive bends outward and up
MAX_FOREARM = 175.0  # the forearm's direction never passes straight up
REST_ELBOW = 6.0
# Sideways sway of the whole body, in character units (before the character is fitted to the frame).
MAX_SWAY = 0.03
BLINK_SECONDS = 0.3


def elbow_limit(raise_deg: np.ndarray | float) -> np.ndarray | float:
    """The largest elbow bend at a given raise (the forearm stops short of pointing straight up)."""
    return np.minimum(MAX_ELBOW, MAX_FOREARM - raise_deg)


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
class Pose:
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


def pose_of(character: Character, motion: Motion, t: float) -> Pose:
    """The character's pose at time `t` (seconds) of `motion` (its arms rest at the character's own angle)."""
    m = motion

    def arm(raise_wave: Wave, bend_wave: Wave) -> tuple[float, float]:
        rest = character.rest_arm_angle
        lifted = ((1 + raise_wave(t)) / 2) ** m.arm_rest
        raise_deg = rest + (MAX_ARM_RAISE - rest) * m.arm_amount * lifted
        full = MIN_ELBOW + (elbow_limit(raise_deg) - MIN_ELBOW) * (1 + bend_wave(t)) / 2
        return raise_deg, REST_ELBOW + (full - REST_ELBOW) * m.bend_amount

    since_blink = (t - m.blink_phase) % m.blink_period
    closed = math.sin(math.pi * since_blink / BLINK_SECONDS) ** 2 if since_blink < BLINK_SECONDS else 0.0
    talking = max(0.0, m.talk(t) + m.talk_bias) / (1 + m.talk_bias)
    raise_right, bend_right = arm(m.raise_right, m.bend_right)
    raise_left, bend_left = arm(m.raise_left, m.bend_left)
    return Pose(
        yaw=MAX_YAW * m.yaw_amount * m.yaw(t), pitch=MAX_PITCH * m.pitch_amount * m.pitch(t),
        roll=MAX_ROLL * m.roll_amount * m.roll(t), eyes_open=1.0 - closed,
        mouth_open=min(1.0, m.talk_amount * talking**1.5), smile=m.smile_amount * max(0.0, m.smile(t)),
        sway=character.sway_reach * m.sway_amount * m.sway(t), lean=MAX_LEAN * m.sway_amount * m.lean(t),
        raise_right=raise_right, raise_left=raise_left, bend_right=bend_right, bend_left=bend_left,
    )  # fmt: skip
