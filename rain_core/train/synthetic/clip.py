"""Clips: a character in motion, its frames and driving images paired exactly; contact sheets."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from rain_core.driving.body_render import render_body
from rain_core.driving.landmarks import Landmarks
from rain_core.train.synthetic.character import Character, sample_character
from rain_core.train.synthetic.drawing import check_size, draw_character
from rain_core.train.synthetic.landmarks import pose_at
from rain_core.train.synthetic.motion import Motion, sample_motion

# Train and validation characters and motions come from separate random streams.
SPLIT_CODE = {"train": 0, "val": 1}
# Longest stretch of motion a clip may start in, in seconds.
MAX_START = 120.0


@dataclass
class SyntheticClip:
    """One training clip: frames and their driving images, paired exactly, and the reference."""

    frames: np.ndarray  # uint8 [T, H, W, 3]
    driving: np.ndarray  # uint8 [T, H, W, 3]: render_body of the same landmarks
    reference: np.ndarray  # uint8 [H, W, 3]: the character at rest
    landmarks: list[Landmarks]  # timestamps from 0 at the clip's first frame
    character: Character
    motion: Motion
    start: float  # the clip's first frame is this many seconds into the motion


def split_rng(seed: int, split: str) -> np.random.Generator:
    """The random stream of one clip: train and val streams never meet."""
    if split not in SPLIT_CODE:
        raise ValueError(f"split must be one of {sorted(SPLIT_CODE)}, got split={split!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got seed={seed!r}")
    return np.random.default_rng(np.random.SeedSequence([SPLIT_CODE[split], int(seed)]))


def make_clip(seed: int, *, frames: int, width: int, height: int, fps: float = 16.0,
              split: str = "train") -> SyntheticClip:
    """Clip `seed` of `split` ("train" or "val"): a new character and motion, starting at a random
    time of the motion; `frames` frames at `fps`."""
    rng = split_rng(seed, split)
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
        raise ValueError(f"frames must be a positive integer, got frames={frames!r}")
    check_size(width, height)
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got fps={fps!r}")
    # Separate child streams: the character does not change when the motion's sampling does.
    character_rng, motion_rng, start_rng = (np.random.default_rng(s) for s in rng.bit_generator.seed_seq.spawn(3))
    character = sample_character(character_rng)
    motion = sample_motion(motion_rng)
    start = float(start_rng.uniform(0.0, MAX_START))
    landmarks = [replace(pose_at(character, motion, start + i / fps), timestamp=i / fps) for i in range(frames)]
    return SyntheticClip(
        frames=np.stack([draw_character(character, lm, width, height) for lm in landmarks]),
        driving=np.stack([render_body(lm, width, height) for lm in landmarks]),
        reference=draw_character(character, pose_at(character, None, 0.0), width, height),
        landmarks=landmarks,
        character=character,
        motion=motion,
        start=start,
    )


def contact_sheet(clips: list[SyntheticClip], every: int = 4) -> np.ndarray:
    """One image to look at: per clip, a row reference | every `every`-th frame, and under the
    frames their driving images. uint8 [H, W, 3]."""
    if not clips:
        raise ValueError("contact_sheet needs at least one clip")
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"every must be a positive integer, got every={every!r}")
    height, width = clips[0].reference.shape[:2]
    if any(clip.reference.shape[:2] != (height, width) for clip in clips):
        raise ValueError("contact_sheet needs clips of one frame size")
    gap, grey = 2, 40
    columns = 1 + max(len(range(0, len(clip.frames), every)) for clip in clips)
    sheet = np.full((len(clips) * (2 * height + gap) + gap, columns * (width + gap) + gap, 3), grey, np.uint8)
    for row, clip in enumerate(clips):
        top = gap + row * (2 * height + gap)
        sheet[top:top + height, gap:gap + width] = clip.reference
        sheet[top + height:top + 2 * height, gap:gap + width] = 0
        for column, index in enumerate(range(0, len(clip.frames), every), start=1):
            left = gap + column * (width + gap)
            sheet[top:top + height, left:left + width] = clip.frames[index]
            sheet[top + height:top + 2 * height, left:left + width] = clip.driving[index]
    return sheet
