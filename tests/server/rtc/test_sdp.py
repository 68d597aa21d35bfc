"""SDP: the public address advertised beside the answer's host candidates."""

from __future__ import annotations

from aioice import Candidate

from server.rtc.sdp import advertise_public_ip

ANSWER = "\r\n".join([
    "v=0",
    "o=- 1 1 IN IP4 0.0.0.0",
    "s=-",
    "t=0 0",
    "m=video 40000 UDP/TLS/RTP/SAVPF 97",
    "c=IN IP4 10.0.0.5",
    "a=candidate:a1 1 udp 2130706431 10.0.0.5 40000 typ host",
    "a=candidate:a2 1 udp 2130706431 127.0.0.1 40001 typ host",
    "a=candidate:a3 1 udp 2130706431 fd00::5 40002 typ host",
    "a=candidate:a4 1 udp 1694498815 198.51.100.1 40003 typ srflx raddr 10.0.0.5 rport 40000",
    "a=end-of-candidates",
]) + "\r\n"


def test_public_ip_adds_a_reflexive_twin_per_host_candidate() -> None:
    sdp = advertise_public_ip(ANSWER, "203.0.113.7")
    lines = sdp.split("\r\n")
    twins = [Candidate.from_sdp(line[2:]) for line in lines
             if line.startswith("a=candidate:") and "203.0.113.7" in line]
    assert len(twins) == 1  # not for loopback, IPv6 or an existing srflx
    (twin,) = twins
    assert (twin.type, twin.port, twin.related_address, twin.related_port) == ("srflx", 40000, "10.0.0.5", 40000)
    host_line = lines.index("a=candidate:a1 1 udp 2130706431 10.0.0.5 40000 typ host")
    assert lines.index(f"a={twin.to_sdp()}") == host_line + 1
    assert all(line in sdp for line in ANSWER.split("\r\n"))  # nothing else changes
    assert advertise_public_ip(ANSWER, "2001:db8::1").count("2001:db8::1") == 1  # the IPv6 host candidate's twin
