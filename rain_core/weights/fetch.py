"""Download a profile's weights into one directory: resumable, verified, all or nothing per file.

The Hub files come through `huggingface_hub.hf_hub_download(local_dir=...)`, which resumes an
interrupted download by itself; the HTTPS file (TAESDV) is resumed here with an HTTP Range
request on a `.part` file, and takes its final name only once its layout is checked. Each
file's size and sha256 go into `weights.lock.json` on first download; a second run checks
the files against it and downloads nothing.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from tqdm.auto import tqdm

from rain_core.config import profile_config
from rain_core.stream.components import RainComponents
from rain_core.weights.checkpoints import WeightsError, check_state_dict, read_state_dict
from rain_core.weights.lock import WeightsLock, hash_file
from rain_core.weights.manifest import OFFICIAL_WEIGHTS, HubSource, UrlFile, WeightsManifest

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
# Seconds without a byte before an HTTPS download gives up (it resumes on the next run).
_TIMEOUT = 60


@dataclass(frozen=True)
class Fetched:
    """What happened to one file: `verified` against the lock, or `fetched` (and recorded)."""

    target: str
    action: Literal["verified", "fetched"]


def fetch_weights(weights_dir: str | Path, manifest: WeightsManifest = OFFICIAL_WEIGHTS) -> list[Fetched]:
    """Bring every file of `manifest` into `weights_dir`, checking those already there.

    Raises `WeightsError` naming the file when a download fails, when a file differs from
    its record in the lock file, or when the TAESDV checkpoint has another layout.
    """
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    lock = WeightsLock.load(weights_dir)
    return [_fetch(lock, target, source, download) for target, source, download in _plan(manifest, weights_dir)]


def _plan(manifest: WeightsManifest, weights_dir: Path) -> Iterator[tuple[str, str, Callable[[], None]]]:
    """(path in the weights directory, source id, download) per file, in manifest order."""
    for source in manifest.hub:
        for name, target in source.targets():
            yield target, _hub_source_id(source, name), partial(_download_hub, source, name, weights_dir)
    for item in manifest.urls:
        yield item.target, item.url, partial(_download_url, item, weights_dir, manifest.profile)


def _fetch(lock: WeightsLock, target: str, source: str, download: Callable[[], None]) -> Fetched:
    entry = lock.entry(target, source)
    if entry is not None and (lock.weights_dir / target).is_file():
        lock.verify(target, entry)
        logger.info("%s: verified against %s", target, lock.path.name)
        return Fetched(target, "verified")
    download()
    if entry is not None:
        # Re-downloaded after it went missing: it must still be the recorded file.
        lock.verify(target, entry)
    else:
        lock.record(target, source)
        lock.save()
    logger.info("%s: fetched from %s", target, source)
    return Fetched(target, "fetched")


# Hugging Face Hub ----------------------------------------------------------------------

def _hub_source_id(source: HubSource, name: str) -> str:
    return f"hf://{source.repo_id}@{source.revision}/{name}"


def _download_hub(source: HubSource, name: str, weights_dir: Path) -> None:
    local_dir = weights_dir / source.subdir if source.subdir else weights_dir
    try:
        hf_hub_download(repo_id=source.repo_id, filename=name, revision=source.revision, local_dir=local_dir)
    except (OSError, EntryNotFoundError) as exc:
        raise WeightsError(
            f"{_hub_source_id(source, name)}: cannot download into {local_dir / name} ({type(exc).__name__}: {exc})"
        ) from None


# HTTPS with resume -----------------------------------------------------------------------

def _download_url(item: UrlFile, weights_dir: Path, profile: str) -> None:
    final = weights_dir / item.target
    if final.is_file():
        # Not in the lock (put there by hand, or from an older manifest): kept if it is the
        # pinned file, else replaced, as huggingface_hub replaces an outdated file.
        try:
            _check_url_file(final, item, profile)
            return
        except WeightsError as exc:
            logger.warning("%s: %s; downloading the pinned file", final, exc)
    part = final.with_name(final.name + ".part")
    final.parent.mkdir(parents=True, exist_ok=True)
    _download_resumable(item.url, part)
    try:
        _check_url_file(part, item, profile)
    except WeightsError:
        part.unlink()
        raise
    os.replace(part, final)


def _download_resumable(url: str, part: Path) -> None:
    """Download `url` into `part`, continuing from the bytes `part` already holds."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        # A fresh opener reads the proxy settings of the environment as they are now
        # (urlopen's shared one keeps those of its first use).
        response = urllib.request.build_opener().open(request, timeout=_TIMEOUT)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            # Range Not Satisfiable from the end of the file: the part is already whole.
            logger.info("%s: %s is already complete", url, part)
            return
        raise WeightsError(f"{url}: HTTP {exc.code} {exc.reason} (downloading into {part})") from None
    except (urllib.error.URLError, OSError) as exc:
        raise WeightsError(f"{url}: cannot connect ({getattr(exc, 'reason', exc)}); downloading into {part}") from None
    with response:
        if offset and response.status != 206:
            logger.warning("%s: the server ignored the Range request; downloading from the start", url)
            offset = 0
        elif offset and not (response.headers.get("Content-Range") or "").startswith(f"bytes {offset}-"):
            raise WeightsError(f"{url}: asked for bytes {offset}- and got {response.headers.get('Content-Range')!r}")
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        _copy_body(response, part, offset, total, url)
    if total is not None and part.stat().st_size != total:
        # The connection closed early (http.client returns short reads rather than raising).
        raise WeightsError(
            f"{url}: download interrupted at {part.stat().st_size} of {total} bytes; run again to resume from {part}"
        )


def _copy_body(response: http.client.HTTPResponse, part: Path, offset: int, total: int | None, url: str) -> None:
    with part.open("ab" if offset else "wb") as file, tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=part.name
    ) as bar:
        try:
            while chunk := response.read(_CHUNK):
                file.write(chunk)
                bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as exc:
            raise WeightsError(
                f"{url}: download interrupted at {file.tell()} bytes ({type(exc).__name__}: {exc}); "
                f"run again to resume from {part}"
            ) from None


def git_blob_sha1(path: Path) -> str:
    """The id git gives the file's content (`git hash-object`)."""
    return hash_file(path, hashlib.sha1(f"blob {path.stat().st_size}\0".encode()))


def _check_url_file(path: Path, item: UrlFile, profile: str) -> None:
    """Refuse a checkpoint of another layout, or other bytes than the pinned commit's."""
    if item.component is not None:
        model = getattr(RainComponents.build(profile_config(profile), device="meta"), item.component)
        try:
            # A `.part` file is read as what it will be called.
            check_state_dict(model, read_state_dict(path, suffix=Path(item.target).suffix), path)
        except WeightsError as exc:
            raise WeightsError(
                f"{item.url}: refused, not a {item.target} of the layout profile {profile!r} needs "
                f"(the pinned commit in rain_core/weights/manifest.py must be one with that layout): {exc}"
            ) from None
    if item.git_blob_sha1 is not None:
        blob = git_blob_sha1(path)
        if blob != item.git_blob_sha1:
            raise WeightsError(
                f"{item.url}: refused, {path} has git blob id {blob}, not the pinned {item.git_blob_sha1}"
            )
