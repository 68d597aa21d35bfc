"""Hostile clients against the live server (a subprocess, tiny profile): what they send is
refused with a short answer, and the session they aim at, or the server, carries on."""

from __future__ import annotations

import json

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
