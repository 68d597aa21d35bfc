"""TURN credentials minted from the shared secret: what coturn's `use-auth-secret` checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

import pytest

from server.rtc.ice import rtc_configuration
from server.rtc.turn import ice_servers, mint_turn_credential
from tests.server.settings import tiny_settings


def coturn_check(secret: str, username: str, credential: str, now: float) -> bool:
    """What coturn does with a REST API credential: the expiry ahead, the HMAC of the username."""
    expiry, _, _ = username.partition(":")
    expected = base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()
    return int(expiry) > now and hmac.compare_digest(expected, credential)


def test_minted_credential_is_the_hmac_of_an_expiring_username() -> None:
    secret, now = secrets.token_hex(16), time.time()
    username, credential = mint_turn_credential(secret, "page", 600, now=now)
    expiry, name = username.split(":")
    assert name == "page" and int(expiry) == int(now) + 600
    assert coturn_check(secret, username, credential, now)
    assert not coturn_check(secret, username, credential, now + 601)  # expired
    assert not coturn_check(secrets.token_hex(16), username, credential, now)  # another secret
    # The credential is bound to its username: a later expiry written in is refused.
    forged = f"{int(expiry) + 86400}:page"
    assert not coturn_check(secret, forged, credential, now)


@pytest.mark.parametrize("name", ["", "a:b", "x" * 65, "page load"])
def test_names_that_would_break_the_username_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="TURN credential name"):
        mint_turn_credential("s" * 16, name, 60)


def test_ice_servers_keep_the_static_ones_and_mint_fresh_turn_credentials() -> None:
    secret = secrets.token_urlsafe(24)
    urls = ["turn:198.51.100.4:3478?transport=udp", "turns:turn.example:5349?transport=tcp"]
    settings = tiny_settings(
        ICE_SERVERS=[{"urls": "stun:stun.example:3478"}], TURN_URLS=urls, TURN_SECRET=secret, TURN_TTL=120
    )
    before = time.time()
    static, turn = ice_servers(settings, "server")
    assert static.urls == "stun:stun.example:3478" and static.username is None
    assert turn.urls == urls and coturn_check(secret, turn.username, turn.credential, before)
    assert before + 120 - 1 <= int(turn.username.split(":")[0]) <= time.time() + 120
    assert secret not in turn.model_dump_json()
    # The server's own connections use them too.
    _, server_turn = rtc_configuration(ice_servers(settings, "server")).iceServers
    assert coturn_check(secret, server_turn.username, server_turn.credential, before)
    # Without a secret: the static servers, as they are.
    assert ice_servers(tiny_settings(ICE_SERVERS=[{"urls": "stun:stun.example:3478"}]), "page") == [static]
