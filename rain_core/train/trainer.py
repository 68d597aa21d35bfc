"""`rain-avatar train`: RAIN's staggered-noise training of any profile.

AdamW, gradient clipping, an EMA of the weights (diffusers' `EMAModel`), bf16 autocast on
CUDA, optional activation checkpointing, resumable checkpoints (safetensors weights + a torch
file with the optimiser, EMA and random states), a progress bar, periodic validation clips
written as MP4, determinism with a seed and a time bound (`max_minutes`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from rain_core.media.video import VideoWriter
from rain_core.models.embeddings import guidance_scale_embedding
from rain_core.stream.components import RainComponents
from rain_core.train.data import ClipBatch, ClipDataset, collate
from rain_core.train.evaluate import animate_clip
from rain_core.train.objective import (
    diffusion_loss,
    moved_latent_weights,
    noise_latents,
    prediction_target,
    staggered_timesteps,
)
from rain_core.train.schedule import learning_rate_at
from rain_core.train.settings import TRAINABLE, TrainSettings
from rain_core.weights.checkpoints import CHECKPOINTS
from rain_core.weights.loading import SAVED_CONFIG_FILE

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    minutes: float
    output_dir: Path


def _trainable(components: RainComponents, settings: TrainSettings) -> dict[str, nn.Module]:
    unknown = set(settings.freeze) - set(TRAINABLE) - {"decoder"}
    if unknown:
        raise ValueError(f"freeze: unknown parts {sorted(unknown)}; parts are {list(TRAINABLE)}")
    parts = {}
    for name in TRAINABLE:
        module = getattr(components, name)
        if module is None:
            continue
        trainable = name not in settings.freeze
        module.requires_grad_(trainable).train(trainable)
        if trainable:
            parts[name] = module
    components.decoder.requires_grad_(False).eval()
    if not parts:
        raise ValueError("every part is frozen: nothing to train")
    return parts


class Trainer:
    def __init__(self, components: RainComponents, dataset: ClipDataset, settings: TrainSettings,
                 output_dir: str | Path, *, validation: ClipDataset | None = None):
        self.components = components
        self.config = components.config
        self.dataset = dataset
        self.validation = validation
        self.settings = settings
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.device = self.config.torch_device
        if components.context is None and components.image_encoder is None:
            raise ValueError("training needs a reference context: a learned context token or a CLIP encoder")
        torch.manual_seed(settings.seed)
        self.parts = _trainable(components, settings)
        if settings.gradient_checkpointing:
            for name in ("denoising_unet", "reference_unet"):
                if name in self.parts:
                    self.parts[name].enable_gradient_checkpointing()
        parameters = [p for m in self.parts.values() for p in m.parameters()]
        self.optimizer = torch.optim.AdamW(parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay)
        # Fraction of the run done, by steps or by the time budget, whichever is further.
        self.progress = 0.0
        self.minutes_trained = 0.0
        self.ema = EMAModel(parameters, decay=settings.ema_decay)
        self.noise_generator = torch.Generator(self.device).manual_seed(settings.seed)
        self.jitter_generator = torch.Generator().manual_seed(settings.seed + 1)
        self.step = 0
        self.time_cond = guidance_scale_embedding(self.config.guidance_scale, self.config.denoising_unet.cond_proj_dim)

    def learning_rate(self) -> float:
        """The rate of the next step: warm-up, then cosine decay over the run (steps or time budget)."""
        s = self.settings
        return learning_rate_at(s.learning_rate, self.progress, step=self.step, warmup_steps=s.warmup_steps)

    # One step ---------------------------------------------------------------------------
    def batch_indices(self, step: int) -> list[int]:
        """The data of a step depends only on the seed and the step: resuming replays nothing."""
        b = self.settings.batch_size
        return [self.settings.seed * 1_000_003 + step * b + i for i in range(b)]

    def loss(self, batch: ClipBatch) -> torch.Tensor:
        c = self.components
        device, dtype = self.device, self.config.torch_dtype
        frames = batch.frames.to(device, dtype)
        driving = batch.driving.to(device, dtype)
        reference = batch.reference.to(device, dtype)
        b, _, t, h, w = frames.shape
        with torch.no_grad():
            clean = c.decoder.encode(frames.transpose(1, 2).reshape(b * t, 3, h, w))
            clean = clean.view(b, t, *clean.shape[1:]).transpose(1, 2)
            reference_latents = c.decoder.encode(reference)
        context = c.context(batch=b) if c.context is not None else None
        timesteps = staggered_timesteps(c.scheduler, self.config, batch=b, jitter=self.settings.timestep_jitter,
                                        shared_level_prob=self.settings.shared_level_prob,
                                        generator=self.jitter_generator).to(device)
        noise = torch.randn(clean.shape, generator=self.noise_generator, device=device, dtype=clean.dtype)
        noisy = noise_latents(c.scheduler, clean, noise, timesteps)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"
                                  and self.settings.mixed_precision)
        with autocast:
            banks = c.reference_unet.compute_banks(reference_latents, context)
            output = c.denoising_unet(
                noisy, timesteps, context,
                pose_features=c.pose_guider(driving),
                time_cond=self.time_cond.to(device, dtype),
                reference=banks,
            ).sample
        weights = None
        if self.settings.moved_loss_weight:
            weights = moved_latent_weights(frames, reference, tuple(clean.shape[-2:]), self.settings.moved_loss_weight)
        return diffusion_loss(output, prediction_target(c.scheduler, clean, noise, timesteps), weights)

    def train_step(self) -> float:
        batch = collate(self.dataset, self.batch_indices(self.step))
        loss = self.loss(batch)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for m in self.parts.values() for p in m.parameters()],
                                       self.settings.grad_clip)
        self.optimizer.step()
        self.ema.step([p for m in self.parts.values() for p in m.parameters()])
        self.step += 1
        return float(loss.detach())

    # Run --------------------------------------------------------------------------------
    def run(self, *, progress: bool = True) -> TrainResult:
        s = self.settings
        start = time.monotonic()
        already = self.minutes_trained
        loss = float("nan")
        smoothed = None
        with tqdm(total=s.steps, initial=self.step, desc="train", unit="step", disable=not progress) as bar:
            while self.step < s.steps:
                loss = self.train_step()
                self.minutes_trained = already + (time.monotonic() - start) / 60
                self.progress = max(self.step / s.steps, self.minutes_trained / s.max_minutes if s.max_minutes else 0.0)
                smoothed = loss if smoothed is None else 0.98 * smoothed + 0.02 * loss
                bar.update(1)
                bar.set_postfix(loss=f"{smoothed:.4f}", lr=f"{self.learning_rate():.1e}")
                if self.step % s.checkpoint_every == 0:
                    self.save()
                if self.validation is not None and self.step % s.validate_every == 0:
                    self.write_validation_clip()
                if self.progress >= 1.0:
                    logger.info("max_minutes reached at step %d", self.step)
                    break
        self.save()
        return TrainResult(steps=self.step, final_loss=smoothed if smoothed is not None else loss,
                           minutes=(time.monotonic() - start) / 60, output_dir=self.output_dir)

    # Checkpoints ------------------------------------------------------------------------
    def save(self, directory: Path | None = None) -> Path:
        """Raw weights + training state in `directory`; EMA weights (what inference uses) in `directory/ema`."""
        directory = directory or self.output_dir
        directory.mkdir(parents=True, exist_ok=True)
        self._save_weights(directory)
        with self.ema_weights():
            self._save_weights(directory / "ema")
        torch.save(
            {
                "step": self.step,
                "optimizer": self.optimizer.state_dict(),
                "minutes_trained": self.minutes_trained,
                "progress": self.progress,
                "ema": self.ema.state_dict(),
                "noise_generator": self.noise_generator.get_state(),
                "jitter_generator": self.jitter_generator.get_state(),
                "settings": self.settings.model_dump(mode="json"),
            },
            directory / STATE_FILE,
        )
        (directory / SAVED_CONFIG_FILE).write_text(self.config.model_dump_json(indent=1))
        return directory

    def _save_weights(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for name, checkpoint in CHECKPOINTS.items():
            module = getattr(self.components, name)
            if module is not None:
                state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
                save_file(state, str(directory / checkpoint.saved_file))

    def resume(self, directory: str | Path | None = None) -> bool:
        """Continue from a checkpoint written by `save`; False when there is none."""
        directory = Path(directory or self.output_dir)
        state_path = directory / STATE_FILE
        if not state_path.is_file():
            return False
        for name, checkpoint in CHECKPOINTS.items():
            module = getattr(self.components, name)
            if module is not None and (directory / checkpoint.saved_file).is_file():
                module.load_state_dict(load_file(str(directory / checkpoint.saved_file), device=str(self.device)))
        state = torch.load(state_path, map_location=self.device, weights_only=True)
        self.step = state["step"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.minutes_trained = state["minutes_trained"]
        self.progress = state["progress"]
        self.ema.load_state_dict(state["ema"])
        self.noise_generator.set_state(state["noise_generator"].cpu() if self.device.type == "cpu"
                                       else state["noise_generator"])
        self.jitter_generator.set_state(state["jitter_generator"].cpu())
        logger.info("resumed from %s at step %d", directory, self.step)
        return True

    @contextmanager
    def ema_weights(self) -> Iterator[None]:
        """Inside the block the trained parts hold the EMA weights; the raw ones come back after."""
        params = [p for m in self.parts.values() for p in m.parameters()]
        self.ema.store(params)
        self.ema.copy_to(params)
        try:
            yield
        finally:
            self.ema.restore(params)

    def write_validation_clip(self) -> Path:
        """Animate a validation character with the EMA weights into `validation/step_N.mp4`."""
        path = self.output_dir / "validation" / f"step_{self.step:06d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.ema_weights():
            for module in self.parts.values():
                module.eval()
            try:
                frames, driving, reference = self.validation.clip(0)
                output = animate_clip(self.components, driving, reference, seed=self.settings.seed)
            finally:
                for module in self.parts.values():
                    module.train()
        writer = VideoWriter(path, self.config.width * 3, self.config.height, 16)
        try:
            for truth, drive, out in zip(frames, driving, output, strict=True):
                writer.write(np.concatenate([drive, out, truth], axis=1))
        finally:
            writer.close()
        return path

