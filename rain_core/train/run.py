"""A whole training run as `rain-avatar train` does it: codec (when the profile has its own),
then the staggered-noise training, then the EMA weights as a loadable model directory."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path


from rain_core.components import RainComponents
from rain_core.config import RainConfig
from rain_core.train.codec import train_codec
from rain_core.train.data import SyntheticClips, VideoFolderClips
from rain_core.train.trainer import Trainer, TrainResult, TrainSettings

logger = logging.getLogger(__name__)

# Share of the time budget the codec gets when it is trained from scratch.
CODEC_TIME_SHARE = 0.2


def make_dataset(config: RainConfig, data: str, cache_dir: Path, *, split: str = "train"):
    if data == "synthetic":
        return SyntheticClips(config, split=split)
    return VideoFolderClips(config, data, cache_dir)


def train_model(config: RainConfig, data: str, output_dir: Path, settings: TrainSettings, *,
                init_weights: Path | None = None, codec_steps: int = 1500, resume: bool = False,
                progress: bool = True) -> TrainResult:
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    dataset = make_dataset(config, data, output_dir / "cache")
    validation = SyntheticClips(config, frames=4 * config.queue_length, split="val") if data == "synthetic" else None
    if init_weights is not None:
        components = RainComponents.from_weights_dir(config, init_weights)
    else:
        components = RainComponents.build(config).to(config.torch_device, config.torch_dtype)
    trainer = Trainer(components, dataset, settings, output_dir, validation=validation)
    resumed = resume and trainer.resume()
    needs_codec = config.reference_encoder == "taesdv" and init_weights is None and not resumed
    if needs_codec:
        budget = settings.max_minutes * CODEC_TIME_SHARE if settings.max_minutes else None
        l1 = train_codec(components.decoder, dataset, steps=codec_steps, batch_size=2, seed=settings.seed,
                         max_minutes=budget, progress=progress)
        logger.info("codec trained: reconstruction L1 %.4f", l1)
        (output_dir / "codec.json").write_text(json.dumps({"l1": l1, "steps": codec_steps}))
    if settings.max_minutes:
        left = settings.max_minutes - (time.monotonic() - started) / 60
        settings = settings.model_copy(update={"max_minutes": max(left, 0.1)})
        trainer.settings = settings
    return trainer.run(progress=progress)

