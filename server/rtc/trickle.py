"""Trickle ICE: candidates a publisher found after its offer, sent as an SDP fragment (RFC 8840's
`application/trickle-ice-sdpfrag`) in a `PATCH` of its WHIP resource (RFC 9725, section 4.3.1).

A WHIP client that posts its offer before gathering every candidate (browser WHIP clients such
as Medooze's `whip-whep`) sends the rest this way; without them the server can reach the
publisher only at the addresses its checks come from. ICE restarts (new ICE credentials) are
not offered: the ICE session is the one the offer opened, named by an entity tag (`ETag` of the
201, `If-Match` of each `PATCH`), and a fragment with other credentials is refused with 422,
as the RFC has it for a session that trickles but does not restart.

Written here rather than taken from aiortc, which parses whole descriptions only; each
candidate goes to aiortc's public `RTCIceTransport.addRemoteCandidate`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from aiortc import RTCIceCandidate, RTCIceTransport, RTCPeerConnection
from aiortc.sdp import MediaDescription, SessionDescription, candidate_from_sdp

from rain_core.validation import shorten
from server.rtc.sdp import MAX_ECHO_CHARS

TRICKLE_MEDIA_TYPE = "application/trickle-ice-sdpfrag"
# Bounds on what one publisher makes the server check: a browser gathers a handful of candidates
# per network interface; these leave room for many interfaces and relays.
MAX_FRAGMENT_CANDIDATES = 32
MAX_REMOTE_CANDIDATES = 64


class FragmentError(ValueError):
    """A trickle ICE fragment the server cannot use; the message says why."""


class IceRestartRefused(ValueError):
    """New ICE credentials: an ICE restart, which sessions do not offer."""

    def __str__(self) -> str:
        return "ICE restarts are not supported: publish again (POST /whip) for a new ICE session"


class StaleIceSession(ValueError):
    """`If-Match` names another ICE session than the resource's."""

    def __str__(self) -> str:
        return "If-Match does not match this session's ICE session (its ETag)"


@dataclass
class MediaFragment:
    """One `m=` section of a fragment: its candidates, and ICE credentials where it names them."""

    mid: str | None = None
    index: int = 0
    ufrag: str | None = None
    pwd: str | None = None
    candidates: list[RTCIceCandidate] = field(default_factory=list)
    end: bool = False


@dataclass
class IceFragment:
    """A parsed fragment; credentials named at the session level apply to every section."""

    ufrag: str | None = None
    pwd: str | None = None
    media: list[MediaFragment] = field(default_factory=list)
    end: bool = False

    @property
    def candidate_count(self) -> int:
        return sum(len(m.candidates) for m in self.media)

    @property
    def ends_candidates(self) -> bool:
        """An `a=end-of-candidates` anywhere: the publisher has no more."""
        return self.end or any(m.end for m in self.media)


def ice_session_tag(sdp: str) -> str:
    """The entity tag of the ICE session a description opens (quoted, as `ETag` carries it)."""
    return _tag_of(SessionDescription.parse(sdp).media)


def _tag_of(media: list[MediaDescription]) -> str:
    """Derived from the first section's ICE username fragment, so that a restart changes it."""
    ufrag = (media[0].ice.usernameFragment if media else None) or ""
    return '"' + hashlib.sha256(ufrag.encode()).hexdigest()[:20] + '"'


def parse_ice_fragment(text: str) -> IceFragment:
    """An `application/trickle-ice-sdpfrag` body -> its credentials and candidates by section.

    Lines other than the ones trickle ICE uses (`a=group`, `a=ice-options`, ...) are skipped, as
    SDP parsers skip attributes they do not know; candidates before any `m=` line belong to the
    first section (some clients send only the candidate lines).
    """
    fragment = IceFragment()
    section: MediaFragment | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise FragmentError(f"line {number} is not an SDP line (x=...): {shorten(repr(line), MAX_ECHO_CHARS)}")
        if line.startswith("m="):
            section = MediaFragment(index=len(fragment.media))
            fragment.media.append(section)
            continue
        name, _, value = line[2:].partition(":") if line.startswith("a=") else ("", "", "")
        value = value.strip()
        where = section if section is not None else fragment
        if name == "mid" and section is not None:
            section.mid = value
        elif name == "ice-ufrag":
            where.ufrag = value
        elif name == "ice-pwd":
            where.pwd = value
        elif name == "end-of-candidates":
            where.end = True
        elif name == "candidate":
            if section is None:
                section = MediaFragment(index=0)
                fragment.media.append(section)
            try:
                candidate = candidate_from_sdp(value)
            except Exception:  # noqa: BLE001 - aiortc's parser raises whatever the line gives
                raise FragmentError(f"line {number}: not an ICE candidate: {shorten(value, MAX_ECHO_CHARS)}") from None
            candidate.sdpMid, candidate.sdpMLineIndex = section.mid, section.index
            section.candidates.append(candidate)
    if fragment.candidate_count > MAX_FRAGMENT_CANDIDATES:
        raise FragmentError(
            f"{fragment.candidate_count} candidates in one fragment; at most {MAX_FRAGMENT_CANDIDATES} are taken"
        )
    credentials = [fragment.ufrag, fragment.pwd, *(c for m in fragment.media for c in (m.ufrag, m.pwd))]
    if not fragment.candidate_count and not fragment.ends_candidates and not any(credentials):
        # An ICE restart's fragment may carry only credentials; anything else has to say something.
        raise FragmentError("the fragment has no candidate (a=candidate:...), ICE credentials or a=end-of-candidates")
    return fragment


