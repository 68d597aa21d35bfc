"""Server settings for the tests: the tiny profile with random weights, on the CPU."""

from __future__ import annotations

from server.core.config import Settings


def tiny_settings(**changes) -> Settings:
    values = {"PROFILE": "tiny", "RANDOM_WEIGHTS": True, "DEVICE": "cpu", "TORCH_THREADS": 1, **changes}
    return Settings(_env_file=None, **values)
