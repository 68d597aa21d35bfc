"""`bench`, `gpu-check` and `bench-driving`: how fast the engine streams (one measurement, or every
GPU figure in one run), and how fast camera frames become driving images."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from cli.options import (
    add_fast_path_options,
    add_model_options,
    between,
    fast_paths,
    load_components,
    model_config,
    positive_float,
    positive_int,
    print_result,
)
from rain_core.choices import DTYPE_NAMES, GPU_CHECK_SECTIONS, PROFILE_NAMES

# Bounds of the GPU check's options: wide enough for any real run, narrow enough to catch a typo.
MAX_STREAMS = 64
MAX_GROUPS = 32


def add_bench(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="measure the streaming engine's speed")
    add_model_options(bench, default_profile="tiny")
    add_fast_path_options(bench)
    bench.add_argument("--size", type=positive_int, default=None,
                       help="square frame side in pixels, a multiple of 8 (default: the profile's)")
    bench.add_argument("--seconds", type=positive_float, default=5.0, help="seconds per fps measurement")
    bench.add_argument("--threads", type=positive_int, default=None,
                       help="torch CPU threads (default: as serve runs, every core but one on a CPU)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(run=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    """Measure the streaming engine's steady-state speed."""
    import torch

    from rain_core.bench.engine import run_bench
    from rain_core.stream.fast_paths import default_torch_threads

    device = model_config(args).torch_device
    threads = args.threads or default_torch_threads(device)
    previous = torch.get_num_threads()
    # The server's thread count, which the CPU's default paths depend on; the process's own is
    # restored after (the command also runs inside other programs, such as the tests).
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        # Checked before the (slow) load: the paths depend on the device (and threads) only.
        paths = fast_paths(args, device)
        components = load_components(args)
        result = run_bench(components, paths=paths, seconds=args.seconds, progress=not args.json)
    finally:
        torch.set_num_threads(previous)
    print_result(result, args.json)
    return 0


def add_bench_driving(commands: argparse._SubParsersAction) -> None:
    driving = commands.add_parser("bench-driving", help="measure webcam-frame -> driving-image speed (CPU)")
    driving.add_argument(
        "--image", type=Path, required=True, help="photo of a person; a moving 640x480 clip is made from it"
    )
    driving.add_argument("--mode", choices=["face", "body"], default="face")
    driving.add_argument("--output-size", type=positive_int, default=512, help="driving image side in pixels")
    driving.add_argument("--seconds", type=positive_float, default=5.0)
    driving.add_argument("--json", action="store_true", help="print one JSON object")
    driving.set_defaults(run=cmd_bench_driving)


def cmd_bench_driving(args: argparse.Namespace) -> int:
    """Measure camera frames per second through landmark extraction and drawing."""
    import numpy as np

    from rain_core.bench.driving import run_driving_bench
    from rain_core.media.video import load_image

    photo = np.asarray(load_image(args.image))
    result = run_driving_bench(
        photo, mode=args.mode, seconds=args.seconds, output_size=(args.output_size, args.output_size)
    )
    print_result(result, args.json)
    return 0


def _comma_list(item: Callable[[str], object], what: str) -> Callable[[str], tuple]:
    """The argument type of a comma-separated list of `item`s, at least one, no repeats."""

    def parse(text: str) -> tuple:
        parts = [part.strip() for part in text.split(",") if part.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}")
        values = tuple(item(part) for part in parts)
        if len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(f"{text!r} names a value twice")
        return values

    return parse


def _section(text: str) -> str:
    if text not in GPU_CHECK_SECTIONS:
        raise argparse.ArgumentTypeError(f"unknown section {text!r}; sections: {', '.join(GPU_CHECK_SECTIONS)}")
    return text


def _variant(text: str) -> tuple[int, int]:
    groups, sep, per_group = text.lower().partition("x")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: a variant is GxP, e.g. 4x2")
    parse = between(int, 1, MAX_GROUPS)
    return int(parse(groups)), int(parse(per_group))


