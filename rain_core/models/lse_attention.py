"""Scaled-dot-product attention that also returns its log-sum-exp, and merging two such parts.

Attention of queries over the union of two key sets equals the attentions over each set
weighted by their softmax mass: with lse_i = logsumexp of the logits over set i,
out = out_1 * sigmoid(lse_1 - lse_2) + out_2 * sigmoid(lse_2 - lse_1). That lets a frame attend
to its own tokens and to a reference shared by all frames of its stream without copying the
reference's keys and values once per frame.

The kernels that return the log-sum-exp are the private aten ops behind
`F.scaled_dot_product_attention` (torch 2.13 has no public SDPA option for it; `flex_attention`'s
`return_lse` needs compilation to be fast). Where none fits the device and dtype, the logits are
computed explicitly.
"""

from __future__ import annotations

import torch

# The memory-efficient CUDA kernel reads the bias in rows aligned to this many elements.
_CUDA_BIAS_ALIGNMENT = 16


def attention_with_lse(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | None,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of query [X, H, Lq, D] over key/value [X, H, Lk, D], and its log-sum-exp [X, H, Lq].

    `bias` is additive on the logits and broadcastable to [X, H, Lq, Lk] (e.g. [Lq, Lk]); key and
    value may be expanded views (stride 0 over X). The log-sum-exp is float32 for half types.
    """
    if query.device.type == "cpu":
        # Every float dtype, broadcast bias and strided (also stride-0) keys/values, no copies.
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, attn_mask=bias, scale=scale
        )
        return out, lse
    if query.device.type == "cuda":
        return _cuda_attention_with_lse(query, key, value, bias, scale)
    return _math_attention_with_lse(query, key, value, bias, scale)


def _cuda_attention_with_lse(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor | None, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    head_dim = query.shape[-1]
    half = query.dtype in (torch.float16, torch.bfloat16)
    if bias is None and half and head_dim % 8 == 0 and head_dim <= 256:
        out, lse, *_ = torch.ops.aten._scaled_dot_product_flash_attention(query, key, value, scale=scale)
        return out, lse
    if (half or query.dtype == torch.float32) and head_dim % 8 == 0:
        out, lse, *_ = torch.ops.aten._scaled_dot_product_efficient_attention(
            query, key, value, _cuda_bias(bias, query, key), True, scale=scale
        )
        # The kernel pads the log-sum-exp's query axis to a multiple of 32.
        return out, lse[..., : query.shape[-2]]
    return _math_attention_with_lse(query, key, value, bias, scale)


def _cuda_bias(bias: torch.Tensor | None, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor | None:
    """The bias as the memory-efficient kernel reads it: 4-D, query's dtype, rows aligned (as
    `F.scaled_dot_product_attention` prepares it), broadcast by stride 0 rather than copied."""
    if bias is None:
        return None
    length = key.shape[-2]
    bias = bias.to(query.dtype)
    if length % _CUDA_BIAS_ALIGNMENT:
        padded = length + _CUDA_BIAS_ALIGNMENT - length % _CUDA_BIAS_ALIGNMENT
        bias = torch.nn.functional.pad(bias, (0, padded - length))[..., :length]
    return bias.expand(query.shape[0], query.shape[1], query.shape[2], length)


def _math_attention_with_lse(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor | None, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Explicit logits: exact in any dtype, at the cost of the [Lq, Lk] matrix."""
    logits = (query @ key.transpose(-1, -2)) * scale
    if bias is not None:
        logits = logits + bias
    lse = torch.logsumexp(logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits, dim=-1)
    weights = torch.exp(logits - lse.unsqueeze(-1).to(logits.dtype))
    return weights @ value, lse


def merge_attentions(
    out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor
) -> torch.Tensor:
    """The attention over both key sets, from the attentions [..., L, D] over each and their log-sum-exps [..., L]."""
    # sigmoid(lse_a - lse_b) = Z_a / (Z_a + Z_b), without overflow at any logit scale.
    weight_a = torch.sigmoid(lse_a - lse_b).unsqueeze(-1).to(out_a.dtype)
    return torch.lerp(out_b, out_a, weight_a)
