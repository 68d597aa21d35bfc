"""The set of networks one RAIN model is made of, built from a config and loaded from files."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn

from rain_core.config import RainConfig
from rain_core.models import TAESDV, DenoisingUNet, LearnedContext, PoseGuider, ReferenceUNet
from rain_core.stream.scheduler import StreamingLCMScheduler
from rain_core.weights.checkpoints import (
    SAFETENSORS_SUFFIXES,
    TORCH_SUFFIXES,
    WeightsError,
    check_state_dict,
    load_weights,
    read_state_dict,
)

logger = logging.getLogger(__name__)

# Checkpoint file stems per component, first the published name. The denoising UNet is
# published as `motion_unet.pth`; the golden fixtures call it `denoising_unet`.
CHECKPOINT_STEMS: dict[str, tuple[str, ...]] = {
    "reference_unet": ("reference_unet",),
    "denoising_unet": ("motion_unet", "denoising_unet"),
    "pose_guider": ("pose_guider",),
    "decoder": ("taesdv",),
}
# Profiles with `reference_encoder="taesdv"` also have a learned context token.
CONTEXT_STEM = "context"
# Diffusers/transformers folders of the SD parts that encode the reference image.
VAE_FOLDER = "sd-vae-ft-mse"
IMAGE_ENCODER_FOLDER = "image_encoder"
# The SD VAE's latent scaling factor.
VAE_SCALING = 0.18215


def find_checkpoint(weights_dir: Path, component: str) -> Path:
    """The file of `component` in `weights_dir` (`.safetensors` preferred over torch files)."""
    stems = CHECKPOINT_STEMS.get(component, (CONTEXT_STEM,) if component == "context" else ())
    for stem in stems:
        for suffix in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
            candidate = weights_dir / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    names = " or ".join(f"{s}.pth/.safetensors" for s in stems)
    raise WeightsError(f"{weights_dir}: no {component} checkpoint (looked for {names})")


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
    def from_weights_dir(
        cls, config: RainConfig, weights_dir: str | Path, *, with_image_encoders: bool = True
    ) -> RainComponents:
        """Load every network from `weights_dir` and move it to the config's device and dtype.

        The networks are built on the meta device and take the checkpoint tensors directly, so
        the full-size model is never allocated twice.
        """
        weights_dir = Path(weights_dir)
        if not weights_dir.is_dir():
            raise WeightsError(f"{weights_dir}: weights directory does not exist")
        files = {name: find_checkpoint(weights_dir, name) for name in CHECKPOINT_STEMS}
        if config.reference_encoder == "taesdv":
            files["context"] = find_checkpoint(weights_dir, "context")
            with_image_encoders = False
        components = cls.build(config, device="meta")
        for name, path in files.items():
            logger.info("loading %s from %s", name, path)
            load_weights(getattr(components, name), path)
            _check_materialised(name, getattr(components, name), path)
        if with_image_encoders:
            components.vae = load_vae(weights_dir / VAE_FOLDER)
            components.image_encoder = load_image_encoder(weights_dir / IMAGE_ENCODER_FOLDER, config.clip_embed_dim)
        return components.to(config.torch_device, config.torch_dtype)

    @classmethod
    def random(cls, config: RainConfig, *, seed: int = 0) -> RainComponents:
        """Random weights on the config's device and dtype, for benchmarks and tests.

        Built on the meta device and filled in place on the target device, so that the
        full-size model is neither initialised on the CPU nor allocated twice. No weight is
        left at zero (the zero-initialised output layers would hide work from a benchmark).
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


@dataclass(frozen=True)
class PartStatus:
    """Whether one part of a weights directory is present and fits the configured model."""

    name: str
    path: Path | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def check_weights_dir(
    config: RainConfig, weights_dir: str | Path, *, with_image_encoders: bool = True
) -> list[PartStatus]:
    """Check every part of `weights_dir` against `config` without building the full-size model.

    Checkpoints are compared key by key and shape by shape with a meta-device model, the
    encoder folders are only looked for; nothing large is allocated.
    """
    weights_dir = Path(weights_dir)
    meta = RainComponents.build(config, device="meta")
    statuses = []
    parts = [*CHECKPOINT_STEMS, *(["context"] if config.reference_encoder == "taesdv" else [])]
    for name in parts:
        try:
            path = find_checkpoint(weights_dir, name)
        except WeightsError as exc:
            statuses.append(PartStatus(name, None, str(exc)))
            continue
        try:
            check_state_dict(getattr(meta, name), read_state_dict(path), path)
        except WeightsError as exc:
            # Present but of another layout: keep the path, so that it reads as bad, not missing.
            statuses.append(PartStatus(name, path, str(exc)))
        else:
            statuses.append(PartStatus(name, path, None))
    if with_image_encoders and config.reference_encoder == "sd":
        for name, folder in (("vae", VAE_FOLDER), ("image_encoder", IMAGE_ENCODER_FOLDER)):
            path = weights_dir / folder
            found = (path / "config.json").is_file()
            statuses.append(PartStatus(name, path if found else None, None if found else f"{path}: folder missing"))
    return statuses


def _fill_position_encoding(pe: torch.Tensor) -> None:
    """Recompute a motion module's sinusoidal table in place (it is data, not a weight)."""
    from diffusers.models.embeddings import SinusoidalPositionalEmbedding

    table = SinusoidalPositionalEmbedding(pe.shape[-1], pe.shape[1]).pe
    with torch.no_grad():
        pe.copy_(table.to(pe.device))


def _check_materialised(name: str, network: nn.Module, path: Path) -> None:
    left = [k for k, t in network.state_dict(keep_vars=True).items() if t.is_meta]
    left += [k for k, t in network.named_buffers() if t.is_meta]
    if left:
        raise WeightsError(f"{path}: {name} still has uninitialised tensors after loading: {left[:5]}")


def load_vae(folder: Path) -> nn.Module:
    """The SD VAE (`AutoencoderKL`) from a diffusers folder; only its encoder is used."""
    from diffusers import AutoencoderKL

    if not folder.is_dir():
        raise WeightsError(f"{folder}: VAE folder missing (diffusers AutoencoderKL format, e.g. sd-vae-ft-mse)")
    try:
        vae = AutoencoderKL.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{folder}: cannot load the VAE ({exc})") from None
    if vae.config.latent_channels != 4:
        raise WeightsError(f"{folder}: VAE has {vae.config.latent_channels} latent channels, RAIN needs 4")
    return vae


def load_image_encoder(folder: Path, embed_dim: int) -> nn.Module:
    """The CLIP vision encoder with projection (sd-image-variations' `image_encoder`)."""
    from transformers import CLIPVisionModelWithProjection

    if not folder.is_dir():
        raise WeightsError(f"{folder}: image encoder folder missing (transformers CLIPVisionModelWithProjection)")
    try:
        encoder = CLIPVisionModelWithProjection.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{folder}: cannot load the image encoder ({exc})") from None
    if encoder.config.projection_dim != embed_dim:
        raise WeightsError(
            f"{folder}: image encoder projects to {encoder.config.projection_dim} dims, the UNets expect {embed_dim}"
        )
    return encoder
