"""`POST /api/offer`: every bad offer gets a clear 4xx (never a 500)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.server.api.requests import detail


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"type": "offer"}, 422, "sdp: Field required"),
        ({"sdp": "hello", "type": "offer"}, 400, "SDP does not parse"),
        ({"sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "type": "offer"}, 400, "no media section"),
        ({"sdp": "v=0\r\n", "type": "offer", "extra": 1}, 422, "extra: Extra inputs are not permitted"),
        ({"sdp": "v=0\r\n", "type": "offer", "params": "fast"}, 422, "params: Input should be a valid dictionary"),
    ],
)
def test_offer_bad_bodies(client: TestClient, body, status, message) -> None:
    response = client.post("/api/offer", json=body)
    assert response.status_code == status and message in detail(response)


def test_offer_body_over_its_limit(client: TestClient) -> None:
    # Refused before the body is read (its Content-Length); chunked bodies: tests/server/test_hostile_clients.py.
    response = client.post("/api/offer", content=b" " * 2_000_000, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "limit" in detail(response)


def test_offer_malformed_json(client: TestClient) -> None:
    response = client.post("/api/offer", content=b'{"sdp": ', headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and detail(response).startswith("malformed JSON")


@pytest.mark.parametrize(
    ("kind", "type_", "status", "message"),
    [
        ("webcam", "answer", 400, "expected an SDP of type 'offer'"),
        ("receive_only", "offer", 400, "offer sends no video"),
        ("audio_only", "offer", 400, "offer sends no video"),
    ],
)
def test_offer_without_webcam_video(client: TestClient, offers, kind, type_, status, message) -> None:
    response = client.post("/api/offer", json={"sdp": offers[kind], "type": type_})
    assert response.status_code == status and message in detail(response)


def test_offer_with_a_microphone_gets_the_voice_back(client: TestClient, offers) -> None:
    """The audio section is answered sendrecv (the voice comes back delayed), the session has a
    voice, and a WHEP viewer asking for audio gets it; a session without one sends no audio."""
    response = client.post("/api/offer", json={"sdp": offers["webcam_and_microphone"], "type": "offer"})
    assert response.status_code == 200, response.text
    opened = response.json()
    try:
        assert _audio_direction(opened["sdp"]) == "sendrecv"
        voice = client.get(f"/api/sessions/{opened['session_id']}/stats").json()["voice"]
        assert voice is not None and voice["max_delay_ms"] == 5000
        whep = f"/whep/{opened['view_id']}?token={opened['view_token']}"
        viewer = client.post(whep, content=offers["viewer_with_audio"], headers={"Content-Type": "application/sdp"})
        assert viewer.status_code == 201 and _audio_direction(viewer.text) == "sendonly"
    finally:
        assert client.delete(f"/api/sessions/{opened['session_id']}").status_code == 204
    response = client.post("/api/offer", json={"sdp": offers["webcam"], "type": "offer"})
    opened = response.json()
    try:
        assert client.get(f"/api/sessions/{opened['session_id']}/stats").json()["voice"] is None
        whep = f"/whep/{opened['view_id']}?token={opened['view_token']}"
        viewer = client.post(whep, content=offers["viewer_with_audio"], headers={"Content-Type": "application/sdp"})
        assert viewer.status_code == 201 and _audio_direction(viewer.text) != "sendonly"
    finally:
        assert client.delete(f"/api/sessions/{opened['session_id']}").status_code == 204


def _audio_direction(sdp: str) -> str:
    audio = sdp.split("m=audio", 1)[1].split("\r\nm=", 1)[0]
    directions = ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive")
    return next(line[2:] for line in audio.split("\r\n") if line in directions)


def test_offer_without_ice_credentials(client: TestClient, offers) -> None:
    sdp = "\r\n".join(line for line in offers["webcam"].split("\r\n") if not line.startswith("a=ice-pwd"))
    response = client.post("/api/offer", json={"sdp": sdp, "type": "offer"})
    assert response.status_code == 400 and "ICE credentials" in detail(response)


def test_offer_unknown_reference(client: TestClient, offers) -> None:
    response = client.post("/api/offer", json={"sdp": offers["webcam"], "type": "offer", "reference_id": "nope"})
    assert response.status_code == 404 and detail(response) == "unknown or expired reference_id"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"fps": 0}, "fps: must be a number from 1 to 30"),
        ({"fps": 1e-9}, "fps: must be a number from 1 to 30"),
        ({"fps": "fast"}, "fps: must be a number"),
        ({"fps": 1000}, "from 1 to 30"),
        ({"calibration": {"eye_height_ratio": 99}}, "calibration.eye_height_ratio"),
        ({"crop_ratio": 0}, "crop_ratio"),
        ({"mode": "dance"}, "mode"),
        ({"wings": True}, "wings: Extra inputs are not permitted"),
    ],
)
def test_offer_out_of_range_params(client: TestClient, offers, params, message) -> None:
    response = client.post("/api/offer", json={"sdp": offers["webcam"], "type": "offer", "params": params})
    assert response.status_code == 422 and message in detail(response)


def test_full_server_answers_503_with_retry_after(client: TestClient, offers) -> None:
    first = client.post("/api/offer", json={"sdp": offers["webcam"], "type": "offer", "params": {"fps": 10}})
    assert first.status_code == 200, first.text
    session_id = first.json()["session_id"]
    try:
        assert client.get("/api/health").json()["sessions"] == 1
        full = client.post("/api/offer", json={"sdp": offers["webcam"], "type": "offer"})
        assert full.status_code == 503 and "server is full" in detail(full)
        assert int(full.headers["retry-after"]) > 0
    finally:
        assert client.delete(f"/api/sessions/{session_id}").status_code == 204
    health = client.get("/api/health").json()
    assert health["sessions"] == 0 and health["engines"] == 0
