"""One app for the API tests (TestClient, tiny profile with random weights, one session at most)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from server.main import create_app
from tests.avatar_client import make_offer
from tests.server.api.requests import MAX_UPLOAD
from tests.server.settings import tiny_settings


@pytest.fixture(scope="package")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = tiny_settings(
        MAX_SESSIONS=1, MAX_UPLOAD_BYTES=MAX_UPLOAD, MAX_REFERENCE_PIXELS=1_000_000, ICE_SERVERS=[], ICE_LOOPBACK=False,
        RECORDINGS_DIR=tmp_path_factory.mktemp("recordings"),
    )
    with TestClient(create_app(settings), raise_server_exceptions=True) as test_client:
        yield test_client


@pytest.fixture(scope="package")
def offers() -> dict[str, str]:
    async def build() -> dict[str, str]:
        return {
            "webcam": await make_offer(video="sendrecv"),
            "receive_only": await make_offer(video="recvonly"),
            "send_only": await make_offer(video="sendonly", audio="sendonly"),  # a WHIP publisher's
            "audio_only": await make_offer(video=None, audio=True),
            "webcam_and_microphone": await make_offer(video="sendrecv", audio=True),
            "viewer_with_audio": await make_offer(video="recvonly", audio="recvonly"),
        }

    return asyncio.run(build())


@pytest.fixture
def session(client: TestClient, offers) -> Iterator[dict]:
    """An open session (never connected): its `session_id` and `view_token`; deleted afterwards."""
    response = client.post("/api/offer", json={"sdp": offers["webcam"], "type": "offer"})
    assert response.status_code == 200, response.text
    answer = response.json()
    yield answer
    assert client.delete(f"/api/sessions/{answer['session_id']}").status_code == 204
    assert client.get(f"/api/sessions/{answer['session_id']}/stats").status_code == 404
