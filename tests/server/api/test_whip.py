"""WHIP ingest over REST: the bearer token first, then the content type and the SDP; a publisher's
session ends with DELETE on its Location; its parameters change over REST with the control
channel's checks; the WHIP sessions are listed, with their ids, to the token's holder only."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from server.main import create_app
from tests.server.api.requests import detail
from tests.server.settings import tiny_settings

SDP = {"Content-Type": "application/sdp"}
TOKEN = "whip-test-token-0123456789"


@pytest.fixture(scope="module")
def whip_client() -> Iterator[TestClient]:
    """On a public address, with a token (a WHIP publisher and a webcam page at once)."""
    settings = tiny_settings(MAX_SESSIONS=2, ICE_SERVERS=[], ICE_LOOPBACK=False, WHIP_TOKEN=TOKEN, HOST="0.0.0.0")
    with TestClient(create_app(settings)) as client:
        yield client


def _links(response) -> dict[str, str]:
    """The `Link` header's targets by title (or rel)."""
    found = {}
    for link in response.headers.get("link", "").split(", "):
        target = re.match(r"<([^>]+)>", link)
        title = re.search(r'title="([^"]+)"', link) or re.search(r'rel="([^"]+)"', link)
        if target and title:
            found[title.group(1)] = target.group(1)
    return found


def test_whip_refuses_without_the_token(whip_client: TestClient, offers) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": "Bearer " + "x" * 400}):
        response = whip_client.post("/whip", content=offers["send_only"], headers={**SDP, **headers})
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"].startswith("Bearer") and "bearer token" in detail(response)
    assert whip_client.delete("/whip/anything").status_code == 401
    assert whip_client.get("/api/health").json()["sessions"] == 0


def test_whip_bad_requests(whip_client: TestClient, offers) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    response = whip_client.post("/whip", json={"sdp": offers["send_only"]}, headers=auth)
    assert response.status_code == 415 and "application/sdp" in detail(response)
    for body, message in [("not sdp", "SDP does not parse"), ("v=0\r\nm=video 9 junk\r\n", "SDP does not parse"),
                          (offers["receive_only"], "sends no video"), (b"\xff\xfe", "UTF-8")]:
        response = whip_client.post("/whip", content=body, headers={**SDP, **auth})
        assert response.status_code == 400 and message in detail(response), response.text
        assert len(detail(response)) < 300  # bounded, whatever the offer held
    response = whip_client.post("/whip", content="v=0\r\n" * 100_000, headers={**SDP, **auth})
    assert response.status_code == 413
    assert whip_client.delete("/whip/nope", headers=auth).status_code == 404
    assert whip_client.get("/api/health").json()["sessions"] == 0


def test_a_publisher_comes_goes_and_sets_params_over_rest(whip_client: TestClient, offers) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    response = whip_client.post("/whip", content=offers["send_only"], headers={**SDP, **auth})
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/sdp") and response.text.startswith("v=0")
    # The publisher receives nothing back: its section is answered recvonly.
    assert "a=recvonly" in response.text and "a=sendrecv" not in response.text
    location, links = response.headers["location"], _links(response)
    session = links["session"]
    assert location.startswith("/whip/") and session.endswith(location.removeprefix("/whip/"))
    # The view links watch, and do not carry the session id.
    session_id = location.removeprefix("/whip/")
    assert session_id not in links["obs-view"] and session_id not in links["whep"]
    assert whip_client.get(links["obs-view"]).status_code == 200
    assert whip_client.post(links["whep"], content=offers["receive_only"], headers=SDP).status_code == 201

    params = f"{session}/params"
    good = whip_client.patch(params, json={"fps": 10, "calibration": {"eye_height_ratio": 2.5}})
    assert good.status_code == 200 and good.json()["fps"] == 10
    assert good.json()["calibration"]["eye_height_ratio"] == 2.5
    for body, field in [({"crop_ratio": 7}, "crop_ratio"), ({"fps": 1000}, "fps"), ({"fps": "fast"}, "fps"),
                        ({"no_such_setting": 1}, "no_such_setting")]:
        bad = whip_client.patch(params, json=body)
        assert bad.status_code == 422 and field in detail(bad), bad.text
    assert whip_client.patch(params, json=[1]).status_code == 422  # not an object
    assert whip_client.patch(params, content=b"{", headers={"Content-Type": "application/json"}).status_code == 400
    assert whip_client.get(f"{session}/stats").json()["params"]["fps"] == 10  # refused changes left nothing

    # The resource takes trickle ICE fragments only, from the token's holder.
    trickle = {**auth, "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": response.headers["etag"]}
    assert whip_client.patch(location, headers=auth).status_code == 415
    assert whip_client.patch(location, content=b"a=end-of-candidates\r\n", headers=trickle).status_code == 204
    assert whip_client.patch(location, content=b"a=end-of-candidates\r\n",
                             headers={**trickle, "Authorization": ""}).status_code == 401
    assert whip_client.patch(location, content=b"\xff", headers=trickle).status_code == 400
    assert whip_client.patch("/whip/nope", content=b"a=end-of-candidates\r\n", headers=trickle).status_code == 404
    assert whip_client.delete(location).status_code == 401  # ending it needs the token too
    assert whip_client.delete(location, headers=auth).status_code == 204
    assert whip_client.get(f"{session}/stats").status_code == 404
    assert whip_client.patch(params, json={"fps": 10}).status_code == 404
    assert whip_client.delete(location, headers=auth).status_code == 404


