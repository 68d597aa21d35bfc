"""The recording store on its own: the disk budget, and the expiry of ended sessions' files."""

from __future__ import annotations

import os
import time

import pytest
from aiortc import VideoStreamTrack

from server.media.recorder import Recorder
from server.sessions.errors import UnknownSession
from server.sessions.recordings import Recording, RecordingsFull, RecordingStore, UnknownRecording


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


def _under_way(store: RecordingStore, session_id: str) -> Recording:
    """A recording started as a session starts one (its recorder made, then added)."""
    recording = store.new(session_id, fps=16)
    recording.recorder = Recorder(
        VideoStreamTrack(), recording.path, fps=16, width=64, height=64, max_seconds=60,
        max_bytes=store.room_for(recording),
    )
    store.add(recording)
    return recording


def test_recordings_under_way_share_the_budget_with_every_replica_folder(tmp_path) -> None:
    mine = RecordingStore(tmp_path / "replica-a", max_bytes=1_000_000, ttl=60, budget_directory=tmp_path)
    (tmp_path / "replica-b").mkdir()
    (tmp_path / "replica-b" / "rec-BBBBBBBBBBBBBBBBBBBBBB.mp4").write_bytes(b"x" * 200_000)  # another replica's
    first = _under_way(mine, "session-a")
    assert first.recorder.max_bytes == 800_000
    first.recorder.progress.bytes = 100_000
    first.path.write_bytes(b"x" * 100_000)
    second = _under_way(mine, "session-b")
    # What is left (700 kB) is shared: together they stay within the budget.
    assert first.recorder.max_bytes == 100_000 + 350_000 and second.recorder.max_bytes == 350_000
    limits = first.recorder.max_bytes + second.recorder.max_bytes
    assert limits + 200_000 == mine.max_bytes


def test_a_replica_cleans_its_own_folder_and_only_abandoned_others(tmp_path) -> None:
    ttl = 0.2
    mine = RecordingStore(tmp_path / "replica-a", max_bytes=1_000_000, ttl=ttl, budget_directory=tmp_path)
    live = RecordingStore(tmp_path / "replica-b", max_bytes=1_000_000, ttl=ttl, budget_directory=tmp_path)
    gone = tmp_path / "replica-c"
    gone.mkdir()
    abandoned = gone / "rec-CCCCCCCCCCCCCCCCCCCCCC.mp4"
    abandoned.write_bytes(b"x")
    kept = live.new("session-b", fps=16)
    live.add(kept)
    kept.state = "finished"
    kept.path.write_bytes(b"x")
    old = time.time() - 10
    os.utime(kept.path, (old, old))  # older than the TTL, but its session is live: its owner keeps it
    live.clean()  # the live replica says it is alive
    os.utime(gone, (old, old))  # the gone one has not for long
    mine.clean()
    assert kept.path.exists() and not gone.exists()
    assert (tmp_path / "replica-a" / ".alive").exists()
