"""Where in the camera frame the person is looked for: mirror and centred crop."""

from __future__ import annotations

import numpy as np

# Larger crops are scaled down before extraction: the detectors work at this size anyway, and
# a full HD frame would only cost time.
MAX_ANALYSIS_SIDE = 480


def crop_box(frame_width: int, frame_height: int, aspect: float, crop_ratio: float) -> tuple[int, int, int, int]:
    """The centred box (x0, y0, x1, y1) of the output's aspect ratio, `crop_ratio` of the largest that fits."""
    if frame_width / frame_height > aspect:
        height = frame_height
        width = frame_height * aspect
    else:
        width = frame_width
        height = frame_width / aspect
    width, height = max(1, round(width * crop_ratio)), max(1, round(height * crop_ratio))
    x0, y0 = (frame_width - width) // 2, (frame_height - height) // 2
    return x0, y0, x0 + width, y0 + height


def analysis_view(frame: np.ndarray, aspect: float, crop_ratio: float, mirror: bool) -> np.ndarray:
    """The part of the frame the extractor sees: mirrored if asked, cropped, at most 480 px."""
    import cv2

    if mirror:
        frame = frame[:, ::-1]
    x0, y0, x1, y1 = crop_box(frame.shape[1], frame.shape[0], aspect, crop_ratio)
    view = frame[y0:y1, x0:x1]
    longest = max(view.shape[:2])
    if longest > MAX_ANALYSIS_SIDE:
        scale = MAX_ANALYSIS_SIDE / longest
        size = (max(1, round(view.shape[1] * scale)), max(1, round(view.shape[0] * scale)))
        view = cv2.resize(view, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(view)
