"""Which model profile to run, given the weights at hand.

The server calls `resolve_profile(requested, weights_dir)` at start-up: the requested profile
if its weights are complete, or, when none is requested, the first profile of
`AUTO_PROFILES` whose weights are.
"""

from __future__ import annotations

from pathlib import Path

from rain_core.components import IMAGE_ENCODER_FOLDER, check_weights_dir
from rain_core.config import profile_config
from rain_core.weights import WeightsError

# The demo model trained here on synthetic characters ships inside the package.
DEMO_WEIGHTS_DIR = Path(__file__).resolve().parent / "assets" / "demo"
# Profiles tried in order when none is requested: (profile, its bundled weights directory, or
# None for the directory given by the user). With the demo last, a box without downloaded
# weights still starts.
AUTO_PROFILES: tuple[tuple[str, Path | None], ...] = (("official", None), ("demo", DEMO_WEIGHTS_DIR))


def fetch_hint(weights_dir: Path | None) -> str:
    """How to get the official weights into `weights_dir`."""
    where = weights_dir if weights_dir is not None else "DIR"
    return f"download the official weights with `rain-avatar fetch-weights --dir {where}`"


def uses_image_encoders(profile: str, weights_dir: Path) -> bool:
    """`official` encodes the reference with the SD VAE and CLIP; smaller profiles may do without."""
    return profile == "official" or (weights_dir / IMAGE_ENCODER_FOLDER).is_dir()


def missing_parts(profile: str, weights_dir: Path | None) -> list[str]:
    """What `weights_dir` lacks for `profile`, one line per part (empty when complete).

    Checkpoints are checked key by key against a meta-device model, so a file of the wrong
    layout counts as missing; nothing large is allocated.
    """
    if weights_dir is None:
        return ["no weights directory given"]
    if not weights_dir.is_dir():
        return [f"{weights_dir}: weights directory does not exist"]
    config = profile_config(profile)
    statuses = check_weights_dir(config, weights_dir, with_image_encoders=uses_image_encoders(profile, weights_dir))
    return [f"{status.name}: {status.problem}" for status in statuses if not status.ok]


def resolve_profile(requested: str | None, weights_dir: str | Path | None) -> tuple[str, Path]:
    """(profile, weights directory) to run.

    `requested` must have complete weights, or `WeightsError` lists every missing part; with
    `requested=None` the first complete profile of `AUTO_PROFILES` wins, and none being
    complete is a `WeightsError` saying what each lacks and how to fetch the weights.
    """
    given = Path(weights_dir) if weights_dir is not None else None
    bundled = dict(AUTO_PROFILES)
    if requested is not None:
        directory = bundled.get(requested) or given
        problems = missing_parts(requested, directory)
        if problems:
            hint = f"; {fetch_hint(directory)}" if requested == "official" else ""
            raise WeightsError(f"profile {requested!r}: incomplete weights ({'; '.join(problems)}){hint}")
        return requested, directory
    tried = []
    for profile, directory in AUTO_PROFILES:
        directory = directory or given
        problems = missing_parts(profile, directory)
        if not problems:
            return profile, directory
        tried.append(f"{profile}: {'; '.join(problems)}")
    raise WeightsError(f"no profile has complete weights ({' | '.join(tried)}); {fetch_hint(given)}")
