"""Training a TAESDV-class codec for profiles that do without the SD VAE.

The encoder maps frames to latents on the 8x-smaller grid and the streaming decoder
(with its frame-to-frame memory) maps them back. A penalty keeps the latents near unit
variance, the scale the diffusion schedule assumes of SD latents.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from rain_core.models import TAESDV
from rain_core.train.data import ClipDataset, collate
from rain_core.train.schedule import learning_rate_at

logger = logging.getLogger(__name__)

LATENT_VARIANCE_WEIGHT = 0.1
# The decoder sees latents with Gaussian noise of a standard deviation drawn per clip from
# [0, LATENT_NOISE_MAX]. A codec trained on exact latents only decodes the diffusion model's
# slightly-off predictions into noise (measured: held-out frames fell from 24 dB to 17 dB with
# latent noise of 0.2; trained with noise up to 0.5 they lose 1.3 dB). The SD VAE gets the
# same robustness from its sampling.
LATENT_NOISE_MAX = 0.5
# The reference gate is taught directly where to open: where the true frame is the reference
# image (every channel within this tolerance, 0-1 scale). Through the frames alone it learned
# to copy the reference everywhere (what an untrained decoder makes the best guess), saturated,
# and never closed again: the codec reproduced the reference repeated exactly.
GATE_MATCH_TOLERANCE = 4 / 255
GATE_WEIGHT = 0.1


def codec_loss(codec: TAESDV, frames: torch.Tensor, *, latent_noise: float = 0.0,
               reference: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """frames [B, 3, T, H, W] in [0, 1] -> (loss, reconstruction L1). `reference` [B, 3, H, W]: each
    clip's reference image, for a codec that decodes with it (encoded as a stream encodes it; the
    latent noise is the stream's error on its frames, so the reference's latents get none)."""
    b, _, t, h, w = frames.shape
    flat = frames.transpose(1, 2).reshape(b * t, 3, h, w)
    latents = codec.encode(flat)
    decoder_reference = None
    if codec.uses_reference:
        if reference is None:
            raise ValueError("this codec decodes with the reference image: pass the clips' reference")
        decoder_reference = (reference, codec.encode(reference))
    memory = codec.initial_memory(b, *latents.shape[-2:], device=frames.device, dtype=frames.dtype)
    decoder_input = latents.view(b, t, *latents.shape[1:])
    if latent_noise:
        scale = torch.rand(b, 1, 1, 1, 1, device=frames.device, dtype=frames.dtype) * latent_noise
        decoder_input = decoder_input + scale * torch.randn_like(decoder_input)
    decoded, _, gate_logits = codec.decode_stream_and_gate(decoder_input, memory, decoder_reference)
    decoded = decoded.reshape(b * t, 3, h, w)
    l1 = F.l1_loss(decoded, flat)
    loss = l1 + F.mse_loss(decoded, flat) + LATENT_VARIANCE_WEIGHT * (latents.pow(2).mean() - 1).pow(2)
    if gate_logits is not None:
        unchanged = (frames - reference[:, :, None]).abs().amax(1, keepdim=True) <= GATE_MATCH_TOLERANCE
        loss = loss + GATE_WEIGHT * F.binary_cross_entropy_with_logits(
            gate_logits, unchanged.transpose(1, 2).to(gate_logits.dtype)
        )
    return loss, float(l1.detach())


@dataclass
class CodecResult:
    steps: int
    l1: float  # reconstruction L1 of the last batch, 0-1 scale
    minutes: float


def train_codec(codec: TAESDV, dataset: ClipDataset, *, steps: int, batch_size: int = 2, learning_rate: float = 2e-3,
                seed: int = 0, max_minutes: float | None = None, latent_noise: float = LATENT_NOISE_MAX,
                train_encoder: bool = True, progress: bool = True) -> CodecResult:
    """Train `codec` in place; with `train_encoder=False` only its decoder (the latents a trained
    UNet was trained on stay what they were)."""
    torch.manual_seed(seed)
    codec.train().requires_grad_(True)
    if not train_encoder:
        for module in (codec.encoder, codec.patch_encoder):
            if module is not None:
                module.requires_grad_(False)
    parameters = [p for p in codec.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    device = next(codec.parameters()).device
    started = time.monotonic()
    budget = 60 * max_minutes if max_minutes else None
    l1 = float("nan")
    with tqdm(total=steps, desc="codec", unit="step", disable=not progress) as bar:
        for step in range(steps):
            batch = collate(dataset, [seed * 1_000_003 + step * batch_size + i for i in range(batch_size)])
            loss, l1 = codec_loss(codec, batch.frames.to(device), latent_noise=latent_noise,
                                  reference=batch.reference.to(device))
            # No warm-up; the decay runs over the steps or the time budget, whichever ends first.
            done = max(step / steps, (time.monotonic() - started) / budget if budget else 0.0)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(learning_rate, done)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            bar.update(1)
            bar.set_postfix(l1=f"{l1:.4f}")
            if done >= 1.0:
                break
    codec.eval().requires_grad_(False)
    return CodecResult(steps=step + 1, l1=l1, minutes=(time.monotonic() - started) / 60)
