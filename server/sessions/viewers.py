"""The WHEP viewers of one session: a receive-only peer connection each, fed by the session's relay."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from server.media.discard import DiscardedTracks
from server.media.matte import MatteSource
from server.media.relay import TrackRelay
from server.metrics import Metrics
from server.rtc.sdp import answer_offer, create_answer, parse_offer
from server.sessions.errors import CapacityError, UnknownViewer
from server.sessions.logs import Prefixed
from server.tokens import new_token

logger = logging.getLogger(__name__)


class Viewers:
    """At most `limit` viewers of `relay`'s avatar (or of `matte`'s, the avatar with its matte),
    with the session's delayed `voice` when it has one and the viewer's offer has an audio
    section, by viewer id."""

    def __init__(
        self,
        label: str,
        relay: TrackRelay,
        matte: MatteSource,
        *,
        limit: int,
        rtc_config: Callable[[], RTCConfiguration],
        public_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
        metrics: Metrics,
    ):
        self.label = label
        self.limit = limit
        self._relay = relay
        self.matte = matte
        self.voice: TrackRelay | None = None
        self._rtc_config = rtc_config
        self._public_ip = public_ip
        self._metrics = metrics
        self._connections: dict[str, RTCPeerConnection] = {}
        self._tracks: dict[str, tuple[list[MediaStreamTrack], bool]] = {}  # the tracks each sends; matte?
        self._discarded = DiscardedTracks()
        self._opened = 0

    def __len__(self) -> int:
        return len(self._connections)

    async def add(self, sdp: str, *, matte: bool = False) -> tuple[str, str]:
        """Answer a viewer's receive-only offer with the avatar (with its matte packed beside it if
        `matte`); returns (viewer id, answer SDP)."""
        offer = parse_offer(sdp, "offer", need="receive")
        if len(self._connections) >= self.limit:
            raise CapacityError(f"this session has its maximum of {self.limit} viewers")
        viewer_id = new_token()
        pc = RTCPeerConnection(configuration=self._rtc_config())
        self._connections[viewer_id] = pc
        self._metrics.viewers.inc()
        self._opened += 1
        log = Prefixed(logger, {"label": f"{self.label} viewer {self._opened}"})

        @pc.on("connectionstatechange")
        async def on_connectionstatechange() -> None:
            log.info("connection %s", pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                await self._drop(viewer_id)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._discarded.add(track)

        try:
            await answer_offer(pc, offer)
            track = self.matte.subscribe() if matte else self._relay.subscribe()
            self._tracks[viewer_id] = ([track], matte)
            pc.addTrack(track)
            if self.voice is not None and any(t.kind == "audio" for t in pc.getTransceivers()):
                voice = self.voice.subscribe()
                self._tracks[viewer_id][0].append(voice)
                pc.addTrack(voice)
            answer = await create_answer(pc, self._public_ip)
        except BaseException:
            await self._drop(viewer_id)
            raise
        log.info("viewer opened")
        return viewer_id, answer

    async def remove(self, viewer_id: str) -> None:
        if not await self._drop(viewer_id):
            raise UnknownViewer(viewer_id)

    async def close(self) -> None:
        for viewer_id in list(self._connections):
            await self._drop(viewer_id)
        await self._discarded.stop()
        self.matte.close()

    async def _drop(self, viewer_id: str) -> bool:
        pc = self._connections.pop(viewer_id, None)
        if pc is None:
            return False
        self._metrics.viewers.dec()
        await pc.close()
        pc.remove_all_listeners()
        tracks, matte = self._tracks.pop(viewer_id, ([], False))
        # Its relay subscriptions end with it (a sender does not stop the track it sent).
        for track in tracks:
            track.stop()
        if matte and tracks:
            self.matte.release()
        return True
