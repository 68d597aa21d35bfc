"""The recordings of the box's sessions: their files, the disk budget, and their expiry.

A recording belongs to one session, and only its session id (the session's credential) lists
or downloads it. Files are named by the server (`rec-<128-bit token>.mp4` in `RECORDINGS_DIR`);
nothing from a client is ever part of a path: an id is only looked up among the session's own.
A session's files are kept `RECORDING_TTL` seconds after it ends, then deleted; files of ours
that no live process knows (left by an earlier run) are deleted once as old as that.

On a cluster each avatar replica writes in a folder of its own, `RECORDINGS_DIR/replica-<id>`
(several replicas may share one disk, or one volume): it cleans only its own folder, and a
folder whose owner has stopped touching its `.alive` file for `RECORDING_TTL` and a few cleaning
rounds (the replica is gone, its sessions with it) is deleted by any other. The disk budget
counts every file of ours under `RECORDINGS_DIR`, every replica's, and the recordings under way
share what is left: each start divides the free room among them, so together they stay within it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from server.media.recorder import Recorder
from server.sessions.errors import UnknownSession
from server.tokens import new_token

logger = logging.getLogger(__name__)

# Our files: finished recordings, and the temporary files of recordings under way.
FILE_PATTERN = re.compile(r"^\.?rec-[A-Za-z0-9_-]{22}\.mp4(\.part)?$")
# How often expired files are looked for (at most; a short TTL looks more often).
CLEANUP_INTERVAL = 60.0
# A replica's folder, and the file its owner touches at each cleaning round (it is alive).
REPLICA_FOLDER = re.compile(r"^replica-[A-Za-z0-9_-]{1,64}$")
ALIVE_FILE = ".alive"
# Cleaning rounds a folder's owner may miss before the folder counts as abandoned (then, after
# RECORDING_TTL more, it is deleted).
MISSED_ROUNDS = 3


class UnknownRecording(KeyError):
    def __str__(self) -> str:
        return "unknown recording"


class RecordingConflict(RuntimeError):
    """Recording asked to start while it runs, or to stop while it does not; the message says which."""


class RecordingsFull(RuntimeError):
    """The disk space for recordings is used up (or there is no directory to write them to)."""


@dataclass
class Recording:
    """One recording of one session: under way until `finished`, then a file (or a failure)."""

    id: str
    session_id: str
    path: Path
    fps: float
    started_at: float = field(default_factory=time.time)
    recorder: Recorder | None = None
    state: str = "recording"  # recording, finished, failed
    task: asyncio.Task | None = None

    def describe(self) -> dict:
        """What the API and the control channel say of it (never the path on the server)."""
        recorder = self.recorder
        progress = recorder.progress if recorder else None
        return {
            "recording_id": self.id,
            "state": self.state,
            "started": datetime.fromtimestamp(self.started_at, UTC).isoformat(timespec="seconds"),
            "fps": self.fps,
            "frames": progress.frames if progress else 0,
            "duration_s": round(recorder.duration, 3) if recorder else 0.0,
            # The stream time the frames spanned, by their timestamps (the server's clock).
            "span_s": round(progress.span_seconds, 3) if progress else 0.0,
            "bytes": progress.bytes if progress else 0,
            "audio": recorder is not None and recorder.with_audio,
            "codec": progress.codec if progress else None,
            # Why the recording left NVENC for libx264, when it did.
            "codec_fallback": progress.codec_fallback if progress else None,
            "dropped": {"video": progress.frames_dropped, "audio": progress.audio_frames_dropped} if progress else {},
            "repeated": progress.frames_repeated if progress else 0,
            "stop_reason": recorder.stop_reason if recorder and self.state != "recording" else None,
            "url": f"/api/sessions/{self.session_id}/recordings/{self.id}" if self.state == "finished" else None,
        }


class RecordingStore:
    """Every session's recordings, by session id; the disk budget and the clean-up."""

    def __init__(self, directory: Path, *, max_bytes: int, ttl: float, budget_directory: Path | None = None):
        """`directory`: where this process writes; `budget_directory`: the folder whose files (its
        own and its replica folders') share `max_bytes`, when `directory` is one of its replica folders."""
        self.directory = directory
        self.budget_directory = budget_directory or directory
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._recordings: dict[str, list[Recording]] = {}
        self._ended: dict[str, float] = {}  # session id -> when it ended (monotonic)
        self._cleaner: asyncio.Task | None = None

    def start(self) -> None:
        self._cleaner = asyncio.ensure_future(self._clean_regularly())

    async def stop(self) -> None:
        if self._cleaner is not None:
            self._cleaner.cancel()
            await asyncio.gather(self._cleaner, return_exceptions=True)

    # A session's recordings ----------------------------------------------------------------
    def new(self, session_id: str, *, fps: float) -> Recording:
        """A new recording's entry and file name, if the disk budget has room (`add` it once it runs)."""
        used = self.bytes_used()
        if used >= self.max_bytes:
            raise RecordingsFull(
                f"the disk space for recordings is used up ({used} of {self.max_bytes} bytes); "
                "older recordings are deleted when they expire"
            )
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RecordingsFull(f"the recordings directory cannot be created ({exc.strerror})") from None
        recording_id = new_token()
        recording = Recording(
            id=recording_id, session_id=session_id, path=self.directory / f"rec-{recording_id}.mp4", fps=fps
        )
        return recording

    def add(self, recording: Recording) -> None:
        """A recording now under way (its recorder made): the free room is shared again."""
        self._recordings.setdefault(recording.session_id, []).append(recording)
        self._share_room()

    def _share_room(self) -> None:
        """Each recording under way may grow by an equal share of what the budget has left: their
        limits together never exceed it (a limit set once at each start would let them overshoot)."""
        under_way = [
            r.recorder for recordings in self._recordings.values() for r in recordings
            if r.state == "recording" and r.recorder is not None
        ]
        if not under_way:
            return
        share = max(0, self.max_bytes - self.bytes_used()) // len(under_way)
        for recorder in under_way:
            recorder.max_bytes = recorder.progress.bytes + share

    def room_for(self, recording: Recording) -> int:
        """Bytes the recording may grow to: the budget less every other file."""
        return max(0, self.max_bytes - self.bytes_used(excluding=recording.path))

    def of_session(self, session_id: str) -> list[Recording]:
        return list(self._recordings.get(session_id, []))

    def get(self, session_id: str, recording_id: str) -> Recording:
        for recording in self._recordings.get(session_id, []):
            if recording.id == recording_id:
                return recording
        raise UnknownRecording(recording_id)

    def session_ended(self, session_id: str) -> None:
        """Start the session's files' time to live."""
        if session_id in self._recordings:
            self._ended[session_id] = time.monotonic()

    def ended_session(self, session_id: str) -> list[Recording]:
        """The recordings of an ended session still kept; `UnknownSession` if none is."""
        if session_id not in self._ended:
            raise UnknownSession(session_id)
        return self.of_session(session_id)

    # Disk --------------------------------------------------------------------------------
    def bytes_used(self, excluding: Path | None = None) -> int:
        """Every file of ours under the budget's folder (every replica's), finished or under way,
        known to this run or not."""
        total = 0
        for path in _files_of_ours(self.budget_directory, replica_folders=True):
            if path != excluding:
                with contextlib.suppress(FileNotFoundError):
                    total += path.stat().st_size
        return total

    async def _clean_regularly(self) -> None:
        while True:
            await asyncio.to_thread(self.clean)
            await asyncio.sleep(self.interval)

    def clean(self) -> None:
        """Delete the files of sessions ended more than `ttl` ago, and of ours that no session knows
        once as old as that (the temporary ones of a crashed run among them)."""
        now = time.monotonic()
        for session_id, ended in list(self._ended.items()):
            if now - ended > self.ttl:
                for recording in self._recordings.pop(session_id, []):
                    recording.path.unlink(missing_ok=True)
                del self._ended[session_id]
                logger.info("deleted the expired recordings of an ended session")
        known = {r.path.name for recordings in self._recordings.values() for r in recordings}
        known |= {f".{name}.part" for name in known}
        for path in _files_of_ours(self.directory):
            if path.name not in known:
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - path.stat().st_mtime > self.ttl:
                        path.unlink()
                        logger.info("deleted %s, a recording no session knows", path.name)
        if self.directory != self.budget_directory:
            self._clean_abandoned_folders()

    def _clean_abandoned_folders(self) -> None:
        """Say this replica is alive, and delete the folders of replicas that are not."""
        with contextlib.suppress(OSError):
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / ALIVE_FILE).touch()
        abandoned_after = self.ttl + MISSED_ROUNDS * self.interval
        with contextlib.suppress(FileNotFoundError):
            for folder in self.budget_directory.iterdir():
                if folder == self.directory or not REPLICA_FOLDER.match(folder.name) or not folder.is_dir():
                    continue
                alive = folder / ALIVE_FILE
                with contextlib.suppress(FileNotFoundError):
                    last_sign = alive.stat().st_mtime if alive.exists() else folder.stat().st_mtime
                    if time.time() - last_sign <= abandoned_after:
                        continue
                    for path in _files_of_ours(folder):
                        path.unlink(missing_ok=True)
                    alive.unlink(missing_ok=True)
                    with contextlib.suppress(OSError):  # not empty: something not ours is there; leave it
                        folder.rmdir()
                    logger.info("deleted the recordings of %s, a replica gone", folder.name)

    @property
    def interval(self) -> float:
        """Seconds between cleaning rounds."""
        return min(CLEANUP_INTERVAL, max(self.ttl / 4, 0.05))


def _files_of_ours(directory: Path, *, replica_folders: bool = False) -> list[Path]:
    """Our recordings' files in `directory` (and in its replica folders)."""
    found: list[Path] = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for path in directory.iterdir():
            if FILE_PATTERN.match(path.name):
                found.append(path)
            elif replica_folders and REPLICA_FOLDER.match(path.name) and path.is_dir():
                found += _files_of_ours(path)
    return found
