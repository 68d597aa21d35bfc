"""Sessions that come and go leave nothing behind; SIGTERM closes every peer connection cleanly."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx

from tests.avatar_client import WebcamClient, eventually
from tests.conftest import start_live_server, stop_live_server

WARM_UP_ROUNDS, ROUNDS = 2, 4
SESSIONS_PER_ROUND = 3
# Allowance over the baseline taken after the warm-up: allocator slack and caches that fill with
# use (torch's kernels for each batch shape that happens to occur; measured over 16 rounds of 3
# sessions, RSS rose ~50-70 MB in the first five and then stayed flat). The precise leak check is
# the server's count of session and engine objects still in memory, which must reach zero.
RSS_SLACK_BYTES = 96 * 1024 * 1024
# The server gives memory back a second after sessions end (`server.sessions.memory.MemoryRelease`).
SETTLE_SECONDS = 3
# Python threads live in bounded pools that grow on demand and stay: the main thread, the model
# worker, the driving pool (RAIN_DRIVING_THREADS, default 4) and the event loop's default
# executor (aiortc's encoders: min(32, cores + 4)), plus one for the HTTP stack's own pool.
PYTHON_THREADS_BOUND = 3 + 4 + min(32, (os.cpu_count() or 1) + 4)


async def _health(http: httpx.AsyncClient) -> dict:
    return (await http.get("/api/health")).json()


async def _idle(http: httpx.AsyncClient) -> bool:
    state = await _health(http)
    return state["sessions"] == 0 and state["engines"] == 0 and state["viewers"] == 0


async def _streaming(client: WebcamClient) -> bool:
    return (await client.stats())["frames"]["sent"] > 0 and client.avatar.count > 0


async def one_round(http: httpx.AsyncClient) -> None:
    clients = [WebcamClient(http) for _ in range(SESSIONS_PER_ROUND)]
    try:
        for client in clients:
            assert (await client.open(params={"fps": 12})).status_code == 200
        for client in clients:
            await eventually(lambda c=client: _streaming(c), timeout=90, what="every session to stream")
        # Leave both ways: DELETE, or just hang up.
        for index, client in enumerate(clients):
            if index % 2 == 0:
                assert (await http.delete(f"/api/sessions/{client.session_id}")).status_code == 204
    finally:
        await asyncio.gather(*(client.close() for client in clients))
    await eventually(lambda: _idle(http), timeout=60, what="the server to drop every session")


async def _process(http: httpx.AsyncClient) -> dict:
    """The server's own view of its process: threads (all, Python's), RSS, asyncio tasks."""
    process = (await _health(http))["process"]
    return {**process, "native_threads": process["threads"] - process["python_threads"]}


async def test_soak_sessions_come_and_go(live_server) -> None:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as http:
        for _ in range(WARM_UP_ROUNDS):  # pools, codecs and caches reach their working size
            await one_round(http)
        await asyncio.sleep(SETTLE_SECONDS)
        baseline = await _process(http)
        for _ in range(ROUNDS):
            await one_round(http)

        # Session and engine objects, native threads (codecs, scalers, mediapipe graphs), tasks
        # and memory go with their sessions, once the server's clean-up after the last has run.
        seen: list[dict] = []

        async def back_to_baseline() -> bool:
            now = await _process(http)
            seen[:] = [now]
            return (
                now["session_objects"] == 0
                and now["engine_objects"] == 0
                and now["native_threads"] <= baseline["native_threads"]
                and now["rss_bytes"] <= baseline["rss_bytes"] + RSS_SLACK_BYTES
                and now["tasks"] <= baseline["tasks"]
            )

        try:
            await eventually(back_to_baseline, timeout=30, what="the process back to its baseline")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: baseline {baseline}, last seen {seen}") from None
        final = await _process(http)
    assert final["python_threads"] <= PYTHON_THREADS_BOUND, (baseline, final)


async def test_sigterm_closes_every_connection(tmp_path) -> None:
    server = start_live_server(tmp_path)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            client = WebcamClient(http)
            try:
                assert (await client.open(params={"fps": 12})).status_code == 200
                await eventually(lambda: client.pc.connectionState == "connected", timeout=60, what="a connection")
                server.process.send_signal(signal.SIGTERM)
                await eventually(lambda: server.process.poll() is not None, timeout=60, what="the server to exit")
                # The server said goodbye (DTLS close): the client sees its connection end.
                await eventually(
                    lambda: client.pc.connectionState in ("closed", "failed"), timeout=60, what="the client to notice"
                )
            finally:
                await client.close()
    finally:
        code = stop_live_server(server)
    log = server.log()
    # A clean shutdown exits 0 (not killed by the signal that asked for it).
    assert code == 0, log
    assert "closing: server shutting down" in log and "Application shutdown complete" in log, log
    assert "Traceback" not in log, log
