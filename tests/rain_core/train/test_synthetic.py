"""Synthetic training clips: determinism, split disjointness, exact pairing with the driving
renderer, smooth and present motion, characters inside the frame."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from rain_core.driving.body_render import render_body
from rain_core.driving.landmarks import IBUG68_MIRROR, Landmarks
from rain_core.train.synthetic.character import sample_character
from rain_core.train.synthetic.clip import SyntheticClip, contact_sheet, make_clip
from rain_core.train.synthetic.drawing import draw_background, draw_character
from rain_core.train.synthetic.landmarks import pose_at
from rain_core.train.synthetic.motion import MAX_ROLL, MAX_YAW, Motion, Wave, sample_motion

SIZE = 128
FPS = 16.0
NOSE_TIP = 30
RIGHT_EYE, LEFT_EYE = slice(36, 42), slice(42, 48)
R_SHOULDER, R_ELBOW, R_WRIST, L_SHOULDER, L_ELBOW, L_WRIST = 2, 3, 4, 5, 6, 7
# Largest move of any landmark between two frames at 16 fps (normalised; 0.04 is 5 px at 128).
MAX_STEP = 0.04


def _clip(seed: int, frames: int = 16, split: str = "train") -> SyntheticClip:
    return make_clip(seed, frames=frames, width=SIZE, height=SIZE, fps=FPS, split=split)


def _visible_points(landmarks: Landmarks) -> np.ndarray:
    return np.vstack([landmarks.face, landmarks.body[landmarks.body[:, 2] >= 0.3, :2]])


def _pixel(point: np.ndarray, size: int = SIZE) -> tuple[int, int]:
    x, y = np.clip(np.floor(point * size).astype(int), 0, size - 1)
    return int(y), int(x)


def _constant(value: float) -> Wave:
    """A wave that sits at `value` (in [-1, 1])."""
    return Wave((float(value),), (0.0,), (math.pi / 2,))


def _eye_opening(face: np.ndarray, eye: slice) -> float:
    points = face[eye]
    return float(np.linalg.norm(points[1] - points[5]) / np.linalg.norm(points[3] - points[0]))


def _mouth_opening(face: np.ndarray) -> float:
    return float(np.linalg.norm(face[66] - face[62]) / np.linalg.norm(face[54] - face[48]))


# --------------------------------------------------------------------------------------------


def test_same_seed_gives_the_same_clip():
    a, b = _clip(7), _clip(7)
    assert a.frames.shape == a.driving.shape == (16, SIZE, SIZE, 3) and a.frames.dtype == np.uint8
    assert a.reference.shape == (SIZE, SIZE, 3) and a.reference.dtype == np.uint8
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.driving, b.driving)
    assert np.array_equal(a.reference, b.reference)
    for x, y in zip(a.landmarks, b.landmarks, strict=True):
        assert np.array_equal(x.face, y.face) and np.array_equal(x.body, y.body)
    assert not np.array_equal(a.frames, _clip(8).frames)


def test_train_and_val_characters_and_motions_are_disjoint():
    train = [_clip(seed, frames=1) for seed in range(20)]
    val = [_clip(seed, frames=1, split="val") for seed in range(20)]
    assert {c.character for c in train}.isdisjoint({c.character for c in val})
    assert {c.motion for c in train}.isdisjoint({c.motion for c in val})
    for t, v in zip(train, val, strict=True):
        assert not np.array_equal(t.reference, v.reference)
    assert len({c.character for c in train}) == 20  # and the characters differ from seed to seed


def test_clips_start_at_different_times_of_their_motion():
    starts = [_clip(seed, frames=1).start for seed in range(10)]
    assert len(set(starts)) == 10 and max(starts) > 10.0
    # The first frame is not the rest pose.
    clip = _clip(3, frames=1)
    rest = pose_at(clip.character, None, 0.0)
    assert np.abs(clip.landmarks[0].body[:, :2] - rest.body[:, :2]).max() > 0.01


def test_driving_images_and_frames_are_drawn_from_the_same_landmarks():
    clip = _clip(11)
    for i, landmarks in enumerate(clip.landmarks):
        assert landmarks.timestamp == pytest.approx(i / FPS)
        assert np.array_equal(clip.driving[i], render_body(landmarks, SIZE, SIZE))
        assert np.array_equal(clip.frames[i], draw_character(clip.character, landmarks, SIZE, SIZE))
        # OpenPose's head points are the face's: nose tip, eye centres.
        assert np.allclose(landmarks.body[0, :2], landmarks.face[NOSE_TIP])
        assert np.allclose(landmarks.body[14, :2], landmarks.face[RIGHT_EYE].mean(axis=0))
        assert np.allclose(landmarks.body[15, :2], landmarks.face[LEFT_EYE].mean(axis=0))
        # The driving image has marks at the nose, shoulders and wrists.
        for point in (landmarks.face[NOSE_TIP], *landmarks.body[[R_SHOULDER, L_SHOULDER, R_WRIST, L_WRIST], :2]):
            assert clip.driving[i][_pixel(point)].max() > 0


@pytest.mark.parametrize("seed", [0, 5, 9])
def test_the_characters_eyes_sit_on_the_eye_landmarks(seed):
    # At 512 px the iris is several pixels wide (at 128 px about one, mostly under the pupil).
    size = 512
    clip = _clip(seed, frames=32)
    iris = (3, 251, 7)  # a colour nothing else has
    character = replace(clip.character, iris=iris)
    landmarks = [*clip.landmarks, pose_at(character, None, 0.0)]
    images = [draw_character(character, lm, size, size) for lm in landmarks]
    shown = []
    for image, lm in zip(images, landmarks, strict=True):
        ys, xs = np.nonzero(np.all(image == iris, axis=-1))
        pixels = np.column_stack([xs + 0.5, ys + 0.5])
        eyes = [lm.face[eye] * size for eye in (RIGHT_EYE, LEFT_EYE)]
        # Every iris pixel lies in an eye's landmark box, grown by a third of the eye's width (the
        # drawn eye is rounder than the landmarks' lids: 2 px of a 128 px frame).
        for pixel in pixels:
            assert any(np.all(np.abs(pixel - (eye.min(axis=0) + eye.max(axis=0)) / 2)
                              < (eye.max(axis=0) - eye.min(axis=0)) / 2 + np.linalg.norm(eye[3] - eye[0]) / 3 + 1)
                       for eye in eyes)
        # Open eyes show their iris around each eye's centre (a turned head's far eye may be too
        # narrow for a pixel of pure iris colour).
        if min(_eye_opening(lm.face, RIGHT_EYE), _eye_opening(lm.face, LEFT_EYE)) > 0.25:
            near = [(np.linalg.norm(pixels - eye.mean(axis=0), axis=1) < 0.6 * np.linalg.norm(eye[3] - eye[0])).any()
                    for eye in eyes]
            shown.append(len(pixels) > 0 and all(near))
    assert shown[-1]  # the reference: frontal, eyes open
    assert len(shown) > 10 and np.mean(shown) > 0.6


def _arm_colours(clip: SyntheticClip) -> tuple[np.ndarray, np.ndarray]:
    c = clip.character
    upper = c.skin if c.sleeves == "none" else c.clothes
    fore = c.clothes if c.sleeves == "long" else c.skin
    return np.array(upper, float), np.array(fore, float)


def _arm_samples(image: np.ndarray, body: np.ndarray, upper: np.ndarray, fore: np.ndarray) -> np.ndarray:
    """Whether the image has the arm's colour at points along shoulder->elbow and elbow->wrist."""
    hits = []
    for shoulder, elbow, wrist in ((R_SHOULDER, R_ELBOW, R_WRIST), (L_SHOULDER, L_ELBOW, L_WRIST)):
        # (the elbow's round end and the hand cover the forearm's ends)
        for (a, b), colour, ts in (((shoulder, elbow), upper, (0.3, 0.5, 0.7)), ((elbow, wrist), fore, (0.45, 0.55))):
            for t in ts:
                point = body[a, :2] + t * (body[b, :2] - body[a, :2])
                hits.append(np.linalg.norm(image[_pixel(point)].astype(float) - colour) < 30)
    return np.array(hits)


