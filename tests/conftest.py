"""Shared fixtures. `--golden-dir DIR` points every fixture-reading test at another directory
of the golden format (default: ../shared/golden beside the repository)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from safetensors.torch import load_file

from rain_core.config import RainConfig
from rain_core.stream.components import RainComponents
from rain_core.weights.loading import load_components

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
    return load_components(golden_config, golden_dir / "weights", with_image_encoders=False)


@pytest.fixture(scope="session")
def golden_banks(golden_cases: dict, golden_components: RainComponents) -> dict:
    names = golden_components.denoising_unet.reference_block_names
    return {name: golden_cases[f"reference.bank.{name}"] for name in names}


# The live server --------------------------------------------------------------------
@dataclass
class LiveServer:
    """`rain-avatar serve` in a subprocess on 127.0.0.1."""

    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


RANDOM_TINY = ("--profile", "tiny", "--random-weights")


def start_live_server(
    directory: Path, *, model_args: tuple[str, ...] = RANDOM_TINY, netns: str | None = None, host: str | None = None,
    **env: str,
) -> LiveServer:
    """Start a server and wait (bounded) until it answers; `env` adds RAIN_* settings.
    `model_args=()` runs what a bare `rain-avatar serve` runs. `netns`: in that network namespace
    (root only), listening on `host` there (an address this namespace reaches)."""
    port = _free_port() if netns is None else 8000
    # A developer's own RAIN_* settings must not leak into the tests; cwd has no .env file.
    clean = {key: value for key, value in os.environ.items() if not key.startswith("RAIN_")}
    clean.update({
        "RAIN_ICE_LOOPBACK": "true",  # loopback-only hosts: 127.0.0.1 host candidates
        "RAIN_ICE_SERVERS": "[]",  # no STUN server
        "RAIN_TORCH_THREADS": "1",
        # A server compiles in the background by default: minutes of both cores under every live test
        # (tests/server/test_start.py runs the default).
        "RAIN_COMPILE": "off",
        "RAIN_SILENCE_TIMEOUT": "10",
        "RAIN_LOG_LEVEL": "INFO",
        **env,
    })
    log_path = directory / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*(("ip", "netns", "exec", netns) if netns else ()), sys.executable, "-m", "cli", "serve", *model_args,
             "--port", str(port), *(("--host", host) if host else ())],
            cwd=directory, env=clean, stdout=log, stderr=subprocess.STDOUT,
        )
    server = LiveServer(url=f"http://{host or '127.0.0.1'}:{port}", process=process, log_path=log_path)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/api/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_live_server(server)
    raise RuntimeError(f"the server did not come up in 180 s:\n{server.log()}")


def stop_live_server(server: LiveServer, timeout: float = 60) -> int:
    """SIGTERM (a clean shutdown), then SIGKILL if it hangs; returns the exit code."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(10)
    return server.process.returncode


# The shared server's ICE ports: every live test then streams through a fixed range (below the
# kernel's ephemeral ports, so that other processes' random ports rarely sit in it).
LIVE_ICE_PORTS = (29000, 29299)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    ports = "{}-{}".format(*LIVE_ICE_PORTS)
    server = start_live_server(tmp_path_factory.mktemp("live-server"), RAIN_MAX_SESSIONS="4", RAIN_ICE_PORT_RANGE=ports)
    yield server
    stop_live_server(server)
