"""The server's parts on their own: settings, ICE and SDP helpers, the frame sampler, the paced
track, the model worker's batching and isolation."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import os
import threading

import aioice.ice
import numpy as np
import pytest
from aioice import Candidate
from pydantic import ValidationError

import cli
from rain_core.weights.checkpoints import WeightsError
from server.core.config import Settings
from server.metrics import Metrics
from server.tracks import AvatarTrack, FrameSampler
from server.webrtc import advertise_public_ip, include_loopback, rtc_configuration
from server.worker import ModelWorker


def tiny_settings(**changes) -> Settings:
    values = {"PROFILE": "tiny", "RANDOM_WEIGHTS": True, "DEVICE": "cpu", "TORCH_THREADS": 1, **changes}
    return Settings(_env_file=None, **values)


# Settings ---------------------------------------------------------------------------------
def test_settings_check_the_model_source() -> None:
    assert Settings(_env_file=None).PROFILE is None  # resolve_profile decides when the model loads
    with pytest.raises(ValidationError, match="random weights need a profile"):
        Settings(_env_file=None, RANDOM_WEIGHTS=True)
    with pytest.raises(ValidationError, match="not both"):
        Settings(_env_file=None, PROFILE="tiny", RANDOM_WEIGHTS=True, WEIGHTS="/tmp")
    with pytest.raises(ValidationError, match="not a profile"):
        Settings(_env_file=None, PROFILE="huge", RANDOM_WEIGHTS=True)
    with pytest.raises(ValidationError, match="exceeds MAX_FPS"):
        tiny_settings(FPS=40, MAX_FPS=30)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--random-weights"], "random weights need a profile"),
        (["serve", "--profile", "tiny", "--random-weights", "--weights", "."], "not both"),
        (["serve", "--profile", "tiny", "--weights", "{missing}"], "profile 'tiny': incomplete weights"),
    ],
)
def test_serve_refuses_a_model_it_cannot_load_before_starting(argv, message, tmp_path, capsys, monkeypatch) -> None:
    for key in [k for k in os.environ if k.startswith("RAIN_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no .env file
    argv = [arg.format(missing=tmp_path / "missing") for arg in argv]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_settings_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("RAIN_PROFILE", "tiny")
    monkeypatch.setenv("RAIN_RANDOM_WEIGHTS", "true")
    monkeypatch.setenv("RAIN_ICE_SERVERS", '[{"urls": "turn:turn.example:3478", "username": "u", "credential": "p"},'
                                           ' {"urls": ["stun:stun.example:3478"]}]')
    monkeypatch.setenv("RAIN_PUBLIC_IP", "203.0.113.7")
    monkeypatch.setenv("RAIN_MAX_SESSIONS", "2")
    settings = Settings(_env_file=None)
    assert settings.PROFILE == "tiny" and settings.RANDOM_WEIGHTS and settings.MAX_SESSIONS == 2
    assert settings.ICE_SERVERS[0].username == "u" and settings.ICE_SERVERS[1].urls == ["stun:stun.example:3478"]
    assert settings.PUBLIC_IP == ipaddress.ip_address("203.0.113.7")
    monkeypatch.setenv("RAIN_PUBLIC_IP", "not-an-ip")
    with pytest.raises(ValidationError, match="PUBLIC_IP"):
        Settings(_env_file=None)


def test_rtc_configuration_has_exactly_the_configured_servers() -> None:
    assert rtc_configuration([]).iceServers == []  # never aiortc's default public STUN server
    settings = tiny_settings(ICE_SERVERS=[{"urls": "turn:t.example", "username": "u", "credential": "p"}])
    (server,) = rtc_configuration(settings.ICE_SERVERS).iceServers
    assert (server.urls, server.username, server.credential) == ("turn:t.example", "u", "p")


# ICE and SDP --------------------------------------------------------------------------------
def test_include_loopback_adds_and_removes_127_0_0_1() -> None:
    original = aioice.ice.get_host_addresses
    try:
        include_loopback(True)
        include_loopback(True)  # idempotent
        assert "127.0.0.1" in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
        assert "127.0.0.1" not in aioice.ice.get_host_addresses(use_ipv4=False, use_ipv6=True)
    finally:
        include_loopback(False)
    assert aioice.ice.get_host_addresses is original
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)


ANSWER = "\r\n".join([
    "v=0",
    "o=- 1 1 IN IP4 0.0.0.0",
    "s=-",
    "t=0 0",
    "m=video 40000 UDP/TLS/RTP/SAVPF 97",
    "c=IN IP4 10.0.0.5",
    "a=candidate:a1 1 udp 2130706431 10.0.0.5 40000 typ host",
    "a=candidate:a2 1 udp 2130706431 127.0.0.1 40001 typ host",
    "a=candidate:a3 1 udp 2130706431 fd00::5 40002 typ host",
    "a=candidate:a4 1 udp 1694498815 198.51.100.1 40003 typ srflx raddr 10.0.0.5 rport 40000",
    "a=end-of-candidates",
]) + "\r\n"


def test_public_ip_adds_a_reflexive_twin_per_host_candidate() -> None:
    sdp = advertise_public_ip(ANSWER, "203.0.113.7")
    lines = sdp.split("\r\n")
    twins = [Candidate.from_sdp(line[2:]) for line in lines
             if line.startswith("a=candidate:") and "203.0.113.7" in line]
    assert len(twins) == 1  # not for loopback, IPv6 or an existing srflx
    (twin,) = twins
    assert (twin.type, twin.port, twin.related_address, twin.related_port) == ("srflx", 40000, "10.0.0.5", 40000)
    host_line = lines.index("a=candidate:a1 1 udp 2130706431 10.0.0.5 40000 typ host")
    assert lines.index(f"a={twin.to_sdp()}") == host_line + 1
    assert all(line in sdp for line in ANSWER.split("\r\n"))  # nothing else changes
    assert advertise_public_ip(ANSWER, "2001:db8::1").count("2001:db8::1") == 1  # the IPv6 host candidate's twin


# Sampling and pacing --------------------------------------------------------------------------
def test_sampler_takes_30_fps_down_to_16_evenly() -> None:
    sampler = FrameSampler()
    accepted = [t for t in np.arange(0, 10, 1 / 30) if sampler.accept(float(t), 16.0)]
    assert 155 <= len(accepted) <= 161
    assert max(np.diff(accepted)) < 2 / 30 + 1e-9  # never skips two camera frames in a row


def test_sampler_passes_a_slower_camera_and_restarts_after_a_stall() -> None:
    sampler = FrameSampler()
    assert all(sampler.accept(t / 10, 16.0) for t in range(20))  # 10 fps in: every frame
    assert sampler.accept(100.0, 16.0)  # a stall, then no burst of catch-up accepts
    assert not sampler.accept(100.01, 16.0)


async def test_avatar_track_paces_repeats_and_bounds_its_backlog() -> None:
    metrics = Metrics()
    track = AvatarTrack(16, 16, lambda: 200.0, max_backlog=5, warmup=lambda: 0.5, metrics=metrics)
    card = await track.recv()
    assert card.format.name == "yuv420p" and (card.width, card.height) == (16, 16)
    frames = np.stack([np.full((16, 16, 3), 10 * i, np.uint8) for i in range(4)])
    track.push(frames, [0.0] * 4)
    track.push(frames, [0.0] * 4)  # 8 queued, 5 kept: latency stays bounded
    assert track.backlog == 5 and track.frames_skipped == 3
    pts = [card.pts]
    for _ in range(7):
        pts.append((await track.recv()).pts)
    assert all(b > a for a, b in itertools.pairwise(pts))
    assert track.frames_sent == 5 and track.frames_repeated == 2
    track.restart()
    assert track.backlog == 0
    track.stop()


# The model worker -------------------------------------------------------------------------------
@pytest.fixture
async def worker():
    metrics = Metrics()
    model_worker = ModelWorker(tiny_settings(MAX_BATCH=4), metrics)
    await model_worker.start()
    yield model_worker
    await model_worker.stop()


async def _engine(worker: ModelWorker):
    engine = await worker.open_engine()
    image = np.full((64, 64, 3), 128, np.uint8)
    encoding = await worker.run(worker.model.encode_reference, image)
    await worker.run(engine.set_reference_encoding, encoding)
    return engine


def _driving(p: int = 4) -> np.ndarray:
    return np.zeros((p, 64, 64, 3), np.uint8)


async def test_worker_batches_queued_steps_of_different_streams(worker: ModelWorker) -> None:
    engines = [await _engine(worker) for _ in range(3)]
    gate = threading.Event()
    blocked = asyncio.ensure_future(worker.run(gate.wait, 30))  # hold the thread while steps queue up
    steps = [worker.step(engine, _driving()) for engine in engines]
    steps.append(worker.step(engines[0], _driving()))  # a second step of stream 0: the next batch
    gate.set()
    await blocked
    outputs = await asyncio.gather(*steps)
    assert all(out is None for out in outputs)  # still filling
    registry = worker.metrics.registry
    assert registry.get_sample_value("rain_step_batch_size_count") == 2
    assert registry.get_sample_value("rain_step_batch_size_sum") == 4  # one batch of 3, then 1
    assert [e.frames_in for e in engines] == [8, 4, 4]
    for engine in engines:
        await worker.close_engine(engine)
    assert not worker.engines


async def test_worker_isolates_a_bad_stream_in_a_batch(worker: ModelWorker) -> None:
    good, bad = await _engine(worker), await _engine(worker)
    gate = threading.Event()
    blocked = asyncio.ensure_future(worker.run(gate.wait, 30))
    good_step = worker.step(good, _driving())
    bad_step = worker.step(bad, _driving(p=3))  # wrong number of driving images
    gate.set()
    await blocked
    assert await good_step is None
    with pytest.raises(ValueError, match="expected 4 driving images"):
        await bad_step
    assert good.frames_in == 4 and bad.frames_in == 0
    # The good stream carries on to its first frames.
    for _ in range(3):
        out = await worker.step(good, _driving())
    assert out.shape == (4, 64, 64, 3) and out.dtype == np.uint8


async def test_worker_reports_a_load_failure(tmp_path) -> None:
    worker = ModelWorker(tiny_settings(RANDOM_WEIGHTS=False, WEIGHTS=tmp_path / "missing"), Metrics())
    try:
        with pytest.raises(WeightsError, match="does not exist"):
            await worker.start()
    finally:
        await worker.stop()