def test_the_characters_arms_follow_shoulder_elbow_wrist():
    for seed in range(8):
        clip = _clip(seed)
        upper, fore = _arm_colours(clip)
        rest = pose_at(clip.character, None, 0.0)
        assert _arm_samples(clip.reference, rest.body, upper, fore).all()
        # In motion an arm can pass behind the head; most of it is still where the landmarks say.
        hits = np.concatenate(
            [_arm_samples(f, lm.body, upper, fore) for f, lm in zip(clip.frames, clip.landmarks, strict=True)]
        )
        assert hits.mean() > 0.85


def test_the_torso_spans_shoulders_to_hips():
    for seed in range(8):
        clip = _clip(seed, frames=4)
        c = clip.character
        for frame, lm in zip(clip.frames, clip.landmarks, strict=True):
            body = lm.body[:, :2]
            hips = (body[8] + body[11]) / 2
            for t in (0.35, 0.65):  # down the middle of the shirt, away from the collar
                colour = frame[_pixel(body[1] + t * (hips - body[1]))].astype(float)
                # the arms may cross in front of the shirt
                assert min(np.linalg.norm(colour - np.array(x, float)) for x in
                           (c.clothes, c.clothes_accent, c.skin)) < 40


def test_reference_is_the_rest_pose():
    for seed in range(4):
        clip = _clip(seed, frames=1)
        rest = pose_at(clip.character, None, 0.0)
        assert np.array_equal(clip.reference, draw_character(clip.character, rest, SIZE, SIZE))
        face, body = rest.face, rest.body[:, :2]
        # frontal: the face is mirror-symmetric about the nose
        mirrored = face.copy()
        mirrored[:, 0] = 2 * face[NOSE_TIP, 0] - mirrored[:, 0]
        assert np.allclose(mirrored[IBUG68_MIRROR], face, atol=1e-9)
        # eyes open, mouth closed, arms down
        assert _eye_opening(face, RIGHT_EYE) > 0.3 and _mouth_opening(face) < 0.05
        assert body[R_SHOULDER, 1] < body[R_ELBOW, 1] < body[R_WRIST, 1]
        assert body[L_SHOULDER, 1] < body[L_ELBOW, 1] < body[L_WRIST, 1]


