"""`rain-avatar bench --json` prints the figures the benchmarks page is built from."""

from __future__ import annotations

import json

from cli import main

REQUIRED = {
    "fps", "call_ms", "unet_ms", "decoder_ms", "pose_guider_ms", "first_frame_latency_frames", "peak_mem_mb",
    "profile", "device", "groups", "per_group", "kv_cache_speedup", "fps_no_kv_cache",
}


def test_bench_json(capsys):
    assert main(["bench", "--profile", "tiny", "--random-weights", "--device", "cpu", "--seconds", "0.5",
                 "--groups", "3", "--per-group", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert REQUIRED <= set(result)
    assert (result["profile"], result["device"], result["groups"], result["per_group"]) == ("tiny", "cpu", 3, 2)
    assert result["first_frame_latency_frames"] == 6
    assert result["fps"] > 0 and result["fps_no_kv_cache"] > 0
    assert result["kv_cache_speedup"] == result["fps"] / result["fps_no_kv_cache"]
    assert result["unet_ms"] > 0 and result["call_ms"] >= result["unet_ms"]
    assert result["unet_tflop_per_call"] > 0
