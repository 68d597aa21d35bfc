"""With a TURN secret set, the page and WHEP viewers get expiring credentials, never the secret."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from server.main import create_app
from tests.avatar_client import make_offer
from tests.server.settings import tiny_settings

TURN_URLS = ["turn:198.51.100.4:3478?transport=udp", "turn:198.51.100.4:3478?transport=tcp"]
TTL = 300


@pytest.fixture(scope="module")
def turn_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    secret = secrets.token_urlsafe(32)
    settings = tiny_settings(
        MAX_SESSIONS=1, ICE_SERVERS=[{"urls": "stun:stun.example:3478"}], TURN_URLS=TURN_URLS, TURN_SECRET=secret,
        TURN_TTL=TTL, RECORDINGS_DIR=tmp_path_factory.mktemp("recordings"),
    )
    with TestClient(create_app(settings)) as client:
        yield client, secret


def valid(secret: str, username: str, credential: str, now: float) -> bool:
    """coturn's check: the HMAC of the username under the secret, its expiry still ahead."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return hmac.compare_digest(base64.b64encode(digest).decode(), credential) and int(username.split(":")[0]) > now


def test_each_page_load_gets_fresh_expiring_credentials_and_never_the_secret(turn_client) -> None:
    client, secret = turn_client
    before = time.time()
    first = client.get("/api/config")
    assert secret not in first.text
    stun, turn = first.json()["ice_servers"]
    assert stun == {"urls": "stun:stun.example:3478"}
    assert turn["urls"] == TURN_URLS and valid(secret, turn["username"], turn["credential"], before)
    expiry = int(turn["username"].split(":")[0])
    assert before + TTL - 1 <= expiry <= time.time() + TTL  # expires TURN_TTL from now, not later
    assert not valid(secret, turn["username"], turn["credential"], expiry)
    # A later load mints anew: its expiry moves on with the clock.
    time.sleep(1.1)
    later = client.get("/api/config").json()["ice_servers"][1]
    assert int(later["username"].split(":")[0]) > expiry
    assert valid(secret, later["username"], later["credential"], time.time())


def test_whep_link_headers_carry_minted_credentials(turn_client) -> None:


    client, secret = turn_client
    webcam, viewer = asyncio.run(make_offer(video="sendrecv")), asyncio.run(make_offer(video="recvonly"))
    session = client.post("/api/offer", json={"sdp": webcam, "type": "offer"}).json()
    try:
        response = client.post(
            f"/whep/{session['view_id']}", params={"token": session["view_token"]}, content=viewer,
            headers={"Content-Type": "application/sdp"},
        )
        assert response.status_code == 201, response.text
        link = response.headers["link"]
        assert secret not in link and secret not in response.text
        links = re.findall(r'<([^>]+)>; rel="ice-server"(?:; username="([^"]+)"; credential="([^"]+)")?', link)
        assert [url for url, _, _ in links] == ["stun:stun.example:3478", *TURN_URLS]
        for _, username, credential in links[1:]:
            assert username.endswith(":whep") and valid(secret, username, credential, time.time())
    finally:
        client.delete(f"/api/sessions/{session['session_id']}")
