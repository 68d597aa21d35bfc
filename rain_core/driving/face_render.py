"""The RAIN-v0.1 face driving image: coloured dots on black, from 68 face landmarks.

The pose guider of RAIN-v0.1 was trained on images drawn one particular way, so this module
reproduces the reference drawing exactly (the golden fixture `face_render.*` pins it):

- the dot radius is `max(int(3 * l), 1)` pixels at 512x512, with `l = |p27 - p8| / 0.3`
  measured on the landmarks *before* retargeting, in normalised units: 3 pixels for a face
  whose nose bridge to chin spans 30% of the image, growing and shrinking with the face;
- with patterns (the default, what the model was trained on) one dot per landmark group, at
  the group's mean, in the group's colour; without, one dot per landmark, coloured by region;
- a dot whose centre truncates to pixel column 0 or row 0 (or less) is left out: the
  reference marks missing landmarks with -1 and skips them that way.

At other canvas sizes the radius scales with the shorter side (`min(width, height) / 512`),
so that a smaller driving image looks like the 512x512 one shrunk, not one with fat dots.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rain_core.driving.dots import draw_dots
from rain_core.driving.retarget import NUM_FACE_LANDMARKS, check_face_landmarks, retarget_face
from rain_core.driving.settings import FaceCalibration

# The reference draws at its detection size, 512x512; radii are in pixels of that canvas.
REFERENCE_CANVAS_SIZE = 512


class DotPattern(NamedTuple):
    """One dot of the patterned face: drawn at the mean of `indices` in `colour` (RGB)."""

    indices: tuple[int, ...]
    colour: tuple[int, int, int]


_JAW = (0, 255, 255)
_RIGHT_BROW = (128, 0, 255)  # the subject's right: left in the image
_LEFT_BROW = (255, 0, 128)
_MOUTH = (0, 0, 255)
_NOSE = (255, 0, 255)
_RIGHT_EYE = (255, 128, 128)
_LEFT_EYE = (128, 128, 255)

# The 26 dots RAIN-v0.1 was trained on, in drawing order (later dots cover earlier ones): five
# along the jaw, three per brow, four around the inner mouth, the nose tip, five per eye
# outline. Outer lips, nose bridge and most of the jaw are not drawn at all.
FACE_PATTERNS: tuple[DotPattern, ...] = (
    DotPattern((1, 2), _JAW),
    DotPattern((4,), _JAW),
    DotPattern((8,), _JAW),
    DotPattern((12,), _JAW),
    DotPattern((15, 14), _JAW),
    DotPattern((17,), _RIGHT_BROW),
    DotPattern((18, 19), _RIGHT_BROW),
    DotPattern((20,), _RIGHT_BROW),
    DotPattern((23,), _LEFT_BROW),
    DotPattern((24, 25), _LEFT_BROW),
    DotPattern((26,), _LEFT_BROW),
    DotPattern((60,), _MOUTH),
    DotPattern((62,), _MOUTH),
    DotPattern((64,), _MOUTH),
    DotPattern((66,), _MOUTH),
    DotPattern((33, 30), _NOSE),
    DotPattern((36, 37), _RIGHT_EYE),
    DotPattern((37, 38), _RIGHT_EYE),
    DotPattern((38, 39), _RIGHT_EYE),
    DotPattern((40, 39), _RIGHT_EYE),
    DotPattern((41,), _RIGHT_EYE),
    DotPattern((42, 43), _LEFT_EYE),
    DotPattern((43, 44), _LEFT_EYE),
    DotPattern((44, 45), _LEFT_EYE),
    DotPattern((46,), _LEFT_EYE),
    DotPattern((47, 42), _LEFT_EYE),
)

# Without patterns every landmark is drawn, coloured by region: (first index, last + 1, RGB).
# They are the reference's; they differ from the pattern colours for the brows (which share
# the jaw's colour here) and the mouth.
LANDMARK_REGION_COLOURS: tuple[tuple[int, int, tuple[int, int, int]], ...] = (
    (0, 27, (0, 255, 255)),  # jaw and brows
    (27, 36, (255, 0, 255)),  # nose
    (36, 42, (255, 128, 128)),  # right eye
    (42, 48, (128, 128, 255)),  # left eye
    (48, 55, (173, 255, 68)),  # upper outer lip, corner to corner
    (55, 60, (68, 173, 255)),  # lower outer lip
    (60, 65, (68, 255, 173)),  # inner lip, upper half
    (65, 68, (173, 68, 255)),  # inner lip, lower half
)


def _landmark_colours() -> np.ndarray:
    colours = np.full((NUM_FACE_LANDMARKS, 3), 255, dtype=np.uint8)
    for start, stop, colour in LANDMARK_REGION_COLOURS:
        colours[start:stop] = colour
    return colours


def _pattern_table(patterns: tuple[DotPattern, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patterns as arrays: padded indices [K, n] (padding points at an extra zero row), counts, colours."""
    longest = max(len(p.indices) for p in patterns)
    indices = np.full((len(patterns), longest), NUM_FACE_LANDMARKS, dtype=np.intp)
    for k, pattern in enumerate(patterns):
        indices[k, : len(pattern.indices)] = pattern.indices
    counts = np.array([len(p.indices) for p in patterns], dtype=np.float64)
    colours = np.array([p.colour for p in patterns], dtype=np.uint8)
    return indices, counts, colours


