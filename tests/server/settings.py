"""Server settings for the tests: the tiny profile with random weights, on the CPU."""

from __future__ import annotations

from server.core.config import Settings


def tiny_settings(**changes) -> Settings:
    # COMPILE off: a server compiles in the background by default, minutes of both cores for every
    # server a test starts; tests/server/test_start.py runs the default.
    values = {"PROFILE": "tiny", "RANDOM_WEIGHTS": True, "DEVICE": "cpu", "TORCH_THREADS": 1, "COMPILE": "off",
              **changes}
    return Settings(_env_file=None, **values)