def test_a_publisher_cannot_trickle_without_end(whip_client: TestClient, offers) -> None:
    """Each fragment is bounded, and so is what a session takes in all: a publisher cannot make the
    server check an endless list of addresses."""
    from server.rtc.trickle import MAX_FRAGMENT_CANDIDATES

    auth = {"Authorization": f"Bearer {TOKEN}"}
    # As a trickling publisher offers: more candidates to come (after an end-of-candidates the agent ignores them).
    trickling = "".join(line for line in offers["send_only"].splitlines(keepends=True)
                        if not line.startswith("a=end-of-candidates"))
    response = whip_client.post("/whip", content=trickling, headers={**SDP, **auth})
    assert response.status_code == 201, response.text
    location, session = response.headers["location"], _links(response)["session"]
    trickle = {**auth, "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": response.headers["etag"]}
    try:
        port = iter(range(40000, 50000))  # every candidate a new address (the agent drops repeats)

        def fragment(count: int) -> str:
            return "".join(f"a=candidate:{n} 1 udp 1 192.0.2.1 {next(port)} typ host\r\n" for n in range(count))

        oversized = whip_client.patch(location, content=fragment(MAX_FRAGMENT_CANDIDATES + 1), headers=trickle)
        assert oversized.status_code == 400 and f"at most {MAX_FRAGMENT_CANDIDATES}" in detail(oversized)
        taken, refused = 0, None
        while refused is None and taken < 100 * MAX_FRAGMENT_CANDIDATES:
            answered = whip_client.patch(location, content=fragment(MAX_FRAGMENT_CANDIDATES), headers=trickle)
            if answered.status_code == 204:
                taken += MAX_FRAGMENT_CANDIDATES
            else:
                refused = answered
        assert refused is not None and refused.status_code == 400, "a session took every candidate sent"
        assert "remote candidates for one session" in detail(refused) and len(detail(refused)) < 300
        # The refused fragment added nothing, and the session goes on.
        stats = whip_client.get(f"{session}/stats").json()
        assert stats["trickled_candidates"] == taken and taken > 0
    finally:
        assert whip_client.delete(location, headers=auth).status_code == 204


def test_whip_is_refused_on_a_public_address_without_a_token(offers) -> None:
    settings = tiny_settings(MAX_SESSIONS=1, ICE_SERVERS=[], ICE_LOOPBACK=False, HOST="0.0.0.0")
    with TestClient(create_app(settings)) as client:
        response = client.post("/whip", content=offers["send_only"], headers=SDP)
        assert response.status_code == 403 and "RAIN_WHIP_TOKEN" in detail(response)
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
            listing = client.get("/api/whip/sessions", headers=headers)
            assert listing.status_code == 403 and "RAIN_WHIP_TOKEN" in detail(listing)


def test_the_whip_sessions_are_listed_to_the_token_holder_only(whip_client: TestClient, offers) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    published = whip_client.post("/whip", content=offers["send_only"], headers={**SDP, **auth})
    assert published.status_code == 201, published.text
    page = whip_client.post("/api/offer", json={"sdp": offers["webcam"], "type": "offer"})
    assert page.status_code == 200, page.text
    session_id, page_session = published.headers["location"].removeprefix("/whip/"), page.json()
    try:
        # Without the token, a wrong one, or a view token in its place: 401, and no session id in sight.
        view_token = page_session["view_token"]
        for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": f"Bearer {view_token}"}, {"Authorization": "Bearer " + "x" * 400}):
            refused = whip_client.get("/api/whip/sessions", headers=headers)
            assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
            assert session_id not in refused.text and len(refused.text) < 300, refused.text
        assert whip_client.get("/api/whip/sessions", headers=auth).status_code == 200
        assert whip_client.get(f"/api/whip/sessions?token={view_token}").status_code == 401

        listing = whip_client.get("/api/whip/sessions", headers=auth)
        assert listing.headers["cache-control"] == "no-store"
        sessions = listing.json()["sessions"]
        # The WHIP publisher's session only: the webcam page's id belongs to its page.
        assert [s["session_id"] for s in sessions] == [session_id]
        assert page_session["session_id"] not in listing.text
        listed = sessions[0]
        # The same links as the WHIP answer's Link header.
        assert listed["links"] == {title: _links(published)[title] for title in ("obs-view", "whep", "session")}
        assert listed["links"]["whep"] == f"/whep/{listed['view_id']}?token={listed['view_token']}"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", listed["started"])
        assert listed["viewers"] == 0 and listed["frames"] == {"camera": 0, "engine_out": 0}
        assert listed["recording"] is False and listed["paused"] is False and listed["fps"]["target"] > 0
        # What the list gives controls the session, over REST.
        assert whip_client.patch(f"{listed['links']['session']}/params", json={"fps": 12}).status_code == 200
        assert whip_client.get("/api/whip/sessions", headers=auth).json()["sessions"][0]["fps"]["target"] == 12
    finally:
        assert whip_client.delete(f"/api/sessions/{page_session['session_id']}").status_code == 204
        assert whip_client.delete(f"/whip/{session_id}", headers=auth).status_code == 204
    assert whip_client.get("/api/whip/sessions", headers=auth).json() == {"sessions": []}


