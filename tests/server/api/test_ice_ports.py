"""`RAIN_ICE_PORT_RANGE`: every candidate of every answer binds in the range; a full range is a
503 with `Retry-After`, never an answer the client would wait on forever; closing frees its ports."""

from __future__ import annotations

import socket

from aioice import Candidate
from fastapi.testclient import TestClient

from server.main import create_app
from tests.server.api.requests import detail
from tests.server.settings import tiny_settings


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("0.0.0.0", 0))
        return probe.getsockname()[1]


def candidate_ports(sdp: str) -> set[int]:
    return {Candidate.from_sdp(line[2:]).port for line in sdp.splitlines() if line.startswith("a=candidate:")}


def test_one_port_range_serves_one_connection_at_a_time(offers) -> None:
    # One port: a connection binds it once per host address, so a second connection finds it taken.
    port = _free_udp_port()
    settings = tiny_settings(MAX_SESSIONS=4, ICE_SERVERS=[], ICE_LOOPBACK=True, ICE_PORT_RANGE=f"{port}-{port}")
    with TestClient(create_app(settings)) as client:
        first = client.post("/api/offer", json={"sdp": offers["webcam"], "type": "offer"})
        assert first.status_code == 200, first.text
        session = first.json()
        assert candidate_ports(session["sdp"]) == {port}

        for refused in (
            client.post("/api/offer", json={"sdp": offers["webcam"], "type": "offer"}),
            client.post(f"/whep/{session['view_id']}?token={session['view_token']}", content=offers["receive_only"],
                        headers={"Content-Type": "application/sdp"}),
        ):
            assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0
            assert f"ICE range {port}-{port} is in use" in detail(refused)
        assert client.get("/api/health").json()["sessions"] == 1  # the refused one left nothing behind

        assert client.delete(f"/api/sessions/{session['session_id']}").status_code == 204
        again = client.post("/api/offer", json={"sdp": offers["webcam"], "type": "offer"})
        assert again.status_code == 200, again.text
        assert candidate_ports(again.json()["sdp"]) == {port}
        assert client.delete(f"/api/sessions/{again.json()['session_id']}").status_code == 204
