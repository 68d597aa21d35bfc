"""The sessions of one box: at most `MAX_SESSIONS` of them, by id, reaped when silent.

The registry owns every session (aiortc's style: an app-owned set of peer connections, each
closed on failure and at shutdown). A session that fails, closes or stays silent is closed and
dropped here, and its memory is given back shortly after (`MemoryRelease`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiortc import RTCConfiguration, RTCSessionDescription

from server.core.config import Settings
from server.metrics import Metrics
from server.model_worker import ModelWorker
from server.references import Reference
from server.rtc.ice import rtc_configuration
from server.rtc.turn import ice_servers
from server.sessions.control import ParamsChange
from server.sessions.errors import CapacityError, UnknownSession
from server.sessions.memory import MemoryRelease
from server.sessions.recordings import RecordingStore
from server.sessions.session import Session

logger = logging.getLogger(__name__)


class SessionRegistry:
    """The box's sessions by id; what they share (the model worker, the driving thread pool)."""

    def __init__(
        self, settings: Settings, worker: ModelWorker, metrics: Metrics, *, id_prefix: str = "",
        recordings_dir: Path | None = None,
    ):
        self.settings = settings
        self.id_prefix = id_prefix  # before every session id (a cluster replica's name)
        self.worker = worker
        self.metrics = metrics
        self.driving_pool = ThreadPoolExecutor(settings.DRIVING_THREADS, thread_name_prefix="rain-driving")
        self.matte_pool = ThreadPoolExecutor(settings.MATTE_THREADS, thread_name_prefix="rain-matte")
        self.sessions: dict[str, Session] = {}
        self.views: dict[str, Session] = {}  # by view id: what view links name
        # Every session object still in memory, live or not: none may outlive its clean-up.
        self.in_memory: weakref.WeakSet[Session] = weakref.WeakSet()
        self._opening = 0
        self._reaper: asyncio.Task | None = None
        self._memory = MemoryRelease()
        # Outlive their sessions: kept RECORDING_TTL after each ends.
        # `recordings_dir`: a replica's own folder in RECORDINGS_DIR, whose budget it shares.
        self.recordings = RecordingStore(
            recordings_dir or settings.RECORDINGS_DIR, max_bytes=settings.MAX_RECORDINGS_BYTES,
            ttl=settings.RECORDING_TTL, budget_directory=settings.RECORDINGS_DIR,
        )

    def start(self) -> None:
        self._reaper = asyncio.ensure_future(self._reap_silent())
        self.recordings.start()

    async def shutdown(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        await self.close_all("server shutting down")
        await self._memory.stop()
        await self.recordings.stop()
        self.driving_pool.shutdown(wait=True)
        self.matte_pool.shutdown(wait=True)

    def __len__(self) -> int:
        return len(self.sessions)

    def rtc_config(self) -> RTCConfiguration:
        """A new peer connection's configuration: minted TURN credentials expire, so each
        connection gets its own, fresh ones."""
        return rtc_configuration(ice_servers(self.settings, "server"))

    @property
    def viewer_count(self) -> int:
        return sum(len(s.viewers) for s in self.sessions.values() if s.viewers is not None)

    def get(self, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None or session.closed:
            raise UnknownSession(session_id)
        return session

    def get_view(self, view_id: str) -> Session:
        """A session by its view id (a session id is not one: it names no view)."""
        session = self.views.get(view_id)
        if session is None or session.closed:
            raise UnknownSession(view_id)
        return session

    async def open(
        self, offer: RTCSessionDescription, *, reference: Reference, params: ParamsChange, whip: bool = False
    ) -> Session:
        """Open a session for a checked offer, if there is room (`session.answer` holds the answer);
        `whip`: a WHIP publisher's."""
        if len(self.sessions) + self._opening >= self.settings.MAX_SESSIONS:
            self.metrics.offers_rejected.labels("capacity").inc()
            raise CapacityError(f"the server is full ({self.settings.MAX_SESSIONS} sessions); try again later")
        self._opening += 1
        session = Session(self, fps=params.fps or self.settings.FPS, reference=reference, whip=whip)
        self.in_memory.add(session)
        try:
            session.answer = await session.open(offer, params.driving)
        except BaseException:
            await session.close("failed to open")
            raise
        finally:
            self._opening -= 1
        self.sessions[session.id] = session
        self.views[session.view_id] = session
        self.metrics.sessions.set(len(self.sessions))
        self.metrics.sessions_started.inc()
        session.log.info("opened (%d live)", len(self.sessions))
        return session

    async def close(self, session: Session, reason: str) -> None:
        if session.closed:
            return
        await session.close(reason)
        self.recordings.session_ended(session.id)
        self.views.pop(session.view_id, None)
        if self.sessions.pop(session.id, None) is not None:
            self.metrics.sessions_ended.labels(reason.split(":")[0]).inc()
        self.metrics.sessions.set(len(self.sessions))
        self._memory.schedule()

    async def close_all(self, reason: str) -> None:
        await asyncio.gather(*(self.close(s, reason) for s in list(self.sessions.values())))

    def notify_all(self, message: dict) -> int:
        """A notice to every session's page -> how many pages it reached."""
        return sum(session.notify(message) for session in list(self.sessions.values()))

    async def _reap_silent(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.settings.SILENCE_TIMEOUT / 4))
            await self._reap_once()

    async def _reap_once(self) -> None:
        # A method of its own: a loop variable left in the sleeping loop above would keep the
        # last session it saw in memory.
        timeout, now = self.settings.SILENCE_TIMEOUT, time.monotonic()
        for session in [s for s in self.sessions.values() if s.silent_for(now) > timeout]:
            await self.close(session, f"silent: no webcam frame for {timeout:g} s")
