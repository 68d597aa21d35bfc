"""The face driving image against the reference renderer's images (golden `face_render.*`).

Cases, sizes, calibrations and the pattern table all come from the fixture directory
(`--golden-dir`). Besides the 99.5%-of-all-pixels criterion of the golden README, the cases
also require 99.5% identity over the pixels drawn in either image: the dots cover ~0.1-0.3%
of a 512x512 image, so an all-black image, or a wrong warp, would pass the first alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from safetensors.numpy import load_file

from rain_core.driving import DrivingSettings, DrivingSettingsError, FaceCalibration
from rain_core.driving.dots import draw_dots
from rain_core.driving.face_render import FACE_PATTERNS, LANDMARK_REGION_COLOURS, render_face
from rain_core.driving.retarget import retarget_face, warps_from_calibration

MIN_IDENTICAL = 0.995


def _face_meta(golden_dir: Path) -> dict:
    return json.loads((golden_dir / "face_render.json").read_text())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "face_case" in metafunc.fixturenames:
        meta = _face_meta(Path(metafunc.config.getoption("--golden-dir")).resolve())
        metafunc.parametrize("face_case", meta["cases"], ids=lambda case: f"face{case['case']}")


@pytest.fixture(scope="module")
def face_meta(golden_dir: Path) -> dict:
    return _face_meta(golden_dir)


@pytest.fixture(scope="module")
def face_tensors(golden_dir: Path) -> dict[str, np.ndarray]:
    return load_file(str(golden_dir / "face_render.safetensors"))


@pytest.fixture(scope="module")
def sample_face(face_meta: dict, face_tensors: dict[str, np.ndarray]) -> np.ndarray:
    """A real face from the fixture (its first case), for the size and validation tests."""
    return face_tensors[f"face.{face_meta['cases'][0]['case']}.landmarks"]


def _calibration(case: dict) -> FaceCalibration | None:
    return None if case["params"] is None else FaceCalibration(**case["params"])


def test_face_render_matches_reference(face_case: dict, face_meta: dict, face_tensors: dict[str, np.ndarray]):
    k = face_case["case"]
    expected = face_tensors[f"face.{k}.image"]
    out = render_face(
        face_tensors[f"face.{k}.landmarks"],
        face_meta["width"],
        face_meta["height"],
        _calibration(face_case),
        patterns=face_case["patterns"],
    )
    assert out.dtype == np.uint8 and out.shape == expected.shape
    same = (out == expected).all(axis=-1)
    drawn = out.any(axis=-1) | expected.any(axis=-1)
    assert drawn.any(), f"case {k}: nothing drawn in either image"
    assert same.mean() >= MIN_IDENTICAL, f"case {k}: {same.mean():.4%} of pixels identical"
    assert same[drawn].mean() >= MIN_IDENTICAL, f"case {k}: {same[drawn].mean():.4%} of drawn pixels identical"


def test_pattern_table_matches_fixture(face_meta: dict):
    ours = [[list(p.indices), list(p.colour)] for p in FACE_PATTERNS]
    assert ours == face_meta["patterns"]


def test_calibration_fields_match_fixture(face_meta: dict):
    for case in face_meta["cases"]:
        if case["params"] is not None:
            assert set(case["params"]) == set(FaceCalibration.model_fields)


def test_seventeen_warps_from_thirteen_parameters():
    assert len(FaceCalibration.model_fields) == 13
    assert len(warps_from_calibration(FaceCalibration())) == 17


def test_out_of_range_calibration_is_refused():
    with pytest.raises(ValidationError, match="eye_height_ratio"):
        FaceCalibration(eye_height_ratio=4.5)
    with pytest.raises(ValidationError, match="nose_vertical_correction"):
        FaceCalibration(nose_vertical_correction=-0.3)
    with pytest.raises(DrivingSettingsError, match=r"calibration\.mouth_width_ratio"):
        DrivingSettings().updated({"calibration": {"mouth_width_ratio": 0.0}})


@pytest.mark.parametrize("shape", [(67, 2), (68, 3), (68,), (2, 68)])
def test_wrong_landmark_shape_is_refused(shape):
    landmarks = np.full(shape, 0.5)
    with pytest.raises(ValueError, match=r"shape \(68, 2\)"):
        render_face(landmarks, 64, 64)
    with pytest.raises(ValueError, match=r"shape \(68, 2\)"):
        retarget_face(landmarks, FaceCalibration())


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_landmarks_are_refused(sample_face, bad):
    landmarks = sample_face.copy()
    landmarks[33, 1] = bad
    with pytest.raises(ValueError, match=r"NaN or infinite values at indices \[33\]"):
        render_face(landmarks, 64, 64, FaceCalibration())
    with pytest.raises(ValueError, match="NaN"):
        retarget_face(landmarks, FaceCalibration())


def test_non_positive_size_is_refused(sample_face):
    with pytest.raises(ValueError, match="width=0"):
        render_face(sample_face, 0, 64)


def test_landmarks_are_not_modified(sample_face):
    landmarks = sample_face.copy()
    render_face(landmarks, 128, 128, FaceCalibration())
    retarget_face(landmarks, FaceCalibration())
    assert np.array_equal(landmarks, sample_face)


def _colour_centroid(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    ys, xs = np.nonzero((image == np.array(colour, dtype=np.uint8)).all(axis=-1))
    assert len(xs), f"no pixel of colour {colour}"
    return np.array([xs.mean(), ys.mean()])


def _pattern_colour(first_index: int) -> tuple[int, int, int]:
    return next(p.colour for p in FACE_PATTERNS if p.indices[0] == first_index)


@pytest.mark.parametrize(("width", "height"), [(64, 64), (96, 48), (40, 80), (512, 384)])
def test_other_sizes(sample_face, width, height):
    calibration = FaceCalibration()
    out = render_face(sample_face, width, height, calibration)
    assert out.shape == (height, width, 3) and out.dtype == np.uint8

    # Every pattern colour shows up, and the face reads as a face: nose below both eyes and
    # between them, mouth below the nose.
    for colour in {p.colour for p in FACE_PATTERNS}:
        _colour_centroid(out, colour)
    right_eye, left_eye = _colour_centroid(out, _pattern_colour(36)), _colour_centroid(out, _pattern_colour(42))
    nose, mouth = _colour_centroid(out, _pattern_colour(33)), _colour_centroid(out, _pattern_colour(60))
    assert nose[1] > max(right_eye[1], left_eye[1])
    assert right_eye[0] < nose[0] < left_eye[0]
    assert mouth[1] > nose[1]

    # The nose dot sits on the retargeted nose position, x scaled by width and y by height.
    face = retarget_face(sample_face, calibration)
    x, y = (face[33] + face[30]) / 2
    assert tuple(out[int(y * height), int(x * width)]) == _pattern_colour(33)


def test_dots_scale_with_the_canvas(sample_face):
    # The radius is in pixels of a 512x512 canvas: a canvas twice as large gets dots twice as
    # wide, not dots of the same size. Measured on two dots that cannot touch (chin and nose
    # bridge, the points the radius is taken from; every other landmark hidden with -1): the
    # area of a whole face depends on how its dots overlap at each size, and a small face's
    # radius is clamped to one pixel, which would hide a radius that does not scale.
    face = np.full_like(sample_face, -1.0)
    face[8], face[27] = (0.5, 0.8), (0.5, 0.35)
    widths = {}
    for size in (512, 1024):
        drawn = render_face(face, size, size, calibration=None, patterns=False).any(axis=-1)
        reach = size // 16  # far less than the two points' distance, far more than a dot's radius
        widths[size] = []
        for x, y in face[[8, 27]]:
            column, row = int(x * size), int(y * size)
            widths[size].append(int(drawn[row, max(column - reach, 0) : column + reach + 1].sum()))
    for small, large in zip(widths[512], widths[1024], strict=True):
        # A dot of radius r is 2r+1 pixels wide; the radius is truncated to whole pixels at each size.
        assert small >= 3 and 2 * small - 3 <= large <= 2 * small + 1, widths


def test_all_landmarks_mode_uses_region_colours(sample_face):
    size = 256
    out = render_face(sample_face, size, size, calibration=None, patterns=False)
    region_colours = {colour for _, _, colour in LANDMARK_REGION_COLOURS}
    assert {tuple(c) for c in np.unique(out.reshape(-1, 3), axis=0)} == region_colours | {(0, 0, 0)}
    # Later dots may cover earlier ones: each region must own the centre of at least one of its points.
    for start, stop, colour in LANDMARK_REGION_COLOURS:
        centres = [tuple(out[int(y * size), int(x * size)]) for x, y in sample_face[start:stop]]
        assert colour in centres, (start, stop)


@pytest.mark.parametrize("position", [-1.0, 0.001])
def test_dots_at_column_or_row_zero_are_not_drawn(sample_face, position):
    # The reference marks a lost landmark -1 and skips any dot whose centre truncates to
    # column or row 0 or less; a point just inside the left edge goes with it.
    size = 128
    landmarks = sample_face.copy()
    landmarks[36:42, 0] = position
    out = render_face(landmarks, size, size, calibration=None, patterns=False)
    right_eye_colour = np.array(LANDMARK_REGION_COLOURS[2][2], dtype=np.uint8)
    assert LANDMARK_REGION_COLOURS[2][:2] == (36, 42)
    assert not (out == right_eye_colour).all(axis=-1).any()
    assert (out == np.array(LANDMARK_REGION_COLOURS[3][2], dtype=np.uint8)).all(axis=-1).any()


def test_dots_match_opencv_footprint():
    cv2 = pytest.importorskip("cv2")
    height, width = 37, 53
    rng = np.random.default_rng(0)
    for radius in range(0, 24):
        centres = np.concatenate(
            [
                rng.integers(-radius - 2, [width + radius + 2, height + radius + 2], (6, 2)),
                [[0, 0], [width - 1, height - 1]],
            ]
        )
        colours = rng.integers(1, 256, (len(centres), 3), dtype=np.uint8)
        ours = np.zeros((height, width, 3), dtype=np.uint8)
        draw_dots(ours, centres, radius, colours)
        theirs = np.zeros_like(ours)
        for (x, y), colour in zip(centres.tolist(), colours.tolist(), strict=True):
            cv2.circle(theirs, (x, y), radius, colour, thickness=-1)
        assert np.array_equal(ours, theirs), f"radius {radius}"
