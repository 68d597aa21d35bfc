"""`weights.lock.json`: the size and sha256 of every fetched file, recorded on first download.

Weights are fetched from branch names and a URL, so their bytes are pinned here instead:
a file that later differs from its record (damaged disk, a half-copied volume, an upstream
change) is an error naming the file, never a silent re-download.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from rain_core.weights.checkpoints import WeightsError

logger = logging.getLogger(__name__)

LOCK_NAME = "weights.lock.json"
LOCK_FORMAT = 1
_CHUNK = 1 << 20


@dataclass(frozen=True)
class LockEntry:
    source: str
    size: int
    sha256: str


class Digest(Protocol):
    """What `hash_file` needs of a hashlib object."""

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


def hash_file(path: Path, digest: Digest) -> str:
    """Feed the file to `digest` in chunks (weights are GBs) and return its hex digest."""
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    return hash_file(path, hashlib.sha256())


class WeightsLock:
    """The lock file of one weights directory; keys are paths inside that directory."""

    def __init__(self, weights_dir: Path, entries: dict[str, LockEntry]):
        self.weights_dir = weights_dir
        self.entries = entries

    @property
    def path(self) -> Path:
        return self.weights_dir / LOCK_NAME

    @classmethod
    def load(cls, weights_dir: Path) -> WeightsLock:
        path = weights_dir / LOCK_NAME
        if not path.exists():
            return cls(weights_dir, {})
        try:
            raw = json.loads(path.read_text())
            if raw.get("format") != LOCK_FORMAT:
                raise ValueError(f"format {raw.get('format')!r}, expected {LOCK_FORMAT}")
            entries = {name: LockEntry(**fields) for name, fields in raw["files"].items()}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise WeightsError(
                f"{path}: unreadable lock file ({type(exc).__name__}: {exc}); delete it to record the files anew"
            ) from None
        return cls(weights_dir, entries)

    def entry(self, target: str, source: str) -> LockEntry | None:
        """The record of `target` if it was fetched from `source`; a record of another source
        (the manifest moved to a newer release) no longer applies."""
        entry = self.entries.get(target)
        if entry is not None and entry.source != source:
            logger.info("%s: recorded from %s, the manifest now names %s", target, entry.source, source)
            return None
        return entry

    def verify(self, target: str, entry: LockEntry) -> None:
        """Raise `WeightsError` naming the file unless its size and sha256 are the recorded ones."""
        path = self.weights_dir / target
        size = path.stat().st_size
        if size != entry.size:
            raise WeightsError(self._mismatch(path, f"size {size} bytes", f"{entry.size} bytes"))
        digest = sha256_of(path)
        if digest != entry.sha256:
            raise WeightsError(self._mismatch(path, f"sha256 {digest}", entry.sha256))

    def record(self, target: str, source: str) -> LockEntry:
        path = self.weights_dir / target
        entry = LockEntry(source=source, size=path.stat().st_size, sha256=sha256_of(path))
        self.entries[target] = entry
        return entry

    def save(self) -> None:
        """Write atomically, so that an interrupted fetch keeps the records made so far."""
        data = {"format": LOCK_FORMAT, "files": {k: asdict(v) for k, v in sorted(self.entries.items())}}
        partial = self.path.with_name(self.path.name + ".tmp")
        partial.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(partial, self.path)

    def _mismatch(self, path: Path, found: str, recorded: str) -> str:
        return (
            f"{path}: {found} differs from the {recorded} recorded in {self.path} when it was first "
            f"downloaded (damaged, or changed upstream). Delete the file and run "
            f"`rain-avatar fetch-weights --dir {self.weights_dir}` to download it again"
        )
