"""Camera frame -> driving image: crop, extract, smooth, hold or fall back, retarget or frame, draw.

One `DrivingPipeline` per stream. It never fails on a frame with nobody in it, a black frame
or a tiny one: the person's last landmarks are held for `hold_seconds`, then the neutral pose
is drawn. Settings can change between frames (the live server applies calibration sliders).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from rain_core.driving.body_framing import frame_body
from rain_core.driving.body_render import render_body
from rain_core.driving.extractor import MIN_FRAME_SIDE, Extractor, FaceMeshExtractor, HolisticExtractor
from rain_core.driving.face_render import render_face
from rain_core.driving.geometry import analysis_view
from rain_core.driving.landmarks import Landmarks
from rain_core.driving.neutral import neutral_body, neutral_face
from rain_core.driving.settings import DrivingSettings
from rain_core.driving.smoothing import OneEuroFilter

logger = logging.getLogger(__name__)


def check_frame(frame: np.ndarray) -> bool:
    """Whether a camera frame is large enough to hold a person; a frame that is not an RGB uint8
    array [H, W, 3] is a ValueError."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(
            f"camera frame must be an RGB uint8 array [H, W, 3], got "
            f"{getattr(frame, 'dtype', type(frame).__name__)} {getattr(frame, 'shape', '')}"
        )
    return min(frame.shape[:2]) >= MIN_FRAME_SIDE


def default_extractor(mode: str) -> Extractor:
    """Face mode needs only the face mesh (fast); body mode runs mediapipe Holistic."""
    return FaceMeshExtractor() if mode == "face" else HolisticExtractor()


class DrivingPipeline:
    def __init__(self, settings: DrivingSettings | None = None, *, width: int, height: int,
                 extractor: Extractor | None = None):
        if width < 8 or height < 8:
            raise ValueError(f"driving images must be at least 8x8, got {width}x{height}")
        self.width, self.height = width, height
        self._settings = settings or DrivingSettings()
        self._own_extractor = extractor is None
        self._extractor = extractor or default_extractor(self._settings.mode)
        self._lock = threading.Lock()
        self._filters: dict[str, OneEuroFilter] = {}
        self._last: Landmarks | None = None

    @property
    def settings(self) -> DrivingSettings:
        return self._settings

    def update(self, changes: dict[str, Any]) -> DrivingSettings:
        """Apply validated changes (raises `DrivingSettingsError` naming the field); returns the new settings."""
        new = self._settings.updated(changes)
        with self._lock:
            if new.mode != self._settings.mode and self._own_extractor:
                self._extractor.close()
                self._extractor = default_extractor(new.mode)
            if new.smoothing != self._settings.smoothing or new.mirror != self._settings.mirror \
                    or new.crop_ratio != self._settings.crop_ratio:
                self._filters.clear()
                self._last = None
            self._settings = new
        return new

    def landmarks(self, frame: np.ndarray, timestamp: float) -> Landmarks:
        """The landmarks the next driving image is drawn from (smoothed, held, or neutral)."""
        with self._lock:
            return self._landmarks(frame, timestamp)

    def __call__(self, frame: np.ndarray, timestamp: float) -> np.ndarray:
        """RGB uint8 camera frame [H, W, 3] and its time in seconds -> driving image [height, width, 3]."""
        with self._lock:
            return self.draw(self._landmarks(frame, timestamp))

    def close(self) -> None:
        if self._own_extractor:
            self._extractor.close()

    # -------------------------------------------------------------------------------------
    def _landmarks(self, frame: np.ndarray, timestamp: float) -> Landmarks:
        s = self._settings
        found = Landmarks(timestamp=timestamp)
        if check_frame(frame):
            view = analysis_view(frame, self.width / self.height, s.crop_ratio, s.mirror)
            found = self._extractor.extract(view, timestamp)
        wanted = found.face is not None if s.mode == "face" else found.body is not None
        if wanted:
            self._last = self._smooth(found, timestamp)
            return self._last
        if self._last is not None and timestamp - self._last.timestamp <= s.hold_seconds:
            return self._last.held()
        if self._last is not None:
            logger.debug("person lost for %.2f s: neutral pose", timestamp - self._last.timestamp)
            self._last = None
            for f in self._filters.values():
                f.reset()
        return Landmarks(
            face=neutral_face(),
            body=neutral_body() if s.mode == "body" else None,
            timestamp=timestamp,
            source="neutral",
        )

    def _smooth(self, found: Landmarks, timestamp: float) -> Landmarks:
        smoothing = self._settings.smoothing
        if not smoothing.enabled:
            return found

        def filtered(name: str, points: np.ndarray | None) -> np.ndarray | None:
            if points is None:
                self._filters.pop(name, None)
                return None
            f = self._filters.get(name)
            if f is None:
                f = self._filters[name] = OneEuroFilter(
                    smoothing.min_cutoff, smoothing.beta, smoothing.derivative_cutoff
                )
            return f(points, timestamp)

        return Landmarks(
            face=filtered("face", found.face),
            body=filtered("body", found.body),
            left_hand=filtered("left_hand", found.left_hand),
            right_hand=filtered("right_hand", found.right_hand),
            timestamp=timestamp,
        )

    def draw(self, landmarks: Landmarks) -> np.ndarray:
        """Landmarks -> driving image, in the current mode and calibration."""
        s = self._settings
        if s.mode == "body":
            return render_body(frame_body(landmarks, s.body_framing), self.width, self.height)
        calibration = s.calibration if s.retarget else None
        return render_face(landmarks.face, self.width, self.height, calibration)
