"""A session's resources: stats, the character, the end; unknown sessions are 404 everywhere."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.server.api.requests import detail, png, upload


def test_unknown_session(client: TestClient) -> None:
    for response in (
        client.get("/api/sessions/nope/stats"),
        client.put("/api/sessions/nope/reference", json={"reference_id": "x"}),
        client.delete("/api/sessions/nope"),
        client.post("/whep/nope?token=x", content="v=0\r\n", headers={"Content-Type": "application/sdp"}),
        client.delete("/whep/nope/viewer"),
    ):
        assert response.status_code == 404 and detail(response) == "unknown or expired session"


def test_stats_and_character_of_a_live_session(client: TestClient, session: dict) -> None:
    session_id = session["session_id"]
    stats = client.get(f"/api/sessions/{session_id}/stats").json()
    assert stats["frames"]["camera"] == 0 and stats["viewers"] == 0
    bad = client.put(f"/api/sessions/{session_id}/reference", json={"reference_id": "nope"})
    assert bad.status_code == 404 and detail(bad) == "unknown or expired reference_id"
    bad = client.put(
        f"/api/sessions/{session_id}/reference", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert bad.status_code == 400 and detail(bad).startswith("malformed JSON")
    bad = client.put(f"/api/sessions/{session_id}/reference", json={"reference_id": "x" * 100_000})
    assert bad.status_code == 413 and "limit" in detail(bad)
    reference_id = upload(client, png(64, 64)).json()["reference_id"]
    good = client.put(f"/api/sessions/{session_id}/reference", json={"reference_id": reference_id})
    assert good.status_code == 200 and good.json() == {"reference_id": reference_id}
    assert client.get(f"/api/sessions/{session_id}/stats").json()["reference_id"] == reference_id


def test_control_messages_over_rest(client: TestClient, session: dict) -> None:
    """`POST /api/sessions/{id}/control`: the control channel's messages and replies, for clients
    without the channel; what the channel refuses is a 422 naming the problem."""
    url = f"/api/sessions/{session['session_id']}/control"
    paused = client.post(url, json={"type": "pause"})
    assert paused.status_code == 200 and paused.json()["ok"] and paused.json()["paused"]
    assert client.get(f"/api/sessions/{session['session_id']}/stats").json()["paused"]
    changed = client.post(url, json={"id": 7, "type": "params", "params": {"fps": 9}})
    assert changed.status_code == 200 and changed.json()["id"] == 7 and changed.json()["params"]["fps"] == 9
    assert client.post(url, json={"type": "resume"}).json()["paused"] is False
    for body, named in (
        ({"type": "params", "params": {"fps": 10_000}}, "fps"),
        ({"type": "launch"}, "launch"),
        (b"{", "JSON"),
        (b"\xff\xfe", "UTF-8"),
    ):
        refused = client.post(url, content=body if isinstance(body, bytes) else None, json=None
                              if isinstance(body, bytes) else body)
        assert refused.status_code == 422 and named in detail(refused), refused.text
        assert len(refused.content) < 1024
    too_big = client.post(url, json={"type": "params", "params": {"x": "y" * 100_000}})
    assert too_big.status_code == 413
    assert client.post("/api/sessions/nope/control", json={"type": "pause"}).status_code == 404
