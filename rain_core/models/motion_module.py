"""AnimateDiff "Vanilla" motion module: temporal self-attention over the frames of a video.

Hidden states travel through the UNet as [(B F), C, H, W] (frames of each stream back to
back); the module attends along F at each spatial position and adds its output to its input.
Key names follow the AnimateDiff checkpoints (`temporal_transformer.transformer_blocks.N.
attention_blocks.M`, `norms.M`, `ff`, `ff_norm`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.models.attention import FeedForward
from torch import nn

from rain_core.models.attention import TemporalAttention


class TemporalTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, num_attentions: int, max_frames: int | None):
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [TemporalAttention(dim, heads, dim_head, max_frames) for _ in range(num_attentions)]
        )
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(num_attentions)])
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms, strict=True):
            hidden_states = attention(norm(hidden_states), num_frames) + hidden_states
        return self.ff(self.ff_norm(hidden_states)) + hidden_states


class TemporalTransformer(nn.Module):
    def __init__(self, channels: int, heads: int, dim_head: int, num_blocks: int, num_attentions: int,
                 max_frames: int | None, norm_num_groups: int):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [TemporalTransformerBlock(inner, heads, dim_head, num_attentions, max_frames) for _ in range(num_blocks)]
        )
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        batch_frames, channels, height, width = hidden_states.shape
        residual = hidden_states
        # Dense token rows: on a strided view matmul cannot fold the batch into one product and runs
        # a batched one with the weight expanded per frame (copied, in bfloat16 on a CPU).
        x = self.norm(hidden_states).permute(0, 2, 3, 1).contiguous().view(batch_frames, height * width, channels)
        x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, num_frames)
        x = self.proj_out(x)
        x = x.reshape(batch_frames, height, width, channels).permute(0, 3, 1, 2)
        return x + residual


class MotionModule(nn.Module):
    """One motion module, inserted after a resnet/attention pair of the denoising UNet.

    The keyword arguments are the reference implementation's `motion_module_kwargs`; the
    defaults are RAIN-v0.1's. `norm_num_groups` is the module's own GroupNorm, which the
    reference builds with its default rather than the UNet's.
    """

    def __init__(
        self,
        channels: int,
        *,
        num_attention_heads: int = 8,
        num_transformer_block: int = 1,
        attention_block_types: Sequence[str] = ("Temporal_Self", "Temporal_Self"),
        temporal_position_encoding: bool = True,
        temporal_position_encoding_max_len: int = 32,
        temporal_attention_dim_div: int = 1,
        norm_num_groups: int = 32,
    ):
        super().__init__()
        if channels % num_attention_heads:
            raise ValueError(
                f"motion module: {channels} channels are not divisible by num_attention_heads={num_attention_heads}"
            )
        unsupported = sorted(set(attention_block_types) - {"Temporal_Self"})
        if unsupported:
            raise ValueError(f"motion module: attention_block_types {unsupported} (only 'Temporal_Self' is built)")
        max_frames = temporal_position_encoding_max_len if temporal_position_encoding else None
        self.temporal_transformer = TemporalTransformer(
            channels,
            heads=num_attention_heads,
            dim_head=channels // num_attention_heads // temporal_attention_dim_div,
            num_blocks=num_transformer_block,
            num_attentions=len(attention_block_types),
            max_frames=max_frames,
            norm_num_groups=norm_num_groups,
        )
        # New motion modules start as the identity, as in AnimateDiff.
        nn.init.zeros_(self.temporal_transformer.proj_out.weight)
        nn.init.zeros_(self.temporal_transformer.proj_out.bias)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        return self.temporal_transformer(hidden_states, num_frames)
