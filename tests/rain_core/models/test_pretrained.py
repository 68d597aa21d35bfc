"""Every model declares its hyperparameters as keyword arguments: diffusers' `save_pretrained` and
`from_pretrained` bring back the same model, and bad arguments are refused before anything is built."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from rain_core.config import demo_config, official_config
from rain_core.models import TAESDV, DenoisingUNet, LearnedContext, PoseGuider, guidance_scale_embedding
from rain_core.models.taesdv import LATENT_SCALE
from rain_core.stream.components import RainComponents
from tests.helpers import assert_close


def _saved_config(model) -> dict:
    """The config as `save_pretrained` writes it (JSON: tuples become lists), without where it was loaded from."""
    return {k: v for k, v in json.loads(model.to_json_string()).items() if k != "_name_or_path"}


@torch.no_grad()
def _outputs(components: RainComponents, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every network run once on the same seeded inputs (two latent frames, an 8x8 latent grid)."""
    config = components.config
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int, normal: bool = True) -> torch.Tensor:
        values = torch.randn(shape, generator=generator) if normal else torch.rand(shape, generator=generator)
        return values.to(torch.float64)

    frames, grid = 2, (8, 8)
    pixels = (grid[0] * LATENT_SCALE, grid[1] * LATENT_SCALE)
    channels = config.unet.in_channels
    context = components.context(1)
    banks = components.reference_unet.compute_banks(rand(1, channels, *grid), context)
    pose = components.pose_guider(rand(1, 3, frames, *pixels, normal=False))
    unet = components.denoising_unet(
        rand(1, channels, frames, *grid),
        torch.tensor([999, 499]),
        context,
        pose_features=pose,
        time_cond=guidance_scale_embedding(config.guidance_scale, config.denoising_unet.cond_proj_dim),
        reference=banks,
    ).sample
    decoder = components.decoder
    encoded = decoder.encode(rand(1, 3, *pixels, normal=False))
    image = rand(1, 3, *pixels, normal=False)
    reference = (image, decoder.encode(image)) if decoder.uses_reference else None
    decoded, memory = decoder.decode_stream(
        unet.transpose(1, 2), decoder.initial_memory(1, *grid, dtype=torch.float64), reference
    )
    return {"pose": pose, "unet": unet, "decoded": decoded, "encoded": encoded,
            **{f"memory.{i}": m for i, m in enumerate(memory)}, **{f"bank.{k}": v for k, v in banks.items()}}


def test_every_network_round_trips_through_save_pretrained(tmp_path):
    """The demo profile uses the hyperparameters the published layout leaves at their defaults
    (16 latent channels, a position bias, per-resolution codec widths, the patch path and the
    reference gate)."""
    components = RainComponents.random(demo_config(), seed=1)
    loaded = {}
    for name, network in components.networks():
        network.save_pretrained(tmp_path / name)
        loaded[name] = type(network).from_pretrained(tmp_path / name, low_cpu_mem_usage=False)
        assert _saved_config(loaded[name]) == _saved_config(network), name
        expected = network.state_dict()
        assert loaded[name].state_dict().keys() == expected.keys(), name
        assert all(torch.equal(t, expected[k]) for k, t in loaded[name].state_dict().items()), name
    # The position bias is no weight: only the config and the outputs show that it came back.
    bias = components.config.denoising_unet.reference_position_bias
    assert bias > 0 and loaded["denoising_unet"].config.reference_position_bias == bias
    # Float64: the loaded tensors lie at other memory alignments, which changes the float32
    # summation order, and random weights amplify such differences far beyond 1e-6.
    before = _outputs(components.to("cpu", torch.float64))
    after = _outputs(replace(components, **loaded).to("cpu", torch.float64))
    for key, value in before.items():
        assert_close(after[key], value, key, rtol=1e-9)


def test_model_defaults_are_the_published_layout():
    """`PoseGuider()`, `DenoisingUNet()`, `TAESDV()` and `LearnedContext()` are RAIN-v0.1's
    networks: the keys and shapes the official profile builds (those of the published files)."""
    official = RainComponents.build(official_config(), device="meta")
    with torch.device("meta"):
        defaults = {"pose_guider": PoseGuider(), "denoising_unet": DenoisingUNet(), "decoder": TAESDV()}
    for name, model in defaults.items():
        shapes = {k: t.shape for k, t in model.state_dict().items()}
        assert shapes == {k: t.shape for k, t in getattr(official, name).state_dict().items()}, name
    assert defaults["denoising_unet"].config.reference_position_bias == 0
    assert LearnedContext().config.embed_dim == official_config().clip_embed_dim


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"down_block_types": ("DownBlock2D",) * 3}, r"down_block_types \(3\) and up_block_types \(4\)"),
        ({"up_block_types": ("UpBlock2D",) * 3 + ("AttnUpBlock2D",)}, "up_block_types: unsupported block"),
        ({"block_out_channels": (40, 64, 64, 64)}, "40 is not divisible by norm_num_groups=32"),
        ({"motion_module_kwargs": {"num_heads": 8}}, "motion_module_kwargs .*num_heads"),
    ],
)
def test_denoising_unet_refuses_impossible_arguments(changes, message):
    with torch.device("meta"), pytest.raises(ValueError, match=message):
        DenoisingUNet(**{**official_config().denoising_unet_kwargs(), **changes})
