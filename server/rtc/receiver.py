"""The webcam's video receiver: a lost packet costs a keyframe request, never a stall.

The camera side needs only the newest frame. aiortc's receiver (1.16, used as is before) waits
for every packet in order: it NACKs a gap once, when the gap appears, never again, and asks for a
keyframe only when its 512-packet buffer overflows. A lost retransmission (or a lost NACK) then
holds every later frame back for seconds. `RepairingReceiver` changes three things for video:

1. frames are assembled by `NewestFrameBuffer`: a frame is released as soon as its last packet
   (RTP marker bit) is in, not when the next frame's first packet arrives (one frame interval
   less latency); a gap holds later frames back only until a complete keyframe follows it, and
   then everything before that keyframe is dropped (skipping ahead instead of waiting);
2. `TimedNacks`: every packet still missing is NACKed again every `nack_interval`, up to
   `nack_tries` times, rather than only when a new loss happens;
3. a frame held back by a gap for `keyframe_after` triggers a PLI (and again every
   `keyframe_after` while the gap stays), so that the keyframe to skip to comes at once.

aiortc has no hook for any of this (upstream would need a jitter-buffer factory, a repair timer
and a way to hand several frames to the decoder at once; see docs/benchmarks.md). So the
subclass relies on these name-mangled attributes of aiortc 1.16's `RTCRtpReceiver`, checked by
`aiortc_supports_repair` (the server refuses to start without them, and a test checks them):
`__jitter_buffer` and `__nack_generator` (replaced: `_handle_rtp_packet` calls their `add`),
`__decoder_queue`, `__decoder_thread`, `__timestamp_mapper` and `__codecs` (to hand the decoder
the frames that complete together, after a gap is filled or skipped). The NACK and PLI packets go
out through the receiver's own `_send_rtcp_nack` and `_send_rtcp_pli`. The class is installed
where `aiortc.rtcpeerconnection` makes its receivers (`use_loss_repair`), as `server.rtc.ice`
wraps aioice: every receiver the process makes from then on, audio left unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import types
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import aiortc.rtcpeerconnection
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpreceiver import NackGenerator, RTCRtpReceiver
from aiortc.rtp import RtpPacket

from server.core.config import Settings

logger = logging.getLogger(__name__)

_PRIVATE = "_RTCRtpReceiver__"
AIORTC_ATTRIBUTES = ("jitter_buffer", "nack_generator", "decoder_queue", "decoder_thread", "timestamp_mapper", "codecs")
# H.264 NAL unit types that start a picture a decoder can begin with: an IDR slice, a sequence
# parameter set (senders put SPS and PPS before every IDR).
_H264_KEY_NALS = {5, 7}


@dataclass(frozen=True)
class RepairPolicy:
    """How hard the receiver tries to repair a gap before skipping ahead (seconds)."""

    nack_interval: float = 0.04  # between two NACKs of one missing packet
    nack_tries: int = 5  # NACKs per missing packet, the first included
    keyframe_after: float = 0.12  # a frame held back this long by a gap: ask for a keyframe
    capacity: int = 1024  # packets held at most; beyond, the oldest go and a keyframe is asked for


@dataclass
class RepairCounts:
    """What the repair did, for the session's stats and the loss benchmark."""

    missing: int = 0  # packets found missing (a gap in the sequence numbers), each NACKed at once
    renacks: int = 0  # NACKs of packets NACKed before
    keyframe_requests: int = 0  # PLIs sent because a gap held frames back
    skips: int = 0  # jumps to a keyframe past a gap
    frames_dropped: int = 0  # complete frames dropped by those jumps (and overflows)
    longest_block_ms: float = 0.0  # the longest a gap held frames back (loss's own stall, whatever the CPU does)


def _unwrap(seq: int, near: int) -> int:
    """A 16-bit sequence number as the extended number closest to `near`."""
    delta = (seq - near) & 0xFFFF
    return near + delta if delta < 0x8000 else near + delta - 0x10000


