"""WHEP: the view token first, then the content type and the SDP; a good viewer comes and goes."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.server.api.requests import detail

SDP = {"Content-Type": "application/sdp"}


def test_whep_bad_requests(client: TestClient, session: dict, offers) -> None:
    whep, token = f"/whep/{session['view_id']}", session["view_token"]
    response = client.post(whep, content=offers["receive_only"], headers=SDP)
    assert response.status_code == 401 and "view token is required" in detail(response)
    response = client.post(f"{whep}?token=wrong", content=offers["receive_only"], headers=SDP)
    assert response.status_code == 403 and detail(response) == "invalid view token"
    response = client.post(whep, content=offers["receive_only"], headers={**SDP, "Authorization": "Bearer wrong"})
    assert response.status_code == 403
    response = client.post(f"{whep}?token={token}", json={"sdp": offers["receive_only"]})
    assert response.status_code == 415 and "application/sdp" in detail(response)
    response = client.post(f"{whep}?token={token}", content="not sdp", headers=SDP)
    assert response.status_code == 400 and "SDP does not parse" in detail(response)
    response = client.post(f"{whep}?token={token}", content=offers["audio_only"], headers=SDP)
    assert response.status_code == 400 and "accepts no video" in detail(response)
    response = client.post(f"{whep}?token={token}", content="v=0\r\n" * 100_000, headers=SDP)
    assert response.status_code == 413 and "limit" in detail(response)
    response = client.post(f"{whep}?token={token}", content=b"\xff\xfe", headers=SDP)
    assert response.status_code == 400 and "UTF-8" in detail(response)
    response = client.delete(f"{whep}/not-a-viewer")
    assert response.status_code == 404 and detail(response) == "unknown viewer"


def test_a_viewer_comes_and_goes(client: TestClient, session: dict, offers) -> None:
    view_id, token = session["view_id"], session["view_token"]
    stats = f"/api/sessions/{session['session_id']}/stats"
    # The token as a bearer token (what WHEP players send).
    response = client.post(
        f"/whep/{view_id}", content=offers["receive_only"], headers={**SDP, "Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 201 and response.headers["content-type"].startswith("application/sdp")
    assert response.text.startswith("v=0") and "a=sendonly" in response.text
    location = response.headers["location"]
    assert location.startswith(f"/whep/{view_id}/")
    assert client.get(stats).json()["viewers"] == 1
    assert client.get("/api/health").json()["viewers"] == 1
    assert client.delete(location).status_code == 204
    assert client.get(stats).json()["viewers"] == 0
    assert client.delete(location).status_code == 404


def test_the_view_reads_the_key_colour_with_the_view_token(client: TestClient, session: dict) -> None:
    view = f"/api/views/{session['view_id']}"
    # The tiny profile's default character is a plain grey card.
    assert client.get(f"{view}?token={session['view_token']}").json() == {"key_colour": "808080"}
    response = client.get(view, headers={"Authorization": f"Bearer {session['view_token']}"})
    assert response.json() == {"key_colour": "808080"}
    response = client.get(view)
    assert response.status_code == 401 and "view token is required" in detail(response)
    assert client.get(f"{view}?token=wrong").status_code == 403
    assert client.get(f"/api/views/nope?token={session['view_token']}").status_code == 404


def test_a_matte_viewer_starts_the_matte_and_its_leaving_stops_it(client: TestClient, session: dict, offers) -> None:
    view_id, token = session["view_id"], session["view_token"]
    stats = f"/api/sessions/{session['session_id']}/stats"
    response = client.post(f"/whep/{view_id}?token={token}&alpha=green", content=offers["receive_only"], headers=SDP)
    assert response.status_code == 422 and "alpha" in detail(response) and "matte" in detail(response)
    plain = client.post(f"/whep/{view_id}?token={token}&alpha=key", content=offers["receive_only"], headers=SDP)
    matte = client.post(f"/whep/{view_id}?token={token}&alpha=matte", content=offers["receive_only"], headers=SDP)
    assert plain.status_code == matte.status_code == 201
    assert client.get(stats).json()["viewers"] == 2 and client.get(stats).json()["matte_viewers"] == 1
    assert client.delete(matte.headers["location"]).status_code == 204
    assert client.get(stats).json()["matte_viewers"] == 0
    assert client.delete(plain.headers["location"]).status_code == 204