_LANDMARK_COLOURS = _landmark_colours()
_PATTERN_INDICES, _PATTERN_COUNTS, _PATTERN_COLOURS = _pattern_table(FACE_PATTERNS)


def dot_radius(landmarks: np.ndarray, width: int, height: int) -> int:
    """Dot radius in pixels for a face (landmarks [68, 2] as given, before retargeting)."""
    face_size = np.sqrt((landmarks[27, 0] - landmarks[8, 0]) ** 2 + (landmarks[27, 1] - landmarks[8, 1]) ** 2) / 0.3
    scale = min(width, height) / REFERENCE_CANVAS_SIZE
    return max(int(3 * face_size * scale), 1)


def _pattern_means(face: np.ndarray) -> np.ndarray:
    """[K, 2]: the mean of each pattern's landmarks, summed in the listed order as np.mean does."""
    padded = np.concatenate([face, np.zeros((1, 2))])
    return padded[_PATTERN_INDICES].sum(axis=1) / _PATTERN_COUNTS[:, None]


def _to_pixels(points: np.ndarray, width: int, height: int, radius: int) -> np.ndarray:
    """Normalised points -> integer pixels, truncated towards zero like the reference's int()."""
    pixels = points * np.array([width, height], dtype=np.float64)
    # Far-away points only need to stay far away; bounding them keeps the cast defined.
    pixels = np.clip(pixels, -1.0, np.array([width, height], dtype=np.float64) + radius + 1)
    return np.trunc(pixels).astype(np.int64)


def render_face(
    landmarks: np.ndarray,
    width: int,
    height: int,
    calibration: FaceCalibration | None = None,
    patterns: bool = True,
) -> np.ndarray:
    """The driving image of one face: [height, width, 3] uint8 RGB, dots on black.

    `landmarks`: [68, 2] iBUG face landmarks, x and y normalised to [0, 1]. `calibration`:
    retarget to anime proportions first (what RAIN-v0.1 expects of a human face); None draws
    the landmarks as they are. `patterns`: draw the 26 coloured group dots (`FACE_PATTERNS`,
    what the model was trained on), else every landmark with its region's colour.
    ValueError on a wrong shape, NaN/infinite landmarks or a non-positive size.
    """
    if width < 1 or height < 1:
        raise ValueError(f"driving image size must be positive, got width={width}, height={height}")
    face = check_face_landmarks(landmarks)
    radius = dot_radius(face, width, height)
    if calibration is not None:
        face = retarget_face(face, calibration)

    if patterns:
        points, colours = _pattern_means(face), _PATTERN_COLOURS
    else:
        points, colours = face, _LANDMARK_COLOURS
    pixels = _to_pixels(points, width, height, radius)
    shown = (pixels[:, 0] >= 1) & (pixels[:, 1] >= 1)

    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    draw_dots(canvas, pixels[shown], radius, colours[shown])
    return canvas