def test_motion_is_smooth_and_present():
    for seed in range(30):
        rng = np.random.default_rng(seed)
        character, motion = sample_character(rng), sample_motion(rng)
        start = rng.uniform(0, 100)
        points = np.stack([_visible_points(pose_at(character, motion, start + i / FPS)) for i in range(64)])
        assert np.linalg.norm(np.diff(points, axis=0), axis=-1).max() < MAX_STEP
        moved = np.linalg.norm(points - points[0], axis=-1).max(axis=0)  # per landmark, over 4 s
        assert np.median(moved) > 0.01
        assert moved[:68].max() > 0.01  # the head
        arms = np.array([68 + i for i in (2, 3, 4, 5, 6, 7)])  # elbows and wrists follow shoulders (all visible)
        assert moved[arms].max() > 0.02


def test_head_turns_and_tilts_stay_plausible():
    yaws, rolls = [], []
    for seed in range(30):
        rng = np.random.default_rng(100 + seed)
        character, motion = sample_character(rng), sample_motion(rng)
        for t in np.linspace(0, 30, 121):
            face = pose_at(character, motion, t).face
            ears = face[16] - face[0]
            rolls.append(math.degrees(math.atan2(ears[1], ears[0])))
            # turning moves the nose tip sideways (along the ear line) from between the eyes
            eyes = (face[RIGHT_EYE].mean(axis=0) + face[LEFT_EYE].mean(axis=0)) / 2
            across = ears / np.linalg.norm(ears)
            yaws.append(np.dot(face[NOSE_TIP] - eyes, across) / np.linalg.norm(face[27] - face[33]))
    assert max(abs(r) for r in rolls) < MAX_ROLL + 3 + 3  # head roll, body lean, a little from nodding
    assert max(abs(r) for r in rolls) > 5
    # the nose tip is 0.093 ahead of the eyes, its length 0.175 (template units): 0.53 sin(yaw)
    assert max(abs(y) for y in yaws) < math.sin(math.radians(MAX_YAW)) * 0.6
    assert max(abs(y) for y in yaws) > 0.1


def test_blinks_and_talking_happen_within_a_few_seconds():
    blinked = talked = 0
    for seed in range(40):
        rng = np.random.default_rng(200 + seed)
        character, motion = sample_character(rng), sample_motion(rng)
        start = rng.uniform(0, 100)
        faces = [pose_at(character, motion, start + i / FPS).face for i in range(int(5 * FPS))]
        rest = _eye_opening(pose_at(character, None, 0).face, RIGHT_EYE)
        blinked += min(_eye_opening(f, RIGHT_EYE) for f in faces) < 0.3 * rest
        talked += max(_mouth_opening(f) for f in faces) > 0.15
    assert blinked >= 36 and talked >= 36


