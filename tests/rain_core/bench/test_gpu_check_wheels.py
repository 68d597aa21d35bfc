"""The GPU check's wheel-install path, as the lent GPU machine takes it: no package index, the
image's own torch, and our pure-Python packages carried as wheels built by scripts/gpu_check_wheels.sh.

The machine is emulated by a fresh virtual environment that sees only what the GPU image holds
(gpu_image_packages.txt, as read on such a machine), linked from this environment where it has
them, with what they need in turn. Everything else this environment has (diffusers, pydantic,
FastAPI, ...) stays out of sight, so the check can import it only from the wheels. Versions are
this environment's, not the image's (its numpy is 2.x): that the check runs with numpy 2 is
checked apart (docs/benchmarks.md).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from rain_core.bench.check_report import JSON_NAME
from tests.helpers import REPO_ROOT

IMAGE_PACKAGES = tuple(
    line.strip() for line in (Path(__file__).parent / "gpu_image_packages.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
)
# What scripts/gpu_check_wheels.sh leaves to the image, which must never travel as a wheel.
MACHINE_OWN = ("torch", "numpy")

# pip's words when it cannot reach the index at all (as opposed to an index that lacks a wheel).
_UNREACHABLE = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
                "Network is unreachable", "ProxyError", "Could not fetch URL", "ConnectTimeoutError")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _image_distributions() -> list[importlib.metadata.Distribution]:
    """The image's packages as installed here, with every package they need (not their extras)."""
    wanted, found = [_normal(name) for name in IMAGE_PACKAGES], {}
    while wanted:
        name = wanted.pop()
        if name in found:
            continue
        try:
            found[name] = dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional or platform-specific need this environment does without
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                wanted.append(_normal(requirement.name))
    return list(found.values())


def _link_image_site(directory: Path) -> None:
    """A site directory holding (as links) exactly the image's packages."""
    directory.mkdir()
    for dist in _image_distributions():
        site = Path(dist.locate_file(""))
        for top in {Path(file).parts[0] for file in dist.files or []}:
            source = site / top
            if top != ".." and source.exists() and not (directory / top).exists():
                (directory / top).symlink_to(source)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    """scripts/gpu_check_wheels.sh's wheels, for this interpreter's version (the image's is 3.12)."""
    directory = tmp_path_factory.mktemp("whl")
    env = {**os.environ, "PYTHON": sys.executable, "GPU_PYTHON_VERSION": f"{sys.version_info[0]}.{sys.version_info[1]}"}
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "gpu_check_wheels.sh"), str(directory)],
                            capture_output=True, text=True, env=env, timeout=300)
    if result.returncode != 0 and any(word in result.stderr for word in _UNREACHABLE):
        pytest.skip(f"the package index is unreachable from here: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr
    return directory


def test_the_wheels_are_the_pure_python_packages_the_image_lacks(wheels):
    names = {_normal(path.name.split("-")[0]) for path in wheels.glob("*.whl")}
    assert {"diffusers", "pydantic", "pydantic-settings"} <= names
    # The machine's own torch and numpy are never replaced.
    assert not names & set(MACHINE_OWN)


def test_the_check_runs_from_the_wheels_on_a_machine_without_an_index(wheels, tmp_path):
    image_site = tmp_path / "image-site"
    _link_image_site(image_site)
    venv = tmp_path / "gpu-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "gpu_image.pth").write_text(f"{image_site}\n")

    # The machine as the script meets it: the image's packages, none of ours, no index.
    env = {key: value for key, value in os.environ.items()
           if key not in {"PYTHONPATH", "VIRTUAL_ENV", "OUT"} and not key.startswith("PIP_")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    probe = subprocess.run([str(python), "-c", "import torch, pip, numpy\nimport diffusers"],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert "No module named 'diffusers'" in probe.stderr, probe.stderr

    env.update(PYTHON=str(python), GPU_CHECK_WHEELS=str(wheels), GPU_CHECK_SITE=str(tmp_path / "site"))
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--sections", "profile_eager,model_worker",
         "--out", str(tmp_path / "out"), "--no-progress"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    count = len(list(wheels.glob("*.whl")))
    assert f"installing {count} wheels from {wheels}" in result.stderr
    assert (tmp_path / "site" / "diffusers").is_dir()
    sections = json.loads((tmp_path / "out" / JSON_NAME).read_text())["sections"]
    for name in ("profile_eager", "model_worker"):
        assert sections[name]["status"] == "ok", f"{name}: {sections[name]['reason']}"
        assert sections[name]["rows"][0].get("fps", sections[name]["rows"][0].get("aggregate_fps")) > 0
