"""`rain-avatar`: the command line of the project.

One module per group of commands (`weights`, `media`, `bench`, `train`, `serve`), each adding
its subcommands' parsers; a parsed command's `run` does the work. Nothing imported here imports
torch or mediapipe: `main` makes the process's settings first, because both read theirs once,
when they load.
"""

from __future__ import annotations

import argparse
import logging
import os

from cli import bench, media, serve, train, weights
from cli.native_logs import hide_native_logs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rain-avatar", description="Live RAIN avatars over WebRTC.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    for add_parser in (weights.add_info, media.add_animate, weights.add_fetch_weights, bench.add_bench,
                       bench.add_gpu_check, bench.add_bench_driving, train.add_train, train.add_evaluate,
                       train.add_export, serve.add_serve):
        add_parser(commands)
    return parser


def set_up_process(args: argparse.Namespace) -> None:
    """The process's settings for the command, made before torch and mediapipe are imported."""
    # Idle OpenMP threads sleep instead of spinning. The engine shares the CPU with mediapipe,
    # the video codecs and the event loop; with spinning threads one busy core stalls every
    # parallel region (measured here: a training step went from 1.7 s to 13 s on a loaded 2-core
    # machine). `train` owns the CPU, and spinning threads make its steps about 1.5x faster
    # (0.75 s against 1.17 s for a demo step on 2 cores), so it keeps the default.
    if args.command != "train":
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if not args.verbose:
        hide_native_logs()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    set_up_process(args)
    # Only now: these import torch.
    from rain_core.config import ConfigError
    from rain_core.media.errors import MediaError
    from rain_core.weights.checkpoints import WeightsError

    try:
        return args.run(args)
    except (ConfigError, WeightsError, MediaError) as exc:
        parser.exit(2, f"rain-avatar {args.command}: error: {exc}\n")
    except KeyboardInterrupt:
        parser.exit(130, "rain-avatar: interrupted\n")
    return 1
