"""The command line's process: parsing imports neither torch nor mediapipe, OpenMP's threads get
their setting before torch loads, and `train` leaves its defaults to `TrainSettings`."""

from __future__ import annotations

import pytest

import cli
from rain_core.train.settings import TrainSettings
from tests.cli.helpers import run_snippet


def test_parsing_imports_neither_torch_nor_mediapipe():
    result = run_snippet("""
        import sys
        import cli
        parser = cli.build_parser()
        for argv in (["train", "--out", "run"], ["serve"], ["animate", "--reference", "a", "--driving", "b",
                                                             "--out", "c"], ["bench", "--dtype", "float16"]):
            parser.parse_args(argv)
        print(sorted(name for name in ("torch", "mediapipe", "cv2") if name in sys.modules))
    """)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


# Prints OMP_WAIT_POLICY as it is when the command first imports torch (and ends there).
POLICY_WHEN_TORCH_LOADS = """
    import builtins, os, sys
    import cli

    real_import = builtins.__import__

    def spy(name, *args, **kwargs):
        if name.split(".")[0] == "torch" and "torch" not in sys.modules:
            print(os.environ.get("OMP_WAIT_POLICY"), flush=True)
            os._exit(0)
        return real_import(name, *args, **kwargs)

    builtins.__import__ = spy
    cli.main({argv!r})
"""


@pytest.mark.parametrize(
    ("argv", "policy"),
    [
        (["info", "--profile", "tiny"], "PASSIVE"),
        (["serve", "--profile", "tiny", "--random-weights"], "PASSIVE"),
        (["-v", "train", "--out", "run"], "None"),
    ],
)
def test_idle_openmp_threads_sleep_except_while_training(argv, policy):
    result = run_snippet(POLICY_WHEN_TORCH_LOADS.format(argv=argv))
    assert result.stdout.strip() == policy, result.stderr


def test_the_names_the_parser_offers_are_the_models():
    import torch

    from rain_core.choices import DTYPE_NAMES, PROFILE_NAMES
    from rain_core.config import DTYPES, profile_config

    assert [profile_config(name).name for name in PROFILE_NAMES] == list(PROFILE_NAMES)
    assert [DTYPES[name] for name in DTYPE_NAMES] == [torch.float32, torch.float16, torch.bfloat16]


def _train_settings(monkeypatch, tmp_path, *options: str) -> TrainSettings:
    """The settings `rain-avatar train` would train with (nothing is trained)."""
    import rain_core.train.run as run
    from rain_core.train.trainer import TrainResult

    given = []

    def record(config, data, output_dir, settings, *, resume):
        given.append(settings)
        return TrainResult(steps=0, final_loss=0.0, minutes=0.0, output_dir=output_dir)

    monkeypatch.setattr(run, "train_model", record)
    assert cli.main(["train", "--profile", "tiny", "--out", str(tmp_path / "run"), *options]) == 0
    return given[0]


def test_train_leaves_its_defaults_to_the_training_settings(monkeypatch, tmp_path, capsys):
    scratch = _train_settings(monkeypatch, tmp_path)
    assert scratch == TrainSettings(seed=scratch.seed)
    assert (scratch.steps, scratch.learning_rate, scratch.shared_level_prob, scratch.codec_steps) == (
        100_000, 5e-4, 0.5, 8000)
    fine_tune = _train_settings(monkeypatch, tmp_path, "--weights", str(tmp_path))
    assert fine_tune == TrainSettings(init_weights=tmp_path, seed=fine_tune.seed)
    assert (fine_tune.learning_rate, fine_tune.shared_level_prob) == (1e-5, 0.0)
    given = _train_settings(monkeypatch, tmp_path, "--weights", str(tmp_path), "--steps", "7", "--batch-size", "3",
                            "--learning-rate", "0.002", "--max-minutes", "1.5", "--codec-steps", "9", "--freeze",
                            "context", "pose_guider", "--timestep-jitter", "40", "--shared-level-prob", "0.25")
    assert given == TrainSettings(init_weights=tmp_path, seed=given.seed, steps=7, batch_size=3, learning_rate=0.002,
                                  max_minutes=1.5, codec_steps=9, freeze=("context", "pose_guider"),
                                  timestep_jitter=40, shared_level_prob=0.25)
    assert "trained 0 steps" in capsys.readouterr().out


def test_train_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for shown in ("default 100000", "default 2", "default 0.0005 from scratch, 1e-05 with --weights",
                  "(default 8000)", "(0-500, default 0)", "(default 0.5 from scratch, 0 with --weights)"):
        assert shown in help_text


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--steps", "0"], "argument --steps: must be at least 1, got 0"),
        (["--learning-rate", "-1"], "argument --learning-rate: must be positive, got -1.0"),
        (["--timestep-jitter", "501"], "argument --timestep-jitter: must be between 0 and 500, got 501"),
        (["--timestep-jitter", "1.5"], "argument --timestep-jitter: '1.5' is not an integer"),
        (["--shared-level-prob", "2"], "argument --shared-level-prob: must be between 0 and 1, got 2.0"),
        (["--shared-level-prob", "x"], "argument --shared-level-prob: 'x' is not a number"),
        (["--moved-loss-weight", "-1"], "argument --moved-loss-weight: must be between 0 and 100, got -1.0"),
        (["--freeze", "decoder"], "argument --freeze: invalid choice: 'decoder'"),
        (["--dtype", "int8"], "argument --dtype: invalid choice: 'int8'"),
        (["--profile", "huge"], "argument --profile: invalid choice: 'huge'"),
    ],
)
def test_bad_train_options_are_refused_by_name(option, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--out", str(tmp_path), *option])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
