"""The `official` profile has exactly the keys and shapes of the published checkpoints.

Built on the meta device: the 2 B parameters are never allocated.
"""

from __future__ import annotations

import json

import pytest

from rain_core.config import official_config
from rain_core.stream.components import RainComponents
from rain_core.weights.checkpoints import CHECKPOINTS
from rain_core.weights.manifest import OFFICIAL_WEIGHTS
from tests.conftest import DEFAULT_GOLDEN_DIR

MANIFEST = "full_size_state_dicts.json"
# Published file name -> our component.
FILES = {
    "reference_unet.pth": "reference_unet",
    "motion_unet.pth": "denoising_unet",
    "pose_guider.pth": "pose_guider",
    "taesdv.pth": "decoder",
}


@pytest.fixture(scope="module")
def manifest(golden_dir):
    # Only the shared golden directory carries the full-size manifest.
    path = golden_dir / MANIFEST if (golden_dir / MANIFEST).is_file() else DEFAULT_GOLDEN_DIR / MANIFEST
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def official_on_meta():
    return RainComponents.build(official_config(), device="meta")


def test_manifest_lists_the_published_files(manifest):
    assert set(manifest) == set(FILES)


def test_the_published_files_are_fetched_and_found_by_their_names():
    """`fetch-weights` writes exactly the published files, and the loader looks for each under its name."""
    fetched = {target for source in OFFICIAL_WEIGHTS.hub for _, target in source.targets() if target.endswith(".pth")}
    fetched |= {item.target for item in OFFICIAL_WEIGHTS.urls}
    assert fetched == set(FILES)
    for file_name, component in FILES.items():
        assert CHECKPOINTS[component].stems[0] == file_name.removesuffix(".pth")


@pytest.mark.parametrize("file_name", sorted(FILES))
def test_official_keys_and_shapes(manifest, official_on_meta, file_name):
    network = getattr(official_on_meta, FILES[file_name])
    ours = {k: list(t.shape) for k, t in network.state_dict().items()}
    assert all(t.is_meta for t in network.state_dict().values())
    published = manifest[file_name]
    assert sorted(set(published) - set(ours)) == [], "keys of the checkpoint our model lacks"
    assert sorted(set(ours) - set(published)) == [], "keys of our model the checkpoint lacks"
    wrong = {k: (ours[k], published[k]) for k in published if ours[k] != published[k]}
    assert wrong == {}
