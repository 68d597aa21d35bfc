"""The HTTP API with FastAPI's TestClient: every bad input gets a clear 4xx (never a 500)."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from server.core.config import Settings
from server.main import create_app
from tests.avatar_client import make_offer

MAX_UPLOAD = 300_000


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    settings = Settings(
        _env_file=None, PROFILE="tiny", RANDOM_WEIGHTS=True, DEVICE="cpu", TORCH_THREADS=1, MAX_SESSIONS=1,
        MAX_UPLOAD_BYTES=MAX_UPLOAD, MAX_REFERENCE_PIXELS=1_000_000, ICE_SERVERS=[], ICE_LOOPBACK=False,
    )
    with TestClient(create_app(settings), raise_server_exceptions=True) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def offers() -> dict[str, str]:
    async def build() -> dict[str, str]:
        return {
            "webcam": await make_offer(video="sendrecv"),
            "receive_only": await make_offer(video="recvonly"),
            "audio_only": await make_offer(video=None, audio=True),
        }

    return asyncio.run(build())


def png(width: int, height: int, color=(200, 100, 50)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A small PNG file whose header claims `width` x `height` (its pixel data is a few bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def upload(client: TestClient, data: bytes, name: str = "character.png", content_type: str = "image/png"):
    return client.post("/api/references", files={"file": (name, data, content_type)})


def detail(response) -> str:
    return response.json()["detail"]


# The good paths first ------------------------------------------------------------------
def test_health_config_metrics_docs_and_pages(client: TestClient) -> None:
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["profile"] == "tiny" and health["sessions"] == 0
    config = client.get("/api/config").json()
    assert config["ice_servers"] == [] and (config["width"], config["height"]) == (64, 64)
    assert config["params"]["fps"] == 16 and "calibration" in config["params"]
    assert "FaceCalibration" in config["params_schema"]["$defs"]
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "rain_sessions 0.0" in metrics.text
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").json()["paths"]["/api/offer"]["post"]
    page = client.get("/")
    assert page.status_code == 200 and "createPeerConnection" in client.get("/static/app.js").text
    obs = client.get("/obs/anything?token=x")
    assert obs.status_code == 200 and "<video" in obs.text and "autoplay muted playsinline" in obs.text


def test_upload_a_reference(client: TestClient) -> None:
    response = upload(client, png(300, 200))
    assert response.status_code == 201
    body = response.json()
    assert (body["width"], body["height"]) == (300, 200) and len(body["reference_id"]) >= 22


def test_no_cors_by_default(client: TestClient) -> None:
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    response = client.options("/api/offer", headers=preflight)
    assert "access-control-allow-origin" not in response.headers


# Offers ---------------------------------------------------------------------------------
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
        ({"fps": 0}, "fps: must be a number above 0"),
        ({"fps": "fast"}, "fps: must be a number"),
        ({"fps": 1000}, "at most 30"),
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


# Sessions -------------------------------------------------------------------------------
def test_unknown_session(client: TestClient) -> None:
    for response in (
        client.get("/api/sessions/nope/stats"),
        client.put("/api/sessions/nope/reference", json={"reference_id": "x"}),
        client.delete("/api/sessions/nope"),
        client.post("/whep/nope?token=x", content="v=0\r\n", headers={"Content-Type": "application/sdp"}),
        client.delete("/whep/nope/viewer"),
    ):
        assert response.status_code == 404 and detail(response) == "unknown or expired session"


def test_session_requests_on_a_live_session(client: TestClient, offers) -> None:
    answer = client.post("/api/offer", json={"sdp": offers["webcam"], "type": "offer"}).json()
    session_id, token = answer["session_id"], answer["view_token"]
    try:
        stats = client.get(f"/api/sessions/{session_id}/stats").json()
        assert stats["frames"]["camera"] == 0 and stats["viewers"] == 0
        # Swapping the character.
        bad = client.put(f"/api/sessions/{session_id}/reference", json={"reference_id": "nope"})
        assert bad.status_code == 404 and detail(bad) == "unknown or expired reference_id"
        bad = client.put(
            f"/api/sessions/{session_id}/reference", content=b"{", headers={"Content-Type": "application/json"}
        )
        assert bad.status_code == 400 and detail(bad).startswith("malformed JSON")
        reference_id = upload(client, png(64, 64)).json()["reference_id"]
        good = client.put(f"/api/sessions/{session_id}/reference", json={"reference_id": reference_id})
        assert good.status_code == 200
        # WHEP: the view token, the content type, the SDP.
        whep = f"/whep/{session_id}"
        sdp_headers = {"Content-Type": "application/sdp"}
        response = client.post(whep, content=offers["receive_only"], headers=sdp_headers)
        assert response.status_code == 401 and "view token is required" in detail(response)
        response = client.post(f"{whep}?token=wrong", content=offers["receive_only"], headers=sdp_headers)
        assert response.status_code == 403 and detail(response) == "invalid view token"
        response = client.post(whep, content=offers["receive_only"],
                               headers={**sdp_headers, "Authorization": "Bearer wrong"})
        assert response.status_code == 403
        response = client.post(f"{whep}?token={token}", json={"sdp": offers["receive_only"]})
        assert response.status_code == 415 and "application/sdp" in detail(response)
        response = client.post(f"{whep}?token={token}", content="not sdp", headers=sdp_headers)
        assert response.status_code == 400 and "SDP does not parse" in detail(response)
        response = client.post(f"{whep}?token={token}", content=offers["audio_only"], headers=sdp_headers)
        assert response.status_code == 400 and "accepts no video" in detail(response)
        response = client.post(f"{whep}?token={token}", content=b"\xff\xfe", headers=sdp_headers)
        assert response.status_code == 400 and "UTF-8" in detail(response)
        response = client.delete(f"{whep}/not-a-viewer")
        assert response.status_code == 404 and detail(response) == "unknown viewer"
        # A good viewer, with the token as a bearer token this time (what WHEP players send).
        response = client.post(whep, content=offers["receive_only"],
                               headers={**sdp_headers, "Authorization": f"Bearer {token}"})
        assert response.status_code == 201 and response.headers["content-type"].startswith("application/sdp")
        assert response.text.startswith("v=0") and "a=sendonly" in response.text
        location = response.headers["location"]
        assert client.get(f"/api/sessions/{session_id}/stats").json()["viewers"] == 1
        assert client.delete(location).status_code == 204
        assert client.get(f"/api/sessions/{session_id}/stats").json()["viewers"] == 0
    finally:
        assert client.delete(f"/api/sessions/{session_id}").status_code == 204
    assert client.get(f"/api/sessions/{session_id}/stats").status_code == 404


# References -----------------------------------------------------------------------------
def test_reference_not_multipart(client: TestClient) -> None:
    response = client.post("/api/references", content=png(32, 32), headers={"Content-Type": "image/png"})
    assert response.status_code == 415 and "multipart/form-data" in detail(response)


def test_reference_missing_file_field(client: TestClient) -> None:
    response = client.post("/api/references", data={"picture": "x"}, files={"other": ("a.png", png(32, 32))})
    assert response.status_code == 422 and "'file'" in detail(response)


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"", 415, "upload is empty"),
        (b"%PDF-1.4 not an image at all" * 10, 415, "not an image"),
        (png(64, 64)[:80], 415, "corrupt or truncated"),
        (png_header_only(100_000, 100_000), 422, "dimensions"),
        (png_header_only(2000, 1000), 422, "at most 1000000 pixels"),
        (png(400, 8), 422, "aspect ratio"),
        (png(4, 4), 422, "at least 8 pixels"),
    ],
)
def test_reference_bad_images(client: TestClient, data: bytes, status: int, message: str) -> None:
    response = upload(client, data)
    assert response.status_code == status and message in detail(response), response.text


def test_reference_too_large(client: TestClient) -> None:
    # Over the limit in bytes: refused by its Content-Length before the body is read ...
    response = upload(client, b"\0" * (MAX_UPLOAD + 100_000))
    assert response.status_code == 413 and "limit" in detail(response)
    # ... or once read, when it is only a little over.
    response = upload(client, b"\0" * (MAX_UPLOAD + 10))
    assert response.status_code == 413 and f"the limit is {MAX_UPLOAD} bytes" in detail(response)


def test_reference_file_name_is_never_a_path(client: TestClient) -> None:
    response = upload(client, png(32, 32), name="../../etc/passwd")
    assert response.status_code == 201