def is_keyframe_start(mime_type: str | None, packet: RtpPacket) -> bool:
    """Whether `packet` is the first packet of a keyframe (VP8 or H.264; other codecs: never)."""
    if mime_type == "video/VP8":
        try:
            descriptor, data = VpxPayloadDescriptor.parse(packet.payload)
        except ValueError:
            return False
        # The VP8 payload header's first bit is the inverse key frame flag (RFC 6386, 9.1).
        return bool(descriptor.partition_start and descriptor.partition_id == 0 and data and not data[0] & 1)
    if mime_type == "video/H264":
        data: bytes = getattr(packet, "_data", b"")
        start = data.find(b"\x00\x00\x01")
        while start != -1 and start + 3 < len(data):
            if data[start + 3] & 0x1F in _H264_KEY_NALS:
                return True
            start = data.find(b"\x00\x00\x01", start + 3)
    return False


class NewestFrameBuffer:
    """Reassembles video frames from RTP packets, preferring the newest frame over a complete history.

    The interface aiortc's receiver calls: `add(packet) -> (keyframe_needed, frame or None)`.
    Frames that complete together beyond the one `add` returns wait in `ready` (see
    `RepairingReceiver`). A frame is complete when its packets from the first to the one with the
    marker bit (or to the last before a new timestamp) are all in. Sequence numbers are extended
    past 16 bits, so that a wrap is no special case.
    """

    def __init__(
        self,
        policy: RepairPolicy,
        mime_type: Callable[[int], str | None],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.policy = policy
        self._mime_type = mime_type
        self._clock = clock
        self._packets: dict[int, RtpPacket] = {}
        self._keyframe_starts: set[int] = set()
        self._next: int | None = None  # the first packet of the next frame to release
        self._highest: int | None = None
        self._need_keyframe = False  # after an overflow: frames before a keyframe cannot decode
        self.blocked_since: float | None = None  # since when a gap holds frames back
        self.ready: deque[tuple[int, JitterFrame]] = deque()  # (payload type, frame)
        self.counts = RepairCounts()

    @property
    def capacity(self) -> int:
        return self.policy.capacity

    def extend(self, seq: int) -> int | None:
        """`seq` as an extended sequence number, None before the first packet."""
        return None if self._highest is None else _unwrap(seq, self._highest)

    def needed(self, seq: int) -> bool:
        """Whether the missing packet `seq` (16 bits) could still complete a frame."""
        ext = self.extend(seq)
        return ext is not None and self._next is not None and ext >= self._next

    def blocked_for(self, now: float) -> float:
        """How long a gap has held frames back (0 when none does)."""
        return 0.0 if self.blocked_since is None else now - self.blocked_since

    @property
    def needs_keyframe(self) -> bool:
        return self._need_keyframe

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        ext = packet.sequence_number if self._highest is None else _unwrap(packet.sequence_number, self._highest)
        if self._next is None:
            self._next = ext
        if ext < self._next or ext in self._packets:
            return False, self._pop_ready()  # too late (skipped past, or already released), or a duplicate
        keyframe_needed = False
        if self._highest is None or ext > self._highest:
            self._highest = ext
        if ext - self._next >= self.capacity:
            self._drop_before(ext - self.capacity // 2)
            self._need_keyframe = keyframe_needed = True
        self._packets[ext] = packet
        if is_keyframe_start(self._mime_type(packet.payload_type), packet):
            self._keyframe_starts.add(ext)
        self._release()
        if self._has_gap():
            self._skip_to_keyframe()
        if self._has_gap():
            if self.blocked_since is None:
                self.blocked_since = self._clock()
        elif self.blocked_since is not None:
            block = 1000 * (self._clock() - self.blocked_since)
            self.counts.longest_block_ms = round(max(self.counts.longest_block_ms, block), 1)
            self.blocked_since = None
        return keyframe_needed, self._pop_ready()

    def _pop_ready(self) -> JitterFrame | None:
        return self.ready.popleft()[1] if self.ready else None

    def _has_gap(self) -> bool:
        # Only packets from `_next` on are held, so fewer of them than the span means a hole.
        return self._highest is not None and self._next is not None and (
            len(self._packets) < self._highest - self._next + 1
        )

    def _frame_end(self, start: int) -> int | None:
        """The last packet of the frame starting at `start`, None while it is incomplete."""
        first = self._packets.get(start)
        if first is None:
            return None
        seq = start
        while True:
            packet = self._packets[seq]
            if packet.marker:
                return seq
            following = self._packets.get(seq + 1)
            if following is None:
                return None
            if following.timestamp != first.timestamp:
                return seq
            seq += 1

    def _release(self) -> None:
        """Move every complete frame at the head to `ready`."""
        while self._next is not None:
            end = self._frame_end(self._next)
            if end is None:
                return
            packets = [self._packets.pop(seq) for seq in range(self._next, end + 1)]
            key = self._next in self._keyframe_starts
            self._keyframe_starts.difference_update(range(self._next, end + 1))
            self._next = end + 1
            if self._need_keyframe and not key:
                self.counts.frames_dropped += 1
                continue
            self._need_keyframe = False
            data = b"".join(getattr(p, "_data", b"") for p in packets)
            if not data:
                continue  # padding only: nothing to decode (a decoder would fail on it and ask for a keyframe)
            self.ready.append((packets[0].payload_type, JitterFrame(data=data, timestamp=packets[0].timestamp)))

    def _skip_to_keyframe(self) -> None:
        """Past a gap, jump to the first complete keyframe, dropping everything before it."""
        for start in sorted(self._keyframe_starts):
            if start > self._next and self._frame_end(start) is not None:
                dropped = {p.timestamp for seq, p in self._packets.items() if seq < start}
                self.counts.frames_dropped += len(dropped)
                self.counts.skips += 1
                self._drop_before(start)
                self._need_keyframe = False
                self._release()
                return

    def _drop_before(self, seq: int) -> None:
        for old in [s for s in self._packets if s < seq]:
            del self._packets[old]
        self._keyframe_starts = {s for s in self._keyframe_starts if s >= seq}
        self._next = seq if self._next is None else max(self._next, seq)


class TimedNacks(NackGenerator):
    """aiortc's NACK bookkeeping, with the time and count of each missing packet's NACKs.

    aiortc NACKs every missing packet when a new gap appears (`add` returns True); `due` says
    which ones to NACK again on the timer.
    """

    def __init__(self, counts: RepairCounts, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._counts = counts
        self._clock = clock
        self.sent: dict[int, tuple[float, int]] = {}  # seq -> (last NACK, NACKs sent)
        self.media_ssrc: int | None = None

    def add(self, packet: RtpPacket) -> bool:
        self.media_ssrc = packet.ssrc  # unwrapped: the media's, also for a retransmission
        missed = super().add(packet)
        if missed:
            now = self._clock()
            # aiortc NACKs the whole missing set right after this returns True.
            for seq in self.missing:
                _, count = self.sent.get(seq, (now, 0))
                self.sent[seq] = (now, count + 1)
                self._counts.missing += count == 0
        for seq in [s for s in self.sent if s not in self.missing]:
            del self.sent[seq]
        return missed

    def due(self, now: float, policy: RepairPolicy, needed: Callable[[int], bool]) -> list[int]:
        """The missing packets to NACK again now; forgets those no longer needed or asked for too often."""
        again = []
        for seq in sorted(self.missing):
            last, count = self.sent.get(seq, (now, 1))
            if not needed(seq) or count >= policy.nack_tries:
                self.missing.discard(seq)
                self.sent.pop(seq, None)
            elif now - last >= policy.nack_interval:
                self.sent[seq] = (now, count + 1)
                again.append(seq)
        return again


class RepairingReceiver(RTCRtpReceiver):
    """aiortc's receiver; for video with the `NewestFrameBuffer`, `TimedNacks` and a repair timer."""

    policy: ClassVar[RepairPolicy] = RepairPolicy()

    def __init__(self, kind: str, transport: Any) -> None:
        super().__init__(kind, transport)
        self.repair: NewestFrameBuffer | None = None
        self.nacks: TimedNacks | None = None
        self._repair_task: asyncio.Task | None = None
        if kind == "video":
            codecs = self._private("codecs")
            self.repair = NewestFrameBuffer(self.policy, lambda pt: _mime_type(codecs, pt))
            self.nacks = TimedNacks(self.repair.counts)
            setattr(self, _PRIVATE + "jitter_buffer", self.repair)
            setattr(self, _PRIVATE + "nack_generator", self.nacks)

    def _private(self, name: str) -> Any:
        return getattr(self, _PRIVATE + name)

    async def receive(self, parameters) -> None:
        await super().receive(parameters)
        if self.repair is not None and self._repair_task is None:
            self._repair_task = asyncio.ensure_future(self._run_repair())

    async def stop(self) -> None:
        if self._repair_task is not None:
            self._repair_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._repair_task
        await super().stop()

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        await super()._handle_rtp_packet(packet, arrival_time_ms)
        if self.repair is None or not self.repair.ready:
            return
        # aiortc hands the decoder the one frame `add` returned; these completed with it.
        queue, mapper = self._private("decoder_queue"), self._private("timestamp_mapper")
        codecs = self._private("codecs")
        while self.repair.ready:
            payload_type, frame = self.repair.ready.popleft()
            if self._private("decoder_thread") and payload_type in codecs:
                frame.timestamp = mapper.map(frame.timestamp)
                queue.put((codecs[payload_type], frame))

    async def _run_repair(self) -> None:
        """Every few ms: NACK missing packets again, ask for a keyframe while a gap holds frames back."""
        assert self.repair is not None and self.nacks is not None
        policy, buffer, nacks = self.policy, self.repair, self.nacks
        tick = min(policy.nack_interval, policy.keyframe_after) / 2
        last_request = -float("inf")
        while True:
            await asyncio.sleep(tick)
            ssrc = nacks.media_ssrc
            if ssrc is None:
                continue
            now = time.monotonic()
            again = nacks.due(now, policy, buffer.needed)
            if again:
                buffer.counts.renacks += len(again)
                await self._send_rtcp_nack(ssrc, again)
            stuck = buffer.blocked_for(now) >= policy.keyframe_after or buffer.needs_keyframe
            if stuck and now - last_request >= policy.keyframe_after:
                last_request = now
                buffer.counts.keyframe_requests += 1
                await self._send_rtcp_pli(ssrc)


def _mime_type(codecs: dict, payload_type: int) -> str | None:
    codec = codecs.get(payload_type)
    return None if codec is None else codec.mimeType


def aiortc_supports_repair() -> bool:
    """Whether aiortc's receiver still has what `RepairingReceiver` relies on (see the module doc)."""
    methods = ("_handle_rtp_packet", "_send_rtcp_nack", "_send_rtcp_pli")
    if not all(callable(getattr(RTCRtpReceiver, name, None)) for name in methods):
        return False
    if getattr(aiortc.rtcpeerconnection, "RTCRtpReceiver", None) not in (RTCRtpReceiver, RepairingReceiver):
        return False  # aiortc no longer makes its receivers from that name
    probe = RTCRtpReceiver("video", types.SimpleNamespace(state="new"))
    return all(hasattr(probe, _PRIVATE + name) for name in AIORTC_ATTRIBUTES)


def loss_repair_policy(settings: Settings) -> RepairPolicy | None:
    """The settings' repair policy; None when `LOSS_REPAIR` is off."""
    if not settings.LOSS_REPAIR:
        return None
    return RepairPolicy(
        nack_interval=settings.NACK_INTERVAL, nack_tries=settings.NACK_TRIES, keyframe_after=settings.KEYFRAME_AFTER
    )


def use_loss_repair(policy: RepairPolicy | None) -> None:
    """Make every receiver from now on a `RepairingReceiver` with `policy`; None: aiortc's own again."""
    if policy is None:
        aiortc.rtcpeerconnection.RTCRtpReceiver = RTCRtpReceiver
        return
    if not aiortc_supports_repair():
        raise RuntimeError(
            "this aiortc's RTCRtpReceiver lacks what the loss repair relies on; set RAIN_LOSS_REPAIR=false"
        )
    RepairingReceiver.policy = policy
    aiortc.rtcpeerconnection.RTCRtpReceiver = RepairingReceiver
    logger.info("video receivers repair loss: %s", policy)
