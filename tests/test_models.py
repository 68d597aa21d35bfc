"""Model behaviour the engine relies on, beyond the golden numbers."""

from __future__ import annotations

import torch

from rain_core.components import RainComponents
from rain_core.config import tiny_config
from rain_core.models import TAESDV, guidance_scale_embedding
from tests.helpers import assert_close


@torch.no_grad()
def test_streams_batch_like_separate_calls(golden_config, golden_components, golden_cases, golden_banks):
    """Two streams with different references in one batched UNet call give each stream's own result."""
    unet = golden_components.denoising_unet
    w = guidance_scale_embedding(golden_config.guidance_scale, golden_config.denoising_unet.cond_proj_dim)
    generator = torch.Generator().manual_seed(0)
    other_banks = {k: torch.randn(v.shape, generator=generator) for k, v in golden_banks.items()}
    inputs = [
        (golden_cases["unet.sample"], golden_cases["unet.pose_cond_fea"], golden_cases["reference.clip_embeds"], golden_banks),
        (torch.randn(golden_cases["unet.sample"].shape, generator=generator),
         torch.randn(golden_cases["unet.pose_cond_fea"].shape, generator=generator),
         torch.randn(golden_cases["reference.clip_embeds"].shape, generator=generator), other_banks),
    ]
    single = [
        unet(s, golden_cases["unet.timesteps"], c, pose_features=p, time_cond=w, reference=unet.cache_reference(b)).sample
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
