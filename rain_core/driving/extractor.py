"""Landmark extractors: a camera frame in, `Landmarks` out.

Behind the small `Extractor` protocol so that another detector (mediapipe Tasks with a model
file, DWPose through onnxruntime) can replace these without touching the rest. Both use
mediapipe's legacy solutions from the pinned release (0.10.21), whose wheel ships the
models: nothing is downloaded at run time.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from rain_core.driving.landmarks import Landmarks, body_from_mediapipe, face_from_mediapipe

logger = logging.getLogger(__name__)

# mediapipe needs a few pixels to run its detectors at all; smaller frames find nothing.
MIN_FRAME_SIDE = 16


class Extractor(Protocol):
    def extract(self, frame: np.ndarray, timestamp: float) -> Landmarks:
        """Contiguous RGB uint8 frame [H, W, 3] (the caller checks it) -> landmarks normalised to that frame."""
        ...

    def close(self) -> None: ...


def _points(landmark_list) -> np.ndarray:
    return np.array([(p.x, p.y, getattr(p, "visibility", 1.0)) for p in landmark_list.landmark], dtype=np.float64)


class _MediapipeExtractor:
    """The common part: run the solution on a frame large enough for it, read its result."""

    _solution = None

    def extract(self, frame: np.ndarray, timestamp: float) -> Landmarks:
        # The caller's crop of a small camera frame can be smaller than the camera frame was.
        if min(frame.shape[:2]) < MIN_FRAME_SIDE:
            return Landmarks(timestamp=timestamp)
        return self._landmarks(self._solution.process(frame), timestamp)

    def _landmarks(self, result, timestamp: float) -> Landmarks:
        raise NotImplementedError

    def close(self) -> None:
        self._solution.close()


class FaceMeshExtractor(_MediapipeExtractor):
    """Face only (468 mesh + 10 iris points -> iBUG 68): the fast path for face mode."""

    def __init__(self, min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5):
        import mediapipe as mp

        self._solution = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False,
            max_num_faces=1,
            refine_landmarks=True,
            min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=min_tracking_confidence,
        )

    def _landmarks(self, result, timestamp: float) -> Landmarks:
        if not result.multi_face_landmarks:
            return Landmarks(timestamp=timestamp)
        return Landmarks(face=face_from_mediapipe(_points(result.multi_face_landmarks[0])), timestamp=timestamp)


class HolisticExtractor(_MediapipeExtractor):
    """mediapipe Holistic: pose 33 (-> OpenPose 18), face mesh with irises (-> iBUG 68), both hands."""

    def __init__(self, model_complexity: int = 1, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5):
        import mediapipe as mp

        self._solution = mp.solutions.holistic.Holistic(
            static_image_mode=False,
            model_complexity=model_complexity,
            refine_face_landmarks=True,
            min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=min_tracking_confidence,
        )

    def _landmarks(self, result, timestamp: float) -> Landmarks:
        return Landmarks(
            face=face_from_mediapipe(_points(result.face_landmarks)) if result.face_landmarks else None,
            body=body_from_mediapipe(_points(result.pose_landmarks)) if result.pose_landmarks else None,
            left_hand=_points(result.left_hand_landmarks)[:, :2] if result.left_hand_landmarks else None,
            right_hand=_points(result.right_hand_landmarks)[:, :2] if result.right_hand_landmarks else None,
            timestamp=timestamp,
        )
