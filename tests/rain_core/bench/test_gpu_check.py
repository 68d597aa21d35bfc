"""The GPU check's CPU dry run, so that the one-call GPU check never rots between GPU sessions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli import main
from rain_core.bench.check_report import JSON_NAME, MARKDOWN_NAME
from rain_core.choices import GPU_CHECK_SECTIONS
from tests.helpers import REPO_ROOT

# Sections a CPU cannot run; the dry run records them as skipped, saying why.
CUDA_ONLY = {"profile_cuda_graphs", "profile_compiled_cuda_graphs"}


def _numbers(row: dict) -> list[float]:
    return [value for value in row.values() if isinstance(value, (int, float)) and not isinstance(value, bool)]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[dict, dict, Path]:
    """One dry run of every section through `rain-avatar gpu-check`: (printed JSON, written JSON, out dir)."""
    out = tmp_path_factory.mktemp("gpu_check")
    capture = out / "stdout.json"
    with capture.open("w") as stdout:
        saved, sys.stdout = sys.stdout, stdout
        try:
            assert main(["gpu-check", "--dry-run", "--out", str(out), "--json", "--no-progress"]) == 0
        finally:
            sys.stdout = saved
    return json.loads(capture.read_text()), json.loads((out / JSON_NAME).read_text()), out


def test_every_section_gives_figures(dry_run):
    printed, written, _ = dry_run
    assert printed == written
    assert written["finished"] is True
    sections = written["sections"]
    assert list(sections) == list(GPU_CHECK_SECTIONS)
    for name, section in sections.items():
        if name in CUDA_ONLY:
            assert section["status"] == "skipped" and "CUDA" in section["reason"], name
            continue
        assert section["status"] == "ok", f"{name}: {section['reason']}"
        assert section["rows"], name
        for row in section["rows"]:
            assert "error" not in row, f"{name}: {row['error']}"
            assert _numbers(row), f"{name}: no figures in {row}"


def test_the_figures_are_the_ones_asked_for(dry_run):
    _, report, _ = dry_run
    sections, options = report["sections"], report["options"]
    assert options["dry_run"] is True and report["environment"]["device"] == "cpu"
    peak = sections["matmul_peak"]["rows"][0]["tflops"]
    eager = sections["profile_eager"]["rows"][0]
    assert eager["fps"] > 0 and eager["call_ms"] > 0 and eager["unet_tflops"] > 0
    # The fraction is of the peak measured in the same run.
    assert eager["fraction_of_peak"] == pytest.approx(eager["unet_tflops"] / peak)
    assert eager["first_frame_after_frames"] == options["groups"] * options["per_group"]
    assert eager["fast_paths_requested"]["compile"] is False
    assert sections["profile_compiled"]["rows"][0]["fast_paths_requested"]["compile"] is True
    batched = sections["batched_streams"]["rows"]
    assert [row["streams"] for row in batched] == options["batch_sizes"]
    for row in batched:
        assert row["per_stream_fps"] == pytest.approx(row["aggregate_fps"] / row["streams"])
    assert [row["variant"] for row in sections["group_variants"]["rows"]] == options["variants"]
    worker = sections["model_worker"]["rows"][0]
    assert worker["streams"] == options["worker_streams"] and worker["aggregate_fps"] > 0
    assert worker["worker_steps"] >= 1 and 1 <= worker["mean_batch"] <= options["worker_streams"]
    steady = sections["steady_memory"]["rows"][0]
    assert steady["calls"] == options["steady_calls"] and steady["cut_short_by_budget"] is False


def test_the_markdown_report_names_every_section(dry_run):
    _, report, out = dry_run
    markdown = (out / MARKDOWN_NAME).read_text()
    for section in report["sections"].values():
        assert f"## {section['title']}" in markdown
    assert "CUDA graphs need a CUDA device" in markdown


def test_a_failing_section_loses_no_other_figure(tmp_path):
    from rain_core.bench.gpu_check import GpuCheckOptions, Section, run_gpu_check

    def broken(ctx):
        raise RuntimeError("this path is broken")

    options = GpuCheckOptions.dry_run_defaults()
    options = type(options)(**{**options.__dict__, "sections": ("matmul_peak", "model_worker"), "progress": False})
    report = run_gpu_check(options, extra_sections=[Section("model_worker", "broken", broken, min_seconds=0)],
                           out_dirs=[tmp_path])
    written = json.loads((tmp_path / JSON_NAME).read_text())["sections"]
    assert written["matmul_peak"]["status"] == "ok" and written["matmul_peak"]["rows"][0]["tflops"] > 0
    assert written["model_worker"]["status"] == "error"
    assert "this path is broken" in written["model_worker"]["reason"]
    assert report.finished


def test_sections_that_do_not_fit_the_budget_are_skipped_with_the_reason(tmp_path):
    import dataclasses

    from rain_core.bench.gpu_check import GpuCheckOptions, run_gpu_check

    options = dataclasses.replace(GpuCheckOptions.dry_run_defaults(), budget_s=0.0, progress=False)
    report = run_gpu_check(options, out_dirs=[tmp_path])
    assert {s.name for s in report.sections} == set(GPU_CHECK_SECTIONS) - {"model_worker"}
    for section in report.sections:
        assert section.status == "skipped" and "time budget" in section.reason
    assert json.loads((tmp_path / JSON_NAME).read_text())["finished"] is True


@pytest.mark.parametrize(("option", "message"), [
    (["--variants", "4y2"], "a variant is GxP"),
    (["--variants", "4x0"], "must be between 1"),
    (["--sections", "profile_eager,warp_drive"], "unknown section 'warp_drive'"),
    (["--batch-sizes", "1,0"], "must be between 1"),
    (["--batch-sizes", "2,2"], "names a value twice"),
    (["--seconds", "-1"], "must be between 0"),
    (["--budget", "5"], "must be between 10"),
])
def test_bad_options_are_refused_by_name(option, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["gpu-check", "--dry-run", *option])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_no_cuda_device_is_a_clear_error(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: the refusal is for machines without one")
    with pytest.raises(SystemExit) as exit_info:
        main(["gpu-check", "--device", "cuda", "--no-progress"])
    assert exit_info.value.code == 2 and "no CUDA device" in capsys.readouterr().err


def test_the_script_runs_end_to_end_without_installing(tmp_path):
    """`scripts/gpu_check.sh` with this environment's packages: no wheel is needed or installed."""
    env = {key: value for key, value in os.environ.items() if key != "OUT"}
    env.update(PYTHON=sys.executable, GPU_CHECK_WHEELS=str(tmp_path / "no-wheels"),
               GPU_CHECK_SITE=str(tmp_path / "site"), OUT=str(tmp_path / "device-out"))
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--sections", "matmul_peak",
         "--out", str(tmp_path / "out"), "--no-progress"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "installing" not in result.stderr and not (tmp_path / "site").exists()
    assert "## Matrix-product peak" in result.stdout
    # The report lands in --out and in $OUT, which the device machine sends back.
    for directory in ("out", "device-out"):
        sections = json.loads((tmp_path / directory / JSON_NAME).read_text())["sections"]
        assert sections["matmul_peak"]["status"] == "ok"


def test_a_section_hung_past_the_budget_ends_the_check_with_the_report_written(tmp_path):
    from tests.cli.helpers import run_snippet

    result = run_snippet(f"""
        import dataclasses, time
        from pathlib import Path
        from rain_core.bench.gpu_check import GpuCheckOptions, Section, run_gpu_check

        def hang(ctx):
            time.sleep(120)

        options = dataclasses.replace(GpuCheckOptions.dry_run_defaults(), sections=("matmul_peak", "model_worker"),
                                      budget_s=6.0, hard_stop_after_s=1.0, progress=False)
        run_gpu_check(options, extra_sections=[Section("model_worker", "hangs", hang, min_seconds=0)],
                      out_dirs=[Path({str(tmp_path)!r})], on_hard_stop=lambda report: print("stopped"))
    """)
    assert result.returncode == 3, result.stderr
    assert result.stdout.strip() == "stopped"
    report = json.loads((tmp_path / JSON_NAME).read_text())
    assert report["finished"] is False
    assert report["sections"]["matmul_peak"]["status"] == "ok"
    hung = report["sections"]["model_worker"]
    assert hung["status"] == "error" and "after the time budget ran out" in hung["reason"]
