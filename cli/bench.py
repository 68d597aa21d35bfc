"""`bench` and `bench-driving`: how fast the engine streams, and how fast camera frames become driving images."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.options import (
    add_fast_path_options,
    add_model_options,
    fast_paths,
    load_components,
    model_config,
    positive_float,
    positive_int,
    print_result,
)


def add_bench(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="measure the streaming engine's speed")
    add_model_options(bench, default_profile="tiny")
    add_fast_path_options(bench)
    bench.add_argument("--seconds", type=positive_float, default=5.0, help="seconds per fps measurement")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(run=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    """Measure the streaming engine's steady-state speed."""
    from rain_core.bench.engine import run_bench

    # Checked before the (slow) load: the paths depend on the device only.
    paths = fast_paths(args, model_config(args).torch_device)
    components = load_components(args)
    print_result(run_bench(components, paths=paths, seconds=args.seconds, progress=not args.json), args.json)
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
