"""Loading checkpoints: published formats load; wrong or damaged files fail clearly and load nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from rain_core.config import RainConfig
from rain_core.models import PoseGuider
from rain_core.weights.checkpoints import WeightsError, find_checkpoint, load_weights, read_state_dict
from rain_core.weights.loading import check_weights_dir, load_components, load_image_encoder, load_vae


@pytest.fixture
def pose_guider_config(golden_config: RainConfig) -> dict:
    return golden_config.pose_guider.model_dump()


@pytest.fixture
def pose_guider_state(golden_dir: Path) -> dict[str, torch.Tensor]:
    return read_state_dict(golden_dir / "weights" / "pose_guider.safetensors")


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_unchanged(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before), "a failed load changed the model"


def test_pth_and_safetensors_load_the_same(tmp_path, pose_guider_config, pose_guider_state):
    torch.save(pose_guider_state, tmp_path / "pose_guider.pth")
    save_file(pose_guider_state, str(tmp_path / "pose_guider.safetensors"))
    from_pth = load_weights(PoseGuider(**pose_guider_config), tmp_path / "pose_guider.pth")
    from_st = load_weights(PoseGuider(**pose_guider_config), tmp_path / "pose_guider.safetensors")
    for key, value in pose_guider_state.items():
        assert torch.equal(from_pth.state_dict()[key], value)
        assert torch.equal(from_st.state_dict()[key], value)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", "missing keys: conv_out.weight"),
        ("extra", "unexpected keys: extra.weight"),
        ("shape", "wrong shapes: conv_in.weight"),
    ],
)
def test_mismatched_state_dict_is_refused_and_loads_nothing(
    tmp_path, pose_guider_config, pose_guider_state, suffix, damage, message
):
    state = dict(pose_guider_state)
    if damage == "missing":
        del state["conv_out.weight"]
    elif damage == "extra":
        state["extra.weight"] = torch.ones(3)
    else:
        state["conv_in.weight"] = torch.ones(5, 3, 3, 3)
    path = tmp_path / f"pose_guider{suffix}"
    torch.save(state, path) if suffix == ".pth" else save_file(state, str(path))

    model = PoseGuider(**pose_guider_config)
    before = _snapshot(model)
    with pytest.raises(WeightsError) as info:
        load_weights(model, path)
    assert str(path) in str(info.value)
    assert message in str(info.value)
    _assert_unchanged(model, before)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file_is_refused(tmp_path, pose_guider_config, pose_guider_state, suffix):
    whole = tmp_path / f"whole{suffix}"
    torch.save(pose_guider_state, whole) if suffix == ".pth" else save_file(pose_guider_state, str(whole))
    data = whole.read_bytes()
    truncated = tmp_path / f"pose_guider{suffix}"
    truncated.write_bytes(data[: len(data) // 2])

    model = PoseGuider(**pose_guider_config)
    before = _snapshot(model)
    with pytest.raises(WeightsError, match="unreadable or truncated") as info:
        load_weights(model, truncated)
    assert str(truncated) in str(info.value)
    _assert_unchanged(model, before)


def test_not_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save([torch.ones(2)], path)
    with pytest.raises(WeightsError, match="not a state dict"):
        read_state_dict(path)


def test_unknown_format_and_missing_file(tmp_path):
    odd = tmp_path / "weights.npz"
    odd.write_bytes(b"\0" * 16)
    with pytest.raises(WeightsError, match="unknown weights format '.npz'"):
        read_state_dict(odd)
    with pytest.raises(WeightsError, match="no such weights file"):
        read_state_dict(tmp_path / "absent.pth")


def test_pickled_code_is_not_executed(tmp_path):
    """`weights_only=True`: a checkpoint cannot run code when it is read."""

    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"conv_in.weight": Payload()}, path)
    with pytest.raises(WeightsError):
        read_state_dict(path)
    assert not (tmp_path / "pwned").exists()


def test_published_names_are_found(tmp_path, golden_dir):
    """The denoising UNet is published as motion_unet.pth; fixtures call it denoising_unet."""
    shutil.copy(golden_dir / "weights" / "denoising_unet.safetensors", tmp_path / "motion_unet.safetensors")
    assert find_checkpoint(tmp_path, "denoising_unet").name == "motion_unet.safetensors"
    with pytest.raises(WeightsError, match="no reference_unet checkpoint"):
        find_checkpoint(tmp_path, "reference_unet")


def test_weights_dir_with_a_missing_part_names_it(tmp_path, golden_config, golden_dir):
    for name in ("reference_unet", "denoising_unet", "taesdv"):
        shutil.copy(golden_dir / "weights" / f"{name}.safetensors", tmp_path)
    with pytest.raises(WeightsError, match="no pose_guider checkpoint"):
        load_components(golden_config, tmp_path, with_image_encoders=False)


def test_components_load_as_published_torch_files(tmp_path, golden_config, golden_dir, golden_components):
    """The official release is four .pth files; the same state dicts load from them."""
    published = {"reference_unet": "reference_unet", "denoising_unet": "motion_unet",
                 "pose_guider": "pose_guider", "taesdv": "taesdv"}
    for ours, theirs in published.items():
        torch.save(read_state_dict(golden_dir / "weights" / f"{ours}.safetensors"), tmp_path / f"{theirs}.pth")
    loaded = load_components(golden_config, tmp_path, with_image_encoders=False)
    for name, network in loaded.networks():
        expected = getattr(golden_components, name).state_dict()
        assert all(torch.equal(t, expected[k]) for k, t in network.state_dict().items()), name


def test_image_encoder_folders(tmp_path):
    """The diffusers/transformers folders of the SD VAE and the CLIP encoder load, and a wrong one is refused."""
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=4, sample_size=32).save_pretrained(
        tmp_path / "vae"
    )
    clip_config = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   image_size=32, patch_size=8, projection_dim=12)
    CLIPVisionModelWithProjection(clip_config).save_pretrained(tmp_path / "clip")

    assert load_vae(tmp_path / "vae").config.latent_channels == 4
    assert load_image_encoder(tmp_path / "clip", embed_dim=12).config.projection_dim == 12
    with pytest.raises(WeightsError, match="projects to 12 dims, the UNets expect 768"):
        load_image_encoder(tmp_path / "clip", embed_dim=768)
    with pytest.raises(WeightsError, match="VAE folder missing"):
        load_vae(tmp_path / "absent")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match="cannot load the image encoder"):
        load_image_encoder(tmp_path / "broken", embed_dim=12)


def test_weights_dir_check_tells_a_bad_part_from_a_missing_one(tmp_path, golden_config, golden_dir):
    shutil.copy(golden_dir / "weights" / "pose_guider.safetensors", tmp_path / "taesdv.safetensors")
    statuses = {s.name: s for s in check_weights_dir(golden_config, tmp_path, with_image_encoders=False)}
    assert statuses["decoder"].path == tmp_path / "taesdv.safetensors"
    assert "does not fit TAESDV" in statuses["decoder"].problem
    assert statuses["pose_guider"].path is None
    assert "no pose_guider checkpoint" in statuses["pose_guider"].problem


def test_weights_exported_for_another_layout_are_loaded_with_a_warning(tmp_path, golden_config, golden_dir, caplog):
    """An exported model records its config; a profile changed since is named field by field."""
    for name in ("reference_unet", "denoising_unet", "pose_guider", "taesdv"):
        shutil.copy(golden_dir / "weights" / f"{name}.safetensors", tmp_path)
    (tmp_path / "config.json").write_text(golden_config.model_dump_json())
    with caplog.at_level("WARNING", logger="rain_core.weights.loading"):
        load_components(golden_config, tmp_path, with_image_encoders=False)
    assert not caplog.records

    bias = golden_config.denoising_unet.reference_position_bias
    saved = golden_config.with_overrides(
        denoising_unet=golden_config.denoising_unet.model_copy(update={"reference_position_bias": bias + 1.0}))
    (tmp_path / "config.json").write_text(saved.model_dump_json())
    with caplog.at_level("WARNING", logger="rain_core.weights.loading"):
        load_components(golden_config, tmp_path, with_image_encoders=False)
    assert f"denoising_unet.reference_position_bias: {bias + 1.0} -> {bias}" in caplog.text
