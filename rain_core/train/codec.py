"""Training a TAESDV-class codec for profiles that do without the SD VAE.

The encoder maps frames to 4-channel latents on the 8x-smaller grid and the streaming decoder
(with its frame-to-frame memory) maps them back. A penalty keeps the latents near unit
variance, the scale the diffusion schedule assumes of SD latents.
"""

from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from rain_core.models import TAESDV
from rain_core.train.data import ClipDataset, collate

logger = logging.getLogger(__name__)

LATENT_VARIANCE_WEIGHT = 0.1


def codec_loss(codec: TAESDV, frames: torch.Tensor) -> tuple[torch.Tensor, float]:
    """frames [B, 3, T, H, W] in [0, 1] -> (loss, reconstruction L1)."""
    b, _, t, h, w = frames.shape
    flat = frames.transpose(1, 2).reshape(b * t, 3, h, w)
    latents = codec.encode(flat)
    memory = codec.initial_memory(b, *latents.shape[-2:], device=frames.device, dtype=frames.dtype)
    decoded, _ = codec.decode_stream(latents.view(b, t, *latents.shape[1:]), memory)
    decoded = decoded.reshape(b * t, 3, h, w)
    l1 = F.l1_loss(decoded, flat)
    loss = l1 + F.mse_loss(decoded, flat) + LATENT_VARIANCE_WEIGHT * (latents.pow(2).mean() - 1).pow(2)
    return loss, float(l1.detach())


def train_codec(codec: TAESDV, dataset: ClipDataset, *, steps: int, batch_size: int = 4, learning_rate: float = 1e-3,
                seed: int = 0, max_minutes: float | None = None, progress: bool = True) -> float:
    """Train `codec` in place; returns the final reconstruction L1 (0-1 scale)."""
    torch.manual_seed(seed)
    codec.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(codec.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=learning_rate * 0.1)
    device = next(codec.parameters()).device
    deadline = time.monotonic() + 60 * max_minutes if max_minutes else None
    l1 = float("nan")
    with tqdm(total=steps, desc="codec", unit="step", disable=not progress) as bar:
        for step in range(steps):
            batch = collate(dataset, [seed * 1_000_003 + step * batch_size + i for i in range(batch_size)])
            loss, l1 = codec_loss(codec, batch.frames.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(codec.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            bar.update(1)
            bar.set_postfix(l1=f"{l1:.4f}")
            if deadline is not None and time.monotonic() >= deadline:
                break
    codec.eval().requires_grad_(False)
    return l1
