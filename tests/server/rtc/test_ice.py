"""ICE: the configured servers only, loopback host candidates on demand, the port range's binding
(end to end: tests/server/api/test_ice_ports.py)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket

import aioice.ice
import pytest

from server.core.config import PortRange
from server.rtc.ice import PortAllocator, PortsExhausted, include_loopback, rtc_configuration, watch_port_exhaustion
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


def test_aioice_still_binds_host_candidates_where_the_port_range_wraps_it() -> None:
    """`use_port_range` wraps the loop that `aioice.ice` takes from its `asyncio` and serves the
    binds with a local port 0: an aioice that binds otherwise would escape the range unnoticed."""
    source = inspect.getsource(aioice.ice.Connection.get_component_candidates)
    assert "asyncio.get_running_loop()" in source and "local_addr=(address, 0)" in source
    assert aioice.ice.asyncio is asyncio


def test_port_allocator_takes_free_ports_in_turn_and_says_when_none_is_left() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        first = probe.getsockname()[1]
    allocator = PortAllocator(PortRange(first=first, last=first + 1))
    with contextlib.ExitStack() as stack:
        ports = [stack.enter_context(allocator.bind("127.0.0.1")).getsockname()[1] for _ in range(2)]
        assert sorted(ports) == [first, first + 1]
        with watch_port_exhaustion() as exhausted, pytest.raises(PortsExhausted, match=f"{first}-{first + 1}"):
            allocator.bind("127.0.0.1")
        assert len(exhausted) == 1
    with allocator.bind("127.0.0.1") as again:  # closed sockets give their ports back
        assert first <= again.getsockname()[1] <= first + 1
