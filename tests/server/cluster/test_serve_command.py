"""`rain-avatar serve --ray` as a user runs it: a local Ray cluster started by the command, the
app answering, and SIGTERM ending it all with status 0 (what `docker compose stop` sends)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx

from tests.conftest import RANDOM_TINY, start_live_server, stop_live_server


def _children(pid: int) -> set[int]:
    """Processes whose parent is `pid` (the Ray cluster a driver started: GCS, raylet, ...)."""
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.add(int(entry.name))
    return children


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_serve_ray_runs_a_local_cluster_and_stops_it_on_sigterm(tmp_path: Path) -> None:
    server = start_live_server(tmp_path, model_args=(*RANDOM_TINY, "--ray"), RAIN_MAX_SESSIONS="3")
    try:
        health = httpx.get(f"{server.url}/api/health", timeout=30).json()
        (replica,) = health["replicas"]
        assert replica["max_sessions"] == 3 and replica["device"] == "cpu" and health["profile"] == "tiny"
        assert httpx.get(f"{server.url}/", timeout=30).status_code == 200  # the page, through Serve's proxy
        # An unknown session on a live replica: a 404 and Serve's one access line, not "Request
        # failed" with a traceback (the replica answers a refusal, it does not raise it).
        response = httpx.get(f"{server.url}/api/sessions/{replica['replica']}.unknown/stats", timeout=30)
        assert response.status_code == 404, response.text
        access_line = "GET /api/sessions/{session_id}/stats 404"  # Serve's, once the replica answered
        deadline = time.monotonic() + 30
        while access_line not in server.log() and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)  # the replica's lines come through Ray's log streaming too
        assert access_line in server.log()
        assert "Request failed" not in server.log() and "Traceback" not in server.log()
        assert server.log().count("stats refused: UnknownSession") == 1  # the replica's one line
        cluster = _children(server.process.pid)
        assert cluster, "no Ray processes under the command"
    finally:
        status = stop_live_server(server, timeout=120)
    assert status == 0, server.log()
    assert "removing the application" in server.log()
    assert "Traceback" not in server.log()
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in cluster) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [pid for pid in cluster if _alive(pid)], "the local Ray cluster outlived the command"
