"""ICE: the configured servers only, and loopback host candidates on demand."""

from __future__ import annotations

import aioice.ice

from server.rtc.ice import include_loopback, rtc_configuration
from tests.server.settings import tiny_settings


def test_rtc_configuration_has_exactly_the_configured_servers() -> None:
    assert rtc_configuration([]).iceServers == []  # never aiortc's default public STUN server
    settings = tiny_settings(ICE_SERVERS=[{"urls": "turn:t.example", "username": "u", "credential": "p"}])
    (server,) = rtc_configuration(settings.ICE_SERVERS).iceServers
    assert (server.urls, server.username, server.credential) == ("turn:t.example", "u", "p")


def test_include_loopback_adds_and_removes_127_0_0_1() -> None:
    original = aioice.ice.get_host_addresses
    try:
        include_loopback(True)
        include_loopback(True)  # idempotent
        assert "127.0.0.1" in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
        assert "127.0.0.1" not in aioice.ice.get_host_addresses(use_ipv4=False, use_ipv6=True)
    finally:
        include_loopback(False)
    assert aioice.ice.get_host_addresses is original
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
