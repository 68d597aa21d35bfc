"""Model behaviour the engine relies on, beyond the golden numbers."""

from __future__ import annotations

import torch

from rain_core.config import tiny_config
from rain_core.models import TAESDV, guidance_scale_embedding
from rain_core.stream.components import RainComponents
from tests.helpers import assert_close


@torch.no_grad()
def test_streams_batch_like_separate_calls(golden_config, golden_components, golden_cases, golden_banks):
    """Two streams with different references in one batched UNet call give each stream's own result."""
    unet = golden_components.denoising_unet
    w = guidance_scale_embedding(golden_config.guidance_scale, golden_config.denoising_unet.cond_proj_dim)
    generator = torch.Generator().manual_seed(0)
    other_banks = {k: torch.randn(v.shape, generator=generator) for k, v in golden_banks.items()}
    inputs = [
        (
            golden_cases["unet.sample"],
            golden_cases["unet.pose_cond_fea"],
            golden_cases["reference.clip_embeds"],
            golden_banks,
        ),
        (
            torch.randn(golden_cases["unet.sample"].shape, generator=generator),
            torch.randn(golden_cases["unet.pose_cond_fea"].shape, generator=generator),
            torch.randn(golden_cases["reference.clip_embeds"].shape, generator=generator),
            other_banks,
        ),
    ]
    single = [
        unet(
            s, golden_cases["unet.timesteps"], c, pose_features=p, time_cond=w, reference=unet.cache_reference(b)
        ).sample
        for s, p, c, b in inputs
    ]
    stacked_kv = unet.cache_reference({k: torch.cat([golden_banks[k], other_banks[k]]) for k in golden_banks})
    batched = unet(
        torch.cat([i[0] for i in inputs]),
        golden_cases["unet.timesteps"].expand(2, -1),
        torch.cat([i[2] for i in inputs]),
        pose_features=torch.cat([i[1] for i in inputs]),
        time_cond=w,
        reference=stacked_kv,
    ).sample
    for b in range(2):
        assert_close(batched[b : b + 1], single[b], f"stream {b}", rtol=1e-5)


@torch.no_grad()
def test_decoder_memory_makes_slices_equal_one_pass(golden_components, golden_config):
    """Decoding 8 frames in two slices of 4, carrying memory, equals decoding them at once."""
    decoder = golden_components.decoder
    h, w = golden_config.latent_height, golden_config.latent_width
    latents = torch.randn(1, 8, 4, h, w, generator=torch.Generator().manual_seed(1))
    whole, _ = decoder.decode_stream(latents, decoder.initial_memory(1, h, w))
    first, memory = decoder.decode_stream(latents[:, :4], decoder.initial_memory(1, h, w))
    second, _ = decoder.decode_stream(latents[:, 4:], memory)
    assert_close(torch.cat([first, second], dim=1), whole, "sliced decode", rtol=1e-6)


@torch.no_grad()
def test_codec_of_per_resolution_widths_with_patch_path_streams_exactly():
    """The codecs trained here (four widths, linear patch path) keep the streaming contract."""
    codec = TAESDV(latent_channels=6, channels=(8, 12, 16, 16), blocks_per_stage=1, patch_path=True)
    generator = torch.Generator().manual_seed(0)
    for parameter in codec.parameters():
        parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    frames = torch.rand(6, 3, 40, 24, generator=generator)
    latents = codec.encode(frames)
    assert latents.shape == (6, 6, 5, 3)
    h, w = latents.shape[-2:]
    assert [s[1] for s in codec.memory_shapes(1, h, w)] == [16, 16, 12, 8]
    stream = latents.unsqueeze(0)
    whole, _ = codec.decode_stream(stream, codec.initial_memory(1, h, w))
    assert whole.shape == (1, 6, 3, 40, 24)
    first, memory = codec.decode_stream(stream[:, :2], codec.initial_memory(1, h, w))
    second, _ = codec.decode_stream(stream[:, 2:], memory)
    assert_close(torch.cat([first, second], dim=1), whole, "sliced decode", rtol=1e-6)
    # The patch path is part of the encoding.
    codec.patch_encoder.weight.zero_()
    assert not torch.allclose(codec.encode(frames), latents)


@torch.no_grad()
def test_codec_with_reference_gate_streams_exactly_and_takes_the_reference_where_it_opens():
    """The gate mixes each decoded pixel with the stream's reference image at the same place: shut,
    the frame is the plain decode; open, it is the reference exactly; either way slices of a
    stream decode as the whole stream does, and each stream of a batch gets its own reference."""
    codec = TAESDV(latent_channels=6, channels=(8, 12, 16, 16), blocks_per_stage=1, patch_path=True,
                   reference_gate=True)
    generator = torch.Generator().manual_seed(0)
    for parameter in codec.parameters():
        parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    frames = torch.rand(2, 4, 3, 40, 24, generator=generator)
    images = torch.rand(2, 3, 40, 24, generator=generator)
    latents = codec.encode(frames.flatten(0, 1)).view(2, 4, 6, 5, 3)
    reference = (images, codec.encode(images))
    h, w = latents.shape[-2:]
    try:
        codec.decode_stream(latents, codec.initial_memory(2, h, w))
    except ValueError as exc:
        assert "reference" in str(exc)
    else:
        raise AssertionError("a gated codec decoded without its reference")
    whole, _ = codec.decode_stream(latents, codec.initial_memory(2, h, w), reference)
    first, memory = codec.decode_stream(latents[:, :2], codec.initial_memory(2, h, w), reference)
    second, _ = codec.decode_stream(latents[:, 2:], memory, reference)
    assert_close(torch.cat([first, second], dim=1), whole, "sliced decode", rtol=1e-6)
    alone, _ = codec.decode_stream(latents[1:], codec.initial_memory(1, h, w), (images[1:], reference[1][1:]))
    assert_close(alone, whole[1:], "one stream of the batch", rtol=1e-6)

    gate_bias = codec.gate[-1].bias
    gate_bias.fill_(1e4)
    opened, _ = codec.decode_stream(latents, codec.initial_memory(2, h, w), reference)
    assert torch.equal(opened, images[:, None].expand_as(opened))
    gate_bias.fill_(-1e4)
    shut, _ = codec.decode_stream(latents, codec.initial_memory(2, h, w), reference)
    plain = TAESDV(latent_channels=6, channels=(8, 12, 16, 16), blocks_per_stage=1, patch_path=True)
    plain.load_state_dict({k: v for k, v in codec.state_dict().items() if not k.startswith("gate")})
    expected, _ = plain.decode_stream(latents, plain.initial_memory(2, h, w))
    assert_close(shut, expected, "shut gate", rtol=1e-6)


