"""Hostile clients against the live server (a subprocess, tiny profile): what they send is
refused with a short answer, and the session they aim at, or the server, carries on."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import httpx

from tests.avatar_client import WebcamClient, eventually

FIRST_FRAME_TIMEOUT = 120  # seconds; generous for a loaded 2-core machine, never a speed assertion
MAX_REPLY_BYTES = 1024


async def _streaming(client: WebcamClient) -> bool:
    return (await client.stats())["frames"]["sent"] > 0


async def test_every_control_message_gets_a_short_answer_and_the_session_streams_on(live_server) -> None:
    messages = [
        json.dumps({"id": "x" * 120_000, "type": "pause"}),  # over the message limit
        json.dumps({"id": "x" * 10_000, "type": "pause"}),  # an id too long to echo
        json.dumps({"id": 7, "type": "params", "params": {f"k{i}": i for i in range(5000)}}),
        '{"id": 8, "type": "params", "params": {"fps": ' + "9" * 5000 + "}}",  # past Python's digit limit
        "[" * 100_000 + "]" * 100_000,  # far past the recursion limit
        "[" * 5_000 + "]" * 5_000,  # past it, within the size limit
        '{"id": 9, "type": "params", "params": {"calibration": ' + '{"a": ' * 900 + "1" + "}" * 900 + "}}",
        b"\x00\x01binary",
        json.dumps({"id": 10, "type": "t" * 10_000}),
    ]
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as http:
        client = WebcamClient(http)
        try:
            assert (await client.open(params={"fps": 12})).status_code == 200
            await eventually(lambda: _streaming(client), timeout=FIRST_FRAME_TIMEOUT, what="the first avatar frame")
            for message in messages:
                reply = await client.control(message)
                assert not reply["ok"] and reply["id"] in (None, 7, 8, 9, 10), reply
                assert client.last_reply_bytes < MAX_REPLY_BYTES, (client.last_reply_bytes, str(reply)[:200])
            # The session took none of it and streams on.
            reply = await client.control({"id": 11, "type": "params", "params": {"fps": 16}})
            assert reply["ok"] and reply["id"] == 11 and reply["params"]["fps"] == 16
            engine_out = (await client.stats())["frames"]["engine_out"]
            await eventually(lambda: client.engine_out_above(engine_out), timeout=60, what="more engine frames")
            received = client.avatar.count
            await eventually(lambda: client.avatar.count > received + 16, timeout=60, what="more avatar frames")
            stats = await client.stats()
            assert stats["state"] == "connected" and stats["params"]["fps"] == 16
        finally:
            await client.close()


async def _no_session_objects(http: httpx.AsyncClient) -> bool:
    return (await http.get("/api/health")).json()["process"]["session_objects"] == 0


async def test_a_tiny_fps_is_refused_and_a_new_fps_takes_effect_at_once(live_server) -> None:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as http:
        client = WebcamClient(http)
        try:
            assert (await client.open(params={"fps": 16})).status_code == 200
            await eventually(lambda: _streaming(client), timeout=FIRST_FRAME_TIMEOUT, what="the first avatar frame")
            reply = await client.control({"id": 1, "type": "params", "params": {"fps": 1e-9}})
            assert not reply["ok"] and "fps: must be a number from 1 to 30" in reply["error"]
            assert (await client.stats())["fps"]["target"] == 16
            # Down to the floor and straight back: the stream never waits out a period of the slow rate.
            assert (await client.control({"id": 2, "type": "params", "params": {"fps": 1}}))["ok"]
            assert (await client.control({"id": 3, "type": "params", "params": {"fps": 16}}))["ok"]
            received = client.avatar.count
            await eventually(lambda: client.avatar.count > received + 16, timeout=60, what="frames at 16 fps again")
            # Slow again, then gone: nothing of the session stays in memory, however slow it was.
            assert (await client.control({"id": 4, "type": "params", "params": {"fps": 1}}))["ok"]
            assert (await http.delete(f"/api/sessions/{client.session_id}")).status_code == 204
            await eventually(lambda: _no_session_objects(http), timeout=60, what="the session object to be freed")
        finally:
            await client.close()


async def post_until_answered(url: str, path: str, content_type: str, head: bytes) -> tuple[int, dict, int]:
    """POST a chunked body of BODY_TOTAL bytes while reading the answer, and stop sending once it
    is there; returns its status, its JSON and how many bytes the client got to send."""
    address = urlsplit(url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        answer = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
        sent, chunk = 0, head
        while not answer.done() and sent < BODY_TOTAL:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
            await asyncio.sleep(0)  # let the answer in
            sent, chunk = sent + len(chunk), b"a" * 65536
        head_lines = (await asyncio.wait_for(answer, 60)).decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in head_lines[1:] if line)
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 60)
        return int(head_lines[0].split()[1]), json.loads(body), sent
    finally:
        writer.close()


BODY_TOTAL = 64 * 1024 * 1024


async def test_bodies_are_bounded_while_they_are_read(live_server) -> None:
    # Answered while the client is still sending: the server read no more than its limit first.
    status, answer, sent = await post_until_answered(
        live_server.url, "/api/offer", "application/json", b'{"type": "offer", "sdp": "v=0'
    )
    assert status == 413 and "limit" in answer["detail"] and sent < BODY_TOTAL / 2, (status, answer, sent)
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
    status, answer, sent = await post_until_answered(
        live_server.url, "/api/references", "multipart/form-data; boundary=b", head
    )
    assert status == 413 and "limit" in answer["detail"] and sent < BODY_TOTAL / 2, (status, answer, sent)
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as http:
        # With a Content-Length over the limit: refused before a byte is read.
        response = await http.post("/api/offer", content=b"{" * (1 << 20), headers={"Content-Type": "application/json"})
        assert response.status_code == 413 and "limit" in response.json()["detail"]
        assert (await http.get("/api/health")).json()["status"] == "ok"  # and the server serves on
