"""Trickle ICE fragments (RFC 8840, as WHIP publishers PATCH them): what is parsed, what is refused."""

from __future__ import annotations

import pytest

from server.rtc.trickle import (
    MAX_FRAGMENT_CANDIDATES,
    FragmentError,
    StaleIceSession,
    check_if_match,
    ice_session_tag,
    parse_ice_fragment,
)

HOST = "candidate:1 1 udp 2130706431 192.0.2.10 50000 typ host"
SRFLX = "candidate:2 1 udp 1694498815 198.51.100.7 61000 typ srflx raddr 192.0.2.10 rport 50000"


def _offer(ufrag: str) -> str:
    return "\r\n".join([
        "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0",
        "m=video 9 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 0.0.0.0", "a=mid:0", "a=sendonly",
        f"a=ice-ufrag:{ufrag}", "a=ice-pwd:0123456789abcdefghijkl",
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=rtpmap:96 VP8/90000", "",
    ])


def test_a_fragment_gives_each_section_its_credentials_and_candidates() -> None:
    fragment = parse_ice_fragment("\r\n".join([
        "a=ice-options:trickle", "a=group:BUNDLE 0 1",
        "m=video 9 UDP/TLS/RTP/SAVPF 0", "a=mid:0", "a=ice-ufrag:abcd", "a=ice-pwd:secretsecretsecret",
        f"a={HOST}", f"a={SRFLX}",
        "m=audio 9 UDP/TLS/RTP/SAVPF 0", "a=mid:1", "a=end-of-candidates", "",
    ]))
    video, audio = fragment.media
    assert (video.mid, video.ufrag, video.pwd) == ("0", "abcd", "secretsecretsecret")
    assert [(c.ip, c.port, c.type, c.sdpMid) for c in video.candidates] == [
        ("192.0.2.10", 50000, "host", "0"), ("198.51.100.7", 61000, "srflx", "0"),
    ]
    assert audio.mid == "1" and audio.end and not audio.candidates and fragment.candidate_count == 2


def test_credentials_alone_are_a_fragment() -> None:
    """What an ICE restart sends (the session then refuses it unless the credentials are its own)."""
    fragment = parse_ice_fragment("a=ice-ufrag:new1\r\na=ice-pwd:newpasswordnewpassword\r\n")
    assert (fragment.ufrag, fragment.pwd, fragment.candidate_count) == ("new1", "newpasswordnewpassword", 0)


def test_bare_candidate_lines_belong_to_the_first_section() -> None:
    fragment = parse_ice_fragment(f"a={HOST}\na=end-of-candidates\n")
    assert fragment.media[0].index == 0 and fragment.media[0].mid is None
    assert fragment.candidate_count == 1 and fragment.ends_candidates


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("", "no candidate"),
        ("m=video 9 UDP/TLS/RTP/SAVPF 0\na=mid:0\n", "no candidate"),
        ("a=candidate:what is this\n", "line 1: not an ICE candidate"),
        ("m=video 9 UDP/TLS/RTP/SAVPF 0\nhello\n", "line 2 is not an SDP line"),
        (
            "".join(f"a=candidate:{i} 1 udp 1 192.0.2.1 {i+1} typ host\n" for i in range(MAX_FRAGMENT_CANDIDATES+1)),
            f"at most {MAX_FRAGMENT_CANDIDATES}",
        ),
    ],
)
def test_unusable_fragments_are_refused_naming_the_problem(body: str, named: str) -> None:
    with pytest.raises(FragmentError, match=named) as caught:
        parse_ice_fragment(body)
    assert len(str(caught.value)) < 300


def test_the_entity_tag_names_the_ice_session() -> None:
    tag = ice_session_tag(_offer("abcd"))
    assert tag.startswith('"') and tag.endswith('"') and "abcd" not in tag
    assert ice_session_tag(_offer("abcd")) == tag and ice_session_tag(_offer("efgh")) != tag
    check_if_match(None, tag)
    check_if_match(tag, tag)
    check_if_match(f'"other", {tag}', tag)
    check_if_match("*", tag)
    for stale in (ice_session_tag(_offer("efgh")), f"W/{tag}", tag.strip('"')):
        with pytest.raises(StaleIceSession):
            check_if_match(stale, tag)
