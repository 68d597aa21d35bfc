"""Embeddings that are RAIN's own."""

from __future__ import annotations

import torch


def guidance_scale_embedding(guidance_scale: float | torch.Tensor, dim: int) -> torch.Tensor:
    """The LCM guidance-scale embedding [N, dim]: sinusoidal features of w * 1000, sin then cos.

    Written out rather than taken from diffusers' `get_timestep_embedding` (the same formula)
    because at w*1000 = 2500 the sines are evaluated far from zero, and the order in which the
    frequencies are rounded shows in the result; this follows the order the checkpoints were
    distilled with.
    """
    w = torch.as_tensor(guidance_scale, dtype=torch.float32).reshape(-1) * 1000.0
    half = dim // 2
    step = torch.log(torch.tensor(10000.0)) / (half - 1)
    frequencies = torch.exp(torch.arange(half, dtype=torch.float32) * -step)
    angles = w[:, None] * frequencies[None, :]
    embedding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        embedding = torch.nn.functional.pad(embedding, (0, 1))
    return embedding

