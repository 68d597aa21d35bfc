"""Training data: clips of consecutive frames with their driving images and a reference image.

A `ClipDataset` gives, for an index, one clip as tensors. Two kinds: generated cartoon
characters (`SyntheticClips`, endless, exactly paired) and a folder of videos of people
(`VideoFolderClips`), whose driving images come from our own driving pipeline and are cached
to disk so that the slow extraction runs once per video.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from rain_core.config import RainConfig

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")


@dataclass
class ClipBatch:
    """frames, driving: [B, 3, T, H, W] in [0, 1]; reference: [B, 3, H, W] in [0, 1]."""

    frames: torch.Tensor
    driving: torch.Tensor
    reference: torch.Tensor


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float [3, ..., H, W] in [0, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255)
    return tensor.movedim(-1, 0)


class ClipDataset(Protocol):
    def clip(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(frames [T, H, W, 3], driving [T, H, W, 3], reference [H, W, 3]), uint8."""
        ...


def collate(dataset: ClipDataset, indices: list[int]) -> ClipBatch:
    clips = [dataset.clip(i) for i in indices]
    return ClipBatch(
        frames=torch.stack([_to_tensor(c[0]) for c in clips]),
        driving=torch.stack([_to_tensor(c[1]) for c in clips]),
        reference=torch.stack([_to_tensor(c[2]) for c in clips]),
    )


class SyntheticClips:
    """Generated cartoon characters; `split` keeps training and validation characters apart."""

    def __init__(self, config: RainConfig, *, frames: int | None = None, split: str = "train", fps: float = 16.0):
        self.config = config
        self.frames = frames or config.queue_length
        self.split = split
        self.fps = fps

    def clip(self, index: int):
        from rain_core.train.synthetic.clip import make_clip

        clip = make_clip(index, frames=self.frames, width=self.config.width, height=self.config.height,
                         fps=self.fps, split=self.split)
        return clip.frames, clip.driving, clip.reference


class VideoFolderClips:
    """Clips cut from a folder of videos of people; reference = the video's first frame.

    Each video is read once: its frames (resized to the model size) and the driving images our
    driving pipeline draws from them are cached as one `.npz` per video in `cache_dir`.
    """

    def __init__(self, config: RainConfig, folder: str | Path, cache_dir: str | Path, *, frames: int | None = None):
        self.config = config
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ValueError(f"{self.folder}: not a folder of videos")
        self.videos = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if not self.videos:
            raise ValueError(f"{self.folder}: no videos ({', '.join(VIDEO_SUFFIXES)})")
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.frames = frames or config.queue_length
        self._loaded: dict[Path, tuple[np.ndarray, np.ndarray]] = {}

    def _cache_path(self, video: Path) -> Path:
        stat = video.stat()
        key = f"{video.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.config.width}x{self.config.height}|" \
              f"{self.config.driving_mode}"
        return self.cache_dir / f"{video.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"

    def _load(self, video: Path) -> tuple[np.ndarray, np.ndarray]:
        if video in self._loaded:
            return self._loaded[video]
        cache = self._cache_path(video)
        if cache.is_file():
            with np.load(cache) as data:
                result = (data["frames"], data["driving"])
        else:
            result = self._extract(video)
            np.savez_compressed(cache, frames=result[0], driving=result[1])
        if len(result[0]) < self.frames:
            raise ValueError(f"{video}: {len(result[0])} frames, a clip needs {self.frames}")
        self._loaded[video] = result
        return result

    def _extract(self, video: Path) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image

        from rain_core.driving import DrivingPipeline, DrivingSettings
        from rain_core.driving.geometry import crop_box
        from rain_core.media.video import VideoReader

        width, height = self.config.width, self.config.height
        pipeline = DrivingPipeline(DrivingSettings(mode=self.config.driving_mode), width=width, height=height)
        frames, driving = [], []
        box = None
        try:
            with VideoReader(video) as reader:
                fps = reader.fps or 16.0
                for i, frame in enumerate(reader):
                    driving.append(pipeline(frame, i / fps))
                    # The same centred crop the pipeline analysed, at the model size.
                    box = box or crop_box(frame.shape[1], frame.shape[0], width / height, pipeline.settings.crop_ratio)
                    x0, y0, x1, y1 = box
                    view = frame[y0:y1, x0:x1]
                    frames.append(np.asarray(Image.fromarray(view).resize((width, height), Image.BILINEAR)))
        finally:
            pipeline.close()
        logger.info("extracted %d frames of driving images from %s", len(frames), video)
        return np.stack(frames), np.stack(driving)

    def clip(self, index: int):
        video = self.videos[index % len(self.videos)]
        frames, driving = self._load(video)
        rng = np.random.default_rng(index)
        start = int(rng.integers(0, len(frames) - self.frames + 1))
        return frames[start : start + self.frames], driving[start : start + self.frames], frames[0]