def check_if_match(if_match: str | None, current_tag: str) -> None:
    """RFC 9725's precondition: the `If-Match` of a trickle `PATCH` names the current ICE session
    (strong comparison; `*` matches any). None sent: taken as the current session, which the
    fragment's credentials, when it has them, still have to match."""
    if if_match is None:
        return
    tags = [tag.strip() for tag in if_match.split(",")]
    if "*" not in tags and current_tag not in tags:
        raise StaleIceSession()


async def add_trickled_candidates(pc: RTCPeerConnection, fragment: IceFragment, if_match: str | None) -> int:
    """Give the peer connection's ICE agent a fragment's candidates (and its end-of-candidates)
    -> how many candidates it was given. The fragment must belong to the ICE session the offer
    opened: `If-Match` and its credentials are checked before any candidate is added."""
    remote = pc.remoteDescription
    assert remote is not None, "a session answers its offer before it is listed"
    offered = SessionDescription.parse(remote.sdp).media
    check_if_match(if_match, _tag_of(offered))
    _check_credentials(fragment.ufrag, fragment.pwd, offered[0])
    # Sections bundled together share one transport: their candidates are added, and bounded, per transport.
    candidates_for: dict[RTCIceTransport, list[RTCIceCandidate]] = {}
    for section in fragment.media:
        index = _offered_index(offered, section)
        _check_credentials(section.ufrag, section.pwd, offered[index])
        candidates_for.setdefault(_ice_transport(pc, offered, index), []).extend(section.candidates)
    for transport, candidates in candidates_for.items():
        if len(transport.getRemoteCandidates()) + len(candidates) > MAX_REMOTE_CANDIDATES:
            raise FragmentError(f"more than {MAX_REMOTE_CANDIDATES} remote candidates for one session")
    for transport, candidates in candidates_for.items():
        for candidate in candidates:
            await transport.addRemoteCandidate(candidate)
    if fragment.ends_candidates:
        # A fragment with no section ends every transport of the session.
        ended = list(candidates_for) or list(dict.fromkeys(
            t.receiver.transport.transport for t in pc.getTransceivers() if t.receiver.transport is not None
        ))
        for transport in ended:
            await transport.addRemoteCandidate(None)
    return fragment.candidate_count


def _check_credentials(ufrag: str | None, pwd: str | None, offered: MediaDescription) -> None:
    """Credentials other than the offer's ask for an ICE restart."""
    if ufrag not in (None, offered.ice.usernameFragment) or pwd not in (None, offered.ice.password):
        raise IceRestartRefused()


def _offered_index(offered: list[MediaDescription], section: MediaFragment) -> int:
    """The offer's section a fragment's section is about: by its `a=mid`, else by position."""
    if section.mid is not None:
        for index, media in enumerate(offered):
            if media.rtp.muxId == section.mid:
                return index
        raise FragmentError(f"the offer has no media section with a=mid:{shorten(section.mid, MAX_ECHO_CHARS)}")
    if section.index >= len(offered):
        raise FragmentError(f"the fragment has {section.index + 1} media sections; the offer had {len(offered)}")
    return section.index


def _ice_transport(pc: RTCPeerConnection, offered: list[MediaDescription], index: int) -> RTCIceTransport:
    """The ICE transport of the offer's section `index` (the sections of a BUNDLE group share one)."""
    mid = offered[index].rtp.muxId
    for transceiver in pc.getTransceivers():
        if transceiver.mid == mid and transceiver.receiver.transport is not None:
            return transceiver.receiver.transport.transport
    raise FragmentError(f"media section {index} of the offer carries no media here; it takes no candidates")
