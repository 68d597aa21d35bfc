"""The references kept as files (`REFERENCES_DIR`): what one process uploads, another process
sharing the directory uses, under the same content-addressed id, with the same limits."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from server.references import ReferenceStore, UnknownReference
from tests.server.api.requests import png


def _upload(store: ReferenceStore, colour: tuple[int, int, int]) -> str:
    return store.add_upload(png(40, 30, colour), max_bytes=1 << 20, max_pixels=1 << 20).id


def test_an_upload_is_read_by_another_store_sharing_the_directory(tmp_path: Path) -> None:
    here, there = (ReferenceStore(max_items=4, ttl=60, directory=tmp_path) for _ in range(2))
    reference_id = _upload(here, (200, 100, 50))
    image = there.get(reference_id).image
    assert image.size == (40, 30)
    assert ImageChops.difference(image, Image.new("RGB", (40, 30), (200, 100, 50))).getbbox() is None
    # Content-addressed: the same picture again is the same reference, another one is not.
    assert _upload(there, (200, 100, 50)) == reference_id != _upload(there, (1, 2, 3))
    assert len(here) == len(there) == 2
    # Only the files survive a restart: a new store (a new process) still finds it.
    assert ReferenceStore(max_items=4, ttl=60, directory=tmp_path).get(reference_id).id == reference_id


def test_the_directory_keeps_the_count_and_expiry_limits(tmp_path: Path) -> None:
    store = ReferenceStore(max_items=2, ttl=60, directory=tmp_path)
    first = _upload(store, (10, 10, 10))
    second = _upload(store, (20, 20, 20))
    old = time.time() - 30
    os.utime(tmp_path / f"{first}.png", (old, old))
    os.utime(tmp_path / f"{second}.png", (old - 1, old - 1))
    third = _upload(store, (30, 30, 30))  # the least recently used file goes
    assert sorted(p.stem for p in tmp_path.glob("*.png")) == sorted([first, third])
    reader = ReferenceStore(max_items=2, ttl=60, directory=tmp_path)
    with pytest.raises(UnknownReference):
        reader.get(second)
    expired = time.time() - 61
    os.utime(tmp_path / f"{first}.png", (expired, expired))
    with pytest.raises(UnknownReference):
        reader.get(first)
    assert reader.get(third).id == third


@pytest.mark.parametrize("bad_id", ["../outside", "x" * 22 + "/..", "", "a.png", "A" * 23])
def test_a_client_id_never_names_another_file(tmp_path: Path, bad_id: str) -> None:
    directory = tmp_path / "references"
    store = ReferenceStore(max_items=2, ttl=60, directory=directory)
    Image.new("RGB", (16, 16)).save(tmp_path / "outside.png")
    with pytest.raises(UnknownReference):
        store.get(bad_id)
