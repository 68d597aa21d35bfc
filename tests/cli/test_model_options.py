"""The model and fast-path options are declared once (`rain_core.options.ModelOptions`): every field is
a flag of the commands that take it and a `RAIN_*` setting of the server, with the same meaning."""

from __future__ import annotations

import pytest

from cli import build_parser
from cli.options import given_model_options
from rain_core.options import FAST_PATHS, MODEL, ModelOptions
from server.core.config import Settings

# A value of each field other than its default, as a user writes it on the command line and in the environment.
GIVEN = {
    "profile": ("--profile", "tiny", "tiny"),
    "weights": ("--weights", "/models/rain", "/models/rain"),
    "random_weights": ("--random-weights", None, "true"),
    "device": ("--device", "cpu", "cpu"),
    "dtype": ("--dtype", "bfloat16", "bfloat16"),
    "groups": ("--groups", "3", "3"),
    "per_group": ("--per-group", "2", "2"),
    "seed": ("--seed", "11", "11"),
    "compile": ("--no-compile", None, "off"),
    "cuda_graphs": ("--no-cuda-graphs", None, "off"),
    "channels_last": ("--channels-last", None, "on"),
    "decode_thread": ("--no-decode-thread", None, "off"),
    "bfloat16_decoder": ("--bfloat16-decoder", None, "on"),
    "reference_attention": ("--attention", "concat", "concat"),
    "compile_cache_dir": ("--compile-cache-dir", "/cache/rain", "/cache/rain"),
}


def test_every_option_is_covered_here():
    assert set(GIVEN) == set(ModelOptions.model_fields)
    assert set(ModelOptions.fields_of(MODEL)) | set(ModelOptions.fields_of(FAST_PATHS)) == set(GIVEN)


def test_serve_flags_and_settings_variables_mean_the_same(monkeypatch):
    argv = ["serve"]
    for flag, value, _ in GIVEN.values():
        argv += [flag] + ([value] if value is not None else [])
    args = build_parser().parse_args(argv)
    from_flags = ModelOptions(**given_model_options(args))
    for key in [k for k in __import__("os").environ if k.startswith("RAIN_")]:
        monkeypatch.delenv(key)
    for name, (_, _, text) in GIVEN.items():
        monkeypatch.setenv(f"RAIN_{name.upper()}", text)
    monkeypatch.setenv("RAIN_RANDOM_WEIGHTS", "false")  # random weights and a weights directory exclude each other
    monkeypatch.delenv("RAIN_WEIGHTS")
    from_environment = Settings(_env_file=None).MODEL
    expected = from_flags.model_copy(update={"random_weights": False, "weights": None})
    assert from_environment == expected
    for name in GIVEN:
        assert getattr(from_flags, name) != ModelOptions.model_fields[name].default, name


@pytest.mark.parametrize("command", ["bench", "animate"])
def test_other_commands_take_the_same_flags(command):
    helps = build_parser()._subparsers._group_actions[0].choices[command].format_help()
    for flag, _, _ in GIVEN.values():
        assert flag.replace("--no-", "--") in helps, (command, flag)


def test_command_line_options_merge_over_the_environment(monkeypatch):
    monkeypatch.setenv("RAIN_PROFILE", "tiny")
    monkeypatch.setenv("RAIN_RANDOM_WEIGHTS", "true")
    monkeypatch.setenv("RAIN_COMPILE", "off")
    settings = Settings(_env_file=None, MODEL={"channels_last": "on"})
    assert (settings.MODEL.profile, settings.MODEL.compile, settings.MODEL.channels_last) == ("tiny", "off", "on")


def test_model_options_named_flat_go_into_the_model():
    """A Ray Serve config's `args` (docs/ray.md) and keyword callers name them as the variables do."""
    settings = Settings(_env_file=None, WEIGHTS="/weights", COMPILE="off", MODEL={"channels_last": "on"})
    assert settings.MODEL.weights.as_posix() == "/weights"
    assert (settings.MODEL.compile, settings.MODEL.channels_last) == ("off", "on")