def add_gpu_check(commands: argparse._SubParsersAction) -> None:
    check = commands.add_parser(
        "gpu-check", help="every GPU figure in one run (official profile, fast paths, batching, memory)",
        description="Measure every GPU figure the project needs, each section within its own time limit; writes "
                    "gpu_check.json and gpu_check.md into --out (and into $OUT when set). --dry-run checks the check "
                    "on the CPU.",
    )
    check.add_argument("--dry-run", action="store_true",
                       help="the tiny profile on the CPU, one call per measurement: seconds, no GPU")
    check.add_argument("--out", type=Path, default=Path("gpu_check"), help="report directory (default: gpu_check)")
    check.add_argument("--json", action="store_true", help="print the JSON report instead of the markdown")
    check.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    check.add_argument("--profile", choices=sorted(PROFILE_NAMES), default=None,
                       help="profile measured, with random weights (default: official; dry run: tiny)")
    check.add_argument("--device", default=None, help="torch device (default: cuda; dry run: cpu)")
    check.add_argument("--dtype", choices=sorted(DTYPE_NAMES), default=None,
                       help="default: float16 (dry run: float32)")
    check.add_argument("--groups", type=between(int, 1, MAX_GROUPS), default=None, help="G of the main measurements")
    check.add_argument("--per-group", type=between(int, 1, MAX_GROUPS), default=None,
                       help="P of the main measurements")
    check.add_argument("--seconds", type=between(float, 0, 600), default=None,
                       help="seconds per fps measurement (default: 3; dry run: 0, i.e. --min-calls only)")
    check.add_argument("--min-calls", type=between(int, 1, 10_000), default=None,
                       help="fewest timed calls per measurement")
    check.add_argument("--warmup-calls", type=between(int, 0, 1000), default=None,
                       help="calls after the queue fills, before timing")
    check.add_argument("--batch-sizes", type=_comma_list(between(int, 1, MAX_STREAMS), "stream counts"),
                       default=None, help="streams per batched call (default: 1,2,4,8)")
    check.add_argument("--variants", type=_comma_list(_variant, "GxP variants"), default=None,
                       help="G x P variants (default: 4x1,4x2,3x4)")
    check.add_argument("--worker-streams", type=between(int, 1, MAX_STREAMS), default=None,
                       help="streams the model worker steps (default: 4)")
    check.add_argument("--steady-calls", type=between(int, 1, 1_000_000), default=None,
                       help="calls of the steady-memory loop, cut short by its time limit (default: 2000)")
    check.add_argument("--budget", type=between(float, 10, 3600), default=None,
                       help="seconds for the whole check; a section with less than half its limit left is "
                            "skipped (default: the sections' limits and 30 s, 390 s for all)")
    check.add_argument("--limit-scale", type=between(float, 0.1, 20), default=None,
                       help="multiply every section's time limit (default: 1, set for an H100-class GPU; "
                            "e.g. 2 on a slower one)")
    check.add_argument("--sections", type=_comma_list(_section, "sections"), default=None,
                       help=f"sections to run, of: {','.join(GPU_CHECK_SECTIONS)} (default: all)")
    add_fast_path_options(check)
    check.set_defaults(run=cmd_gpu_check)


def cmd_gpu_check(args: argparse.Namespace) -> int:
    """Run the GPU check and print its report."""
    import dataclasses
    import json

    import torch

    from rain_core.bench.gpu_check import GpuCheckOptions, run_gpu_check
    from server.worker_bench import model_worker_section

    base = GpuCheckOptions.dry_run_defaults() if args.dry_run else GpuCheckOptions()
    given = dict(
        profile=args.profile, device=args.device, dtype=args.dtype, groups=args.groups, per_group=args.per_group,
        seconds=args.seconds, min_calls=args.min_calls, warmup_calls=args.warmup_calls, batch_sizes=args.batch_sizes,
        variants=args.variants, worker_streams=args.worker_streams, steady_calls=args.steady_calls,
        budget_s=args.budget, limit_scale=args.limit_scale, sections=args.sections,
    )
    options = dataclasses.replace(base, **{key: value for key, value in given.items() if value is not None})
    options = dataclasses.replace(
        options, progress=not args.no_progress, stream_paths=fast_paths(args, torch.device(options.device))
    )
    out_dirs = [args.out]
    if os.environ.get("OUT"):
        # The device machine returns what a command leaves under $OUT.
        out_dirs.append(Path(os.environ["OUT"]))

    def show(report) -> None:
        sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n" if args.json else report.to_markdown() + "\n")
        sys.stderr.write(f"gpu-check: report written to {', '.join(str(d) for d in out_dirs)}\n")

    show(run_gpu_check(options, extra_sections=[model_worker_section()], out_dirs=out_dirs, on_hard_stop=show))
    return 0
