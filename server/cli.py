"""`rain-avatar`: the command line of the project."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from rain_core.components import RainComponents, check_weights_dir
from rain_core.config import PROFILES, ConfigError, profile_config

logger = logging.getLogger("rain_avatar")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="official", choices=sorted(PROFILES), help="model profile")
    parser.add_argument("--weights", type=Path, default=None, help="weights directory of the profile")


def cmd_info(args: argparse.Namespace) -> int:
    """Describe a profile and, with --weights, check that directory part by part."""
    config = profile_config(args.profile)
    meta = RainComponents.build(config, device="meta")
    out = sys.stdout
    out.write(f"profile {config.name}: G={config.noise_groups} groups x P={config.frames_per_group} frames, "
              f"{config.num_inference_steps} LCM steps, {config.width}x{config.height}, {config.dtype} on {config.device}\n")
    out.write(f"  first frame after {config.queue_length} driving frames; {config.frames_per_group} frames per UNet call\n")
    for name, network in meta.networks():
        params = sum(p.numel() for p in network.parameters())
        out.write(f"  {name:<16} {params / 1e6:9.2f} M parameters\n")
    if args.weights is None:
        return 0
    statuses = check_weights_dir(config, args.weights)
    for status in statuses:
        out.write(f"  [{'ok' if status.ok else 'MISSING' if status.path is None else 'BAD'}] {status.name}: "
                  f"{status.path if status.ok else status.problem}\n")
    return 0 if all(s.ok for s in statuses) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rain-avatar", description="Live RAIN avatars over WebRTC.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="describe a model profile and check a weights directory")
    _add_model_options(info)
    info.set_defaults(run=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except ConfigError as exc:
        parser.exit(2, f"rain-avatar: error: {exc}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
