"""SDP: checking an offer before any peer connection exists, answering it, and advertising a
public address beside the answer's host candidates."""

from __future__ import annotations

import ipaddress

from aioice import Candidate
from aioice.candidate import candidate_priority
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription

from rain_core.validation import shorten
from server.rtc.ice import watch_port_exhaustion

# The longest SDP offer read (a webcam or viewer offer is a few kB; this leaves room for many
# codecs and candidates), for the offer's JSON field and WHEP's `application/sdp` body alike.
MAX_SDP_BYTES = 200_000
# What an error quotes of the offer (aiortc's parser errors quote the offending line).
MAX_ECHO_CHARS = 120


class OfferError(ValueError):
    """An SDP offer the server cannot answer; the message says why."""


def parse_offer(sdp: str, type_: str, *, need: str) -> RTCSessionDescription:
    """Check an offer before any peer connection exists.

    `need="send"`: the client must send video (the webcam); `need="receive"`: it must accept
    video (a viewer).
    """
    if type_ != "offer":
        raise OfferError(f"expected an SDP of type 'offer', got {shorten(repr(type_), MAX_ECHO_CHARS)}")
    if not sdp.lstrip().startswith("v=0"):
        raise OfferError("SDP does not parse: it must start with 'v=0'")
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # noqa: BLE001 - aiortc's parser raises whatever the line gives
        raise OfferError(f"SDP does not parse: {shorten(str(exc), MAX_ECHO_CHARS)}") from None
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


def offer_directions(sdp: str) -> dict[str, list[str]]:
    """The direction of each media section of a checked offer, by kind, in order."""
    directions: dict[str, list[str]] = {}
    for media in SessionDescription.parse(sdp).media:
        directions.setdefault(media.kind, []).append(media.direction or "sendrecv")
    return directions


async def answer_offer(pc: RTCPeerConnection, offer: RTCSessionDescription) -> None:
    """Set the remote offer; the caller then attaches its tracks and calls `create_answer`."""
    try:
        await pc.setRemoteDescription(offer)
    except Exception as exc:  # noqa: BLE001 - aiortc raises ValueError, OperationError, ...
        raise OfferError(f"offer rejected: {shorten(str(exc), MAX_ECHO_CHARS)}") from None


async def create_answer(pc: RTCPeerConnection, public_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> str:
    """Create and set the answer; aiortc gathers every candidate first, so the SDP is complete.

    Raises `PortsExhausted` when the ICE port range had no port left for a candidate: an answer
    without it could leave the client waiting for a connection that never comes.
    """
    with watch_port_exhaustion() as exhausted:
        try:
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # noqa: BLE001 - e.g. no codec in common
            raise OfferError(f"cannot answer the offer: {shorten(str(exc), MAX_ECHO_CHARS)}") from None
    if exhausted:
        raise exhausted[0]
    sdp = pc.localDescription.sdp
    return advertise_public_ip(sdp, public_ip) if public_ip is not None else sdp


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
