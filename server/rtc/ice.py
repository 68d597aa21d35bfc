"""ICE: the peer connections' configuration, and loopback host candidates."""

from __future__ import annotations

import logging
from collections.abc import Callable

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

from server.core.config import IceServer

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
