"""WebRTC plumbing around aiortc: ICE configuration, offer checks, the answer's candidates."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

import aioice.ice
from aioice import Candidate
from aioice.candidate import candidate_priority
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription

from server.core.config import IceServer

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class OfferError(ValueError):
    """An SDP offer the server cannot answer; the message says why."""


def rtc_configuration(ice_servers: list[IceServer]) -> RTCConfiguration:
    """The peer connections' configuration: exactly the configured ICE servers.

    An explicit (possibly empty) list: aiortc's default configuration would add a public
    Google STUN server, which a private deployment or an offline test must not depend on.
    """
    return RTCConfiguration(
        iceServers=[RTCIceServer(urls=s.urls, username=s.username, credential=s.credential) for s in ice_servers]
    )


# Loopback host candidates ------------------------------------------------------------
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


# Offers ------------------------------------------------------------------------------
def parse_offer(sdp: str, type_: str, *, need: str) -> RTCSessionDescription:
    """Check an offer before any peer connection exists.

    `need="send"`: the client must send video (the webcam); `need="receive"`: it must accept
    video (a viewer).
    """
    if type_ != "offer":
        raise OfferError(f"expected an SDP of type 'offer', got {type_!r}")
    if not sdp.lstrip().startswith("v=0"):
        raise OfferError("SDP does not parse: it must start with 'v=0'")
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # noqa: BLE001 - aiortc's parser raises whatever the line gives
        raise OfferError(f"SDP does not parse: {exc}") from None
    if not description.media:
        raise OfferError("SDP does not parse: no media section ('m=' line)")
    for media in description.media:
        if not media.ice.usernameFragment or not media.ice.password:
            raise OfferError(f"SDP {media.kind} section has no ICE credentials (a=ice-ufrag, a=ice-pwd)")
        if not media.dtls or not media.dtls.fingerprints:
            raise OfferError(f"SDP {media.kind} section has no DTLS fingerprint (a=fingerprint)")
    directions = {"send": ("sendrecv", "sendonly"), "receive": ("sendrecv", "recvonly")}[need]
    if not any(m.kind == "video" and m.direction in directions for m in description.media):
        what = "sends no video (the webcam track is missing)" if need == "send" else "accepts no video"
        raise OfferError(f"offer {what}")
    return RTCSessionDescription(sdp=sdp, type=type_)


async def answer_offer(pc: RTCPeerConnection, offer: RTCSessionDescription) -> None:
    """Set the remote offer; the caller then attaches its tracks and calls `create_answer`."""
    try:
        await pc.setRemoteDescription(offer)
    except Exception as exc:  # noqa: BLE001 - aiortc raises ValueError, OperationError, ...
        raise OfferError(f"offer rejected: {exc}") from None


async def create_answer(pc: RTCPeerConnection, public_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> str:
    """Create and set the answer; aiortc gathers every candidate first, so the SDP is complete."""
    try:
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:  # noqa: BLE001 - e.g. no codec in common
        raise OfferError(f"cannot answer the offer: {exc}") from None
    sdp = pc.localDescription.sdp
    return advertise_public_ip(sdp, public_ip) if public_ip is not None else sdp


# Public address ----------------------------------------------------------------------
def advertise_public_ip(sdp: str, public_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | str) -> str:
    """Add, after each host candidate of the public address's family, the same port on `public_ip`
    as a server-reflexive candidate.

    For a server behind a 1:1 NAT (a cloud VM, a container with host networking) that keeps UDP
    ports: clients outside reach the public address, clients on the LAN still have the host
    candidates. Loopback and link-local host candidates get no twin.
    """
    public = ipaddress.ip_address(str(public_ip))
    out: list[str] = []
    for line in sdp.splitlines():
        out.append(line)
        if not line.startswith("a=candidate:"):
            continue
        candidate = Candidate.from_sdp(line[len("a="):])
        try:
            host = ipaddress.ip_address(candidate.host)
        except ValueError:
            continue  # an mDNS name
        if (
            candidate.type != "host"
            or host.version != public.version
            or host.is_loopback
            or host.is_link_local
            or host == public
        ):
            continue
        twin = Candidate(
            foundation=f"{candidate.foundation}p",
            component=candidate.component,
            transport=candidate.transport,
            priority=candidate_priority(candidate.component, "srflx"),
            host=str(public),
            port=candidate.port,
            type="srflx",
            related_address=candidate.host,
            related_port=candidate.port,
        )
        out.append("a=" + twin.to_sdp())
    return "\r\n".join(out) + "\r\n"
