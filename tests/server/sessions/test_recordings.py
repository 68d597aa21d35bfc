"""The recording store on its own: the disk budget, and the expiry of ended sessions' files."""

from __future__ import annotations

import os
import time

import pytest

from server.sessions.errors import UnknownSession
from server.sessions.recordings import RecordingsFull, RecordingStore, UnknownRecording


def test_disk_budget_and_expiry(tmp_path) -> None:
    store = RecordingStore(tmp_path, max_bytes=1_000_000, ttl=0.2)
    kept = store.new("session-a", fps=16)
    store.add(kept)
    kept.state = "finished"
    kept.path.write_bytes(b"x" * 600_000)
    assert store.room_for(store.new("session-a", fps=16)) == 400_000
    stray = tmp_path / "rec-AAAAAAAAAAAAAAAAAAAAAA.mp4"  # of an earlier run: counted, then expired
    stray.write_bytes(b"x" * 400_000)
    mine = tmp_path / "notes.txt"  # not ours: neither counted nor ever deleted
    mine.write_bytes(b"x" * 2_000_000)
    with pytest.raises(RecordingsFull, match="1000000 of 1000000 bytes"):
        store.new("session-a", fps=16)

    assert store.get("session-a", kept.id) is kept
    with pytest.raises(UnknownRecording):
        store.get("session-b", kept.id)  # another session's id never finds it
    with pytest.raises(UnknownSession):
        store.ended_session("session-a")  # still live: the runtime asks the registry first
    store.session_ended("session-a")
    assert store.ended_session("session-a") == [kept]
    store.clean()
    assert kept.path.exists() and stray.exists()  # not expired yet

    old = time.time() - 1
    os.utime(stray, (old, old))
    time.sleep(0.25)
    store.clean()
    assert not kept.path.exists() and not stray.exists() and mine.exists()
    with pytest.raises(UnknownSession):
        store.ended_session("session-a")
    assert store.bytes_used() == 0
