"""Health, the pages' configuration, metrics, docs and the pages themselves."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_health_config_metrics_docs_and_pages(client: TestClient) -> None:
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["profile"] == "tiny" and health["sessions"] == 0
    config = client.get("/api/config").json()
    assert config["ice_servers"] == [] and (config["width"], config["height"]) == (64, 64)
    assert config["params"]["fps"] == 16 and "calibration" in config["params"]
    assert (config["min_fps"], config["max_fps"]) == (1, 30)
    assert "FaceCalibration" in config["params_schema"]["$defs"]
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "rain_sessions 0.0" in metrics.text
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").json()["paths"]["/api/offer"]["post"]
    page = client.get("/")
    assert page.status_code == 200 and "createPeerConnection" in client.get("/static/app.js").text
    obs = client.get("/obs/anything?token=x")
    assert obs.status_code == 200 and "<video" in obs.text and "autoplay muted playsinline" in obs.text
    # Both pages load the one copy of what they share.
    assert "function waitForIceGathering" in client.get("/static/rtc.js").text
    assert '<script src="/static/rtc.js">' in page.text and '<script src="/static/rtc.js">' in obs.text


def test_no_cors_by_default(client: TestClient) -> None:
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    response = client.options("/api/offer", headers=preflight)
    assert "access-control-allow-origin" not in response.headers
