"""The webcam's receiver under loss: a lost packet is NACKed again on a timer, a frame that cannot be
completed brings a keyframe request and a jump to that keyframe, and frames keep coming.

Two real aiortc peers on loopback (VP8); the sender's DTLS transport drops chosen RTP packets
before they are encrypted (a test-only wrapper: the loss is deterministic, the repair is not
told about it). Plus the frame assembly on its own, packet by packet.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

import aiortc.rtcpeerconnection
import pytest
from aiortc import RTCPeerConnection, VideoStreamTrack
from aiortc.codecs.h264 import h264_depayload
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtpPacket, is_rtcp

from server.rtc.ice import include_loopback
from server.rtc.receiver import (
    NewestFrameBuffer,
    RepairCounts,
    RepairingReceiver,
    RepairPolicy,
    TimedNacks,
    aiortc_supports_repair,
    is_keyframe_start,
    use_loss_repair,
)
from tests.avatar_client import eventually

POLICY = RepairPolicy(nack_interval=0.04, nack_tries=5, keyframe_after=0.12)
LOST_AFTER = 40  # packets sent before the one lost
FRAMES_AFTER = 30  # frames the receiver must get after the loss
TIMEOUT = 30  # seconds; generous for a loaded 2-core machine, never a speed assertion


# Frame assembly, packet by packet ------------------------------------------------------
def vp8_packet(seq: int, timestamp: int, *, start: bool, key: bool = False, marker: bool = False) -> RtpPacket:
    descriptor = bytes(VpxPayloadDescriptor(partition_start=int(start), partition_id=0))
    header = bytes([0x00 if key else 0x01]) if start else b"\xaa"
    packet = RtpPacket(payload_type=96, sequence_number=seq & 0xFFFF, timestamp=timestamp, marker=int(marker))
    packet.payload = descriptor + header + bytes([seq & 0xFF])
    packet._data = header + bytes([seq & 0xFF])
    return packet


def frame_packets(first_seq: int, timestamp: int, count: int, *, key: bool = False) -> list[RtpPacket]:
    return [
        vp8_packet(first_seq + i, timestamp, start=i == 0, key=key, marker=i == count - 1) for i in range(count)
    ]


def buffer(clock=lambda: 0.0) -> NewestFrameBuffer:
    return NewestFrameBuffer(POLICY, lambda payload_type: "video/VP8" if payload_type == 96 else None, clock)


def released(buf: NewestFrameBuffer, packets: list[RtpPacket]) -> list[int]:
    out = []
    for packet in packets:
        _, frame = buf.add(packet)
        if frame is not None:
            out.append(frame.timestamp)
        out.extend(f.timestamp for _, f in buf.ready)
        buf.ready.clear()
    return out


def test_a_frame_is_released_at_its_marker_packet_not_at_the_next_frame() -> None:
    buf = buffer()
    first, second = frame_packets(100, 3000, 3, key=True), frame_packets(103, 6000, 2)
    assert released(buf, first[:2]) == []
    assert released(buf, first[2:]) == [3000]  # no need to wait for the next frame's first packet
    assert released(buf, second) == [6000]


def test_a_gap_holds_frames_back_until_it_is_filled_then_all_come_in_order() -> None:
    now = [10.0]
    buf = buffer(lambda: now[0])
    packets = frame_packets(65530, 3000, 3, key=True) + frame_packets(65533, 6000, 3) + frame_packets(65536, 9000, 2)
    lost = packets.pop(4)  # the second frame's middle packet; sequence numbers wrap past 65535
    assert released(buf, packets) == [3000]
    assert buf.blocked_since == 10.0 and buf.needed(lost.sequence_number)
    now[0] = 10.5
    assert buf.blocked_for(now[0]) == 0.5
    assert released(buf, [lost]) == [6000, 9000]
    assert buf.blocked_since is None and not buf.needed(lost.sequence_number)
    assert buf.counts.longest_block_ms == pytest.approx(500)


def test_a_complete_keyframe_past_a_gap_is_taken_at_once_and_what_is_before_it_dropped() -> None:
    buf = buffer()
    head = frame_packets(10, 1000, 2, key=True)
    broken = frame_packets(12, 2000, 3)
    delta = frame_packets(15, 3000, 1)
    key = frame_packets(16, 4000, 3, key=True)
    after = frame_packets(19, 5000, 1)
    del broken[1]
    assert released(buf, head + broken + delta) == [1000]
    assert released(buf, key[:2]) == []  # the keyframe is not complete yet: keep waiting
    assert released(buf, key[2:] + after) == [4000, 5000]
    assert buf.counts.skips == 1 and buf.counts.frames_dropped == 2
    assert released(buf, [vp8_packet(13, 2000, start=False)]) == []  # the late retransmission is no use now


def test_missing_packets_are_asked_for_again_until_they_come_are_given_up_or_are_no_longer_needed() -> None:
    now = [0.0]
    counts = RepairCounts()
    nacks = TimedNacks(counts, clock=lambda: now[0])
    policy = RepairPolicy(nack_interval=0.04, nack_tries=3, keyframe_after=0.12)
    for seq in (100, 103):  # 101 and 102 go missing: aiortc NACKs them at once
        assert nacks.add(RtpPacket(sequence_number=seq, ssrc=7)) == (seq == 103)
    assert counts.missing == 2 and nacks.media_ssrc == 7
    needed = {101, 102}
    assert nacks.due(0.01, policy, needed.__contains__) == []  # too soon after the first NACK
    assert nacks.due(0.05, policy, needed.__contains__) == [101, 102]
    nacks.add(RtpPacket(sequence_number=101, ssrc=7))  # a retransmission came
    assert nacks.due(0.10, policy, needed.__contains__) == [102]
    assert nacks.due(0.15, policy, needed.__contains__) == []  # 3 NACKs sent: given up (a keyframe will do)
    assert nacks.missing == set()
    nacks.add(RtpPacket(sequence_number=106, ssrc=7))
    needed.clear()  # the receiver skipped past them
    assert nacks.due(1.0, policy, needed.__contains__) == [] and nacks.missing == set()


def test_keyframes_are_told_from_delta_frames() -> None:
    assert is_keyframe_start("video/VP8", vp8_packet(1, 0, start=True, key=True))
    assert not is_keyframe_start("video/VP8", vp8_packet(1, 0, start=True, key=False))
    assert not is_keyframe_start("video/VP8", vp8_packet(1, 0, start=False, key=True))
    h264 = RtpPacket(payload_type=102)
    h264._data = b"\x00\x00\x00\x01\x67\x42" + b"\x00\x00\x00\x01\x68\xce" + b"\x00\x00\x00\x01\x65\x88"
    assert is_keyframe_start("video/H264", h264)
    h264._data = b"\x00\x00\x00\x01\x41\x9a"
    assert not is_keyframe_start("video/H264", h264)


def test_aiortc_still_has_what_the_repair_relies_on() -> None:
    """The subclass replaces name-mangled attributes of aiortc's receiver: an aiortc that renames
    them would leave the repair silently unused."""
    assert aiortc_supports_repair()


# Real peers on loopback -------------------------------------------------------------------
class LossyLink:
    """Drops one media packet of the sender's video and the first `retransmissions_lost` of its
    retransmissions; counts the retransmissions and the keyframes sent after it."""

    def __init__(self, transport, *, codec: str, retransmissions_lost: int):
        self.codec = codec
        self.retransmissions_lost = retransmissions_lost
        self.media_ssrc: int | None = None
        self.first_seq: int | None = None
        self.lost_seq: int | None = None
        self.retransmissions = 0
        self.keyframes_after_loss = 0
        self._send = transport._send_rtp
        transport._send_rtp = self.send

    async def send(self, data: bytes) -> None:
        if not is_rtcp(data):
            packet = RtpPacket.parse(data)
            if self.media_ssrc is None:
                self.media_ssrc, self.first_seq = packet.ssrc, packet.sequence_number
            if packet.ssrc == self.media_ssrc:
                if self.lost_seq is None and (packet.sequence_number - self.first_seq) & 0xFFFF >= LOST_AFTER:
                    self.lost_seq = packet.sequence_number
                    return
                if self.lost_seq is not None and self.keyframe_start(packet):
                    self.keyframes_after_loss += 1
            elif len(packet.payload) >= 2 and struct.unpack("!H", packet.payload[:2])[0] == self.lost_seq:
                self.retransmissions += 1  # RTX: the original sequence number leads the payload
                if self.retransmissions <= self.retransmissions_lost:
                    return
        await self._send(data)


    def keyframe_start(self, packet: RtpPacket) -> bool:
        if self.codec == "video/H264":
            packet._data = h264_depayload(packet.payload)  # what the receiver looks at
        return is_keyframe_start(self.codec, packet)


class Frames:
    def __init__(self) -> None:
        self.pts: list[int] = []
        self.task: asyncio.Task | None = None

    def read(self, track) -> None:
        async def run() -> None:
            with contextlib.suppress(MediaStreamError):  # the connection closed
                while True:
                    frame = await track.recv()
                    self.pts.append(frame.pts)

        self.task = asyncio.ensure_future(run())


@pytest.fixture
def repair():
    include_loopback(True)
    use_loss_repair(POLICY)
    yield
    use_loss_repair(None)
    include_loopback(False)


async def connect(
    codec: str, retransmissions_lost: int
) -> tuple[RTCPeerConnection, RTCPeerConnection, LossyLink, Frames]:
    sender, receiver = RTCPeerConnection(), RTCPeerConnection()
    sender.addTrack(VideoStreamTrack())
    frames = Frames()
    transceiver = receiver.addTransceiver("video", direction="recvonly")
    # The offer names only this codec (and its retransmissions), so that the answer must take it.
    transceiver.setCodecPreferences([c for c in RTCRtpReceiver.getCapabilities("video").codecs
                                     if c.mimeType in (codec, "video/rtx")])
    receiver.on("track", frames.read)
    await receiver.setLocalDescription(await receiver.createOffer())
    await sender.setRemoteDescription(receiver.localDescription)
    await sender.setLocalDescription(await sender.createAnswer())
    await receiver.setRemoteDescription(sender.localDescription)
    others = {"video/VP8", "video/H264"} - {codec}
    assert codec.split("/")[1] in sender.localDescription.sdp
    assert not any(other.split("/")[1] in sender.localDescription.sdp for other in others)
    link = LossyLink(sender.getSenders()[0].transport, codec=codec, retransmissions_lost=retransmissions_lost)
    return sender, receiver, link, frames


def video_receiver(pc: RTCPeerConnection) -> RepairingReceiver:
    (receiver,) = [r for r in pc.getReceivers() if r.track is not None and r.track.kind == "video"]
    assert isinstance(receiver, RepairingReceiver)
    return receiver


async def frames_after_loss(link: LossyLink, frames: Frames) -> None:
    await eventually(lambda: link.lost_seq is not None, timeout=TIMEOUT, what="the lost packet")
    seen = len(frames.pts)
    await eventually(lambda: len(frames.pts) >= seen + FRAMES_AFTER, timeout=TIMEOUT,
                     what=f"{FRAMES_AFTER} frames after the loss")


CODECS = pytest.mark.parametrize("codec", ["video/VP8", "video/H264"])


@CODECS
async def test_a_lost_retransmission_is_asked_for_again_on_a_timer(repair, codec: str) -> None:
    """The packet and its first retransmission are lost, and nothing else is: with NACKs sent only
    on new loss (aiortc's own receiver), nothing would ask again and every later frame would wait."""
    sender, receiver, link, frames = await connect(codec, retransmissions_lost=1)
    try:
        await frames_after_loss(link, frames)
        assert link.retransmissions >= 2  # asked again after the first was lost
        assert video_receiver(receiver).repair.counts.renacks >= 1
        pts = frames.pts
        assert pts == sorted(pts) and len(set(pts)) == len(pts)
    finally:
        await sender.close()
        await receiver.close()


@CODECS
async def test_a_frame_that_cannot_be_completed_brings_a_keyframe_request_and_a_jump_to_it(repair, codec: str) -> None:
    """Every retransmission of the packet is lost: the receiver asks for a keyframe (the sender
    makes one only when asked) and goes on from it."""
    sender, receiver, link, frames = await connect(codec, retransmissions_lost=1_000)
    try:
        await frames_after_loss(link, frames)
        repair_counts = video_receiver(receiver).repair.counts
        assert link.keyframes_after_loss >= 1
        assert repair_counts.keyframe_requests >= 1 and repair_counts.skips >= 1
        assert link.retransmissions >= 2  # it did try the retransmission first
    finally:
        await sender.close()
        await receiver.close()


def test_use_loss_repair_installs_and_removes_the_receiver() -> None:
    try:
        use_loss_repair(POLICY)
        assert aiortc.rtcpeerconnection.RTCRtpReceiver is RepairingReceiver
        assert RepairingReceiver.policy == POLICY
    finally:
        use_loss_repair(None)
    assert aiortc.rtcpeerconnection.RTCRtpReceiver is RTCRtpReceiver
