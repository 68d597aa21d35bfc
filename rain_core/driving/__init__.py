"""Driving signals: camera frames -> landmarks -> driving images the models were trained on."""

from rain_core.driving.landmarks import Landmarks
from rain_core.driving.pipeline import DrivingPipeline
from rain_core.driving.settings import (
    BodyFraming,
    DrivingSettings,
    DrivingSettingsError,
    FaceCalibration,
    SmoothingSettings,
)

__all__ = [
    "BodyFraming",
    "DrivingPipeline",
    "DrivingSettings",
    "DrivingSettingsError",
    "FaceCalibration",
    "Landmarks",
    "SmoothingSettings",
]
