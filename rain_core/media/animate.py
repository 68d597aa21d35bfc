"""Offline animation: a reference image and a driving video in, an MP4 of the character out."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from rain_core.driving import DrivingPipeline
from rain_core.media.video import MediaError, VideoReader, VideoWriter, atomic_output, load_image
from rain_core.stream.engine import StreamEngine, stream_frames

logger = logging.getLogger(__name__)

DEFAULT_FPS = 16.0


@dataclass
class AnimateResult:
    frames: int
    fps: float
    path: Path


def _fit(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def animate(
    engine: StreamEngine,
    reference: str | Path,
    driving: str | Path,
    out: str | Path,
    *,
    fps: float | None = None,
    driving_pipeline: DrivingPipeline | None = None,
    progress: bool = True,
) -> AnimateResult:
    """Animate `reference` with a driving video into `out`.

    With a `driving_pipeline` the video shows a person (a webcam recording) and each frame is
    turned into a driving image; without one its frames already are driving images.

    The output has one frame per driving frame: the queue holds G*P frames, so the stream is
    flushed at the end by repeating the last driving image until every input frame is out.
    """
    config = engine.config
    reference_image = load_image(reference)
    with VideoReader(driving) as reader:
        rate = fps or reader.fps or DEFAULT_FPS
        if not 0 < rate <= 240:
            raise MediaError(f"fps must be in (0, 240], got {rate}")
        engine.set_reference(reference_image)
        engine.reset()
        with atomic_output(out) as partial:
            writer = VideoWriter(partial, config.width, config.height, rate)
            bar = tqdm(total=reader.frame_count, unit="frame", desc="animate", disable=not progress)
            read = 0

            def driving_images() -> Iterator[np.ndarray]:
                nonlocal read
                for image in reader:
                    if driving_pipeline is not None:
                        image = driving_pipeline(image, read / rate)
                    read += 1
                    yield _fit(image, config.width, config.height)

            written = 0
            try:
                for frame in stream_frames(engine, driving_images()):
                    writer.write(frame)
                    written += 1
                    bar.update(1)
                if read == 0:
                    raise MediaError(f"{driving}: the video has no frames")
            finally:
                bar.close()
                writer.close()
    logger.info("wrote %d frames at %.2f fps to %s", written, rate, out)
    return AnimateResult(frames=written, fps=rate, path=Path(out))
