"""RAIN's training objective: a clip noised group by group, as the streaming queue holds it.

A clip of G*P frames is split into G groups; group g (oldest first) is noised to the g-th
smallest inference timestep, optionally jittered. The model is trained to predict what the
scheduler's `prediction_type` says (v for the published scheduler) for all frames at once,
so training sees exactly the staggered queue the engine runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rain_core.config import RainConfig
from rain_core.stream.scheduler import StreamingLCMScheduler


def staggered_timesteps(
    scheduler: StreamingLCMScheduler,
    config: RainConfig,
    *,
    batch: int = 1,
    jitter: int = 0,
    shared_level_prob: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-frame training timesteps [batch, G*P]: ascending by group, each group at one level.

    `jitter` moves each group's level by a uniform integer in [-jitter, jitter] (the same for
    the group's P frames), clipped to the schedule, and never past the neighbouring groups.
    With probability `shared_level_prob` a clip instead has every group at one of those levels,
    drawn at random: with no cleaner neighbour to copy from, the model has to draw the frames
    from the reference and the driving images, which is what keeps a stream anchored to its
    character when the cleanest group is the model's own earlier output.
    """
    levels = scheduler.streaming_timesteps(config.num_inference_steps).flip(0)  # ascending
    groups = levels.unsqueeze(0).repeat(batch, 1)
    if jitter:
        offsets = torch.randint(-jitter, jitter + 1, groups.shape, generator=generator)
        groups = (groups + offsets).clamp(0, scheduler.config.num_train_timesteps - 1)
        groups, _ = groups.sort(dim=1)
    if shared_level_prob:
        shared = torch.rand(batch, generator=generator) < shared_level_prob
        pick = torch.randint(0, groups.shape[1], (batch, 1), generator=generator)
        groups = torch.where(shared[:, None], groups.gather(1, pick).expand_as(groups), groups)
    return groups.repeat_interleave(config.frames_per_group, dim=1)


def _per_frame(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B, F] -> broadcastable over [B, C, F, h, w]."""
    return values[:, None, :, None, None].to(like.dtype)


def noise_latents(scheduler: StreamingLCMScheduler, clean: torch.Tensor, noise: torch.Tensor,
                  timesteps: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps, with a timestep per frame. Latents [B, C, F, h, w]."""
    alpha = _per_frame(scheduler.alphas_cumprod.to(clean.device)[timesteps], clean)
    return alpha.sqrt() * clean + (1 - alpha).sqrt() * noise


def prediction_target(scheduler: StreamingLCMScheduler, clean: torch.Tensor, noise: torch.Tensor,
                      timesteps: torch.Tensor) -> torch.Tensor:
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return clean
    if kind == "v_prediction":
        alpha = _per_frame(scheduler.alphas_cumprod.to(clean.device)[timesteps], clean)
        return alpha.sqrt() * noise - (1 - alpha).sqrt() * clean
    raise ValueError(f"prediction_type {kind!r} is not supported")


def diffusion_loss(
    model_output: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error; with `weights` (broadcastable to the output), their weighted mean."""
    if weights is None:
        return F.mse_loss(model_output.float(), target.float())
    squared = (model_output.float() - target.float()).square()
    weights = weights.float().expand_as(squared)
    return (weights * squared).sum() / weights.sum()


# A pixel has moved when some channel of the true frame differs from the reference by more than
# this many levels of 255 (here and in `rain-avatar evaluate`'s moved-region PSNR).
MOVED_LEVELS = 24


def moved_latent_weights(frames: torch.Tensor, reference: torch.Tensor, latent_size: tuple[int, int],
                         extra: float) -> torch.Tensor:
    """Loss weights [B, 1, T, h, w]: 1 + `extra` on each latent whose patch of the frame holds a
    pixel that moved away from the reference (frames [B, 3, T, H, W], reference [B, 3, H, W] in
    [0, 1]), 1 elsewhere. Where the character moved is a small part of a frame (about a tenth on
    the synthetic clips) and the part a reference cannot give, so it is what the model must learn
    from the driving images."""
    # In whole levels, as `evaluate` counts them on uint8 frames: a float threshold of 24/255 would
    # count some differences of exactly 24 levels by rounding.
    levels = (frames - reference[:, :, None]).abs().mul_(255).round_()
    moved = levels.amax(dim=1) > MOVED_LEVELS  # [B, T, H, W]
    b, t, height, width = moved.shape
    cells = F.adaptive_max_pool2d(moved.view(b * t, 1, height, width).float(), latent_size)
    return (1 + extra * cells).view(b, t, 1, *latent_size).transpose(1, 2)