def _held_motion(values: np.ndarray) -> Motion:
    """Motion that holds each channel at a value in [-1, 1], using the whole of every range."""
    yaw, pitch, roll, sway, lean, raise_right, raise_left, bend_right, bend_left = map(_constant, values)
    talk = _constant(1.0)
    return Motion(
        yaw=yaw, pitch=pitch, roll=roll, yaw_amount=1.0, pitch_amount=1.0, roll_amount=1.0, sway=sway, lean=lean,
        sway_amount=1.0, raise_right=raise_right, raise_left=raise_left, bend_right=bend_right, bend_left=bend_left,
        arm_amount=1.0, arm_rest=1.0, bend_amount=1.0, blink_period=10.0, blink_phase=5.0, talk=talk, talk_bias=0.0,
        talk_amount=1.0, smile=talk, smile_amount=1.0,
    )  # fmt: skip


def test_characters_stay_inside_the_frame_at_the_motion_limits():
    rng = np.random.default_rng(0)
    size = 96
    for _ in range(12):
        character = sample_character(rng)
        background = draw_background(character, size, size)
        for _ in range(32):
            # each channel at one of its ends, or anywhere between (an arm reaches furthest sideways mid-range)
            values = np.where(rng.random(9) < 0.5, rng.choice([-1.0, 1.0], 9), rng.uniform(-1, 1, 9))
            landmarks = pose_at(character, _held_motion(values), 0.0)
            assert 0 <= _visible_points(landmarks).min() and _visible_points(landmarks).max() <= 1
            image = draw_character(character, landmarks, size, size)
            # nothing reaches the top, left or right edge
            assert np.array_equal(image[0], background[0])
            assert np.array_equal(image[:, 0], background[:, 0])
            assert np.array_equal(image[:, -1], background[:, -1])
            # and only the legs leave through the bottom, straight down from the hips
            hips = landmarks.body[[8, 11], 0] * size
            reach = 0.5 * (hips[1] - hips[0]) + 2
            (xs,) = np.nonzero(np.any(image[-1] != background[-1], axis=-1))
            assert np.all((xs + 0.5 > hips[0] - reach) & (xs + 0.5 < hips[1] + reach))


def test_clips_stay_inside_the_frame():
    for seed in range(10):
        clip = _clip(seed)
        background = draw_background(clip.character, SIZE, SIZE)
        assert np.array_equal(clip.frames[:, 0], np.broadcast_to(background[0], clip.frames[:, 0].shape))
        assert np.array_equal(clip.frames[:, :, 0], np.broadcast_to(background[:, 0], clip.frames[:, :, 0].shape))
        assert np.array_equal(clip.frames[:, :, -1], np.broadcast_to(background[:, -1], clip.frames[:, :, -1].shape))


def test_contact_sheet_tiles_reference_frames_and_driving():
    clips = [_clip(seed, frames=8) for seed in range(2)]
    sheet = contact_sheet(clips, every=4)
    gap = 2
    assert sheet.shape == (2 * (2 * SIZE + gap) + gap, 3 * (SIZE + gap) + gap, 3) and sheet.dtype == np.uint8
    assert np.array_equal(sheet[gap:gap + SIZE, gap:gap + SIZE], clips[0].reference)
    left = gap + (SIZE + gap) * 2
    assert np.array_equal(sheet[gap:gap + SIZE, left:left + SIZE], clips[0].frames[4])
    assert np.array_equal(sheet[gap + SIZE:gap + 2 * SIZE, left:left + SIZE], clips[0].driving[4])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seed": -1},
        {"seed": 1.5},
        {"split": "test"},
        {"frames": 0},
        {"width": 8},
        {"height": 0},
        {"width": 64.0},
        {"fps": 0.0},
        {"fps": float("nan")},
    ],
)
def test_bad_arguments_raise_value_error(kwargs):
    arguments = {"seed": 0, "frames": 2, "width": 64, "height": 64, **kwargs}
    seed = arguments.pop("seed")
    with pytest.raises(ValueError):
        make_clip(seed, **arguments)


def test_bad_drawing_and_sheet_arguments_raise_value_error():
    clip = _clip(0, frames=1)
    with pytest.raises(ValueError):
        draw_character(clip.character, Landmarks(face=clip.landmarks[0].face), SIZE, SIZE)
    with pytest.raises(ValueError):
        draw_character(clip.character, clip.landmarks[0], 4, SIZE)
    with pytest.raises(ValueError):
        contact_sheet([])
    with pytest.raises(ValueError):
        contact_sheet([clip], every=0)
