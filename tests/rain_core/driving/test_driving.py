"""The driving pipeline on real images: mediapipe on a real photograph, smoothing, bad frames."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rain_core.driving import DrivingPipeline, DrivingSettings, DrivingSettingsError
from rain_core.driving.geometry import crop_box
from rain_core.driving.landmarks import IBUG68_MIRROR, Landmarks
from rain_core.driving.synthetic_clip import ClipMotion, synthetic_clip
from tests.helpers import MEDIA_DIR

FPS = 16.0
# iBUG landmark groups
NOSE_TIP, CHIN, JAW_RIGHT, JAW_LEFT = 30, 8, 0, 16
RIGHT_EYE, LEFT_EYE, MOUTH = slice(36, 42), slice(42, 48), slice(48, 60)
# OpenPose
R_SHOULDER, L_SHOULDER = 2, 5
# Stated bounds (normalised coordinates; 0.002 is 1 px of a 512 px driving image).
STILL_JITTER_BOUND = 0.002
MAX_LAG_FRAMES = 1


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.asarray(Image.open(MEDIA_DIR / "astronaut.png").convert("RGB"))


def _settings(**changes) -> DrivingSettings:
    return DrivingSettings().updated({"crop_ratio": 1.0, **changes})


@pytest.fixture(scope="module")
def face_landmarks(astronaut) -> Landmarks:
    pipeline = DrivingPipeline(_settings(), width=512, height=512)
    try:
        return pipeline.landmarks(astronaut, 0.0)
    finally:
        pipeline.close()


def test_face_found_where_a_person_would_expect(face_landmarks):
    face = face_landmarks.face
    assert face_landmarks.source == "found" and face.shape == (68, 2)
    # The astronaut's face is in the upper middle of the photo, its chin above the suit's collar.
    x0, y0 = face.min(axis=0)
    x1, y1 = face.max(axis=0)
    assert 0.3 < x0 < x1 < 0.65 and 0.1 < y0 < y1 < 0.45
    assert 0.12 < x1 - x0 < 0.3  # a face, not the whole photo
    # iBUG order: the subject's right eye and jaw are on the image's left.
    assert face[RIGHT_EYE, 0].mean() < face[NOSE_TIP, 0] < face[LEFT_EYE, 0].mean()
    assert face[JAW_RIGHT, 0] < face[CHIN, 0] < face[JAW_LEFT, 0]
    assert face[RIGHT_EYE, 1].mean() < face[NOSE_TIP, 1] < face[MOUTH, 1].mean() < face[CHIN, 1]


def test_body_found_with_shoulders_below_the_face(astronaut):
    pipeline = DrivingPipeline(_settings(mode="body"), width=512, height=512)
    try:
        landmarks = pipeline.landmarks(astronaut, 0.0)
        image = pipeline.draw(landmarks)
    finally:
        pipeline.close()
    body, face = landmarks.body, landmarks.face
    assert landmarks.source == "found" and body.shape == (18, 3) and face is not None
    chin_y = face[CHIN, 1]
    for shoulder in (R_SHOULDER, L_SHOULDER):
        assert body[shoulder, 2] > 0.5
        assert chin_y < body[shoulder, 1] < 0.7
    assert body[R_SHOULDER, 0] < face[NOSE_TIP, 0] < body[L_SHOULDER, 0]
    assert body[L_SHOULDER, 0] - body[R_SHOULDER, 0] > 0.25  # shoulders wider than the face
    assert image.shape == (512, 512, 3) and image.any()


def _color_centroid(image: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    ys, xs = np.nonzero(np.all(image == rgb, axis=-1))
    assert len(xs), f"no {rgb} pixels drawn"
    return np.array([xs.mean(), ys.mean()])


def test_drawn_face_has_eyes_above_nose_above_mouth(astronaut):
    pipeline = DrivingPipeline(_settings(), width=512, height=512)
    try:
        image = pipeline(astronaut, 0.0)
    finally:
        pipeline.close()
    right_eye = _color_centroid(image, (255, 128, 128))
    left_eye = _color_centroid(image, (128, 128, 255))
    nose = _color_centroid(image, (255, 0, 255))
    mouth = _color_centroid(image, (0, 0, 255))
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]
    assert right_eye[0] < nose[0] < left_eye[0]


def test_mirrored_photo_gives_mirrored_landmarks(astronaut, face_landmarks):
    pipeline = DrivingPipeline(_settings(), width=512, height=512)
    try:
        mirrored = pipeline.landmarks(np.ascontiguousarray(astronaut[:, ::-1]), 0.0)
    finally:
        pipeline.close()
    # The mirror image's points: x flipped, and left and right swap names.
    expected = np.column_stack([1.0 - face_landmarks.face[:, 0], face_landmarks.face[:, 1]])[IBUG68_MIRROR]
    assert np.abs(mirrored.face - expected).mean() < 0.006
    # The mirror setting does the same flip inside the pipeline.
    pipeline = DrivingPipeline(_settings(mirror=True), width=512, height=512)
    try:
        flipped = pipeline.landmarks(astronaut, 0.0)
    finally:
        pipeline.close()
    assert np.abs(flipped.face - expected).mean() < 0.006


def _trajectory(frames, smoothing: bool, crop_ratio: float = 1.0) -> np.ndarray:
    pipeline = DrivingPipeline(_settings(crop_ratio=crop_ratio, smoothing={"enabled": smoothing}), width=512,
                               height=512)
    try:
        return np.stack([pipeline.landmarks(f, i / FPS).face for i, f in enumerate(frames)])
    finally:
        pipeline.close()


def _truth(reference_face: np.ndarray, maps, photo_side: int, frame_size) -> np.ndarray:
    """Where the photo's landmarks land in each frame, in the analysed view's coordinates."""
    x0, y0, x1, y1 = crop_box(*frame_size, 1.0, 1.0)
    points = reference_face * photo_side
    out = []
    for affine in maps:
        moved = points @ affine[:, :2].T + affine[:, 2]
        out.append((moved - [x0, y0]) / [x1 - x0, y1 - y0])
    return np.stack(out)


def test_smoothed_landmarks_follow_motion_within_a_frame(astronaut, face_landmarks):
    frames, maps = synthetic_clip(astronaut, 64, (640, 480), ClipMotion(period=32))
    truth = _truth(face_landmarks.face, maps, astronaut.shape[0], (640, 480))
    smoothed = _trajectory(frames, smoothing=True)
    raw = _trajectory(frames, smoothing=False)
    # The raw extraction tracks the known motion (so the clip is a fair test) ...
    assert np.abs(raw - truth).mean() < 0.01
    # ... and the smoothed landmarks lag it by at most one frame.
    skip = 8  # the filter's start-up

    def error(lag: int) -> float:
        return float(np.abs(smoothed[skip:] - truth[skip - lag : len(truth) - lag]).mean())

    best = min(range(4), key=error)
    assert best <= MAX_LAG_FRAMES, {lag: round(error(lag), 5) for lag in range(4)}


def test_still_clip_jitter_is_below_the_bound(astronaut):
    frames, _ = synthetic_clip(astronaut, 32, (640, 480), motion=None, noise=6.0)
    smoothed = _trajectory(frames, smoothing=True)[4:]
    raw = _trajectory(frames, smoothing=False)[4:]
    jitter = float(smoothed.std(axis=0).mean())
    assert jitter < STILL_JITTER_BOUND
    assert jitter <= float(raw.std(axis=0).mean())


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((480, 640, 3), np.uint8),  # black
        np.full((480, 640, 3), 128, np.uint8),  # nobody
        np.zeros((4, 4, 3), np.uint8),  # tiny
        np.random.default_rng(0).integers(0, 256, (333, 517, 3), dtype=np.uint8),  # odd size, noise
        np.zeros((1, 2000, 3), np.uint8),  # degenerate
    ],
    ids=["black", "nobody", "tiny", "odd", "line"],
)
@pytest.mark.parametrize("mode", ["face", "body"])
def test_frames_without_a_person_give_the_neutral_pose(frame, mode):
    pipeline = DrivingPipeline(DrivingSettings(mode=mode), width=64, height=96)
    try:
        image = pipeline(frame, 0.0)
        landmarks = pipeline.landmarks(frame, 0.1)
    finally:
        pipeline.close()
    assert image.shape == (96, 64, 3) and image.dtype == np.uint8
    assert image.any(), "the neutral pose is drawn"
    assert landmarks.source == "neutral"


def test_person_lost_is_held_then_neutral(astronaut):
    hold = 0.5
    pipeline = DrivingPipeline(_settings(hold_seconds=hold), width=512, height=512)
    black = np.zeros_like(astronaut)
    try:
        found = pipeline.landmarks(astronaut, 0.0)
        held = pipeline.landmarks(black, hold / 2)
        neutral = pipeline.landmarks(black, hold * 2)
        again = pipeline.landmarks(astronaut, hold * 3)
    finally:
        pipeline.close()
    assert found.source == "found"
    assert held.source == "held" and np.array_equal(held.face, found.face)
    assert neutral.source == "neutral" and not np.allclose(neutral.face, found.face, atol=0.01)
    assert again.source == "found"


def test_settings_changes_are_validated_and_applied(astronaut):
    pipeline = DrivingPipeline(_settings(), width=128, height=128)
    try:
        before = pipeline(astronaut, 0.0)
        with pytest.raises(DrivingSettingsError, match="calibration.eye_height_ratio"):
            pipeline.update({"calibration": {"eye_height_ratio": 40}})
        assert pipeline.settings.calibration.eye_height_ratio == 3.0  # nothing half-applied
        with pytest.raises(DrivingSettingsError, match="crop_ratio"):
            pipeline.update({"crop_ratio": 0})
        pipeline.update({"calibration": {"eye_height_ratio": 1.0}})
        after = pipeline(astronaut, 0.0625)
        assert not np.array_equal(before, after)
        pipeline.update({"mode": "body"})
        body = pipeline(astronaut, 0.125)
        assert body.shape == (128, 128, 3) and not np.array_equal(body, after)
    finally:
        pipeline.close()


def test_non_frames_are_refused():
    pipeline = DrivingPipeline(width=64, height=64)
    try:
        with pytest.raises(ValueError, match="RGB uint8"):
            pipeline(np.zeros((64, 64, 3), np.float32), 0.0)
        with pytest.raises(ValueError, match="RGB uint8"):
            pipeline(np.zeros((64, 64), np.uint8), 0.0)
    finally:
        pipeline.close()


def _farther_and_aside(photo: np.ndarray) -> np.ndarray:
    """The same scene with the person at half the size, off to the lower right (farther away)."""
    h, w = photo.shape[:2]
    small = np.asarray(Image.fromarray(photo).resize((w // 2, h // 2), Image.BILINEAR))
    frame = np.zeros_like(photo)
    frame[h // 2 - h // 8 : h - h // 8, w // 2 - w // 16 : w - w // 16] = small
    return frame


def _framed_body(frame: np.ndarray, **changes) -> tuple[np.ndarray, np.ndarray]:
    """(the landmarks body mode draws, the driving image) for one camera frame."""
    from rain_core.driving.body_framing import frame_body

    pipeline = DrivingPipeline(_settings(mode="body", **changes), width=256, height=256)
    try:
        landmarks = pipeline.landmarks(frame, 0.0)
        return frame_body(landmarks, pipeline.settings.body_framing).body, pipeline.draw(landmarks)
    finally:
        pipeline.close()


def _drawn_face(image: np.ndarray) -> np.ndarray:
    """Where the face's white dots are drawn (normalised)."""
    return _color_centroid(image, (255, 255, 255)) / image.shape[0]


