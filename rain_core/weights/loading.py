"""A weights directory: every part of a model, checked against a config or loaded from it.

The checkpoints are found by the names of `CHECKPOINTS`; the SD VAE and the CLIP image
encoder, which only the `sd` reference encoder needs, are diffusers/transformers folders.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError
from torch import nn

from rain_core.config import RainConfig
from rain_core.stream.components import RainComponents
from rain_core.weights.checkpoints import (
    CHECKPOINTS,
    IMAGE_ENCODER_FOLDER,
    VAE_FOLDER,
    WeightsError,
    check_state_dict,
    find_checkpoint,
    load_weights,
    read_state_dict,
)

logger = logging.getLogger(__name__)

# The config sections that decide what each weight means. Training checkpoints and `rain-avatar
# export` write the whole config beside the weights (as SAVED_CONFIG_FILE); a profile changed
# since (e.g. the demo's attention heads) would load the same shapes and compute something else.
ARCHITECTURE_SECTIONS = ("unet", "denoising_unet", "pose_guider", "taesdv")
SAVED_CONFIG_FILE = "config.json"


def _flatten(values: dict, prefix: str) -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def architecture_differences(config: RainConfig, weights_dir: Path) -> list[str]:
    """Where the config that `rain-avatar export` saved beside the weights differs from `config` in
    the networks' layout, as `field: saved -> config` lines; none when there is no such file of
    the same profile (published weights carry none)."""
    try:
        saved = RainConfig.model_validate_json((weights_dir / SAVED_CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, ValidationError):
        return []
    if saved.name != config.name:
        return []
    differences = []
    for section in ARCHITECTURE_SECTIONS:
        theirs = _flatten(getattr(saved, section).model_dump(mode="json"), f"{section}.")
        ours = _flatten(getattr(config, section).model_dump(mode="json"), f"{section}.")
        differences += [f"{key}: {theirs.get(key)} -> {ours.get(key)}" for key in sorted(ours.keys() | theirs.keys())
                        if theirs.get(key) != ours.get(key)]
    return differences


def _checkpointed(components: RainComponents) -> dict[str, nn.Module]:
    """The networks of `components` that come from a checkpoint file, in the order of `CHECKPOINTS`."""
    return {name: getattr(components, name) for name in CHECKPOINTS if getattr(components, name) is not None}


def load_components(config: RainConfig, weights_dir: str | Path, *, with_image_encoders: bool = True
                    ) -> RainComponents:
    """Load every network of `config` from `weights_dir` and move it to the config's device and dtype.

    The networks are built on the meta device and take the checkpoint tensors directly, so
    the full-size model is never allocated twice. Profiles with the `taesdv` reference encoder
    never load image encoders.
    """
    weights_dir = Path(weights_dir)
    if not weights_dir.is_dir():
        raise WeightsError(f"{weights_dir}: weights directory does not exist")
    differences = architecture_differences(config, weights_dir)
    if differences:
        # A warning, not an error: fine-tuning into a changed layout (`train --weights`) loads them on purpose.
        shown = "; ".join(differences[:5]) + (f"; and {len(differences) - 5} more" if len(differences) > 5 else "")
        logger.warning("%s: exported for another layout of the %s profile than this one (%s): the weights load "
                       "but compute something else; re-export or fine-tune them with this version",
                       weights_dir / SAVED_CONFIG_FILE, config.name, shown)
    components = RainComponents.build(config, device="meta")
    networks = _checkpointed(components)
    # Every file is found before the first (slow) load starts: a missing one fails at once.
    files = {name: find_checkpoint(weights_dir, name) for name in networks}
    for name, path in files.items():
        logger.info("loading %s from %s", name, path)
        network = networks[name]
        load_weights(network, path)
        _check_materialised(name, network, path)
    if with_image_encoders and config.reference_encoder == "sd":
        components.vae = load_vae(weights_dir / VAE_FOLDER)
        components.image_encoder = load_image_encoder(weights_dir / IMAGE_ENCODER_FOLDER, config.clip_embed_dim)
    return components.to(config.torch_device, config.torch_dtype)


@dataclass(frozen=True)
class PartStatus:
    """Whether one part of a weights directory is present and fits the configured model."""

    name: str
    path: Path | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def check_weights_dir(
    config: RainConfig, weights_dir: str | Path, *, with_image_encoders: bool = True
) -> list[PartStatus]:
    """Check every part of `weights_dir` against `config` without building the full-size model.

    Checkpoints are compared key by key and shape by shape with a meta-device model, the
    encoder folders are only looked for; nothing large is allocated.
    """
    weights_dir = Path(weights_dir)
    statuses = []
    for name, network in _checkpointed(RainComponents.build(config, device="meta")).items():
        try:
            path = find_checkpoint(weights_dir, name)
        except WeightsError as exc:
            statuses.append(PartStatus(name, None, str(exc)))
            continue
        try:
            check_state_dict(network, read_state_dict(path), path)
        except WeightsError as exc:
            # Present but of another layout: keep the path, so that it reads as bad, not missing.
            statuses.append(PartStatus(name, path, str(exc)))
        else:
            statuses.append(PartStatus(name, path, None))
    if with_image_encoders and config.reference_encoder == "sd":
        for name, folder in (("vae", VAE_FOLDER), ("image_encoder", IMAGE_ENCODER_FOLDER)):
            path = weights_dir / folder
            found = (path / "config.json").is_file()
            statuses.append(PartStatus(name, path if found else None, None if found else f"{path}: folder missing"))
    return statuses


def _check_materialised(name: str, network: nn.Module, path: Path) -> None:
    left = [k for k, t in network.state_dict(keep_vars=True).items() if t.is_meta]
    left += [k for k, t in network.named_buffers() if t.is_meta]
    if left:
        raise WeightsError(f"{path}: {name} still has uninitialised tensors after loading: {left[:5]}")


def _from_folder(model_class, folder: Path, what: str, layout: str) -> nn.Module:
    """`model_class.from_pretrained(folder)` offline, every failure a `WeightsError` naming the folder."""
    if not folder.is_dir():
        raise WeightsError(f"{folder}: {what} folder missing ({layout})")
    try:
        return model_class.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{folder}: cannot load the {what} ({exc})") from None


def load_vae(folder: Path) -> nn.Module:
    """The SD VAE (`AutoencoderKL`) from a diffusers folder; only its encoder is used."""
    from diffusers import AutoencoderKL

    vae = _from_folder(AutoencoderKL, folder, "VAE", "diffusers AutoencoderKL format, e.g. sd-vae-ft-mse")
    if vae.config.latent_channels != 4:
        raise WeightsError(f"{folder}: VAE has {vae.config.latent_channels} latent channels, RAIN needs 4")
    return vae


def load_image_encoder(folder: Path, embed_dim: int) -> nn.Module:
    """The CLIP vision encoder with projection (sd-image-variations' `image_encoder`)."""
    from transformers import CLIPVisionModelWithProjection

    encoder = _from_folder(
        CLIPVisionModelWithProjection, folder, "image encoder", "transformers CLIPVisionModelWithProjection"
    )
    if encoder.config.projection_dim != embed_dim:
        raise WeightsError(
            f"{folder}: image encoder projects to {encoder.config.projection_dim} dims, the UNets expect {embed_dim}"
        )
    return encoder
