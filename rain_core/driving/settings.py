"""Typed, validated settings of the driving signal; the live server changes them per session.

Out-of-range values are refused with a message that names the field and its range: a
calibration slider that silently clamps hides the user's mistake.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rain_core.driving.landmarks import LEFT_SHOULDER, NECK, RIGHT_SHOULDER
from rain_core.driving.neutral import neutral_body
from rain_core.validation import describe_validation_error

# Body framing's defaults: where the neutral body (the pose drawn when nobody is found) stands.
_NEUTRAL_BODY = neutral_body()
_NEUTRAL_NECK = _NEUTRAL_BODY[NECK, :2].round(6).tolist()
_NEUTRAL_SHOULDERS = _NEUTRAL_BODY[LEFT_SHOULDER, :2] - _NEUTRAL_BODY[RIGHT_SHOULDER, :2]
_NEUTRAL_SHOULDER_WIDTH = round(float(np.linalg.norm(_NEUTRAL_SHOULDERS)), 6)


class DrivingSettingsError(ValueError):
    """Settings that cannot be applied; the message names each offending field."""


class FaceCalibration(BaseModel):
    """The 13 calibration parameters that retarget a human face to anime proportions (RAIN-v0.1).

    Defaults and ranges are those of the reference demo's sliders.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    face_length_ratio: float = Field(0.75, ge=0.1, le=1.5)
    eye_height_ratio: float = Field(3.0, ge=0.1, le=4.0)
    eye_width_ratio: float = Field(1.6, ge=0.1, le=3.0)
    mouth_height_ratio: float = Field(1.2, ge=0.1, le=3.0)
    mouth_width_ratio: float = Field(0.67, ge=0.1, le=3.0)
    jaw_width_ratio: float = Field(0.9, ge=0.1, le=1.5)
    eye_horizontal_correction: float = Field(0.15, ge=-0.25, le=0.25)
    eye_distance_correction: float = Field(0.05, ge=-0.25, le=0.25)
    eye_vertical_correction: float = Field(0.10, ge=-0.25, le=0.25)
    mouth_horizontal_correction: float = Field(0.15, ge=-0.25, le=0.25)
    mouth_vertical_correction: float = Field(0.03, ge=-0.25, le=0.25)
    nose_horizontal_correction: float = Field(0.1, ge=-0.25, le=0.25)
    nose_vertical_correction: float = Field(0.05, ge=-0.25, le=0.25)


class SmoothingSettings(BaseModel):
    """One Euro filter on the landmarks: `min_cutoff` (Hz) trades jitter for lag at rest,
    `beta` (per unit of speed, in frame widths per second) lets fast motion through with less
    lag. The defaults keep a moving head within one frame of the camera (lag 0 on the test
    clip at 16 fps) while halving the jitter of a still one. `enabled=False` passes landmarks
    as found."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    min_cutoff: float = Field(1.0, gt=0, le=30)
    beta: float = Field(20.0, ge=0, le=1000)
    derivative_cutoff: float = Field(1.0, gt=0, le=30)


class BodyFraming(BaseModel):
    """Body mode only: move and scale the person so that the neck is at (`neck_x`, `neck_y`) and
    the shoulders span `shoulder_width` (fractions of the driving image). The defaults are
    the neutral body's framing, where characters stand; `enabled=False` draws the person
    where the camera sees them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    neck_x: float = Field(_NEUTRAL_NECK[0], ge=0, le=1)
    neck_y: float = Field(_NEUTRAL_NECK[1], ge=0, le=1)
    shoulder_width: float = Field(_NEUTRAL_SHOULDER_WIDTH, ge=0.02, le=1)


class DrivingSettings(BaseModel):
    """How camera frames become driving images."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["face", "body"] = "face"
    calibration: FaceCalibration = FaceCalibration()
    # Draw the face landmarks without retargeting (calibration ignored).
    retarget: bool = True
    smoothing: SmoothingSettings = SmoothingSettings()
    body_framing: BodyFraming = BodyFraming()
    # Keep the last landmarks this long when the person is lost, then show the neutral pose.
    hold_seconds: float = Field(0.5, ge=0, le=10)
    # Centred square crop of the camera frame, as a fraction of its shorter side (1 = whole).
    crop_ratio: float = Field(0.9, gt=0.05, le=1.0)
    # Mirror the camera frame first (selfie view), so the avatar moves like a mirror image.
    mirror: bool = False

    def updated(self, changes: dict[str, Any]) -> DrivingSettings:
        """A validated copy with `changes` applied (nested sections merge key by key)."""
        if not isinstance(changes, dict):
            raise DrivingSettingsError(f"settings changes must be an object, got {type(changes).__name__}")
        data = self.model_dump()
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        try:
            return DrivingSettings.model_validate(data)
        except ValidationError as exc:
            raise DrivingSettingsError(describe_validation_error(exc)) from None
