"""The GPU check's CPU dry run, so that the one-call GPU check never rots between GPU sessions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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
        if section["status"] == "skipped":
            # Only a set of paths measured already is skipped, and the section named measured it.
            measured_by = section["reason"].removeprefix("the same fast paths as ").split()[0]
            assert sections[measured_by]["status"] == "ok", f"{name}: {section['reason']}"
            continue
        assert section["status"] == "ok", f"{name}: {section['reason']}"
        assert section["rows"], name
        for row in section["rows"]:
            assert "error" not in row, f"{name}: {row['error']}"
            assert _numbers(row), f"{name}: no figures in {row}"


def test_sections_run_most_valuable_first_and_measure_each_path_set_once(dry_run):
    _, report, _ = dry_run
    sections = report["sections"]
    # The official profile's eager speed first: a run cut short has it whatever else it lost.
    assert next(iter(sections)) == "profile_eager"
    measured = [json.dumps(s["rows"][0]["fast_paths_requested"], sort_keys=True)
                for name, s in sections.items() if name.startswith("profile_") and s["status"] == "ok"]
    assert len(measured) == len(set(measured))


def test_only_the_profile_sections_compile(dry_run):
    _, report, _ = dry_run
    sections = report["sections"]
    compiling = {name for name, s in sections.items()
                 if s["status"] == "ok" and s["rows"][0].get("fast_paths_requested", {}).get("compile")}
    assert compiling, "no section compiled: the compile count is not exercised"
    for name, section in sections.items():
        assert section["compiled_graphs"] is not None, name
        if name in compiling:
            assert section["compiled_graphs"] > 0, name
        else:
            # Batched streams, variants and the worker run uncompiled; steady memory reuses a model.
            assert section["compiled_graphs"] == 0, f"{name} compiled {section['compiled_graphs']} graphs"


def test_the_section_limits_fit_the_device_machine_by_construction():
    from rain_core.bench.gpu_check import SECTION_LIMITS_S, GpuCheckOptions

    options = GpuCheckOptions()
    assert set(SECTION_LIMITS_S) == set(GPU_CHECK_SECTIONS)
    # Eight minutes on the machine, less a minute for the process's start and the wheels' install.
    # The budget holds the limits and two graces; the section running at its end can outlive it
    # by two graces more (interrupted, then the process ended).
    worst = sum(options.limit_s(name) for name in GPU_CHECK_SECTIONS) + 4 * options.hang_grace_s
    assert worst <= 8 * 60 - 60


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
    batched = sections["batched_streams"]["rows"]
    assert [row["streams"] for row in batched] == options["batch_sizes"]
    for row in batched:
        assert row["per_stream_fps"] == pytest.approx(row["aggregate_fps"] / row["streams"])
    assert [row["variant"] for row in sections["group_variants"]["rows"]] == options["variants"]
    worker = sections["model_worker"]["rows"][0]
    assert worker["streams"] == options["worker_streams"] and worker["aggregate_fps"] > 0
    assert worker["worker_steps"] >= 1 and 1 <= worker["mean_batch"] <= options["worker_streams"]
    steady = sections["steady_memory"]["rows"][0]
    assert steady["calls"] == options["steady_calls"] and steady["cut_short_by_limit"] is False


def test_the_markdown_report_names_every_section(dry_run):
    _, report, out = dry_run
    markdown = (out / MARKDOWN_NAME).read_text()
    for section in report["sections"].values():
        assert f"## {section['title']}" in markdown
    assert "CUDA graphs need a CUDA device" in markdown
    # One table of every section's outcome, time limit and compiles.
    assert "| section | status | seconds | limit_s | compiled_graphs |" in markdown
    for name, section in report["sections"].items():
        assert f"| {name} | {section['status']} |" in markdown


def test_a_failing_section_loses_no_other_figure(tmp_path):
    import dataclasses

    from rain_core.bench.gpu_check import GpuCheckOptions, Section, run_gpu_check

    def broken(ctx):
        raise RuntimeError("this path is broken")

    options = dataclasses.replace(GpuCheckOptions.dry_run_defaults(), sections=("matmul_peak", "model_worker"),
                                  progress=False)
    report = run_gpu_check(options, extra_sections=[Section("model_worker", "broken", broken)], out_dirs=[tmp_path])
    written = json.loads((tmp_path / JSON_NAME).read_text())["sections"]
    assert written["matmul_peak"]["status"] == "ok" and written["matmul_peak"]["rows"][0]["tflops"] > 0
    assert written["model_worker"]["status"] == "error"
    assert "this path is broken" in written["model_worker"]["reason"]
    assert report.finished


def test_a_section_at_its_time_limit_keeps_its_figures_and_the_next_runs(tmp_path):
    import dataclasses

    from rain_core.bench.gpu_check import GpuCheckOptions, Section, run_gpu_check

    def endless(ctx):
        # A section's loops stop at its limit (as time_calls does) and keep the rows measured.
        while not ctx.time_up():
            ctx.add_row(dict(step=len(ctx.rows)))
            time.sleep(0.05)

    options = dataclasses.replace(GpuCheckOptions.dry_run_defaults(), sections=("model_worker", "steady_memory"),
                                  limits_s=(("model_worker", 1.0),), progress=False)
    report = run_gpu_check(options, extra_sections=[Section("model_worker", "endless", endless)],
                           out_dirs=[tmp_path])
    written = json.loads((tmp_path / JSON_NAME).read_text())
    cut = written["sections"]["model_worker"]
    assert cut["status"] == "timeout" and "time limit" in cut["reason"]
    assert cut["rows"] and cut["limit_s"] == options.limit_s("model_worker")
    assert written["sections"]["steady_memory"]["status"] == "ok"
    assert report.finished and written["finished"] is True


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
    (["--limit-scale", "0"], "must be between 0.1"),
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


def test_a_hung_section_is_interrupted_and_the_next_one_runs(tmp_path):
    from tests.cli.helpers import run_snippet

    result = run_snippet(f"""
        import dataclasses, time
        from pathlib import Path
        from rain_core.bench.gpu_check import GpuCheckOptions, Section, run_gpu_check

        def hang(ctx):
            ctx.add_row(dict(before_the_hang=1.0))
            time.sleep(120)

        options = dataclasses.replace(GpuCheckOptions.dry_run_defaults(), sections=("model_worker", "steady_memory"),
                                      limits_s=(("model_worker", 1.0),), hang_grace_s=1.0, progress=False)
        run_gpu_check(options, extra_sections=[Section("model_worker", "hangs", hang)],
                      out_dirs=[Path({str(tmp_path)!r})])
    """)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / JSON_NAME).read_text())
    assert report["finished"] is True
    hung = report["sections"]["model_worker"]
    assert hung["status"] == "timeout" and "interrupted" in hung["reason"]
    assert hung["rows"] == [{"before_the_hang": 1.0}]
    assert report["sections"]["steady_memory"]["status"] == "ok"


def test_a_section_that_outlives_its_interruption_ends_the_check_with_the_report_written(tmp_path):
    from tests.cli.helpers import run_snippet

    result = run_snippet(f"""
        import dataclasses, time
        from pathlib import Path
        from rain_core.bench.gpu_check import GpuCheckOptions, Section, SectionTimeout, run_gpu_check

        def stuck(ctx):
            # As a compile waiting where no Python runs: the interruption does not end it.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    time.sleep(1)
                except SectionTimeout:
                    pass

        options = dataclasses.replace(GpuCheckOptions.dry_run_defaults(), sections=("matmul_peak", "model_worker",
                                      "steady_memory"), limits_s=(("model_worker", 1.0),), hang_grace_s=1.0,
                                      progress=False)
        run_gpu_check(options, extra_sections=[Section("model_worker", "stuck", stuck)],
                      out_dirs=[Path({str(tmp_path)!r})], on_hard_stop=lambda report: print("stopped"))
    """)
    assert result.returncode == 3, result.stderr
    assert result.stdout.strip() == "stopped"
    report = json.loads((tmp_path / JSON_NAME).read_text())
    assert report["finished"] is False
    assert report["sections"]["matmul_peak"]["status"] == "ok"
    stuck = report["sections"]["model_worker"]
    assert stuck["status"] == "timeout" and "the check stopped here" in stuck["reason"]
    later = report["sections"]["steady_memory"]
    assert later["status"] == "skipped" and "stopped at model_worker" in later["reason"]


def test_steady_memory_measures_the_served_model_without_building_it_again(tmp_path):
    import dataclasses

    import torch

    from rain_core.bench.gpu_check import GpuCheckOptions, run_gpu_check
    from rain_core.stream.fast_paths import default_fast_paths

    served = dataclasses.replace(default_fast_paths(torch.device("cpu")), channels_last=False)
    options = dataclasses.replace(GpuCheckOptions.dry_run_defaults(), sections=("profile_defaults", "steady_memory"),
                                  stream_paths=served, progress=False)
    report = run_gpu_check(options, out_dirs=[tmp_path])
    sections = {section.name: section for section in report.sections}
    assert sections["profile_defaults"].status == "ok"
    steady = sections["steady_memory"]
    assert steady.status == "ok", steady.reason
    assert steady.rows[0]["model_from_served_section"] is True
    assert steady.rows[0]["paths"] == sections["profile_defaults"].rows[0]["paths"]
