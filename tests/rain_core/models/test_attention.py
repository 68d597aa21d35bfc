"""Reference attention merged by log-sum-exp against per-frame copies of the reference K/V."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention

from rain_core.config import DenoisingUNetConfig, tiny_config
from rain_core.models import guidance_scale_embedding
from rain_core.models.attention import ReferenceAttnProcessor, ReferenceKV, project_reference
from rain_core.models.lse_attention import attention_with_lse
from rain_core.stream.components import RainComponents
from tests.helpers import assert_close

# float64 differs from exact only by reduction order; float32 by rounding over a few hundred
# terms (the merged form sums two partial softmaxes instead of one).
FLOAT64_RTOL = 1e-10
FLOAT32_RTOL = 1e-5


def _attention(channels: int, heads: int, dtype: torch.dtype, seed: int) -> Attention:
    attention = Attention(query_dim=channels, heads=heads, dim_head=channels // heads).to(dtype)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in attention.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=dtype) * 0.3)
    return attention


def _run(attention, frames, reference, grid, *, merged: bool, position_bias: float):
    attention.set_processor(ReferenceAttnProcessor(position_bias=position_bias, merged=merged))
    return attention(frames, reference=reference, grid=grid)


@torch.no_grad()
@pytest.mark.parametrize(
    ("streams", "frames", "grid", "reference_tokens", "position_bias"),
    [
        (1, 1, (2, 3), None, 0.0),
        (1, 1, (2, 3), None, 5.0),
        (1, 4, (3, 3), None, 5.0),
        (2, 3, (4, 2), None, 0.0),
        (2, 3, (4, 2), None, 5.0),
        # A reference of another length than the frame (only without a position bias, which
        # pairs each frame token with the reference token at its place).
        (3, 2, (2, 2), 7, 0.0),
        (2, 16, (4, 4), None, 0.0),
        (2, 16, (4, 4), None, 5.0),
    ],
)
def test_merged_equals_concatenated_in_float64(streams, frames, grid, reference_tokens, position_bias):
    """For several numbers of streams, frames and tokens, with different references per stream,
    given as banks or as their cached projections."""
    tokens = grid[0] * grid[1]
    channels = 16
    attention = _attention(channels, heads=4, dtype=torch.float64, seed=1)
    generator = torch.Generator().manual_seed(2)
    hidden = torch.randn(streams * frames, tokens, channels, generator=generator, dtype=torch.float64)
    bank = torch.randn(streams, reference_tokens or tokens, channels, generator=generator, dtype=torch.float64)
    for reference in (bank, project_reference(attention, bank)):
        merged = _run(attention, hidden, reference, grid, merged=True, position_bias=position_bias)
        concatenated = _run(attention, hidden, reference, grid, merged=False, position_bias=position_bias)
        assert_close(merged, concatenated, "merged vs concatenated", rtol=FLOAT64_RTOL)


@torch.no_grad()
@pytest.mark.parametrize("position_bias", [0.0, 5.0])
def test_merged_equals_concatenated_in_float32(position_bias):
    grid, frames, channels = (8, 8), 16, 64
    attention = _attention(channels, heads=8, dtype=torch.float32, seed=3)
    generator = torch.Generator().manual_seed(4)
    hidden = torch.randn(2 * frames, grid[0] * grid[1], channels, generator=generator)
    bank = torch.randn(2, grid[0] * grid[1], channels, generator=generator)
    merged = _run(attention, hidden, bank, grid, merged=True, position_bias=position_bias)
    concatenated = _run(attention, hidden, bank, grid, merged=False, position_bias=position_bias)
    assert_close(merged, concatenated, "merged vs concatenated", rtol=FLOAT32_RTOL)


@torch.no_grad()
@pytest.mark.parametrize("merged", [True, False])
def test_each_stream_attends_to_its_own_reference_only(merged):
    """Swapping the two streams' references changes each stream's output; swapping both the
    frames and the references swaps the outputs exactly."""
    grid, frames, channels = (3, 3), 4, 16
    attention = _attention(channels, heads=4, dtype=torch.float64, seed=5)
    generator = torch.Generator().manual_seed(6)
    hidden = torch.randn(2 * frames, 9, channels, generator=generator, dtype=torch.float64)
    bank = torch.randn(2, 9, channels, generator=generator, dtype=torch.float64)
    out = _run(attention, hidden, bank, grid, merged=merged, position_bias=0.0)
    swapped_references = _run(attention, hidden, bank.flip(0), grid, merged=merged, position_bias=0.0)
    for stream in range(2):
        rows = slice(stream * frames, (stream + 1) * frames)
        assert (out[rows] - swapped_references[rows]).abs().max() > 1e-3, f"stream {stream} ignores its reference"
    swapped_streams = torch.cat([hidden[frames:], hidden[:frames]])
    both = _run(attention, swapped_streams, bank.flip(0), grid, merged=merged, position_bias=0.0)
    assert_close(torch.cat([both[frames:], both[:frames]]), out, "streams swapped", rtol=FLOAT64_RTOL)
    # One stream alone gives the same as in the batch: nothing of the other reference leaks in.
    alone = _run(attention, hidden[frames:], bank[1:], grid, merged=merged, position_bias=0.0)
    assert_close(out[frames:], alone, "stream 1 alone", rtol=FLOAT64_RTOL)


@torch.no_grad()
def test_cross_attention_ignores_the_reference():
    """attn2 (a context given) attends to the context alone, merged or not."""
    channels = 16
    attention = Attention(query_dim=channels, cross_attention_dim=8, heads=2, dim_head=8).double()
    generator = torch.Generator().manual_seed(7)
    hidden = torch.randn(4, 6, channels, generator=generator, dtype=torch.float64)
    context = torch.randn(4, 1, 8, generator=generator, dtype=torch.float64)
    bank = torch.randn(2, 6, channels, generator=generator, dtype=torch.float64)
    plain = attention(hidden, encoder_hidden_states=context)
    for merged in (True, False):
        attention.set_processor(ReferenceAttnProcessor(position_bias=5.0, merged=merged))
        out = attention(hidden, encoder_hidden_states=context, reference=bank, grid=(2, 3))
        assert_close(out, plain, "cross-attention", rtol=FLOAT64_RTOL)


@torch.no_grad()
@pytest.mark.parametrize("position_bias", [0.0, 5.0])
def test_denoising_unet_merged_equals_concatenated_in_float64(position_bias):
    """The whole tiny UNet, two streams with their own cached references, in float64."""
    config = tiny_config(denoising_unet=DenoisingUNetConfig(cond_proj_dim=32, reference_position_bias=position_bias))
    components = RainComponents.random(config, seed=0)
    unet = components.denoising_unet.double()
    components.reference_unet.double()
    assert unet.reference_attention_merged  # the default
    generator = torch.Generator().manual_seed(8)
    h, w, frames = config.latent_height, config.latent_width, config.queue_length
    reference = torch.randn(2, config.unet.in_channels, h, w, generator=generator, dtype=torch.float64)
    context = torch.randn(2, 1, config.clip_embed_dim, generator=generator, dtype=torch.float64)
    banks = components.reference_unet.compute_banks(reference, context)
    sample = torch.randn(2, config.unet.in_channels, frames, h, w, generator=generator, dtype=torch.float64)
    timesteps = torch.tensor([999, 749, 499, 249]).repeat_interleave(config.frames_per_group)
    w_cond = guidance_scale_embedding(config.guidance_scale, config.denoising_unet.cond_proj_dim).double()

    def run():
        return unet(sample, timesteps, context, time_cond=w_cond, reference=unet.cache_reference(banks)).sample

    merged = run()
    unet.set_reference_attention(merged=False)
    assert not unet.reference_attention_merged
    concatenated = run()
    unet.set_reference_attention(merged=True)
    assert_close(merged, concatenated, "UNet merged vs concatenated", rtol=FLOAT64_RTOL)
    processor = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.processor
    assert processor.position_bias == position_bias


def test_compiles_as_one_graph():
    """torch.compile traces a transformer block with the merged processor without graph breaks."""
    from diffusers.models.attention import BasicTransformerBlock

    torch.manual_seed(9)
    block = BasicTransformerBlock(32, 4, 8, cross_attention_dim=16).eval()
    for attention in (block.attn1, block.attn2):
        attention.set_processor(ReferenceAttnProcessor(position_bias=5.0, merged=True))
    hidden = torch.randn(2 * 3, 16, 32)
    context = torch.randn(6, 1, 16)
    kv = project_reference(block.attn1, torch.randn(2, 16, 32))
    kwargs = dict(reference=ReferenceKV(kv.key.detach(), kv.value.detach()), grid=(4, 4))
    with torch.no_grad():
        eager = block(hidden, encoder_hidden_states=context, cross_attention_kwargs=kwargs)
        compiled = torch.compile(block, fullgraph=True, backend="aot_eager")(
            hidden, encoder_hidden_states=context, cross_attention_kwargs=kwargs
        )
    assert_close(compiled, eager, "compiled", rtol=FLOAT32_RTOL)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA kernels need a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("biased", [False, True])
def test_cuda_kernels_return_the_attention_and_its_log_sum_exp(dtype, biased):
    generator = torch.Generator(device="cuda").manual_seed(10)
    query = torch.randn(3, 4, 50, 8, device="cuda", generator=generator, dtype=dtype)
    key = torch.randn(1, 4, 37, 8, device="cuda", generator=generator, dtype=dtype).expand(3, -1, -1, -1)
    value = torch.randn(1, 4, 37, 8, device="cuda", generator=generator, dtype=dtype).expand(3, -1, -1, -1)
    bias = torch.randn(50, 37, device="cuda", generator=generator, dtype=dtype) if biased else None
    out, lse = attention_with_lse(query, key, value, bias, 0.4)
    logits = (query.double() @ key.double().transpose(-1, -2)) * 0.4
    if bias is not None:
        logits = logits + bias.double()
    rtol = 1e-10 if dtype == torch.float64 else 1e-5 if dtype == torch.float32 else 2e-2
    assert_close(out, torch.softmax(logits, -1) @ value.double(), "out", rtol=rtol)
    assert_close(lse, torch.logsumexp(logits, -1), "lse", rtol=rtol)
