"""ICE: the peer connections' configuration, loopback host candidates, a fixed UDP port range."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import types
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

from server.core.config import IceServer, PortRange

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def rtc_configuration(ice_servers: list[IceServer]) -> RTCConfiguration:
    """The peer connections' configuration: exactly the configured ICE servers.

    An explicit (possibly empty) list: aiortc's default configuration would add a public
    Google STUN server, which a private deployment or an offline test must not depend on.
    """
    return RTCConfiguration(
        iceServers=[RTCIceServer(urls=s.urls, username=s.username, credential=s.credential) for s in ice_servers]
    )


# aioice gathers host candidates from `aioice.ice.get_host_addresses`, which leaves out
# 127.0.0.1, and offers no option to keep it. On a host whose only interface is loopback (CI
# sandboxes, tests) the answer would then carry no candidate at all. With the setting on, the
# function is wrapped to add 127.0.0.1; `include_loopback(False)` puts the original back.
_original_get_host_addresses: Callable[[bool, bool], list[str]] | None = None


def include_loopback(enabled: bool) -> None:
    global _original_get_host_addresses
    if enabled and _original_get_host_addresses is None:
        original = aioice.ice.get_host_addresses

        def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
            addresses = original(use_ipv4, use_ipv6)
            if use_ipv4 and LOOPBACK not in addresses:
                addresses.append(LOOPBACK)
            return addresses

        _original_get_host_addresses = original
        aioice.ice.get_host_addresses = get_host_addresses
        logger.info("ICE: adding %s host candidates", LOOPBACK)
    elif not enabled and _original_get_host_addresses is not None:
        aioice.ice.get_host_addresses = _original_get_host_addresses
        _original_get_host_addresses = None


# A fixed UDP port range. aioice binds each host candidate's socket in
# `Connection.get_component_candidates` with `asyncio.get_running_loop().create_datagram_endpoint(
# ..., local_addr=(address, 0))`: port 0, the kernel picks, and aioice has no option to choose
# (aiortc/aioice#47). So, with a range set, the `asyncio` module that `aioice.ice` sees is
# wrapped: its running loop binds exactly that call (a local address with port 0, nothing else)
# to a free port of the range. This is what we rely on, as aioice 0.9 to 0.13 do it; a test
# reads aioice's source to check that it still does (tests/server/rtc/test_ice.py). STUN and
# TURN sockets (aioice.turn, connected to their server) and mDNS are not host candidates and
# are left alone. A bind the range cannot serve raises `PortsExhausted`, an `OSError`, which
# aioice logs and skips like any failed bind; `watch_port_exhaustion` tells the caller.
_exhaustion: ContextVar[list[PortsExhausted] | None] = ContextVar("rain_ice_port_exhaustion", default=None)


class PortsExhausted(OSError):
    """Every port of the ICE port range is taken; a new connection must wait for one to close."""


class PortAllocator:
    """Binds UDP sockets to free ports of a range, taking the ports in turn (a port just freed is
    the last to be taken again, so that a late packet of its old connection meets no new one)."""

    def __init__(self, ports: PortRange):
        self.ports = ports
        self._next = ports.first

    def bind(self, host: str) -> socket.socket:
        first, count = self.ports.first, len(self.ports)
        for offset in range(count):
            port = first + (self._next - first + offset) % count
            family, _, _, _, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST
            )[0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind(address)
            except OSError as exc:
                sock.close()
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
            self._next = first + (port - first + 1) % count
            return sock
        exhausted = PortsExhausted(f"every UDP port of the ICE range {self.ports} is in use; try again later")
        failures = _exhaustion.get()
        if failures is not None:
            failures.append(exhausted)
        raise exhausted


class _LoopInPortRange:
    """The running loop as `aioice.ice` sees it: host candidates bound by the allocator."""

    def __init__(self, loop: asyncio.AbstractEventLoop, allocator: PortAllocator):
        self._loop = loop
        self._allocator = allocator

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    async def create_datagram_endpoint(self, protocol_factory, local_addr=None, **kwargs):
        if local_addr is None or local_addr[1] != 0 or kwargs:
            return await self._loop.create_datagram_endpoint(protocol_factory, local_addr=local_addr, **kwargs)
        sock = self._allocator.bind(local_addr[0])
        try:
            return await self._loop.create_datagram_endpoint(protocol_factory, sock=sock)
        except BaseException:
            sock.close()
            raise


class _AsyncioInPortRange(types.ModuleType):
    """`asyncio` for `aioice.ice`: the same module, but its running loop binds within the range."""

    def __init__(self, allocator: PortAllocator):
        super().__init__("asyncio")
        self._allocator = allocator

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    def get_running_loop(self) -> _LoopInPortRange:
        return _LoopInPortRange(asyncio.get_running_loop(), self._allocator)


def use_port_range(ports: PortRange | None) -> None:
    """Bind every ICE host candidate within `ports` from now on; None: the kernel picks again."""
    if ports is None:
        aioice.ice.asyncio = asyncio
        return
    aioice.ice.asyncio = _AsyncioInPortRange(PortAllocator(ports))
    logger.info("ICE: host candidates bind UDP ports %s", ports)


@contextlib.contextmanager
def watch_port_exhaustion() -> Iterator[list[PortsExhausted]]:
    """Collects the binds that found the port range full while the block gathers candidates (the
    gathering tasks aiortc starts inherit this context)."""
    failures: list[PortsExhausted] = []
    token = _exhaustion.set(failures)
    try:
        yield failures
    finally:
        _exhaustion.reset(token)