def test_the_whip_sessions_list_is_open_on_loopback_without_a_token(client: TestClient, offers) -> None:
    # The API tests' server: loopback HOST, no RAIN_WHIP_TOKEN, as for publishing.
    assert client.get("/api/whip/sessions").json() == {"sessions": []}
    published = client.post("/whip", content=offers["send_only"], headers=SDP)
    assert published.status_code == 201, published.text
    location = published.headers["location"]
    try:
        sessions = client.get("/api/whip/sessions").json()["sessions"]
        assert [s["session_id"] for s in sessions] == [location.removeprefix("/whip/")]
    finally:
        assert client.delete(location).status_code == 204
    assert client.get("/api/whip/sessions").json() == {"sessions": []}


def test_bad_params_answer_alike_at_the_offer_and_over_rest(whip_client: TestClient, offers) -> None:
    """One status and one body for a bad parameter, whether it comes with the offer or later."""
    opened = whip_client.post("/api/offer", json={"sdp": offers["webcam"], "type": "offer"})
    session_id = opened.json()["session_id"]
    try:
        for params in ({"fps": 1000}, {"crop_ratio": 7}, {"mode": "dance"}, {"wings": True}, "fast"):
            at_offer = whip_client.post("/api/offer", json={"sdp": offers["webcam"], "type": "offer", "params": params})
            over_rest = whip_client.patch(f"/api/sessions/{session_id}/params", json=params)
            assert at_offer.status_code == over_rest.status_code == 422, (at_offer.text, over_rest.text)
            if isinstance(params, dict):  # the body's own field is named at the offer (`params: ...`) only
                assert at_offer.json() == over_rest.json(), (at_offer.text, over_rest.text)
                assert next(iter(params)) in detail(over_rest)
    finally:
        assert whip_client.delete(f"/api/sessions/{session_id}").status_code == 204


def test_the_token_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="WHIP_TOKEN must be 16"):
        tiny_settings(WHIP_TOKEN="short")


def test_whip_and_whep_endpoints_answer_options(whip_client: TestClient) -> None:
    """RFC 9725 and the WHEP draft: an endpoint answers OPTIONS with what it takes (Eyevinn's WHIP
    client sends one, with its token, before its offer); no token is needed, nothing is opened."""
    for path in ("/whip", "/whep/some-view"):
        response = whip_client.options(path)
        assert response.status_code == 200 and response.headers["accept-post"] == "application/sdp"
        assert response.headers["allow"] == "OPTIONS, POST" and "access-control-allow-origin" not in response.headers
    assert whip_client.get("/api/health").json()["sessions"] == 0


def test_a_page_on_an_allowed_origin_may_send_options_and_read_the_links() -> None:
    """Across origins the client's OPTIONS is itself preflighted, so CORS allows the method; the
    answers expose Location and Link, which the clients read."""
    origin = "http://localhost:5173"
    client = TestClient(create_app(tiny_settings(WHIP_TOKEN=TOKEN, CORS_ORIGINS=[origin])))  # no model needed
    for path in ("/whip", "/whep/some-view"):
        asks = {"Access-Control-Request-Method": "OPTIONS", "Access-Control-Request-Headers": "authorization"}
        preflight = client.options(path, headers={"Origin": origin, **asks})
        assert preflight.status_code == 200, preflight.text
        assert "OPTIONS" in preflight.headers["access-control-allow-methods"]
        response = client.options(path, headers={"Origin": origin, "Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200 and response.headers["accept-post"] == "application/sdp"
        assert response.headers["access-control-allow-origin"] == origin
        assert {"Location", "Link"} <= set(response.headers["access-control-expose-headers"].split(", "))
