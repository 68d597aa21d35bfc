"""Server settings for the tests: the tiny profile with random weights, on the CPU."""

from __future__ import annotations

from rain_core.options import ModelOptions
from server.core.config import Settings


def tiny_settings(model: dict | None = None, **changes) -> Settings:
    """`changes` to the settings, `model` to their `MODEL` (rain_core.options.ModelOptions)."""
    # Compiling off: a server compiles in the background by default, minutes of both cores for every
    # server a test starts; tests/server/test_start.py runs the default.
    tiny = {"profile": "tiny", "random_weights": True, "device": "cpu", "compile": "off", **(model or {})}
    values = {"MODEL": ModelOptions(**tiny), "TORCH_THREADS": 1, **changes}
    return Settings(_env_file=None, **values)
