"""The set of networks one RAIN model is made of, built from a config (no file is read here).

`rain_core.weights.loading` fills them from a weights directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, fields

import torch
from torch import nn

from rain_core.config import RainConfig
from rain_core.models import TAESDV, DenoisingUNet, LearnedContext, PoseGuider, ReferenceUNet
from rain_core.stream.scheduler import StreamingLCMScheduler


@dataclass
class RainComponents:
    """The trainable networks of RAIN plus its scheduler; the image encoders are optional.

    `vae` (diffusers `AutoencoderKL`) and `image_encoder` (transformers
    `CLIPVisionModelWithProjection`) only encode the reference image. Without them the
    reference latents come from TAESDV's encoder and the context from `context`.
    """

    config: RainConfig
    pose_guider: PoseGuider
    reference_unet: ReferenceUNet
    denoising_unet: DenoisingUNet
    decoder: TAESDV
    scheduler: StreamingLCMScheduler
    vae: nn.Module | None = None
    image_encoder: nn.Module | None = None
    context: LearnedContext | None = None

    @classmethod
    def build(cls, config: RainConfig, *, device: str | torch.device | None = None) -> RainComponents:
        """Freshly initialised networks; on `device="meta"` nothing is allocated.

        This is where every model is constructed from its section of the config.
        """
        with torch.device(device) if device is not None else nullcontext():
            networks = dict(
                pose_guider=PoseGuider(**config.pose_guider.model_dump()),
                reference_unet=ReferenceUNet(**config.unet.model_dump()),
                denoising_unet=DenoisingUNet(**config.denoising_unet_kwargs()),
                decoder=TAESDV(**config.taesdv.model_dump()),
            )
            if config.reference_encoder == "taesdv":
                networks["context"] = LearnedContext(embed_dim=config.clip_embed_dim)
        # The scheduler's tables are data, never meta.
        return cls(config=config, scheduler=StreamingLCMScheduler.from_rain_config(config.scheduler), **networks)

    @classmethod
    def random(cls, config: RainConfig, *, seed: int = 0) -> RainComponents:
        """Random weights on the config's device and dtype, for benchmarks and tests.

        Built on the meta device and filled in place on the target device, so that the
        full-size model is neither initialised on the CPU nor allocated twice. No weight is
        left at zero (the zero-initialised output layers would hide work from a benchmark).
        Profiles that encode the reference with CLIP get a context token in its place: random
        weights come without image encoders.
        """
        components = cls.build(config, device="meta")
        if components.context is None:
            with torch.device("meta"):
                components.context = LearnedContext(embed_dim=config.clip_embed_dim)
        generator = torch.Generator(config.torch_device).manual_seed(seed)
        for _, network in components.networks():
            network.to_empty(device=config.torch_device)
            for name, tensor in network.state_dict(keep_vars=True).items():
                if name.endswith("pos_encoder.pe"):
                    _fill_position_encoding(tensor)
                    continue
                with torch.no_grad():
                    fan_in = tensor[0].numel() if tensor.dim() > 1 else 1
                    std = fan_in**-0.5 if tensor.dim() > 1 else 0.02
                    tensor.normal_(0.0, std, generator=generator)
                    if tensor.dim() == 1 and name.endswith("weight"):
                        tensor.add_(1.0)
        return components.to(config.torch_device, config.torch_dtype)

    def networks(self) -> Iterator[tuple[str, nn.Module]]:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, nn.Module):
                yield field.name, value

    def to(self, device: torch.device | str, dtype: torch.dtype) -> RainComponents:
        for _, network in self.networks():
            # nn.Module.to, not diffusers' override: that one warns about fp32-kept modules on
            # every dtype cast even when a model keeps none (diffusers 0.42).
            nn.Module.to(network, device=device, dtype=dtype).eval().requires_grad_(False)
        return self


def _fill_position_encoding(pe: torch.Tensor) -> None:
    """Recompute a motion module's sinusoidal table in place (it is data, not a weight)."""
    from diffusers.models.embeddings import SinusoidalPositionalEmbedding

    table = SinusoidalPositionalEmbedding(pe.shape[-1], pe.shape[1]).pe
    with torch.no_grad():
        pe.copy_(table.to(pe.device))
