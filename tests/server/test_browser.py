"""A real browser: headless Chromium (Debian's package, driven by Playwright) with the astronaut
clip as its fake camera opens the webcam page, streams, and a second window opens the OBS view."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from tests.avatar_client import eventually
from tests.conftest import start_live_server, stop_live_server
from tests.helpers import assert_animates_the_demo_character
from tests.webcam import ASTRONAUT, write_y4m

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)"
)

# Quiet (no calls to Google hosts), runnable as root, loopback WebRTC, no mDNS host names,
# and no throttling of a window that is not in front.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
]
TIMEOUT_MS = 120_000  # bounded waits, generous for a loaded 2-core machine

FRAMES_JS = "(id) => { const v = document.getElementById(id); return v.getVideoPlaybackQuality().totalVideoFrames; }"


async def _frames(page, video_id: str) -> int:
    return await page.evaluate(FRAMES_JS, video_id)


async def _health(http: httpx.AsyncClient) -> dict:
    return (await http.get("/api/health")).json()


async def _open_webcam_page(browser, url: str, errors: list[str] | None = None):
    """A new page on the webcam page, once its parameter form is built; page errors go to `errors`."""
    page = await (await browser.new_context()).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    if errors is not None:
        page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{url}/")
    await page.wait_for_function("() => document.querySelectorAll('#params input').length > 10")
    return page


async def test_webcam_page_and_obs_view(live_server, tmp_path) -> None:
    from playwright.async_api import async_playwright

    y4m = write_y4m(tmp_path / "webcam.y4m")
    args = [*CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={y4m}"]
    async with async_playwright() as playwright, httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            page_errors: list[str] = []
            page = await _open_webcam_page(browser, live_server.url, page_errors)

            # Upload a character, then start.
            await page.set_input_files("#reference-file", str(ASTRONAUT))
            await page.wait_for_function(
                "() => document.getElementById('log').textContent.includes('character uploaded')"
            )
            await page.click("#start")
            await page.wait_for_function("() => document.body.dataset.state === 'connected'")
            obs_link = await page.input_value("#obs-link")
            match = re.fullmatch(r".*/obs/([^?]+)\?token=(.+)", obs_link)
            assert match, obs_link
            session_id = match.group(1)
            stats_url = f"/api/sessions/{session_id}/stats"

            # Output frames arrive in the page's <video>, after the engine's first frame.
            await eventually(lambda: _sent(http, stats_url), timeout=TIMEOUT_MS / 1000, what="the first avatar frame")
            seen = await _frames(page, "output")
            await page.wait_for_function(f"() => ({FRAMES_JS})('output') >= {seen + 16}")
            assert await page.evaluate("() => document.getElementById('output').videoWidth") == 64
            await page.wait_for_function("() => document.getElementById('driving').videoWidth > 0")
            await page.wait_for_function("() => document.getElementById('overlay').textContent.includes('latency')")
            await page.screenshot(path=tmp_path / "webcam-page.png")
            assert (tmp_path / "webcam-page.png").stat().st_size > 0

            # A slider goes over the control channel and is acknowledged.
            chosen = await page.evaluate(
                """() => { const input = document.querySelector('input[name="calibration.eye_height_ratio"]');
                           input.value = 2.0; input.dispatchEvent(new Event('input')); return Number(input.value); }"""
            )
            await page.wait_for_function("() => document.getElementById('log').textContent.includes('applied')")
            stats = (await http.get(stats_url)).json()
            assert stats["params"]["calibration"]["eye_height_ratio"] == pytest.approx(chosen)
            assert chosen == pytest.approx(2.0, abs=0.02)  # the slider's step

            # Record: the button starts and stops a recording, whose download link the page lists.
            await page.click("#record")
            await page.wait_for_function("() => document.getElementById('overlay').textContent.includes('REC')")
            await page.click("#record")
            link = await page.wait_for_selector("#recordings a")
            download = await page.evaluate(
                "(a) => fetch(a.href).then((r) => `${r.status} ${r.headers.get('content-type')}`)", link
            )
            assert download == "200 video/mp4" and await page.text_content("#record") == "Record"

            # The OBS link, in a window of its own, shows the same stream.
            obs = await (await browser.new_context()).new_page()
            obs.set_default_timeout(TIMEOUT_MS)
            obs_errors: list[str] = []
            obs.on("pageerror", lambda error: obs_errors.append(str(error)))
            await obs.goto(f"{live_server.url}{urlsplit(obs_link).path}?{urlsplit(obs_link).query}")
            await obs.wait_for_function("() => document.body.dataset.state === 'playing'")
            seen = await _frames(obs, "video")
            await obs.wait_for_function(f"() => ({FRAMES_JS})('video') >= {seen + 16}")
            assert await obs.evaluate("() => document.getElementById('video').videoWidth") == 64
            assert (await http.get(stats_url)).json()["viewers"] == 1
            await obs.screenshot(path=tmp_path / "obs-view.png")
            style = await obs.evaluate(
                "() => { const s = getComputedStyle(document.body); return [s.backgroundColor, s.margin, s.overflow]; }"
            )
            assert style == ["rgba(0, 0, 0, 0)", "0px", "hidden"]

            # It reconnects by itself when its stream drops, and when it is reloaded.
            await obs.evaluate("() => pc.close()")
            await obs.wait_for_function("() => document.body.dataset.state === 'reconnecting'")
            await obs.wait_for_function("() => document.body.dataset.state === 'playing'")
            await obs.reload()
            await obs.wait_for_function("() => document.body.dataset.state === 'playing'")
            seen = await _frames(obs, "video")
            await obs.wait_for_function(f"() => ({FRAMES_JS})('video') >= {seen + 8}")
            await eventually(lambda: _viewers(http, stats_url, 1), timeout=60, what="one viewer after the reload")

            # Stop: the session ends on the server, and the OBS view waits for it to come back.
            await page.click("#stop")
            await eventually(lambda: _no_sessions(http), timeout=60, what="the session to end")
            await obs.wait_for_function("() => document.body.dataset.state === 'reconnecting'")
            assert not page_errors and not obs_errors, page_errors + obs_errors
            assert await page.evaluate("() => document.getElementById('error').hidden")
        finally:
            await browser.close()


async def test_webcam_page_says_when_the_camera_is_denied(live_server, tmp_path) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        # No --use-fake-ui-for-media-stream: the permission prompt is refused.
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await _open_webcam_page(browser, live_server.url)
            await page.click("#start")
            await page.wait_for_function("() => !document.getElementById('error').hidden")
            assert "Camera access was denied" in await page.inner_text("#error")
            assert await page.evaluate("() => document.body.dataset.state") == "idle"
        finally:
            await browser.close()


async def _sent(http: httpx.AsyncClient, stats_url: str) -> bool:
    return (await http.get(stats_url)).json()["frames"]["sent"] > 0


async def _viewers(http: httpx.AsyncClient, stats_url: str, count: int) -> bool:
    return (await http.get(stats_url)).json()["viewers"] == count


async def _no_sessions(http: httpx.AsyncClient) -> bool:
    state = await _health(http)
    return state["sessions"] == 0 and state["engines"] == 0


# The output <video>'s current frame as RGB numbers, at the video's own size.
OUTPUT_PIXELS_JS = """() => {
    const video = document.getElementById('output');
    const canvas = document.createElement('canvas');
    canvas.width = video.videoWidth; canvas.height = video.videoHeight;
    const context = canvas.getContext('2d');
    context.drawImage(video, 0, 0);
    const rgba = context.getImageData(0, 0, canvas.width, canvas.height).data;
    return {width: canvas.width, height: canvas.height, rgba: Array.from(rgba)};
}"""


async def _output_frame(page) -> np.ndarray:
    shot = await page.evaluate(OUTPUT_PIXELS_JS)
    return np.asarray(shot["rgba"], np.float32).reshape(shot["height"], shot["width"], 4)[..., :3]


async def test_webcam_page_on_a_bare_serve_shows_the_demo_character(tmp_path) -> None:
    """What a new user sees: `rain-avatar serve` with nothing downloaded, the page, Start."""
    from playwright.async_api import async_playwright

    server = start_live_server(tmp_path, model_args=())
    y4m = write_y4m(tmp_path / "webcam.y4m")
    args = [*CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={y4m}"]
    try:
        async with async_playwright() as playwright, httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            assert (await _health(http))["profile"] == "demo"
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
            try:
                page = await _open_webcam_page(browser, server.url)
                # The model was trained on body poses, and the page offers them.
                assert await page.input_value('select[name="mode"]') == "body"
                await page.click("#start")  # no upload: the model's own sample character
                await page.wait_for_function("() => document.body.dataset.state === 'connected'")
                frames = []
                for _ in range(6):
                    seen = await _frames(page, "output")
                    await page.wait_for_function(f"() => ({FRAMES_JS})('output') >= {seen + 8}")
                    frames.append(await _output_frame(page))
                await page.screenshot(path=tmp_path / "demo-webcam-page.png")
            finally:
                await browser.close()
    finally:
        stop_live_server(server)
    assert_animates_the_demo_character(frames)
