"""A whole training run as `rain-avatar train` does it: codec (when the profile has its own),
then the staggered-noise training, then the EMA weights as a loadable model directory."""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch

from rain_core.config import RainConfig
from rain_core.models import TAESDV
from rain_core.stream.components import RainComponents
from rain_core.train.codec import train_codec
from rain_core.train.data import SyntheticClips, VideoFolderClips
from rain_core.train.settings import TrainSettings
from rain_core.train.trainer import Trainer, TrainResult
from rain_core.weights.checkpoints import WeightsError
from rain_core.weights.loading import load_components

logger = logging.getLogger(__name__)

CODEC_FILE = "codec.json"
RUN_FILE = "run.json"
# Share of the time budget the codec gets when it is trained from scratch.
CODEC_TIME_SHARE = 0.25


def make_dataset(config: RainConfig, data: str, cache_dir: Path, *, split: str = "train"):
    if data == "synthetic":
        return SyntheticClips(config, split=split)
    return VideoFolderClips(config, data, cache_dir)


def load_init_weights(config: RainConfig, weights_dir: Path) -> tuple[RainComponents, bool]:
    """Trained weights to fine-tune, and whether their codec lacks the reference gate that
    `config` adds. Such a codec loads with a fresh gate, which its decoder then learns (the
    encoder kept as it is, so the trained UNet's latents stay what they were)."""
    try:
        return load_components(config, weights_dir), False
    except WeightsError:
        if not config.taesdv.reference_gate:
            raise
        without_gate = config.with_overrides(taesdv=config.taesdv.model_copy(update={"reference_gate": False}))
        components = load_components(without_gate, weights_dir)
    # Every key but the gate's was loaded (the gate-less layout loaded whole): the gate stays fresh.
    gated = TAESDV(**config.taesdv.model_dump()).to(config.torch_device, config.torch_dtype)
    gated.load_state_dict(components.decoder.state_dict(), strict=False)
    components.decoder = gated
    components.config = config
    logger.info("%s: codec without the reference gate; its decoder trains the gate first", weights_dir)
    return components, True


def train_model(config: RainConfig, data: str, output_dir: Path, settings: TrainSettings, *, resume: bool = False,
                progress: bool = True) -> TrainResult:
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    dataset = make_dataset(config, data, output_dir / "cache")
    validation = SyntheticClips(config, frames=4 * config.queue_length, split="val") if data == "synthetic" else None
    new_gate = False
    if settings.init_weights is not None:
        components, new_gate = load_init_weights(config, settings.init_weights)
    else:
        components = RainComponents.build(config).to(config.torch_device, config.torch_dtype)
    trainer = Trainer(components, dataset, settings, output_dir, validation=validation)
    resumed = resume and trainer.resume()
    from_scratch = settings.init_weights is None
    needs_codec = config.reference_encoder == "taesdv" and (from_scratch or new_gate) and not resumed
    if needs_codec:
        budget = settings.max_minutes * CODEC_TIME_SHARE if settings.max_minutes else None
        codec = train_codec(components.decoder, dataset, steps=settings.codec_steps, seed=settings.seed,
                            max_minutes=budget, train_encoder=from_scratch, progress=progress)
        logger.info("codec trained: %d steps, reconstruction L1 %.4f", codec.steps, codec.l1)
        (output_dir / CODEC_FILE).write_text(json.dumps(asdict(codec)))
    if settings.max_minutes:
        left = settings.max_minutes - (time.monotonic() - started) / 60
        settings = settings.model_copy(update={"max_minutes": max(left, 0.1)})
        trainer.settings = settings
    result = trainer.run(progress=progress)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, " \
              f"{config.device}, torch {torch.__version__}"
    (output_dir / RUN_FILE).write_text(json.dumps({"machine": machine, "minutes": (time.monotonic() - started) / 60,
                                                   "unet_steps": result.steps}))
    return result

