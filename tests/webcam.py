"""A synthetic webcam for the server tests: a real photo of a person moving over time.

The clip is `rain_core.driving.synthetic_clip` of `shared/media/astronaut.png` at 320x240
(rotating, shifting, zooming; one motion period loops seamlessly). `ClipTrack` sends it from
an aiortc client; `write_y4m` writes it for Chromium's fake camera.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from aiortc import VideoStreamTrack
from av import VideoFrame
from PIL import Image

from rain_core.driving.synthetic_clip import ClipMotion, synthetic_clip

ASTRONAUT = Path(__file__).resolve().parents[2] / "shared" / "media" / "astronaut.png"
WIDTH, HEIGHT, FPS = 320, 240, 30
MOTION = ClipMotion(period=48)


@lru_cache(maxsize=1)
def clip_frames() -> tuple[np.ndarray, ...]:
    """One motion period of [240, 320, 3] uint8 frames."""
    photo = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    frames, _ = synthetic_clip(photo, MOTION.period, frame_size=(WIDTH, HEIGHT), motion=MOTION)
    return tuple(frames)


class ClipTrack(VideoStreamTrack):
    """The clip as a live 30 fps video track, looping."""

    def __init__(self) -> None:
        super().__init__()  # don't forget this!
        self.index = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frames = clip_frames()
        frame = VideoFrame.from_ndarray(frames[self.index % len(frames)], format="rgb24")
        frame.pts = pts
        frame.time_base = time_base
        self.index += 1
        return frame


def write_y4m(path: Path) -> Path:
    """The clip as a YUV4MPEG2 file (4:2:0, 30 fps), which Chromium loops as its fake camera."""
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in clip_frames():
            i420 = VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            out.write(b"FRAME\n")
            out.write(i420.to_ndarray().tobytes())  # Y, U, V planes: [H * 3/2, W]
    return path
