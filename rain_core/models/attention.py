"""Attention pieces shared by the RAIN UNets.

* `ReferenceAttnProcessor`: the spatial self-attention of the denoising UNet, which attends
  over its own tokens followed by the reference bank of the matching reference-net block.
  The bank is the same for every frame and every call of a stream, so its key/value
  projections can be computed once per reference (`ReferenceKV`) instead of per frame, and
  all frames of a stream read that one K/V (merged by log-sum-exp) instead of a copy each.
* `TemporalAttention`: AnimateDiff's temporal self-attention over the frame axis, with a
  sinusoidal position encoding added to its input.
* `reference_blocks`: the spatial transformer blocks of an SD-layout UNet in bank order
  (d00 d01 d10 ... m u10 ... u32), shared by the reference net (which writes banks) and the
  denoising UNet (which reads them).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import SinusoidalPositionalEmbedding
from torch import nn

from rain_core.models.lse_attention import attention_with_lse, merge_attentions


@dataclass(frozen=True)
class ReferenceKV:
    """Key/value projections of one reference bank, per stream: [B, L, heads*dim_head]."""

    key: torch.Tensor
    value: torch.Tensor


# One block's reference: either its bank (normalised reference tokens, [B, L, C]), projected
# on every call, or the cached projections of that bank.
BlockReference = torch.Tensor | ReferenceKV


def project_reference(attn: Attention, reference: BlockReference) -> ReferenceKV:
    if isinstance(reference, ReferenceKV):
        return reference
    return ReferenceKV(key=attn.to_k(reference), value=attn.to_v(reference))


def _split_heads(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    batch, length, inner = x.shape
    return x.view(batch, length, attn.heads, inner // attn.heads).transpose(1, 2)


def reference_position_bias(grid: tuple[int, int], strength: float, *, device: torch.device,
                            dtype: torch.dtype) -> torch.Tensor:
    """Additive attention bias [N, N] of a frame's N tokens (an h x w grid) over the reference's N
    tokens of the same grid: `strength` at the token's own place, falling off as a Gaussian of
    one token's width. A frame's own tokens get no bias."""
    h, w = grid
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    places = torch.stack([ys.flatten(), xs.flatten()], dim=1).to(torch.float32)
    distance2 = torch.cdist(places, places).pow(2)
    return (strength * torch.exp(-distance2 / 2)).to(dtype)


class ReferenceAttnProcessor:
    """Scaled-dot-product attention whose self-attention keys and values are extended by a reference.

    The UNet hands each block its reference (and the block's token grid) through
    `cross_attention_kwargs`, which diffusers' `BasicTransformerBlock` forwards to both of its
    attentions; it extends the self-attention and is ignored by the cross-attention (which
    attends to the CLIP context instead).

    `merged` (the default) attends all frames of a stream to the one reference K/V and merges
    that with each frame's attention over its own tokens by log-sum-exp (`lse_attention`);
    otherwise each frame's keys and values are concatenated with a copy of the reference's, the
    plain form the merged one is checked against. Both compute the same softmax.

    `position_bias` > 0 adds `reference_position_bias` to the logits over the reference. Attention
    carries no notion of place, so a UNet trained from scratch must first learn to find the
    reference token that shows the same part (SD-initialised models bring that with them); with
    the bias it starts out copying the reference where nothing moves and learns the motion.
    """

    def __init__(self, position_bias: float = 0.0, merged: bool = True):
        self.position_bias = position_bias
        self.merged = merged
        self._bias_cache: dict[tuple, torch.Tensor] = {}

    def _bias(self, grid: tuple[int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (grid, device, dtype)
        if key not in self._bias_cache:
            self._bias_cache[key] = reference_position_bias(grid, self.position_bias, device=device, dtype=dtype)
        return self._bias_cache[key]

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        reference: BlockReference | None = None,
        grid: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        if attention_mask is not None:
            raise ValueError("ReferenceAttnProcessor does not take an attention mask")
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query = _split_heads(attn, attn.to_q(hidden_states))
        key = _split_heads(attn, attn.to_k(context))
        value = _split_heads(attn, attn.to_v(context))

        if reference is None or encoder_hidden_states is not None:
            out = F.scaled_dot_product_attention(query, key, value, scale=attn.scale)
        else:
            ref = project_reference(attn, reference)
            ref_key, ref_value = _split_heads(attn, ref.key), _split_heads(attn, ref.value)
            bias = self._reference_bias(hidden_states.shape[1], ref_key.shape[2], grid, query)
            attend = self._merged if self.merged else self._concatenated
            out = attend(query, key, value, ref_key, ref_value, bias, attn.scale)

        batch, heads, length, dim_head = out.shape
        out = out.transpose(1, 2).reshape(batch, length, heads * dim_head)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)

    def _reference_bias(self, tokens: int, reference_tokens: int, grid: tuple[int, int] | None,
                        query: torch.Tensor) -> torch.Tensor | None:
        if not self.position_bias:
            return None
        if grid is None or grid[0] * grid[1] != tokens or reference_tokens != tokens:
            raise ValueError(f"a position bias needs the token grid of frame and reference; got {grid} "
                             f"for {tokens} frame and {reference_tokens} reference tokens")
        return self._bias(grid, query.device, query.dtype)

    @staticmethod
    def _merged(query, key, value, ref_key, ref_value, bias, scale) -> torch.Tensor:
        """[(B F), H, N, D] queries over their own frame's K/V and, merged by log-sum-exp, over
        their stream's reference K/V [B, H, L, D], which each stream's frames read as one
        stride-0 view (the bias [N, L] broadcasts the same way)."""
        own, own_lse = attention_with_lse(query, key, value, None, scale)
        streams = ref_key.shape[0]
        frames = query.shape[0] // streams
        parts = [
            attention_with_lse(
                query[b * frames : (b + 1) * frames],
                ref_key[b : b + 1].expand(frames, -1, -1, -1),
                ref_value[b : b + 1].expand(frames, -1, -1, -1),
                bias,
                scale,
            )
            for b in range(streams)
        ]
        if streams == 1:
            shared, shared_lse = parts[0]
        else:
            shared = torch.cat([out for out, _ in parts])
            shared_lse = torch.cat([lse for _, lse in parts])
        return merge_attentions(own, own_lse, shared, shared_lse)

    @staticmethod
    def _concatenated(query, key, value, ref_key, ref_value, bias, scale) -> torch.Tensor:
        """Each frame's keys/values followed by a copy of its stream's reference K/V."""
        # hidden_states holds the frames of each stream back to back: [(B F), N, C].
        frames = query.shape[0] // ref_key.shape[0]
        key = torch.cat([key, ref_key.repeat_interleave(frames, dim=0)], dim=2)
        value = torch.cat([value, ref_value.repeat_interleave(frames, dim=0)], dim=2)
        if bias is not None:
            bias = torch.cat([torch.zeros_like(bias), bias], dim=1)
        return F.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=scale)


class TemporalAttention(Attention):
    """Self-attention across frames at each spatial position (AnimateDiff "Temporal_Self").

    Takes and returns [(B F), N, C]; attends over F for each of the B*N positions.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, max_frames: int | None):
        super().__init__(query_dim=dim, heads=heads, dim_head=dim_head, bias=False)
        # Checkpoints store the encoding table as `pos_encoder.pe`.
        self.pos_encoder = SinusoidalPositionalEmbedding(dim, max_frames) if max_frames else None

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:  # type: ignore[override]
        batch_frames, tokens, channels = hidden_states.shape
        batch = batch_frames // num_frames
        # Dense rows for the projections (as in `TemporalTransformer`): for one stream `reshape`
        # would return a strided view here, where for several it copies anyway.
        x = hidden_states.view(batch, num_frames, tokens, channels).transpose(1, 2)
        x = x.contiguous().view(batch * tokens, num_frames, channels)
        if self.pos_encoder is not None:
            if num_frames > self.pos_encoder.pe.shape[1]:
                raise ValueError(
                    f"{num_frames} frames exceed the temporal position encoding's "
                    f"{self.pos_encoder.pe.shape[1]}"
                )
            x = self.pos_encoder(x)
        x = super().forward(x)
        x = x.view(batch, tokens, num_frames, channels).transpose(1, 2)
        return x.contiguous().view(batch_frames, tokens, channels)


def reference_blocks(unet: nn.Module) -> Iterator[tuple[str, BasicTransformerBlock]]:
    """The spatial transformer blocks of an SD-layout UNet, named in bank order.

    Down block i, layer j is `d{i}{j}`; the mid block's is `m`; up block i, layer j is `u{i}{j}`.
    """
    for i, block in enumerate(unet.down_blocks):
        for j, attention in enumerate(getattr(block, "attentions", None) or ()):
            yield f"d{i}{j}", attention.transformer_blocks[0]
    mid_attentions = list(getattr(unet.mid_block, "attentions", None) or ())
    for j, attention in enumerate(mid_attentions):
        yield ("m" if len(mid_attentions) == 1 else f"m{j}"), attention.transformer_blocks[0]
    for i, block in enumerate(unet.up_blocks):
        for j, attention in enumerate(getattr(block, "attentions", None) or ()):
            yield f"u{i}{j}", attention.transformer_blocks[0]
