"""The server's one `Settings`: checked at once, from the environment or the command line."""

from __future__ import annotations

import ipaddress
import os
import secrets

import pytest
import torch
from pydantic import ValidationError

import cli
from rain_core.config import ConfigError
from rain_core.stream import reference_encoder
from rain_core.stream.fast_paths import available_cores, choose_fast_paths
from server.core.config import MIN_FPS, Settings
from server.rtc.receiver import loss_repair_policy
from tests.server.settings import tiny_settings


def test_settings_check_the_model_source() -> None:
    assert Settings(_env_file=None).MODEL.profile is None  # resolve_profile decides when the model loads
    with pytest.raises(ValidationError, match="random weights need a profile"):
        Settings(_env_file=None, MODEL={"random_weights": True})
    with pytest.raises(ValidationError, match="not both"):
        Settings(_env_file=None, MODEL={"profile": "tiny", "random_weights": True, "weights": "/tmp"})
    with pytest.raises(ValidationError, match="not a profile"):
        Settings(_env_file=None, MODEL={"profile": "huge", "random_weights": True})
    with pytest.raises(ValidationError, match="exceeds MAX_FPS"):
        tiny_settings(FPS=40, MAX_FPS=30)
    with pytest.raises(ValidationError, match="FPS"):
        tiny_settings(FPS=MIN_FPS / 2)


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
    assert settings.MODEL.profile == "tiny" and settings.MODEL.random_weights and settings.MAX_SESSIONS == 2
    assert settings.ICE_SERVERS[0].username == "u" and settings.ICE_SERVERS[1].urls == ["stun:stun.example:3478"]
    assert settings.PUBLIC_IP == ipaddress.ip_address("203.0.113.7")
    monkeypatch.setenv("RAIN_PUBLIC_IP", "not-an-ip")
    with pytest.raises(ValidationError, match="PUBLIC_IP"):
        Settings(_env_file=None)


def test_reference_pixel_limit_is_the_encoders() -> None:
    assert Settings(_env_file=None).MAX_REFERENCE_PIXELS == reference_encoder.MAX_REFERENCE_PIXELS
    assert tiny_settings(MAX_REFERENCE_PIXELS=1_000_000).MAX_REFERENCE_PIXELS == 1_000_000
    with pytest.raises(ValidationError, match="MAX_REFERENCE_PIXELS"):
        tiny_settings(MAX_REFERENCE_PIXELS=reference_encoder.MAX_REFERENCE_PIXELS + 1)


def test_fast_path_settings_take_auto_on_off(monkeypatch) -> None:
    monkeypatch.setenv("RAIN_COMPILE", "fast")
    with pytest.raises(ValidationError, match="compile") as error:
        Settings(_env_file=None)
    assert "'auto', 'on' or 'off'" in str(error.value)
    monkeypatch.setenv("RAIN_COMPILE", "on")
    monkeypatch.setenv("RAIN_CHANNELS_LAST", "off")
    monkeypatch.setenv("RAIN_DECODE_THREAD", "on")
    settings = Settings(_env_file=None, MODEL={"cuda_graphs": "off"})
    paths = settings.MODEL.fast_paths(torch.device("cpu"))
    assert paths.compile and not paths.cuda_graphs and not paths.channels_last and paths.decode_thread
    assert choose_fast_paths(torch.device("cpu")).channels_last
    with pytest.raises(ConfigError, match="CUDA graphs need a CUDA device"):
        choose_fast_paths(torch.device("cpu"), cuda_graphs="on")
    with pytest.raises(ConfigError, match="decode thread is a CPU path"):
        choose_fast_paths(torch.device("cuda"), decode_thread="on")
    with pytest.raises(ConfigError, match="bfloat16 decoder is a CPU path"):
        choose_fast_paths(torch.device("cuda"), bfloat16_decoder="on")
    monkeypatch.setenv("RAIN_BFLOAT16_DECODER", "off")
    switch = Settings(_env_file=None).MODEL.bfloat16_decoder
    assert switch == "off" and not choose_fast_paths(torch.device("cpu"), bfloat16_decoder=switch).bfloat16_decoder
    monkeypatch.setenv("RAIN_DECODE_THREAD", "sometimes")
    with pytest.raises(ValidationError, match="decode_thread"):
        Settings(_env_file=None)


