"""Configuration: profiles, the reference JSON layout, and clear errors for impossible settings."""

from __future__ import annotations

import json

import pytest

from rain_core.config import ConfigError, RainConfig, official_config, profile_config, tiny_config


def test_official_profile_is_rain_v01():
    config = official_config()
    assert (config.noise_groups, config.frames_per_group, config.num_inference_steps) == (4, 4, 4)
    assert (config.height, config.width) == (512, 512)
    assert config.unet.block_out_channels == (320, 640, 1280, 1280)
    assert config.denoising_unet.cond_proj_dim == 512
    assert config.pose_guider.block_out_channels == (16, 32, 96, 256)
    assert config.queue_length == 16


def test_profiles_by_name():
    assert profile_config("tiny") == tiny_config()
    with pytest.raises(ConfigError, match="unknown profile 'huge'; known profiles: demo, official, tiny"):
        profile_config("huge")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"noise_groups": 3}, "noise_groups \\(G=3\\) must equal num_inference_steps \\(4\\)"),
        ({"frames_per_group": 9}, "G\\*P=36 frames but the motion modules encode at most"),
        ({"height": 100}, "height=100 must be a multiple of 8"),
        ({"dtype": "float64"}, "dtype"),
        ({"device": "gpu0"}, "device 'gpu0' is not a torch device"),
        ({"clip_embed_dim": 16}, "cross_attention_dim=32 must equal clip_embed_dim=16"),
        ({"denoising_unet": {"cond_proj_dim": 32, "reference_position_bias": -1.0}}, "reference_position_bias"),
        ({"denoising_unet": {"cond_proj_dim": 32, "reference_position_bias": float("inf")}}, "reference_position_bias"),
    ],
)
def test_impossible_settings_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config().with_overrides(**changes)


def test_g_p_and_steps_are_configuration():
    config = tiny_config().with_overrides(noise_groups=3, num_inference_steps=3, frames_per_group=2)
    assert config.queue_length == 6


def test_reference_json_layout(golden_dir, golden_config):
    raw = json.loads((golden_dir / "config.json").read_text())
    assert golden_config.unet.block_out_channels == tuple(raw["reference_unet"]["block_out_channels"])
    assert golden_config.denoising_unet.cond_proj_dim == raw["denoising_unet_extra"]["cond_proj_dim"]
    assert (golden_config.noise_groups, golden_config.frames_per_group) == (
        raw["noise_groups"],
        raw["frames_per_group"],
    )
    assert (golden_config.height, golden_config.width) == (raw["height"], raw["width"])


def test_bad_config_files_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="no such configuration file"):
        RainConfig.from_reference_json(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match="not a readable JSON configuration"):
        RainConfig.from_reference_json(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"reference_unet": {"block_out_channels": [33, 64, 64, 64]}}))
    with pytest.raises(ConfigError, match="33 is not divisible by norm_num_groups=32"):
        RainConfig.from_reference_json(wrong)
