"""A start in seconds, and fast paths that check themselves, in the real server (issue 26).

`rain-avatar serve` with the device's default fast paths (on this CPU: compiling too) answers and
streams while it compiles in the background; health and /metrics say what is being prepared. A
compiler cache the server cannot use makes the compile path fail at warm-up: the server switches it
off, says which path and why, and serves on.
"""

from __future__ import annotations

import httpx
import pytest

from tests.avatar_client import WebcamClient, eventually
from tests.conftest import start_live_server, stop_live_server

FIRST_FRAME_TIMEOUT = 120  # seconds; generous for a loaded 2-core machine, never a speed assertion


async def _streams(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        client = WebcamClient(http)
        try:
            response = await client.open()
            assert response.status_code == 200, response.text
            await eventually(lambda: client.avatar.count > 3, timeout=FIRST_FRAME_TIMEOUT, what="avatar frames")
        finally:
            await client.close()


@pytest.fixture
def default_server(tmp_path):
    # The defaults, compiling included (the other live servers of the tests switch compiling off).
    server = start_live_server(tmp_path, RAIN_COMPILE="auto", RAIN_COMPILE_CACHE_DIR=str(tmp_path / "cache"))
    yield server
    stop_live_server(server)


async def test_the_server_answers_and_streams_while_it_compiles(default_server):
    health = httpx.get(f"{default_server.url}/api/health", timeout=10).json()
    fast_paths = health["fast_paths"]
    # Compiling is on by default on a CPU now that it runs behind the server, and checked there.
    assert fast_paths["paths"]["compile"] or "compile" in fast_paths["dropped"]
    assert "compile" in fast_paths["checked"]
    preparation = fast_paths["preparation"]
    assert preparation["preparing"].startswith("compiling")
    assert set(preparation["ready_batch_sizes"]) | set(preparation["pending_batch_sizes"]) <= {1}
    metrics = httpx.get(f"{default_server.url}/metrics", timeout=10).text
    assert 'rain_fast_path{path="compile"}' in metrics and "rain_fast_path_ready_batch_sizes" in metrics
    # A session streams whether or not its batch size is compiled yet (eager meanwhile).
    await _streams(default_server.url)
    # What the server is preparing, in its log.
    assert "compiling for batch sizes [1] in the background" in default_server.log()


async def test_a_compile_path_that_fails_at_warm_up_is_dropped_and_the_server_serves(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the compiler cache should be")
    server = start_live_server(tmp_path, RAIN_COMPILE="auto", RAIN_COMPILE_CACHE_DIR=str(blocker / "cache"))
    try:
        async def dropped() -> bool:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
                status = (await http.get("/api/health")).json()["fast_paths"]
            return status["preparation"]["done"]

        await eventually(dropped, timeout=120, what="the background preparation to end")
        status = httpx.get(f"{server.url}/api/health", timeout=10).json()["fast_paths"]
        assert status["dropped"] == ["compile"] and not status["paths"]["compile"]
        (note,) = [n for n in status["notes"] if n.startswith("compile")]
        assert "dropped at warm-up" in note and "not-a-directory" in note
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        assert 'rain_fast_path_dropped{path="compile"} 1.0' in metrics
        assert "fast path compile switched off" in server.log()
        await _streams(server.url)
    finally:
        stop_live_server(server)


def test_a_path_asked_for_that_fails_stops_the_start(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the compiler cache should be")
    with pytest.raises(RuntimeError, match="compile"):
        start_live_server(tmp_path, RAIN_COMPILE="on", RAIN_COMPILE_CACHE_DIR=str(blocker / "cache"))
