"""A view link (view id + view token) watches and does nothing else; the session id stays private.

Every route about a session is taken from the app's own OpenAPI description, so that a route
added later is tried too.
"""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.server.api.requests import png, upload

SDP = {"Content-Type": "application/sdp"}


def _session_routes(client: TestClient) -> list[tuple[str, str]]:
    """(method, path template) of every route that names a session by its session id."""
    paths = client.get("/openapi.json").json()["paths"]
    return [(method.upper(), path) for path, methods in paths.items() if "{session_id}" in path for method in methods]


def _valid_body(client: TestClient, method: str, path: str) -> dict:
    """A body the route would take from the session's owner, so that only the id can be refused."""
    if path.endswith("/reference"):
        return {"json": {"reference_id": upload(client, png(32, 32)).json()["reference_id"]}}
    if path.endswith("/params"):
        return {"json": {"fps": 10}}
    if path == "/whip/{session_id}" and method == "PATCH":  # trickle ICE
        return {"content": b"a=end-of-candidates\r\n", "headers": {"Content-Type": "application/trickle-ice-sdpfrag"}}
    return {}


def test_the_view_credentials_control_nothing(client: TestClient, session: dict) -> None:
    view_id, token, session_id = session["view_id"], session["view_token"], session["session_id"]
    assert len({view_id, token, session_id}) == 3
    routes = _session_routes(client)
    # What the owner can do through the session id: at least stats, character, end, recordings.
    paths = {path for _, path in routes}
    assert {"/api/sessions/{session_id}", "/api/sessions/{session_id}/stats",
            "/api/sessions/{session_id}/reference", "/api/sessions/{session_id}/recordings"} <= paths
    for method, path in routes:
        body = _valid_body(client, method, path)
        # The view id, and the view token, in the session id's place; the token also as a bearer token.
        for stand_in in (view_id, token):
            url = re.sub(r"\{recording_id\}", "x", path.replace("{session_id}", stand_in))
            headers = {**body.get("headers", {}), "Authorization": f"Bearer {token}"}
            response = client.request(method, url, **{**body, "headers": headers}, params={"token": token})
            assert response.status_code in (403, 404), (method, url, response.status_code, response.text)
    # Nothing of it reached the session: still live, not recording, its character unchanged.
    stats = client.get(f"/api/sessions/{session_id}/stats")
    assert stats.status_code == 200 and stats.json()["reference_id"] == "default"
    assert client.get(f"/api/sessions/{session_id}/recordings").json() == {"recordings": []}


def test_the_view_link_watches_and_the_session_id_is_no_view_link(client: TestClient, session: dict, offers) -> None:
    view_id, token, session_id = session["view_id"], session["view_token"], session["session_id"]
    assert client.get(f"/api/views/{view_id}?token={token}").status_code == 200
    watching = client.post(f"/whep/{view_id}?token={token}", content=offers["receive_only"], headers=SDP)
    assert watching.status_code == 201 and session_id not in watching.headers["location"]
    # The session id (with the right view token) names no view: an OBS or WHEP link never needs it.
    assert client.get(f"/api/views/{session_id}?token={token}").status_code == 404
    response = client.post(f"/whep/{session_id}?token={token}", content=offers["receive_only"], headers=SDP)
    assert response.status_code == 404
    assert client.delete(watching.headers["location"]).status_code == 204
