"""Which model profile to run, given the weights at hand, and loading it.

The server and the CLI call `load_model` at start-up. It runs `resolve_profile(requested,
weights_dir)`: the requested profile if its weights are complete, or, when none is requested,
the first profile of `AUTO_PROFILES` whose weights are.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rain_core.config import PROFILES, ConfigError, RainConfig, default_device, profile_config
from rain_core.stream.components import RainComponents
from rain_core.stream.fast_paths import default_dtype
from rain_core.weights.checkpoints import IMAGE_ENCODER_FOLDER, WeightsError
from rain_core.weights.loading import check_weights_dir, load_components

# The demo model trained here on synthetic characters ships inside the package.
DEMO_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "assets" / "demo"
# A character the demo model knows (a held-out synthetic one, at rest): the server's default.
DEMO_CHARACTER = DEMO_WEIGHTS_DIR / "character.png"
# Profiles tried in order when none is requested: (profile, its bundled weights directory, or
# None for the directory given by the user). With the demo last, a box without downloaded
# weights still starts.
AUTO_PROFILES: tuple[tuple[str, Path | None], ...] = (("official", None), ("demo", DEMO_WEIGHTS_DIR))


def sample_character(config: RainConfig) -> Path | None:
    """The bundled character that suits a model of this profile, if any."""
    return DEMO_CHARACTER if config.name == "demo" and DEMO_CHARACTER.is_file() else None


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
    complete is a `WeightsError` saying what each lacks and how to fetch the weights. A given
    `weights_dir` is always tried before a profile's bundled weights.
    """
    given = Path(weights_dir) if weights_dir is not None else None
    bundled = dict(AUTO_PROFILES)
    if requested is not None:
        # Weights the user names win over the bundled ones (an exported run, say).
        directory = given or bundled.get(requested)
        problems = missing_parts(requested, directory)
        if problems:
            hint = f"; {fetch_hint(directory)}" if requested == "official" else ""
            raise WeightsError(f"profile {requested!r}: incomplete weights ({'; '.join(problems)}){hint}")
        return requested, directory
    tried = []
    for profile, bundled_dir in AUTO_PROFILES:
        candidates = [d for d in (given, bundled_dir) if d is not None]
        for directory in candidates or [None]:
            problems = missing_parts(profile, directory)
            if not problems:
                return profile, directory
            tried.append(f"{profile}: {'; '.join(problems)}")
    raise WeightsError(f"no profile has complete weights ({' | '.join(tried)}); {fetch_hint(given)}")


def runtime_config(profile: str, *, device: str | None = None, dtype: str | None = None,
                   groups: int | None = None, per_group: int | None = None, seed: int | None = None,
                   size: int | None = None) -> RainConfig:
    """The profile's configuration on this machine: CUDA and float16 when there is a GPU, else
    the CPU in the profile's CPU dtype (`default_dtype`), unless given; G (and the LCM steps with
    it), P, the seed and a square frame side (benchmarks of a profile's widths at another size)."""
    device = device or default_device()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device}: CUDA is not available on this machine")
    overrides: dict = {"device": device, "dtype": dtype or default_dtype(torch.device(device), profile)}
    if groups is not None:
        overrides.update(noise_groups=groups, num_inference_steps=groups)
    if per_group is not None:
        overrides["frames_per_group"] = per_group
    if seed is not None:
        overrides["seed"] = seed
    if size is not None:
        overrides.update(height=size, width=size)
    return profile_config(profile).with_overrides(**overrides)


def check_model_source(profile: str | None, weights_dir: object, *, random_weights: bool) -> None:
    """The rules for where a model comes from: random weights need a profile and no weights directory."""
    if profile is not None and profile not in PROFILES:
        raise ConfigError(f"{profile!r} is not a profile; known profiles: {', '.join(sorted(PROFILES))}")
    if random_weights and weights_dir is not None:
        raise ConfigError("give either a weights directory or random weights, not both")
    if random_weights and profile is None:
        raise ConfigError("random weights need a profile (--profile, RAIN_PROFILE)")


def load_model(requested: str | None, weights_dir: str | Path | None, *, random_weights: bool = False,
               **runtime) -> RainComponents:
    """The networks to run: random weights for a named profile, or the profile `resolve_profile`
    picks with its weights (every missing part named before the slow load starts)."""
    if random_weights:
        check_model_source(requested, weights_dir, random_weights=True)
        config = runtime_config(requested, **runtime)
        return RainComponents.random(config, seed=config.seed)
    if requested is not None and weights_dir is None and requested not in dict(AUTO_PROFILES):
        raise ConfigError(
            f"profile {requested!r} needs a weights directory (or random weights, to measure speed)"
        )
    profile, directory = resolve_profile(requested, weights_dir)
    config = runtime_config(profile, **runtime)
    with_encoders = uses_image_encoders(profile, directory)
    return load_components(config, directory, with_image_encoders=with_encoders)
