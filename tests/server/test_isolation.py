"""One session's crash ends that session only: the server (in this process, so that its driving
pipeline can be made to fail) keeps serving the others."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

import server.media.driving
from rain_core.driving import DrivingPipeline
from rain_core.options import ModelOptions
from server.core.config import Settings
from server.main import create_app
from tests.avatar_client import WebcamClient, eventually


class FailingWhenMirrored(DrivingPipeline):
    """The real pipeline, except that it fails on the third frame of a mirrored session."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.frames = 0

    def __call__(self, frame, timestamp):
        self.frames += 1
        if self.settings.mirror and self.frames == 3:
            raise RuntimeError("the landmark model crashed")
        return super().__call__(frame, timestamp)


@pytest.fixture
def threaded_server(monkeypatch) -> Iterator[str]:
    monkeypatch.setattr(server.media.driving, "DrivingPipeline", FailingWhenMirrored)
    settings = Settings(
        _env_file=None, MODEL=ModelOptions(profile="tiny", random_weights=True, device="cpu", compile="off"),
        TORCH_THREADS=1, ICE_LOOPBACK=True,
        ICE_SERVERS=[], SILENCE_TIMEOUT=30,
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    uvicorn_server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not uvicorn_server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    uvicorn_server.should_exit = True
    thread.join(60)
    sock.close()


async def test_a_crashing_session_ends_alone(threaded_server: str) -> None:
    async with httpx.AsyncClient(base_url=threaded_server, timeout=60) as http:
        healthy, doomed = WebcamClient(http), WebcamClient(http)
        try:
            assert (await healthy.open(params={"fps": 12})).status_code == 200
            assert (await doomed.open(params={"fps": 12, "mirror": True})).status_code == 200
            doomed_stats = f"/api/sessions/{doomed.session_id}/stats"

            async def doomed_closed() -> bool:
                return (await http.get(doomed_stats)).status_code == 404

            await eventually(doomed_closed, timeout=60, what="the crashed session to be closed")

            async def healthy_streams() -> bool:
                return (await healthy.stats())["frames"]["sent"] > 0

            await eventually(healthy_streams, timeout=120, what="the other session's avatar")
            count = healthy.avatar.count
            await eventually(lambda: healthy.avatar.count > count + 10, timeout=60, what="more frames")
            state = (await http.get("/api/health")).json()
            assert state["status"] == "ok" and state["sessions"] == 1 and state["engines"] == 1
        finally:
            await healthy.close()
            await doomed.close()
