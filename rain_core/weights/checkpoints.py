"""Checkpoint files: their names in a weights directory, reading them, loading them all or nothing.

`CHECKPOINTS` is the one table of file names; loading, training, exporting and fetching all
take theirs from it. The published RAIN files are plain torch state dicts (`.pth`, read with
`weights_only=True`); the same state dicts may also come as `.safetensors`. Every key and shape
is checked against the module before a single tensor is copied, so a wrong or damaged file
leaves the module as it was and the error names the file and the first offending keys.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

logger = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SAFETENSORS_SUFFIXES = (".safetensors",)
# How many offending keys an error message lists.
_SHOWN_KEYS = 5


class WeightsError(RuntimeError):
    """A checkpoint that is missing, unreadable, or does not fit the model; the message names the file."""


@dataclass(frozen=True)
class CheckpointName:
    """The file names of one network's checkpoint in a weights directory.

    `stem` is the name this project writes (training runs, exports, the golden fixtures);
    `published` the name of the released file, where one was released.
    """

    stem: str
    published: str | None = None

    @property
    def stems(self) -> tuple[str, ...]:
        """The stems looked for, in order: the published name first."""
        return tuple(dict.fromkeys(s for s in (self.published, self.stem) if s is not None))

    @property
    def saved_file(self) -> str:
        """The file this project writes."""
        return f"{self.stem}.safetensors"


# Component of `RainComponents` -> its checkpoint. RAIN-v0.1 publishes the denoising UNet as
# `motion_unet.pth`; the learned context token exists only in models trained here.
CHECKPOINTS: dict[str, CheckpointName] = {
    "reference_unet": CheckpointName("reference_unet", published="reference_unet"),
    "denoising_unet": CheckpointName("denoising_unet", published="motion_unet"),
    "pose_guider": CheckpointName("pose_guider", published="pose_guider"),
    "decoder": CheckpointName("taesdv", published="taesdv"),
    "context": CheckpointName("context"),
}
# Diffusers/transformers folders of the SD parts that encode the reference image.
VAE_FOLDER = "sd-vae-ft-mse"
IMAGE_ENCODER_FOLDER = "image_encoder"


def find_checkpoint(weights_dir: Path, component: str) -> Path:
    """The file of `component` in `weights_dir` (`.safetensors` preferred over torch files)."""
    stems = CHECKPOINTS[component].stems
    for stem in stems:
        for suffix in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
            candidate = weights_dir / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    names = " or ".join(f"{s}.pth/.safetensors" for s in stems)
    raise WeightsError(f"{weights_dir}: no {component} checkpoint (looked for {names})")


def read_state_dict(path: str | Path, *, suffix: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from `.safetensors` or a torch file, on the CPU.

    The format follows the file's suffix, or `suffix` for a file under a temporary name (a
    download still called `taesdv.pth.part`). Torch files are memory-mapped where their
    format allows, so that a 3 GB checkpoint is not held twice while it is copied into a model.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    suffix = (suffix or path.suffix).lower()
    try:
        if suffix in SAFETENSORS_SUFFIXES:
            state = load_file(str(path), device="cpu")
        elif suffix in TORCH_SUFFIXES:
            state = _torch_load(path)
        else:
            raise WeightsError(
                f"{path}: unknown weights format {suffix!r}; expected one of "
                f"{', '.join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)}"
            )
    except WeightsError:
        raise
    except (SafetensorError, RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile,
            ValueError, KeyError) as exc:
        raise WeightsError(f"{path}: unreadable or truncated weights file ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state dict (expected a mapping of parameter names to tensors)")
    return dict(state)


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        # Legacy (non-zip) torch files cannot be memory-mapped; anything else is a real error.
        if "mmap" not in str(exc):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str | Path) -> None:
    """Raise `WeightsError` unless `state_dict` has exactly the model's keys, with its shapes."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} (file {tuple(state_dict[k].shape)}, model {expected[k]})"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != expected[k]
    ]
    problems = []
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", mismatched)):
        if keys:
            shown = ", ".join(keys[:_SHOWN_KEYS]) + (f", ... ({len(keys)} in all)" if len(keys) > _SHOWN_KEYS else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise WeightsError(f"{source}: does not fit {type(model).__name__}: " + "; ".join(problems))


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a checkpoint into `model` after checking every key and shape.

    A model built on the meta device takes the file's tensors as they are (no second copy).
    """
    state = read_state_dict(path)
    check_state_dict(model, state, path)
    on_meta = any(t.is_meta for t in model.state_dict().values())
    if on_meta:
        dtypes = {k: t.dtype for k, t in model.state_dict().items()}
        state = {k: v.to(dtypes[k]) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=on_meta)
    logger.debug("loaded %s into %s", path, type(model).__name__)
    return model