@torch.no_grad()
def test_reference_outside_the_unet_is_refused(golden_components, golden_banks):
    unet = golden_components.denoising_unet
    try:
        unet.cache_reference({**golden_banks, "z99": golden_banks["m"]})
    except ValueError as exc:
        assert "z99" in str(exc)
    else:
        raise AssertionError("an unknown bank name was accepted")


def test_fresh_components_leave_the_unet_input_unchanged():
    """Zero-initialised pose guider output and motion modules start as no-ops (fine-tuning starts clean)."""
    components = RainComponents.build(tiny_config())
    pose = torch.rand(1, 3, 4, 64, 64)
    assert torch.count_nonzero(components.pose_guider(pose)) == 0
    module = components.denoising_unet.down_blocks[0].motion_modules[0]
    x = torch.randn(8, 32, 8, 8)
    assert torch.equal(module(x, num_frames=4), x)


@torch.no_grad()
def test_position_bias_makes_each_token_copy_the_reference_at_its_place():
    """With content-blind logits, a frame token's reference attention lands on its own place."""
    from diffusers.models.attention_processor import Attention

    from rain_core.models.attention import ReferenceAttnProcessor

    grid, channels = (3, 5), 8
    attention = Attention(query_dim=channels, heads=1, dim_head=channels)
    attention.to_q.weight.zero_()  # every logit is the bias alone
    attention.to_v.weight.copy_(torch.eye(channels))
    attention.to_out[0].weight.copy_(torch.eye(channels))
    attention.to_out[0].bias.zero_()
    tokens = grid[0] * grid[1]
    frame = torch.zeros(2, tokens, channels)  # two frames of one stream
    reference = torch.randn(1, tokens, channels, generator=torch.Generator().manual_seed(0))
    attention.set_processor(ReferenceAttnProcessor(position_bias=12.0))
    out = attention(frame, reference=reference, grid=grid)
    nearest = torch.cdist(out[0], reference[0]).argmin(dim=1)
    assert torch.equal(nearest, torch.arange(tokens))
    # Equal frames give equal outputs, up to rounding (the CPU attention kernel's vector tails
    # fall differently on each frame's memory).
    assert_close(out[1], out[0], "second frame", rtol=1e-6)
    # Without the bias (the published model) the same attention averages everything.
    attention.set_processor(ReferenceAttnProcessor())
    flat = attention(frame, reference=reference, grid=grid)
    assert torch.allclose(flat[0], flat[0].mean(dim=0, keepdim=True).expand_as(flat[0]), atol=1e-6)


@torch.no_grad()
def test_position_biased_unet_caches_and_batches_like_separate_calls():
    """The demo's position bias keeps the engine's contracts: cached K/V and batched streams."""
    from rain_core.config import DenoisingUNetConfig

    config = tiny_config(denoising_unet=DenoisingUNetConfig(cond_proj_dim=32, reference_position_bias=5.0))
    components = RainComponents.build(config)
    unet = components.denoising_unet
    generator = torch.Generator().manual_seed(0)
    for parameter in components.pose_guider.parameters():
        parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    h, w = config.latent_height, config.latent_width
    frames = config.queue_length
    w_cond = guidance_scale_embedding(config.guidance_scale, config.denoising_unet.cond_proj_dim)
    timesteps = torch.tensor([999, 749, 499, 249]).repeat_interleave(config.frames_per_group)[None]
    streams = []
    for _ in range(2):
        reference = torch.randn(1, config.unet.in_channels, h, w, generator=generator)
        context = torch.randn(1, 1, config.clip_embed_dim, generator=generator)
        streams.append(
            (
                torch.randn(1, config.unet.in_channels, frames, h, w, generator=generator),
                torch.rand(1, 3, frames, config.height, config.width, generator=generator),
                context,
                components.reference_unet.compute_banks(reference, context),
            )
        )

    def run(sample, pose, context, reference, batch=1):
        return unet(
            sample,
            timesteps.expand(batch, -1),
            context,
            pose_features=components.pose_guider(pose),
            time_cond=w_cond,
            reference=reference,
        ).sample

    single = [run(s, p, c, b) for s, p, c, b in streams]
    for (s, p, c, b), expected in zip(streams, single, strict=True):
        assert_close(run(s, p, c, unet.cache_reference(b)), expected, "cached K/V", rtol=1e-5)
    banks = {k: torch.cat([streams[0][3][k], streams[1][3][k]]) for k in streams[0][3]}
    batched = run(*(torch.cat([st[i] for st in streams]) for i in range(3)), unet.cache_reference(banks), batch=2)
    for b in range(2):
        assert_close(batched[b : b + 1], single[b], f"stream {b}", rtol=1e-5)
