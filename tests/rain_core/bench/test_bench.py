"""`rain-avatar bench --json` prints the figures the benchmarks page is built from, and the fast paths."""

from __future__ import annotations

import json

import pytest

from cli import main

REQUIRED = {
    "fps", "call_ms", "unet_ms", "decoder_ms", "pose_guider_ms", "first_frame_latency_frames", "peak_mem_mb",
    "profile", "device", "groups", "per_group", "torch_threads", "kv_cache_speedup", "fps_no_kv_cache",
    "fast_paths_requested", "fast_paths_ran",
}
TINY_CPU = ["bench", "--profile", "tiny", "--random-weights", "--device", "cpu", "--seconds", "0.5",
            "--groups", "3", "--per-group", "2", "--json"]


def test_bench_json(capsys):
    import dataclasses

    import torch

    from rain_core.stream.fast_paths import default_fast_paths, default_torch_threads

    threads = torch.get_num_threads()
    assert main(TINY_CPU) == 0
    result = json.loads(capsys.readouterr().out)
    # As serve runs: its thread count, and the process's own given back.
    assert result["torch_threads"] == default_torch_threads(torch.device("cpu"))
    assert torch.get_num_threads() == threads
    assert REQUIRED <= set(result)
    assert (result["profile"], result["device"], result["groups"], result["per_group"]) == ("tiny", "cpu", 3, 2)
    assert result["first_frame_latency_frames"] == 6
    assert result["fps"] > 0 and result["fps_no_kv_cache"] > 0
    assert result["kv_cache_speedup"] == result["fps"] / result["fps_no_kv_cache"]
    assert result["unet_ms"] > 0 and result["call_ms"] >= result["unet_ms"]
    assert result["unet_tflop_per_call"] > 0
    # Without path options the device's defaults (at those threads) run.
    torch.set_num_threads(result["torch_threads"])
    try:
        defaults = json.loads(json.dumps(dataclasses.asdict(default_fast_paths(torch.device("cpu")))))
    finally:
        torch.set_num_threads(threads)
    assert result["fast_paths_requested"] == defaults


def test_bench_reports_the_fast_paths_it_was_asked_for(capsys):
    from rain_core.stream.fast_paths import FastPaths

    assert main([*TINY_CPU, "--no-compile", "--no-cuda-graphs", "--no-channels-last", "--decode-thread",
                 "--bfloat16-decoder", "--attention", "concat", "--threads", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    asked = {"merged_reference_attention": False, "compile": False, "cuda_graphs": False, "channels_last": False,
             "decode_thread": True, "bfloat16_decoder": True, "checked": [], "dropped": [], "notes": []}
    assert result["torch_threads"] == 2
    assert result["fast_paths_requested"] == asked
    assert set(result["fast_paths_requested"]) == set(FastPaths.__dataclass_fields__)
    # What ran is the model's own word: here exactly what was asked for.
    assert result["fast_paths_ran"] == asked


def test_cuda_graphs_on_the_cpu_are_refused_by_name(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*TINY_CPU, "--cuda-graphs"])
    assert exit_info.value.code == 2 and "--cuda-graphs needs a CUDA device" in capsys.readouterr().err


def test_bad_thread_counts_are_refused_by_name(capsys):
    for bad in ("0", "two"):
        with pytest.raises(SystemExit) as exit_info:
            main([*TINY_CPU, "--threads", bad])
        assert exit_info.value.code == 2 and "--threads" in capsys.readouterr().err


def test_unknown_attention_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*TINY_CPU, "--attention", "fast"])
    assert exit_info.value.code == 2 and "--attention" in capsys.readouterr().err
