"""Typed configuration of the RAIN model stack and of one animation stream.

The field names of the UNet, scheduler and pose-guider sections follow the reference
implementation's `config.json` (the diffusers `UNet2DConditionModel` form plus the extra
keys of the denoising UNet), so that a published or fixture configuration loads as it is.
They are the keyword arguments of the models in `rain_core.models`, which `RainComponents.build`
constructs from them. Everything that sizes the stream (G, P, steps, resolution) lives here
and nowhere else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from rain_core.choices import DTYPE_NAMES, PROFILE_NAMES
from rain_core.models.denoising_unet import SD15_DOWN_BLOCK_TYPES, SD15_UP_BLOCK_TYPES, check_unet_layout
from rain_core.models.taesdv import LATENT_SCALE
from rain_core.validation import describe_validation_error

DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPE_NAMES}


def default_device() -> str:
    """Where a model runs when no device is named: the GPU when there is one."""
    return "cuda" if torch.cuda.is_available() else "cpu"


class ConfigError(ValueError):
    """A configuration that cannot describe a working model; the message names the field."""


class _Section(BaseModel):
    # Reference configs carry bookkeeping keys (`_class_name`, `sample_size`, ...) that do
    # not change the model; they are accepted and ignored, as diffusers does.
    model_config = ConfigDict(frozen=True, extra="ignore")


class UNetConfig(_Section):
    """The SD1.5-layout UNet shared by the reference net and the denoising UNet."""

    in_channels: int = Field(4, ge=1)
    out_channels: int = Field(4, ge=1)
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = Field(2, ge=1)
    # diffusers' legacy name: for SD1.5 this is the number of attention heads.
    attention_head_dim: int = Field(8, ge=1)
    cross_attention_dim: int = Field(768, ge=1)
    norm_num_groups: int = Field(32, ge=1)
    norm_eps: float = Field(1e-5, gt=0)
    down_block_types: tuple[str, ...] = SD15_DOWN_BLOCK_TYPES
    up_block_types: tuple[str, ...] = SD15_UP_BLOCK_TYPES
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    act_fn: Literal["silu"] = "silu"
    center_input_sample: Literal[False] = False

    @model_validator(mode="after")
    def _check_blocks(self) -> UNetConfig:
        check_unet_layout(
            self.block_out_channels,
            self.down_block_types,
            self.up_block_types,
            self.norm_num_groups,
            self.attention_head_dim,
        )
        return self


class MotionModuleConfig(_Section):
    """AnimateDiff "Vanilla" motion module."""

    num_attention_heads: int = Field(8, ge=1)
    num_transformer_block: int = Field(1, ge=1)
    attention_block_types: tuple[Literal["Temporal_Self"], ...] = ("Temporal_Self", "Temporal_Self")
    temporal_position_encoding: bool = True
    temporal_position_encoding_max_len: int = Field(32, ge=1)
    temporal_attention_dim_div: int = Field(1, ge=1)
    # The reference builds the module's GroupNorm with its own default, not the UNet's.
    norm_num_groups: int = Field(32, ge=1)


class DenoisingUNetConfig(_Section):
    """The keys the denoising UNet adds to the UNet config (`denoising_unet_extra`)."""

    use_inflated_groupnorm: Literal[True] = True
    unet_use_cross_frame_attention: Literal[False] = False
    unet_use_temporal_attention: Literal[False] = False
    use_motion_module: bool = True
    motion_module_resolutions: tuple[int, ...] = (1, 2, 4, 8)
    motion_module_mid_block: bool = True
    motion_module_decoder_only: bool = False
    motion_module_type: Literal["Vanilla"] = "Vanilla"
    motion_module_kwargs: MotionModuleConfig = MotionModuleConfig()
    cond_proj_dim: int = Field(512, ge=1)
    # Not in the published layout (0 = off, as RAIN-v0.1): an additive attention bias from each
    # frame token to the reference tokens at and around its own place (see
    # `ReferenceAttnProcessor`). Models trained here from scratch need it to copy the reference.
    reference_position_bias: float = Field(0.0, ge=0, allow_inf_nan=False)


class PoseGuiderConfig(_Section):
    conditioning_embedding_channels: int = Field(320, ge=1)
    conditioning_channels: int = Field(3, ge=1)
    block_out_channels: tuple[int, ...] = (16, 32, 96, 256)

    @field_validator("block_out_channels")
    @classmethod
    def _three_downsamples(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if 2 ** (len(value) - 1) != LATENT_SCALE:
            raise ValueError(
                f"block_out_channels {value}: needs 4 stages (3 stride-2 convs) so that the "
                f"features land on the latent grid (image / {LATENT_SCALE})"
            )
        return value


class SchedulerConfig(_Section):
    """LCM scheduler as the RAIN checkpoints were distilled with."""

    num_train_timesteps: int = Field(1000, ge=2)
    beta_start: float = Field(0.00085, gt=0)
    beta_end: float = Field(0.012, gt=0)
    beta_schedule: Literal["scaled_linear", "linear"] = "scaled_linear"
    steps_offset: int = 1
    clip_sample: bool = False
    rescale_betas_zero_snr: bool = True
    timestep_spacing: Literal["trailing"] = "trailing"
    prediction_type: Literal["v_prediction", "epsilon", "sample"] = "v_prediction"
    timestep_scaling: float = Field(10.0, gt=0)


class TAESDVConfig(_Section):
    latent_channels: int = Field(4, ge=1)
    # One width, or four: full resolution down to the latent grid.
    channels: PositiveInt | tuple[PositiveInt, PositiveInt, PositiveInt, PositiveInt] = 64
    # 3 is the published layout; the demo's own codec uses 1 (faster to train and run).
    blocks_per_stage: int = Field(3, ge=1)
    # A linear 8x8-patch path beside the conv stacks (not in the published layout).
    patch_path: bool = False
    # The decoder also sees the stream's reference image and takes from it, per pixel, what the
    # frame shows unchanged (not in the published layout).
    reference_gate: bool = False


class RainConfig(_Section):
    """Everything that defines one RAIN model and the stream it runs.

    `noise_groups` (G) groups of `frames_per_group` (P) frames sit in the queue; every call
    denoises all G*P frames once and yields P finished frames.
    """

    name: str = "custom"
    unet: UNetConfig = UNetConfig()
    denoising_unet: DenoisingUNetConfig = DenoisingUNetConfig()
    pose_guider: PoseGuiderConfig = PoseGuiderConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    taesdv: TAESDVConfig = TAESDVConfig()
    clip_embed_dim: int = Field(768, ge=1)
    # How the reference image is encoded: "sd" = SD VAE latents + CLIP image embedding (the
    # published model); "taesdv" = TAESDV's own encoder + a learned context token (models
    # trained here, which need no download).
    reference_encoder: Literal["sd", "taesdv"] = "sd"
    # What the driving images show: RAIN-v0.1's coloured face-landmark patterns, or an
    # OpenPose-style body with hands and face dots.
    driving_mode: Literal["face", "body"] = "face"
    guidance_scale: float = 2.5
    num_inference_steps: int = Field(4, ge=1)
    noise_groups: int = Field(4, ge=1)
    frames_per_group: int = Field(4, ge=1)
    height: int = Field(512, ge=LATENT_SCALE)
    width: int = Field(512, ge=LATENT_SCALE)
    seed: int = 42
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    device: str = "cpu"

    @field_validator("device")
    @classmethod
    def _valid_device(cls, value: str) -> str:
        try:
            torch.device(value)
        except RuntimeError as exc:
            raise ValueError(f"device {value!r} is not a torch device: {exc}") from None
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> RainConfig:
        if self.noise_groups != self.num_inference_steps:
            raise ValueError(
                f"noise_groups (G={self.noise_groups}) must equal num_inference_steps "
                f"({self.num_inference_steps}): each group sits one denoising step from the next"
            )
        if self.num_inference_steps > self.scheduler.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps={self.num_inference_steps} exceeds the scheduler's "
                f"num_train_timesteps={self.scheduler.num_train_timesteps}"
            )
        for side in ("height", "width"):
            if getattr(self, side) % LATENT_SCALE:
                raise ValueError(f"{side}={getattr(self, side)} must be a multiple of {LATENT_SCALE}")
        motion = self.denoising_unet.motion_module_kwargs
        if self.denoising_unet.use_motion_module and self.queue_length > motion.temporal_position_encoding_max_len:
            raise ValueError(
                f"the queue holds G*P={self.queue_length} frames but the motion modules encode at most "
                f"temporal_position_encoding_max_len={motion.temporal_position_encoding_max_len}"
            )
        if self.unet.cross_attention_dim != self.clip_embed_dim:
            raise ValueError(
                f"unet.cross_attention_dim={self.unet.cross_attention_dim} must equal "
                f"clip_embed_dim={self.clip_embed_dim}: the CLIP embedding is the cross-attention context"
            )
        if self.pose_guider.conditioning_embedding_channels != self.unet.block_out_channels[0]:
            raise ValueError(
                f"pose_guider.conditioning_embedding_channels={self.pose_guider.conditioning_embedding_channels} "
                f"must equal unet.block_out_channels[0]={self.unet.block_out_channels[0]}: its output is "
                "added after conv_in"
            )
        if self.taesdv.latent_channels != self.unet.out_channels:
            raise ValueError(
                f"taesdv.latent_channels={self.taesdv.latent_channels} must equal unet.out_channels="
                f"{self.unet.out_channels}"
            )
        return self

    # Derived sizes -------------------------------------------------------------------
    @property
    def queue_length(self) -> int:
        """G*P: frames in the denoising queue."""
        return self.noise_groups * self.frames_per_group

    @property
    def latent_height(self) -> int:
        return self.height // LATENT_SCALE

    @property
    def latent_width(self) -> int:
        return self.width // LATENT_SCALE

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    # The models' keyword arguments ------------------------------------------------------
    def denoising_unet_kwargs(self) -> dict[str, Any]:
        """`DenoisingUNet`'s keyword arguments: the UNet section followed by the denoising UNet's own keys.

        The other sections hold exactly their model's keyword arguments. Keys of the reference
        layout that admit a single value (the one implemented) configure nothing and are left out.
        """
        fixed = {
            "act_fn",
            "center_input_sample",
            "use_inflated_groupnorm",
            "unet_use_cross_frame_attention",
            "unet_use_temporal_attention",
            "motion_module_type",
        }
        sections = {**self.unet.model_dump(), **self.denoising_unet.model_dump()}
        return {key: value for key, value in sections.items() if key not in fixed}

    def with_overrides(self, **changes: Any) -> RainConfig:
        """A validated copy with some top-level fields changed (e.g. dtype, device, G, P)."""
        try:
            return RainConfig.model_validate({**self.model_dump(), **changes})
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc)) from None

    # Loading ----------------------------------------------------------------------
    @classmethod
    def from_reference_json(cls, path: str | Path, **overrides: Any) -> RainConfig:
        """Read a configuration in the reference implementation's `config.json` layout.

        That layout names the UNet section `reference_unet` and the denoising UNet's extra
        keys `denoising_unet_extra`; the other sections have our names.
        """
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such configuration file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not a readable JSON configuration ({exc})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a JSON object at the top level")
        data = dict(raw)
        if "reference_unet" in data:
            data["unet"] = data.pop("reference_unet")
        if "denoising_unet_extra" in data:
            data["denoising_unet"] = data.pop("denoising_unet_extra")
        data.setdefault("name", path.parent.name or "custom")
        data.update(overrides)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{path}: {describe_validation_error(exc)}") from None


# Profiles --------------------------------------------------------------------------

def official_config(**overrides: Any) -> RainConfig:
    """RAIN-v0.1 as published: SD1.5 widths, G=4, P=4, 4 LCM steps, 512x512."""
    return RainConfig(name="official", seed=42, **overrides)


def tiny_config(**overrides: Any) -> RainConfig:
    """The official layout at small widths, for CPU tests and benchmarks."""
    base: dict[str, Any] = dict(
        name="tiny",
        unet=UNetConfig(block_out_channels=(32, 64, 64, 64), cross_attention_dim=32),
        denoising_unet=DenoisingUNetConfig(cond_proj_dim=32),
        pose_guider=PoseGuiderConfig(conditioning_embedding_channels=32, block_out_channels=(8, 16, 32, 32)),
        clip_embed_dim=32,
        height=64,
        width=64,
    )
    base.update(overrides)
    return RainConfig(**base)


def demo_config(**overrides: Any) -> RainConfig:
    """The small model trained here on synthetic cartoon characters and bundled with the
    package: 128x128, G=2 groups x P=2 frames, TAESDV-class codec with a reference gate and a
    learned context token."""
    base: dict[str, Any] = dict(
        name="demo",
        # 16 latent channels (SD has 4): the codec is trained here in minutes and reconstructs
        # the cartoon frames much better with the wider latent; the UNet barely notices.
        # Two attention heads (16 and 32 channels each), spatial and temporal: with SD's eight, heads
        # of 4 channels made a 256-token attention cost 8 softmaxes of 256x256 for products of
        # depth 4, and the UNet's attentions took a third of a CPU call (v2: 196 -> 148 ms per call).
        unet=UNetConfig(block_out_channels=(32, 64, 64, 64), cross_attention_dim=32, in_channels=16, out_channels=16,
                        attention_head_dim=2),
        denoising_unet=DenoisingUNetConfig(cond_proj_dim=32, reference_position_bias=5.0,
                                           motion_module_kwargs=MotionModuleConfig(num_attention_heads=2)),
        # The UNet predicts the clean latents, not v: a UNet trained for minutes cannot copy the
        # input's noise into v exactly, and what it misses is left in every frame as grain
        # (measured at 900 steps: streamed PSNR 19.4 -> 20.0 dB, SSIM 0.59 -> 0.72, flicker 8.5 -> 1.6).
        scheduler=SchedulerConfig(prediction_type="sample"),
        pose_guider=PoseGuiderConfig(conditioning_embedding_channels=32, block_out_channels=(8, 16, 32, 32)),
        # The reference gate gives back the detail a 16x16 latent grid loses wherever the frame
        # shows what the reference shows (see docs/demo_model.md).
        taesdv=TAESDVConfig(channels=16, latent_channels=16, blocks_per_stage=1, patch_path=True, reference_gate=True),
        clip_embed_dim=32,
        reference_encoder="taesdv",
        driving_mode="body",
        # Two groups of two: each call denoises 4 frames for the 2 it finishes (three groups took
        # 6), which is what lets a 2-core CPU keep the page's 16 fps, with a shorter queue (latency).
        num_inference_steps=2,
        noise_groups=2,
        frames_per_group=2,
        height=128,
        width=128,
        seed=42,
    )
    base.update(overrides)
    return RainConfig(**base)


PROFILES = dict(zip(PROFILE_NAMES, (official_config, tiny_config, demo_config), strict=True))


def profile_config(name: str, **overrides: Any) -> RainConfig:
    """The named profile's configuration; an unknown name is a `ConfigError` listing the known ones."""
    try:
        factory = PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown profile {name!r}; known profiles: {', '.join(sorted(PROFILES))}") from None
    try:
        return factory(**overrides)
    except ValidationError as exc:
        raise ConfigError(f"profile {name!r}: {describe_validation_error(exc)}") from None
