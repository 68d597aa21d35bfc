"""Clients that are not ours (issue 28): Eyevinn's WHIP client (`@eyevinn/whip-web-client`) publishes
headless Chromium's fake camera, the astronaut clip, to `POST /whip` with a bearer token, and
Eyevinn's WebRTC player (`@eyevinn/webrtc-player`, its WHEP adapter) plays the session's WHEP view
link in another window: the avatar moves there. The client's own `destroy()` ends the session.
Medooze's WHIP client (`whip-whep`) publishes the same way, trickling its candidates by PATCH.

The page runs on another origin than the server (conftest.py), so every request crosses origins,
as from a page on another site: the server allows the page's origin with RAIN_CORS_ORIGINS.

The WHEP link: the WHIP client keeps the `Link` header values of its 201 answer (its
`getResourceExtensions()`), and the test takes the one titled "whep" there, as a user of the
library would, and the session's REST resource (titled "session") beside it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from urllib.parse import urljoin

import httpx
import pytest

from tests.avatar_client import eventually
from tests.conftest import LiveServer, start_live_server, stop_live_server
from tests.server.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.webcam import write_y4m

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)"
)

TOKEN = "third-party-whip-token-0123456789"  # RAIN_WHIP_TOKEN, OBS's "Bearer Token"
SIZE = 64  # the tiny profile's output
TIMEOUT_MS = 120_000  # bounded waits, generous for a loaded 2-core machine, never a speed assertion
MOVED = 1.0  # a presented frame differing from the one before by more than this (mean, 0-255) is new


@pytest.fixture(scope="module")
def whip_server(tmp_path_factory: pytest.TempPathFactory, page_origin: str) -> Iterator[LiveServer]:
    """The tiny profile on loopback, with a WHIP token (required once set, loopback or not) and the
    test page's origin allowed."""
    server = start_live_server(
        tmp_path_factory.mktemp("thirdparty-server"),
        RAIN_WHIP_TOKEN=TOKEN, RAIN_CORS_ORIGINS=json.dumps([page_origin]),
    )
    yield server
    stop_live_server(server)


def _link(links: list[str], title: str) -> str:
    """The target of the Link value titled `title`, among those the WHIP client kept."""
    for link in links:
        match = re.fullmatch(rf'<([^>]+)>; rel="related"; title="{title}"', link.strip())
        if match:
            return match.group(1)
    raise AssertionError(f"no Link titled {title!r} in {links}")


async def _open(browser, url: str, errors: list[str]):
    page = await (await browser.new_context()).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(url)
    await page.wait_for_function("() => typeof thirdparty.WHIPClient === 'function'")
    return page


async def test_a_third_party_whip_client_drives_an_avatar_a_third_party_whep_player_shows(
    whip_server: LiveServer, page_origin: str, tmp_path
) -> None:
    from playwright.async_api import async_playwright

    y4m = write_y4m(tmp_path / "webcam.y4m")
    args = [*CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={y4m}"]
    endpoint = f"{whip_server.url}/whip"
    async with async_playwright() as playwright, httpx.AsyncClient(base_url=whip_server.url, timeout=30) as http:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        errors: list[str] = []
        try:
            # 1. Publish: the library's ingest() (its OPTIONS, then the offer with the bearer token).
            publisher = await _open(browser, f"{page_origin}/index.html", errors)
            published = await publisher.evaluate("([e, t]) => publish(e, t)", [endpoint, TOKEN])
            resource, links = published["resource"], published["links"]
            assert re.fullmatch(rf"{re.escape(endpoint)}/[^/?]+", resource), resource
            session = _link(links, "session")

            async def stats() -> dict:
                return (await http.get(f"{session}/stats")).json()

            async def engine_frames() -> int:
                return (await stats())["frames"]["engine_out"]

            await eventually(lambda: _above(engine_frames, 0), timeout=TIMEOUT_MS / 1000, what="engine frames")
            published_stats = await stats()
            assert published_stats["state"] == "connected" and published_stats["frames"]["camera"] > 0
            assert published_stats["voice"] is not None  # the fake microphone is the session's voice
            assert (await http.get("/api/health")).json()["sessions"] == 1

            # 2. Watch: the player, in a window of its own, plays the WHEP link the client was given.
            whep = urljoin(endpoint, _link(links, "whep"))
            assert whep.startswith(f"{whip_server.url}/whep/") and "?token=" in whep
            viewer = await _open(browser, f"{page_origin}/index.html", errors)
            await viewer.evaluate("(url) => play(url)", whep)
            await viewer.wait_for_function("() => presented.count >= 24")
            before = await engine_frames()
            # The avatar moves: frames keep coming that differ from the one before (not every one
            # does: an output tick repeats the last frame when the engine has no new one yet).
            await viewer.wait_for_function(f"() => presented.differences.filter((d) => d > {MOVED}).length >= 16")
            shown = await viewer.evaluate("() => presented")
            assert (shown["width"], shown["height"]) == (SIZE, SIZE)
            # ...driven by frames still arriving from the publisher.
            await eventually(lambda: _above(engine_frames, before), timeout=60, what="more engine frames")
            playing = await stats()
            assert playing["viewers"] == 1 and playing["frames"]["camera"] > published_stats["frames"]["camera"]

            # 3. Stop: the client's destroy() DELETEs its resource; the session ends on the server.
            await publisher.evaluate("() => unpublish()")
            assert (await http.get(f"{session}/stats")).status_code == 404
            await eventually(lambda: _health_is(http, sessions=0, viewers=0), timeout=60, what="the session's end")
            assert not errors, errors
        finally:
            await browser.close()


async def _above(count, value: int) -> bool:
    return await count() > value


async def _health_is(http: httpx.AsyncClient, **expected: int) -> bool:
    health = (await http.get("/api/health")).json()
    return all(health[key] == value for key, value in expected.items())


async def test_a_third_party_whip_client_that_trickles_its_candidates_drives_an_avatar(
    whip_server: LiveServer, page_origin: str, tmp_path
) -> None:
    """Medooze's WHIP client (`whip-whep`) posts its offer before it has any candidate and sends
    each one after it by PATCH (trickle ICE, with `If-Match` the answer's `ETag`), across origins."""
    from playwright.async_api import async_playwright

    y4m = write_y4m(tmp_path / "webcam.y4m")
    args = [*CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={y4m}"]
    endpoint = f"{whip_server.url}/whip"
    async with async_playwright() as playwright, httpx.AsyncClient(base_url=whip_server.url, timeout=30) as http:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        errors: list[str] = []
        try:
            publisher = await _open(browser, f"{page_origin}/index.html", errors)
            resource = await publisher.evaluate("([e, t]) => publishTrickling(e, t)", [endpoint, TOKEN])
            assert re.fullmatch(rf"{re.escape(endpoint)}/[^/?]+", resource), resource
            session = f"/api/sessions/{resource.rsplit('/', 1)[1]}"

            async def stats() -> dict:
                return (await http.get(f"{session}/stats")).json()

            async def engine_frames() -> int:
                return (await stats())["frames"]["engine_out"]

            await eventually(lambda: _above(engine_frames, 0), timeout=TIMEOUT_MS / 1000, what="engine frames")
            driven = await stats()
            # Its candidates came by PATCH only: the offer it posted carried none.
            assert driven["state"] == "connected" and driven["trickled_candidates"] > 0, driven
            assert driven["frames"]["camera"] > 0 and driven["voice"] is not None

            await publisher.evaluate("() => unpublishTrickling()")
            await eventually(lambda: _health_is(http, sessions=0), timeout=60, what="the session's end")
            assert not errors, errors
        finally:
            await browser.close()
