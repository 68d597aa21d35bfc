"""The Ray settings and the documented deployment, checked without a cluster."""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

import cli
from server.core.config import Settings
from tests.server.settings import tiny_settings

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_a_ray_address_from_the_environment_means_ray(monkeypatch) -> None:
    monkeypatch.setenv("RAIN_RAY_ADDRESS", "head.example:6379")
    settings = tiny_settings()
    assert settings.RAY and settings.RAY_ADDRESS == "head.example:6379"
    monkeypatch.delenv("RAIN_RAY_ADDRESS")
    assert not tiny_settings().RAY  # the single box stays the default


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"RAY_MIN_REPLICAS": 1}, "set both or neither"),
        ({"RAY_MIN_REPLICAS": 3, "RAY_MAX_REPLICAS": 2}, "RAY_MIN_REPLICAS=3 exceeds RAY_MAX_REPLICAS=2"),
        ({"RAY_REPLICAS": 0}, "RAY_REPLICAS"),
        ({"RAY_GPUS_PER_REPLICA": -1}, "RAY_GPUS_PER_REPLICA"),
        ({"RAY_ADDRESS": ""}, "RAY_ADDRESS"),
        ({"RAY_ADDRESS": "ray://head.example:10001"}, "Ray Client addresses (ray://) are not supported"),
    ],
)
def test_bad_ray_settings_are_named(changes, message) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        tiny_settings(**changes)


def test_serve_ray_refuses_bad_settings_before_starting_anything(tmp_path, capsys, monkeypatch) -> None:
    for key in [k for k in os.environ if k.startswith("RAIN_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no .env file
    monkeypatch.setenv("RAIN_RAY_MAX_REPLICAS", "4")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--ray", "--profile", "tiny", "--random-weights"])
    assert exit_info.value.code == 2 and "set both or neither" in capsys.readouterr().err


def _kuberay_manifest() -> list[dict]:
    (block,) = re.findall(r"```yaml\n(.*?)```", (DOCS / "ray.md").read_text(), flags=re.S)
    return list(yaml.safe_load_all(block))


def test_the_kuberay_manifest_deploys_this_application_with_webrtc_networking() -> None:
    service, http = _kuberay_manifest()
    assert service["kind"] == "RayService" and http["kind"] == "Service"
    (app,) = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    module, name = app["import_path"].split(":")
    builder = getattr(importlib.import_module(module), name)
    assert builder(app["args"]) is not None  # the documented args are settings the builder accepts
    Settings(_env_file=None, **app["args"])
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == importlib.import_module("ray").__version__
    # Ray's token authentication on every pod, and the dashboard neither on 0.0.0.0 nor published.
    assert cluster["authOptions"] == {"mode": "token"}
    head = cluster["headGroupSpec"]
    assert "dashboard-host" not in head["rayStartParams"]
    (head_container,) = head["template"]["spec"]["containers"]
    assert 8265 not in [port["containerPort"] for port in head_container["ports"]]
    assert [port["targetPort"] for port in http["spec"]["ports"]] == [8000]
    (gpu,) = cluster["workerGroupSpecs"]
    pod = gpu["template"]["spec"]
    assert pod["hostNetwork"] is True  # the replicas' UDP ports are the node's
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == app["args"]["RAY_GPUS_PER_REPLICA"] == 1
    assert http["spec"]["ports"][0]["targetPort"] == 8000
