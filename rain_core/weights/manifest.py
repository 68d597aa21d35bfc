"""Where the `official` profile's weights come from: repositories, revisions, file names.

This is the one place that names them; `rain-avatar fetch-weights` reads it, so a newer
release is a change of one line here. Every file lands in one weights directory, under the
names `rain_core.weights.loading` looks for (`CHECKPOINTS`, `VAE_FOLDER`, `IMAGE_ENCODER_FOLDER`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

from rain_core.weights.checkpoints import CHECKPOINTS, IMAGE_ENCODER_FOLDER, VAE_FOLDER


@dataclass(frozen=True)
class HubSource:
    """Files of one Hugging Face Hub repository at one revision.

    With `hf_hub_download(local_dir=...)` a file keeps its path inside the repository, so
    `image_encoder/config.json` lands in `<weights>/<subdir>/image_encoder/config.json`.
    """

    repo_id: str
    revision: str
    files: tuple[str, ...]
    # Folder of the weights directory the repository's files land in ("" = the directory itself).
    subdir: str = ""

    def targets(self) -> Iterator[tuple[str, str]]:
        """(path inside the repository, path inside the weights directory) per file."""
        for name in self.files:
            yield name, str(PurePosixPath(self.subdir, name)) if self.subdir else name


@dataclass(frozen=True)
class UrlFile:
    """A file served over HTTPS from a fixed URL (resumable with HTTP Range).

    `git_blob_sha1` is the id of the file in its git tree (`git ls-tree`): a URL of the
    form `raw.githubusercontent.com/<owner>/<repo>/<commit>/<path>` serves that blob, so the
    download can be checked against the commit it names. `component` names the network of
    `RainComponents` whose keys and shapes the file must have; a file of another layout is
    refused and deleted before it takes its final name.
    """

    url: str
    target: str
    git_blob_sha1: str | None = None
    component: str | None = None


@dataclass(frozen=True)
class WeightsManifest:
    """Everything one profile needs, to be fetched into one directory."""

    profile: str
    hub: tuple[HubSource, ...] = ()
    urls: tuple[UrlFile, ...] = ()


def _released(component: str) -> str:
    """The released file of a component's checkpoint: RAIN-v0.1 and TAESDV publish torch files."""
    return f"{CHECKPOINTS[component].published}.pth"


# RAIN-v0.1, the published checkpoints (the denoising UNet is `motion_unet.pth`).
# Revisions are branch names: the Hub's commit ids could not be looked up when this was
# written (no access to the Hub). `weights.lock.json` pins each file's sha256 on first
# download, so a later change upstream is reported rather than taken silently.
RAIN_RELEASE = HubSource(
    repo_id="Pscgylotti/RAIN-v0.1",
    revision="main",
    files=tuple(_released(name) for name in ("reference_unet", "denoising_unet", "pose_guider")),
)
# The SD VAE (only its encoder is used, for the reference image); diffusers folder layout.
SD_VAE = HubSource(
    repo_id="stabilityai/sd-vae-ft-mse",
    revision="main",
    files=("config.json", "diffusion_pytorch_model.safetensors"),
    subdir=VAE_FOLDER,
)
# The CLIP image encoder with projection of sd-image-variations (its `image_encoder` folder).
IMAGE_ENCODER = HubSource(
    repo_id="lambdalabs/sd-image-variations-diffusers",
    revision="main",
    files=(f"{IMAGE_ENCODER_FOLDER}/config.json", f"{IMAGE_ENCODER_FOLDER}/pytorch_model.bin"),
)

# TAESDV is not on the Hub; it is fetched from a pinned commit of madebyollin/taesdv.
# The pinned commit must be one whose `taesdv.pth` has the 134-key layout of our `TAESDV`
# (shared/golden/full_size_state_dicts.json, "taesdv.pth"); the download is refused otherwise.
# 1b2655e5 (2024-10-05, "Remove silly bias thingy") is the newest commit of a stored mirror of
# the repository; its checkpoint blob is the one committed in 1b064642 ("Slightly better").
# Its taesdv.py builds exactly that 134-key layout (checked); the checkpoint itself was not
# in the mirror and could not be downloaded here (no access to GitHub), hence the checks.
TAESDV_COMMIT = "1b2655e57693c2bf2bd016451f86f5cbf5aa5169"
# `git ls-tree 1b2655e5 taesdv.pth` in that mirror. Another commit needs its own blob id here
# (or None, leaving the layout check alone).
TAESDV_BLOB = "ffbcfae958d6364adddffca405f8dac44d03ace2"
TAESDV = UrlFile(
    url=f"https://raw.githubusercontent.com/madebyollin/taesdv/{TAESDV_COMMIT}/taesdv.pth",
    target=_released("decoder"),
    git_blob_sha1=TAESDV_BLOB,
    component="decoder",
)

OFFICIAL_WEIGHTS = WeightsManifest(profile="official", hub=(RAIN_RELEASE, SD_VAE, IMAGE_ENCODER), urls=(TAESDV,))
