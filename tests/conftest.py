"""Shared fixtures. `--golden-dir DIR` points every fixture-reading test at another directory
of the golden format (default: ../shared/golden beside the repository)."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file

from rain_core.components import RainComponents
from rain_core.config import RainConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GOLDEN_DIR = REPO_ROOT.parent / "shared" / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--golden-dir",
        action="store",
        default=str(DEFAULT_GOLDEN_DIR),
        help="directory of golden fixtures (config.json, weights/, cases.safetensors, ...)",
    )


@pytest.fixture(scope="session")
def golden_dir(request: pytest.FixtureRequest) -> Path:
    path = Path(request.config.getoption("--golden-dir")).resolve()
    if not (path / "config.json").is_file() or not (path / "cases.safetensors").is_file():
        raise pytest.UsageError(f"--golden-dir {path}: not a golden fixture directory (config.json, cases.safetensors)")
    return path


@pytest.fixture(scope="session")
def golden_config(golden_dir: Path) -> RainConfig:
    return RainConfig.from_reference_json(golden_dir / "config.json")


@pytest.fixture(scope="session")
def golden_cases(golden_dir: Path) -> dict:
    return load_file(str(golden_dir / "cases.safetensors"))


@pytest.fixture(scope="session")
def golden_components(golden_config: RainConfig, golden_dir: Path) -> RainComponents:
    return RainComponents.from_weights_dir(golden_config, golden_dir / "weights", with_image_encoders=False)


@pytest.fixture(scope="session")
def golden_banks(golden_cases: dict, golden_components: RainComponents) -> dict:
    names = golden_components.denoising_unet.reference_block_names
    return {name: golden_cases[f"reference.bank.{name}"] for name in names}