def test_body_framing_keeps_the_character_in_place_when_the_person_moves_back(astronaut):
    far = _farther_and_aside(astronaut)
    near_body, near_image = _framed_body(astronaut)
    far_body, far_image = _framed_body(far)
    framing = DrivingSettings().body_framing
    for body in (near_body, far_body):
        assert body[1, :2] == pytest.approx([framing.neck_x, framing.neck_y], abs=1e-6)
        span = np.linalg.norm(body[L_SHOULDER, :2] - body[R_SHOULDER, :2])
        assert span == pytest.approx(framing.shoulder_width, rel=1e-6)
    # Framed, the two distances give the same pose: the head stays where the character's is.
    assert np.abs(near_body[:, :2] - far_body[:, :2])[[0, 14, 15]].max() < 0.03
    assert np.abs(_drawn_face(near_image) - _drawn_face(far_image)).max() < 0.03

    # As the camera sees them, the person moved and shrank.
    raw_near, raw_near_image = _framed_body(astronaut, body_framing={"enabled": False})
    raw_far, raw_far_image = _framed_body(far, body_framing={"enabled": False})
    assert np.abs(raw_near[1, :2] - raw_far[1, :2]).max() > 0.1
    assert np.abs(_drawn_face(raw_near_image) - _drawn_face(raw_far_image)).max() > 0.1


def test_body_framing_settings_are_validated():
    with pytest.raises(DrivingSettingsError, match="body_framing.shoulder_width"):
        DrivingSettings().updated({"body_framing": {"shoulder_width": 0}})
    with pytest.raises(DrivingSettingsError, match="body_framing.neck_y"):
        DrivingSettings().updated({"body_framing": {"neck_y": 1.5}})
    moved = DrivingSettings().updated({"body_framing": {"neck_y": 0.6}})
    assert moved.body_framing.neck_y == 0.6 and moved.body_framing.enabled
