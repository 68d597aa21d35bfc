"""Reading driving videos and writing H.264 MP4s with PyAV, with errors a user can act on."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from rain_core.media.errors import MediaError


def load_image(path: str | Path) -> Image.Image:
    """Open an image file as RGB (alpha composited on black)."""
    from rain_core.stream.reference_encoder import ReferenceImageError, as_rgb_image

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such image file")
    try:
        with Image.open(path) as image:
            image.load()
            return as_rgb_image(image)
    except UnidentifiedImageError:
        raise MediaError(f"{path}: not an image (unrecognised format)") from None
    except (OSError, Image.DecompressionBombError) as exc:
        raise MediaError(f"{path}: unreadable image ({exc})") from None
    except ReferenceImageError as exc:
        raise MediaError(f"{path}: {exc}") from None


class VideoReader:
    """Frames of a video's first video stream as RGB uint8 arrays [H, W, 3]."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise MediaError(f"{self.path}: no such video file")
        try:
            self.container = av.open(str(self.path))
        except av.error.FFmpegError as exc:
            raise MediaError(f"{self.path}: not a readable video ({exc})") from None
        if not self.container.streams.video:
            self.container.close()
            raise MediaError(f"{self.path}: has no video stream")
        self.stream = self.container.streams.video[0]

    @property
    def fps(self) -> float | None:
        rate = self.stream.average_rate or self.stream.guessed_rate
        return float(rate) if rate else None

    @property
    def frame_count(self) -> int | None:
        """The container's frame count, when it states one."""
        return self.stream.frames or None

    def __iter__(self) -> Iterator[np.ndarray]:
        try:
            for frame in self.container.decode(self.stream):
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as exc:
            raise MediaError(f"{self.path}: decoding failed ({exc})") from None

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoWriter:
    """Writes RGB uint8 frames [H, W, 3] to an H.264 (yuv420p) MP4."""

    def __init__(self, path: str | Path, width: int, height: int, fps: float, crf: int = 18):
        self.container = av.open(str(path), mode="w", format="mp4")
        rate = Fraction(fps).limit_denominator(1001)
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": str(crf), "preset": "veryfast"}

    def write(self, image: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds.

    A failed or interrupted run leaves no partial file behind.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise MediaError(f"{path}: output folder {path.parent} does not exist")
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
