"""Recording over REST: start, stop, list, download, with the session id as the only key; every
wrong request a clear 4xx. (Through the control channel, end to end: tests/server/test_recording.py.)"""

from __future__ import annotations

import io
import time

import av
from fastapi.testclient import TestClient

from tests.server.api.requests import detail


def test_record_list_and_download(client: TestClient, offers) -> None:
    opened = client.post("/api/offer", json={"sdp": offers["webcam"], "type": "offer"}).json()
    base = f"/api/sessions/{opened['session_id']}/recordings"
    stop = client.post(f"{base}/stop")
    assert stop.status_code == 409 and detail(stop) == "this session is not recording"
    assert client.get(base).json() == {"recordings": []}

    started = client.post(base)
    assert started.status_code == 201, started.text
    recording = started.json()
    assert recording["state"] == "recording" and recording["url"] is None and not recording["audio"]
    again = client.post(base)
    assert again.status_code == 409 and "already recording" in detail(again)
    early = client.get(f"{base}/{recording['recording_id']}")
    assert early.status_code == 409 and "still under way" in detail(early)
    time.sleep(1)  # the never-connected session's avatar: its warming-up card, paced at 16 fps
    stopped = client.post(f"{base}/stop")
    assert stopped.status_code == 200, stopped.text
    finished = stopped.json()
    assert finished["state"] == "finished" and finished["stop_reason"] == "stopped" and finished["frames"] > 0
    assert client.get(f"/api/sessions/{opened['session_id']}/stats").json()["recording"]["state"] == "finished"
    assert client.get(base).json() == {"recordings": [finished]}

    download = client.get(finished["url"])
    assert download.status_code == 200 and download.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(download.content)) as container:
        assert sum(1 for _ in container.decode(video=0)) == finished["frames"]

    for wrong in (f"{base}/nope", f"{base}/..%2F..%2Fetc%2Fpasswd", f"{base}/{'x' * 5000}"):
        response = client.get(wrong)
        assert response.status_code == 404, (wrong, response.text)
    elsewhere = f"/api/sessions/not-the-session/recordings/{finished['recording_id']}"
    assert client.get(elsewhere).json()["detail"] == "unknown or expired session"

    # Ending the session finishes the recording under way. After it, the files are still listed
    # and downloadable (RECORDING_TTL), but nothing new can be recorded.
    assert client.post(base).status_code == 201
    time.sleep(0.5)
    assert client.delete(f"/api/sessions/{opened['session_id']}").status_code == 204
    first, second = client.get(base).json()["recordings"]
    assert first == finished and (second["state"], second["stop_reason"]) == ("finished", "the session ended")
    assert client.get(finished["url"]).status_code == 200 and client.get(second["url"]).status_code == 200
    closed = client.post(base)
    assert closed.status_code == 404 and detail(closed) == "unknown or expired session"


def test_recordings_of_unknown_sessions(client: TestClient) -> None:
    for response in (client.get("/api/sessions/nope/recordings"), client.post("/api/sessions/nope/recordings"),
                     client.post("/api/sessions/nope/recordings/stop"), client.get("/api/sessions/nope/recordings/x")):
        assert response.status_code == 404 and detail(response) == "unknown or expired session"
