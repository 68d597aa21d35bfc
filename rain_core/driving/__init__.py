"""Driving signals: camera frames -> landmarks -> driving images the models were trained on."""

from rain_core.driving.settings import DrivingSettings, DrivingSettingsError, FaceCalibration, SmoothingSettings

__all__ = ["DrivingSettings", "DrivingSettingsError", "FaceCalibration", "SmoothingSettings"]
