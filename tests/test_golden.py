"""Golden parity: our model stack against numbers produced by the reference implementation.

Every size, G, P and step count comes from the fixture directory (`--golden-dir`); every
expected value comes from its `cases.safetensors`. Float32 on the CPU, relative L2 < 1e-4.
"""

from __future__ import annotations

import pytest
import torch

from rain_core.models import guidance_scale_embedding
from rain_core.stream.engine import Conditioning, QueueModel, StreamEngine
from rain_core.stream.reference_encoder import ReferenceEncoding
from tests.helpers import ReplayNoise, assert_close, queue_latents, restore_queue

STREAM_STEPS = 3


@pytest.fixture(params=["bank", "cached_kv"])
def reference(request, golden_components, golden_banks):
    """The reference as the UNet takes it: raw banks, or their K/V projections cached once."""
    if request.param == "bank":
        return golden_banks
    return golden_components.denoising_unet.cache_reference(golden_banks)


def test_guidance_embedding(golden_config, golden_cases):
    w = guidance_scale_embedding(golden_config.guidance_scale, golden_config.denoising_unet.cond_proj_dim)
    assert_close(w, golden_cases["guidance.w_embedding"], "guidance.w_embedding")


def test_frame_timesteps_follow_the_config(golden_config, golden_components, golden_cases):
    timesteps = golden_components.scheduler.frame_timesteps(
        golden_config.num_inference_steps, golden_config.frames_per_group
    )
    assert torch.equal(timesteps.unsqueeze(0), golden_cases["unet.timesteps"])


@torch.no_grad()
def test_pose_guider(golden_components, golden_cases):
    out = golden_components.pose_guider(golden_cases["pose_guider.input"])
    assert_close(out, golden_cases["pose_guider.output"], "pose_guider.output")


def test_reference_banks(golden_components, golden_cases):
    banks = golden_components.reference_unet.compute_banks(
        golden_cases["reference.latents"], golden_cases["reference.clip_embeds"]
    )
    expected = sorted(k.removeprefix("reference.bank.") for k in golden_cases if k.startswith("reference.bank."))
    assert sorted(banks) == expected
    for name, bank in banks.items():
        assert_close(bank, golden_cases[f"reference.bank.{name}"], f"reference.bank.{name}")


@torch.no_grad()
def test_denoising_unet(golden_config, golden_components, golden_cases, reference):
    w = guidance_scale_embedding(golden_config.guidance_scale, golden_config.denoising_unet.cond_proj_dim)
    out = golden_components.denoising_unet(
        golden_cases["unet.sample"],
        golden_cases["unet.timesteps"],
        golden_cases["reference.clip_embeds"],
        pose_features=golden_cases["unet.pose_cond_fea"],
        time_cond=w,
        reference=reference,
    ).sample
    assert_close(out, golden_cases["unet.output"], "unet.output")


def test_scheduler_step(golden_config, golden_components, golden_cases):
    out = golden_components.scheduler.step_frames(
        golden_cases["scheduler.model_output"],
        golden_cases["unet.timesteps"],
        golden_cases["unet.sample"],
        golden_cases["scheduler.noise"],
        golden_config.num_inference_steps,
    )
    assert_close(out.prev_sample, golden_cases["scheduler.prev_sample"], "scheduler.prev_sample")
    assert_close(out.denoised, golden_cases["scheduler.denoised"], "scheduler.denoised")


@torch.no_grad()
def test_streaming_decoder(golden_components, golden_cases):
    decoder = golden_components.decoder
    memory_in = [golden_cases[f"decoder.memory_in.{i}"] for i in range(decoder.num_memories)]
    frames, memory_out = decoder.decode_stream(golden_cases["decoder.latents"], memory_in)
    assert_close(frames, golden_cases["decoder.frames"], "decoder.frames")
    assert len(memory_out) == decoder.num_memories
    for i, memory in enumerate(memory_out):
        assert_close(memory, golden_cases[f"decoder.memory_out.{i}"], f"decoder.memory_out.{i}")


@pytest.mark.parametrize("cache_kv", [False, True], ids=["bank", "cached_kv"])
def test_chained_streaming_steps(golden_components, golden_cases, golden_config, cache_kv):
    """Three calls of the streaming engine, driven with the fixture's noise, through its public API."""
    p = golden_config.frames_per_group
    init = golden_cases["stream.init.sample"]
    noise = [init[:, :, -p:]]  # the group the engine draws at start-up; restore replaces it
    for k in range(STREAM_STEPS):
        noise += [golden_cases[f"stream.{k}.add_noise"], golden_cases[f"stream.{k}.new_noise"]]
    engine = StreamEngine(golden_components, noise=ReplayNoise(noise), cache_reference_kv=cache_kv)
    engine.set_reference_encoding(
        ReferenceEncoding(clip_embeds=golden_cases["reference.clip_embeds"], latents=golden_cases["reference.latents"])
    )
    restore_queue(engine, init, golden_cases["stream.init.pose_cond_fea"])
    for k in range(STREAM_STEPS):
        frames = engine.step(golden_cases[f"stream.{k}.pose"][0].transpose(0, 1))  # [P, 3, H, W]
        assert_close(frames, golden_cases[f"stream.{k}.frames"][0], f"stream.{k}.frames")
        assert_close(queue_latents(engine), golden_cases[f"stream.{k}.sample_after"], f"stream.{k}.sample_after")
    assert engine.noise.tensors == [], "the engine consumed less noise than the fixture's stream"


def test_streaming_call_unclamped(golden_config, golden_components, golden_cases, reference):
    """The model work of one call, before the engine clamps the frames."""
    model = QueueModel(golden_components)
    p = golden_config.frames_per_group
    conditioning = Conditioning(clip_embeds=golden_cases["reference.clip_embeds"], reference=reference)
    features = torch.cat(
        [golden_cases["stream.init.pose_cond_fea"], model.pose_features(golden_cases["stream.0.pose"])], 2
    )
    with torch.no_grad():
        stepped = model.denoise(
            golden_cases["stream.init.sample"], features, conditioning, golden_cases["stream.0.add_noise"]
        )
        memory = golden_components.decoder.initial_memory(1, golden_config.latent_height, golden_config.latent_width)
        frames, _ = golden_components.decoder.decode_stream(stepped[:, :, :p].transpose(1, 2), memory)
    assert_close(frames, golden_cases["stream.0.frames_unclamped"], "stream.0.frames_unclamped")
