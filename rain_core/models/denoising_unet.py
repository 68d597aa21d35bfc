"""The RAIN denoising UNet: SD1.5 inflated to video, with reference attention and motion modules.

Layout and key names follow the published `motion_unet.pth`. Inside the network a video is
[(B F), C, H, W]: the frames of each stream back to back. That is exactly what "inflating" a 2D
layer means (convs, GroupNorms and the spatial transformers act on each frame alone), so
diffusers' 2D blocks are used as they are; only the motion modules look across frames.

Every frame has its own timestep: frames of a RAIN queue sit at different noise levels.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.downsampling import Downsample2D
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.upsampling import Upsample2D
from diffusers.utils import BaseOutput
from torch import nn

from rain_core.models.attention import BlockReference, ReferenceAttnProcessor, ReferenceKV, reference_blocks
from rain_core.models.motion_module import MotionModule


@dataclass
class DenoisingUNetOutput(BaseOutput):
    """`sample`: the model output (v-prediction for RAIN-v0.1), [B, C, F, h, w]."""

    sample: torch.Tensor


@dataclass(frozen=True)
class _BlockSpec:
    """What every down/up block is built from; leaf blocks take plain arguments."""

    temb_channels: int
    groups: int
    eps: float
    heads: int
    cross_attention_dim: int
    # `MotionModule`'s keyword arguments.
    motion: Mapping[str, Any]


def _resnet(spec: _BlockSpec, channels_in: int, channels_out: int, scale: float = 1.0) -> ResnetBlock2D:
    return ResnetBlock2D(
        in_channels=channels_in,
        out_channels=channels_out,
        temb_channels=spec.temb_channels,
        groups=spec.groups,
        eps=spec.eps,
        output_scale_factor=scale,
    )


def _spatial_transformer(spec: _BlockSpec, channels: int) -> Transformer2DModel:
    return Transformer2DModel(
        num_attention_heads=spec.heads,
        attention_head_dim=channels // spec.heads,
        in_channels=channels,
        num_layers=1,
        cross_attention_dim=spec.cross_attention_dim,
        norm_num_groups=spec.groups,
    )


class _VideoBlock(nn.Module):
    """resnet -> spatial transformer (with reference) -> motion module, for each layer."""

    resnets: nn.ModuleList
    attentions: nn.ModuleList | None
    motion_modules: nn.ModuleList | None
    # Set by diffusers' `enable_gradient_checkpointing` (with `_gradient_checkpointing_func`).
    gradient_checkpointing = False

    def _add_layers(self, spec: _BlockSpec, channels: int, layers: int, *, cross_attention: bool, motion: bool) -> None:
        """The per-layer spatial transformers and motion modules (either may be absent)."""
        self.attentions = (
            nn.ModuleList([_spatial_transformer(spec, channels) for _ in range(layers)]) if cross_attention else None
        )
        self.motion_modules = (
            nn.ModuleList([MotionModule(channels, **spec.motion) for _ in range(layers)]) if motion else None
        )

    def _run(self, module: nn.Module, *args):
        """Call `module`, through activation checkpointing while training with it enabled."""
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(module, *args)
        return module(*args)

    def _layer(
        self,
        index: int,
        hidden_states: torch.Tensor,
        temb: torch.Tensor,
        context: torch.Tensor,
        references: list[BlockReference | None],
        num_frames: int,
    ) -> torch.Tensor:
        hidden_states = self._run(self.resnets[index], hidden_states, temb)
        if self.attentions is not None:
            hidden_states = self._attend(index, hidden_states, context, references[index])
        if self.motion_modules is not None:
            hidden_states = self._run(self.motion_modules[index], hidden_states, num_frames)
        return hidden_states

    def _attend(self, index: int, hidden_states: torch.Tensor, context: torch.Tensor,
                reference: BlockReference | None) -> torch.Tensor:
        kwargs = None if reference is None else {"reference": reference, "grid": tuple(hidden_states.shape[-2:])}
        return self.attentions[index](
            hidden_states, encoder_hidden_states=context, cross_attention_kwargs=kwargs, return_dict=False
        )[0]


class DownBlock(_VideoBlock):
    def __init__(self, spec: _BlockSpec, channels_in: int, channels_out: int, layers: int,
                 cross_attention: bool, motion: bool, downsample: bool, downsample_padding: int):
        super().__init__()
        self.resnets = nn.ModuleList(
            [_resnet(spec, channels_in if i == 0 else channels_out, channels_out) for i in range(layers)]
        )
        self._add_layers(spec, channels_out, layers, cross_attention=cross_attention, motion=motion)
        self.downsamplers = (
            nn.ModuleList(
                [
                    Downsample2D(
                        channels_out, use_conv=True, out_channels=channels_out, padding=downsample_padding, name="op"
                    )
                ]
            )
            if downsample
            else None
        )

    def forward(self, hidden_states, temb, context, references, num_frames):
        skips = []
        for i in range(len(self.resnets)):
            hidden_states = self._layer(i, hidden_states, temb, context, references, num_frames)
            skips.append(hidden_states)
        if self.downsamplers is not None:
            hidden_states = self.downsamplers[0](hidden_states)
            skips.append(hidden_states)
        return hidden_states, skips


class MidBlock(_VideoBlock):
    def __init__(self, spec: _BlockSpec, channels: int, motion: bool, scale: float):
        super().__init__()
        self.resnets = nn.ModuleList([_resnet(spec, channels, channels, scale) for _ in range(2)])
        self._add_layers(spec, channels, 1, cross_attention=True, motion=motion)

    def forward(self, hidden_states, temb, context, references, num_frames):
        # The mid block opens with a lone resnet; its one layer is then attention -> motion -> resnet.
        hidden_states = self._run(self.resnets[0], hidden_states, temb)
        hidden_states = self._attend(0, hidden_states, context, references[0])
        if self.motion_modules is not None:
            hidden_states = self._run(self.motion_modules[0], hidden_states, num_frames)
        return self._run(self.resnets[1], hidden_states, temb)


class UpBlock(_VideoBlock):
    def __init__(
        self,
        spec: _BlockSpec,
        channels_prev: int,
        channels_out: int,
        channels_skip_last: int,
        layers: int,
        cross_attention: bool,
        motion: bool,
        upsample: bool,
    ):
        super().__init__()
        resnets = []
        for i in range(layers):
            skip = channels_skip_last if i == layers - 1 else channels_out
            resnets.append(_resnet(spec, (channels_prev if i == 0 else channels_out) + skip, channels_out))
        self.resnets = nn.ModuleList(resnets)
        self._add_layers(spec, channels_out, layers, cross_attention=cross_attention, motion=motion)
        self.upsamplers = (
            nn.ModuleList([Upsample2D(channels_out, use_conv=True, out_channels=channels_out)]) if upsample else None
        )

    def forward(self, hidden_states, skips, temb, context, references, num_frames, upsample_size=None):
        for i in range(len(self.resnets)):
            hidden_states = torch.cat([hidden_states, skips.pop()], dim=1)
            hidden_states = self._layer(i, hidden_states, temb, context, references, num_frames)
        if self.upsamplers is not None:
            hidden_states = self.upsamplers[0](hidden_states, output_size=upsample_size)
        return hidden_states


# The blocks this UNet builds, by diffusers' names: with spatial (and reference) attention or without.
DOWN_BLOCK_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCK_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D")
# SD1.5's layout, RAIN-v0.1's: attention in every block but the lowest.
SD15_DOWN_BLOCK_TYPES = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
SD15_UP_BLOCK_TYPES = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")


def check_unet_layout(
    block_out_channels: Sequence[int],
    down_block_types: Sequence[str],
    up_block_types: Sequence[str],
    norm_num_groups: int,
    attention_head_dim: int,
) -> None:
    """Raise `ValueError` unless the SD-layout UNet these arguments describe can be built.

    The reference net (diffusers' UNet) and the denoising UNet share the layout, so the
    configuration checks it with this one function before either is built.
    """
    n = len(block_out_channels)
    if len(down_block_types) != n or len(up_block_types) != n:
        raise ValueError(
            f"down_block_types ({len(down_block_types)}) and up_block_types ({len(up_block_types)}) "
            f"must both have one entry per block_out_channels ({n})"
        )
    for name, kinds, supported in (
        ("down_block_types", down_block_types, DOWN_BLOCK_TYPES),
        ("up_block_types", up_block_types, UP_BLOCK_TYPES),
    ):
        for kind in kinds:
            if kind not in supported:
                raise ValueError(f"{name}: unsupported block {kind!r}")
    for width in block_out_channels:
        if width % norm_num_groups:
            raise ValueError(
                f"block_out_channels {tuple(block_out_channels)}: {width} is not divisible by "
                f"norm_num_groups={norm_num_groups}"
            )
        if width % attention_head_dim:
            raise ValueError(
                f"block_out_channels {tuple(block_out_channels)}: {width} is not divisible by "
                f"attention_head_dim (heads)={attention_head_dim}"
            )


class DenoisingUNet(ModelMixin, ConfigMixin):
    """Denoises a queue of latent frames, each at its own timestep, guided by pose and reference.

    The keyword arguments are those of the reference implementation's `config.json`: the
    UNet's (diffusers' `UNet2DConditionModel` names) followed by the keys the denoising UNet
    adds. The defaults are RAIN-v0.1's.

    Parameters:
        in_channels (`int`, *optional*, defaults to 4): latent channels in.
        out_channels (`int`, *optional*, defaults to 4): channels out.
        block_out_channels (`tuple[int]`, *optional*, defaults to `(320, 640, 1280, 1280)`): width
            of each resolution, full to coarsest.
        layers_per_block (`int`, *optional*, defaults to 2): resnets per down block (up blocks
            have one more).
        attention_head_dim (`int`, *optional*, defaults to 8): diffusers' legacy name; for the
            SD1.5 layout this is the number of attention heads.
        cross_attention_dim (`int`, *optional*, defaults to 768): width of the context.
        norm_num_groups (`int`, *optional*, defaults to 32), norm_eps (`float`, *optional*,
            defaults to 1e-5): the GroupNorms.
        down_block_types, up_block_types (`tuple[str]`): `CrossAttnDownBlock2D`/`DownBlock2D` and
            `CrossAttnUpBlock2D`/`UpBlock2D`, one per resolution.
        flip_sin_to_cos (`bool`), freq_shift (`int`): the sinusoidal timestep features.
        downsample_padding (`int`), mid_block_scale_factor (`float`): as in diffusers.
        cond_proj_dim (`int`, *optional*, defaults to 512): width of the guidance-scale
            embedding that conditions the time embedding.
        use_motion_module (`bool`, *optional*, defaults to `True`): whether any motion module is built.
        motion_module_resolutions (`tuple[int]`, *optional*, defaults to `(1, 2, 4, 8)`): the
            downscales (1 = full latent grid) whose blocks get motion modules.
        motion_module_mid_block (`bool`, *optional*, defaults to `True`): a motion module in the mid block.
        motion_module_decoder_only (`bool`, *optional*, defaults to `False`): none in the down blocks.
        motion_module_kwargs (`dict`, *optional*): keyword arguments of every `MotionModule`
            (`num_attention_heads`, `temporal_position_encoding_max_len`, ...); its defaults when None.
        reference_position_bias (`float`, *optional*, defaults to 0): strength of the attention bias
            from each frame token to the reference tokens around its place (see
            `ReferenceAttnProcessor`); 0 (off) in the published model.

    Call with:
        sample: [B, C, F, h, w] noisy latents.
        timesteps: [B, F], [F] or a scalar: integer timesteps.
        encoder_hidden_states: [B, S, D] CLIP image embedding(s), the cross-attention context.
        pose_features: [B, C0, F, h, w] pose-guider output, added after `conv_in`, or None.
        time_cond: [B, cond_proj_dim] guidance-scale embedding, the time embedding's condition.
        reference: block name -> bank [B, L, C] or its cached `ReferenceKV` (see
            `cache_reference`); blocks left out attend to their own frame only.
    """

    # Activation checkpointing per resnet, spatial transformer and motion module (training).
    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 4,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        attention_head_dim: int = 8,
        cross_attention_dim: int = 768,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        down_block_types: tuple[str, ...] = SD15_DOWN_BLOCK_TYPES,
        up_block_types: tuple[str, ...] = SD15_UP_BLOCK_TYPES,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1.0,
        cond_proj_dim: int = 512,
        use_motion_module: bool = True,
        motion_module_resolutions: tuple[int, ...] = (1, 2, 4, 8),
        motion_module_mid_block: bool = True,
        motion_module_decoder_only: bool = False,
        motion_module_kwargs: dict[str, Any] | None = None,
        reference_position_bias: float = 0.0,
    ):
        super().__init__()
        check_unet_layout(block_out_channels, down_block_types, up_block_types, norm_num_groups, attention_head_dim)
        motion_module_kwargs = dict(motion_module_kwargs or {})
        try:
            inspect.signature(MotionModule).bind(block_out_channels[0], **motion_module_kwargs)
        except TypeError as exc:
            raise ValueError(f"motion_module_kwargs {motion_module_kwargs}: {exc}") from None

        widths = tuple(block_out_channels)
        num_blocks = len(widths)
        time_embed_dim = widths[0] * 4
        spec = _BlockSpec(
            temb_channels=time_embed_dim,
            groups=norm_num_groups,
            eps=norm_eps,
            heads=attention_head_dim,
            cross_attention_dim=cross_attention_dim,
            motion=motion_module_kwargs,
        )
        resolutions = set(motion_module_resolutions)

        self.conv_in = nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(widths[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(widths[0], time_embed_dim, cond_proj_dim=cond_proj_dim)

        self.down_blocks = nn.ModuleList()
        for i, kind in enumerate(down_block_types):
            self.down_blocks.append(
                DownBlock(
                    spec,
                    channels_in=widths[max(i - 1, 0)],
                    channels_out=widths[i],
                    layers=layers_per_block,
                    cross_attention=kind == "CrossAttnDownBlock2D",
                    motion=use_motion_module and 2**i in resolutions and not motion_module_decoder_only,
                    downsample=i < num_blocks - 1,
                    downsample_padding=downsample_padding,
                )
            )
        self.mid_block = MidBlock(
            spec,
            widths[-1],
            motion=use_motion_module and motion_module_mid_block,
            scale=mid_block_scale_factor,
        )
        self.up_blocks = nn.ModuleList()
        reversed_widths = list(reversed(widths))
        for i, kind in enumerate(up_block_types):
            self.up_blocks.append(
                UpBlock(
                    spec,
                    channels_prev=reversed_widths[max(i - 1, 0)],
                    channels_out=reversed_widths[i],
                    channels_skip_last=reversed_widths[min(i + 1, num_blocks - 1)],
                    layers=layers_per_block + 1,
                    cross_attention=kind == "CrossAttnUpBlock2D",
                    motion=use_motion_module and 2 ** (num_blocks - 1 - i) in resolutions,
                    upsample=i < num_blocks - 1,
                )
            )
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, widths[0], eps=norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(widths[0], out_channels, kernel_size=3, padding=1)

        self.set_attn_processor(ReferenceAttnProcessor(position_bias=reference_position_bias))

    # Attention processors, as diffusers models expose them --------------------------------
    def _spatial_attentions(self):
        for _, block in reference_blocks(self):
            yield block.attn1
            yield block.attn2

    def set_attn_processor(self, processor) -> None:
        """Install `processor` on every spatial attention (the motion modules keep their own)."""
        for attention in self._spatial_attentions():
            attention.set_processor(processor)

    def set_reference_attention(self, *, merged: bool) -> None:
        """Reinstall the spatial attention processors, attending to the reference merged by
        log-sum-exp (one shared K/V, the default) or through per-frame copies (the plain form
        the merged one is checked against); the position bias stays as configured."""
        self.set_attn_processor(
            ReferenceAttnProcessor(position_bias=self.config.reference_position_bias, merged=merged)
        )

    @property
    def reference_attention_merged(self) -> bool:
        """Whether the spatial attentions attend to the reference merged (see `set_reference_attention`)."""
        processor = next((attention.processor for attention in self._spatial_attentions()), None)
        return isinstance(processor, ReferenceAttnProcessor) and processor.merged

    @property
    def reference_block_names(self) -> list[str]:
        return [name for name, _ in reference_blocks(self)]

    # Reference -------------------------------------------------------------------------
    def cache_reference(self, banks: Mapping[str, torch.Tensor]) -> dict[str, ReferenceKV]:
        """Project each reference bank [B, L, C] through its block's self-attention keys/values once.

        The result replaces the banks in `forward` and gives the same output: the projections
        are per token, and the bank is the same for every frame and every call of a stream.
        """
        self._check_reference(banks)
        return {
            name: ReferenceKV(key=block.attn1.to_k(banks[name]), value=block.attn1.to_v(banks[name]))
            for name, block in reference_blocks(self)
        }

    def _check_reference(self, reference: Mapping[str, object]) -> None:
        names = self.reference_block_names
        unknown = sorted(set(reference) - set(names))
        if unknown:
            raise ValueError(f"reference names unknown blocks {unknown}; the blocks are {names}")

    # Forward ---------------------------------------------------------------------------
    def forward(
        self,
        sample: torch.Tensor,
        timesteps: torch.Tensor | int,
        encoder_hidden_states: torch.Tensor,
        *,
        pose_features: torch.Tensor | None = None,
        time_cond: torch.Tensor | None = None,
        reference: Mapping[str, BlockReference] | None = None,
        return_dict: bool = True,
    ) -> DenoisingUNetOutput | tuple[torch.Tensor]:
        batch, channels, frames, height, width = sample.shape
        reference = reference or {}
        self._check_reference(reference)

        # 1. time: one embedding per frame, conditioned on the guidance embedding.
        timesteps = torch.as_tensor(timesteps, device=sample.device).expand(batch, frames).reshape(-1)
        t_emb = self.time_proj(timesteps).to(dtype=self.dtype)
        if time_cond is not None:
            time_cond = time_cond.to(dtype=self.dtype).expand(batch, -1).repeat_interleave(frames, dim=0)
        temb = self.time_embedding(t_emb, time_cond)

        # 2. pre-process: frames of each stream back to back.
        context = encoder_hidden_states.to(dtype=self.dtype).repeat_interleave(frames, dim=0)
        x = sample.transpose(1, 2).reshape(batch * frames, channels, height, width)
        x = self.conv_in(x)
        if pose_features is not None:
            x = x + pose_features.transpose(1, 2).reshape(x.shape)

        # 3. down
        def refs(prefix: str, count: int) -> list[BlockReference | None]:
            return [reference.get(f"{prefix}{j}") for j in range(count)]

        skips: list[torch.Tensor] = [x]
        for i, block in enumerate(self.down_blocks):
            x, block_skips = block(x, temb, context, refs(f"d{i}", len(block.resnets)), frames)
            skips.extend(block_skips)

        # 4. mid
        x = self.mid_block(x, temb, context, [reference.get("m")], frames)

        # 5. up; each upsampler aims at the size of the skip it meets next, so that latent
        # sizes that are not a multiple of 2**(blocks-1) come back to their own size.
        for i, block in enumerate(self.up_blocks):
            block_skips = [skips.pop() for _ in range(len(block.resnets))][::-1]
            upsample_size = skips[-1].shape[-2:] if skips else None
            x = block(x, block_skips, temb, context, refs(f"u{i}", len(block.resnets)), frames, upsample_size)

        # 6. post-process
        x = self.conv_out(self.conv_act(self.conv_norm_out(x)))
        out = x.view(batch, frames, *x.shape[1:]).transpose(1, 2)
        if not return_dict:
            return (out,)
        return DenoisingUNetOutput(sample=out)