def test_the_decode_thread_runs_by_default_where_a_core_is_left_for_it() -> None:
    """On by default when torch's threads leave as many cores free as they use (the server's one of two)."""
    cpu, threads = torch.device("cpu"), torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert choose_fast_paths(cpu).decode_thread == (available_cores() >= 2)
        torch.set_num_threads(available_cores())
        assert not choose_fast_paths(cpu).decode_thread
    finally:
        torch.set_num_threads(threads)
    assert not choose_fast_paths(torch.device("cuda")).decode_thread


@pytest.mark.parametrize("value", ["0", "-1", "61", "long"])
def test_voice_max_delay_is_bounded(monkeypatch, value: str) -> None:
    """The voice's buffer is as long as its longest delay: a delay of 0, of hours, or no number is refused."""
    monkeypatch.setenv("RAIN_VOICE_MAX_DELAY", value)
    with pytest.raises(ValidationError, match="VOICE_MAX_DELAY"):
        tiny_settings()
    monkeypatch.setenv("RAIN_VOICE_MAX_DELAY", "2.5")
    assert tiny_settings().VOICE_MAX_DELAY == 2.5


def test_ice_port_range(monkeypatch) -> None:
    monkeypatch.setenv("RAIN_ICE_PORT_RANGE", "50000-50100")
    ports = tiny_settings().ICE_PORT_RANGE
    assert (ports.first, ports.last, len(ports), str(ports)) == (50000, 50100, 101, "50000-50100")
    assert tiny_settings(ICE_PORT_RANGE="").ICE_PORT_RANGE is None
    for bad, message in [("50100-50000", "above the last"), ("50000", "FIRST-LAST"), ("a-b", "FIRST-LAST"),
                         ("0-10", "greater than or equal to 1"), ("65535-70000", "less than or equal to 65535")]:
        with pytest.raises(ValidationError, match=message):
            tiny_settings(ICE_PORT_RANGE=bad)


def test_recording_limits_are_checked() -> None:
    for name, bad in [("MAX_RECORDING_SECONDS", 0), ("MAX_RECORDINGS_BYTES", 10), ("RECORDING_TTL", -1)]:
        with pytest.raises(ValidationError, match=name):
            tiny_settings(**{name: bad})


@pytest.mark.parametrize(("name", "bad"), [("NACK_INTERVAL", "0"), ("NACK_INTERVAL", "5"), ("NACK_TRIES", "0"),
                                           ("KEYFRAME_AFTER", "-1"), ("KEYFRAME_AFTER", "soon")])
def test_loss_repair_settings_are_bounded(monkeypatch, name: str, bad: str) -> None:
    """A NACK every 0 s would flood the sender, one every 5 s never helps: both are refused."""
    monkeypatch.setenv(f"RAIN_{name}", bad)
    with pytest.raises(ValidationError, match=name):
        tiny_settings()


def test_loss_repair_policy_follows_the_settings() -> None:
    policy = loss_repair_policy(tiny_settings(NACK_INTERVAL=0.03, NACK_TRIES=3, KEYFRAME_AFTER=0.2))
    assert (policy.nack_interval, policy.nack_tries, policy.keyframe_after) == (0.03, 3, 0.2)
    assert loss_repair_policy(tiny_settings(LOSS_REPAIR=False)) is None


def test_turn_settings_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = secrets.token_hex(16)
    monkeypatch.setenv("RAIN_TURN_URLS", '["turn:203.0.113.7:3478?transport=udp", "turns:turn.example:5349"]')
    monkeypatch.setenv("RAIN_TURN_SECRET", secret)
    settings = tiny_settings()
    assert settings.TURN_URLS[1] == "turns:turn.example:5349" and settings.TURN_TTL == 3600
    assert settings.TURN_SECRET.get_secret_value() == secret and secret not in repr(settings)
    good = {"TURN_URLS": ["turn:203.0.113.7:3478"], "TURN_SECRET": secret}
    for change, message in [
        ({"TURN_URLS": ["stun:203.0.113.7:3478"]}, "turn: or turns:"),
        ({"TURN_URLS": ['turn:a.example>; rel="x"']}, "turn: or turns:"),
        ({"TURN_URLS": [f"turn:h{i}.example" for i in range(9)]}, "at most 8"),
        ({"TURN_SECRET": "short"}, "16 to 512 characters"),
        ({"TURN_TTL": 10}, "greater than or equal to 60"),
        ({"TURN_TTL": 864000}, "less than or equal to 86400"),
        ({"TURN_URLS": []}, "go together"),
        ({"TURN_SECRET": None}, "go together"),
    ]:
        with pytest.raises(ValidationError, match=message) as error:
            tiny_settings(**{**good, **change})
        assert secret not in str(error.value) and "input_value" not in str(error.value)  # no input echoed
