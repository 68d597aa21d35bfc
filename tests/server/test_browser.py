"""A real browser: headless Chromium (Debian's package, driven by Playwright) with the astronaut
clip as its fake camera opens the webcam page, streams, and a second window opens the OBS view;
the webcam page watches and controls a session an aiortc WHIP publisher (as OBS) opened."""

from __future__ import annotations

import io
import re
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from tests.avatar_client import eventually
from tests.conftest import start_live_server, stop_live_server
from tests.helpers import assert_animates_the_demo_character
from tests.webcam import ASTRONAUT, ClipTrack, write_y4m

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


def _config_requests(page) -> list[str]:
    """The page's requests for /api/config from now on (where the ICE servers come from)."""
    seen: list[str] = []

    def on_request(request) -> None:
        if urlsplit(request.url).path == "/api/config":
            seen.append(request.url)

    page.on("request", on_request)
    return seen


async def test_webcam_page_and_obs_view(live_server, tmp_path) -> None:
    from playwright.async_api import async_playwright

    y4m = write_y4m(tmp_path / "webcam.y4m")
    args = [*CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={y4m}"]
    async with async_playwright() as playwright, httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            page_errors: list[str] = []
            page = await _open_webcam_page(browser, live_server.url, page_errors)

            # The microphone (Chromium's fake one beeps): off by default, then on, and remembered.
            assert not await page.is_checked("#microphone")
            await page.check("#microphone")
            await page.reload()
            await page.wait_for_function("() => document.querySelectorAll('#params input').length > 10")
            assert await page.is_checked("#microphone")

            # Upload a character, then start.
            await page.set_input_files("#reference-file", str(ASTRONAUT))
            await page.wait_for_function(
                "() => document.getElementById('log').textContent.includes('character uploaded')"
            )
            # Each connection asks for fresh ICE servers (minted TURN credentials expire).
            page_configs = _config_requests(page)
            await page.click("#start")
            await page.wait_for_function("() => document.body.dataset.state === 'connected'")
            assert len(page_configs) == 1
            obs_link = await page.input_value("#obs-link")
            match = re.fullmatch(r".*/obs/([^?]+)\?token=(.+)", obs_link)
            assert match, obs_link
            # The OBS link names the session by its view id: the session id (control) stays in the page.
            session_id = await page.evaluate("() => session.session_id")
            assert session_id and session_id not in obs_link, obs_link
            stats_url = f"/api/sessions/{session_id}/stats"

            # Output frames arrive in the page's <video>, after the engine's first frame.
            await eventually(lambda: _sent(http, stats_url), timeout=TIMEOUT_MS / 1000, what="the first avatar frame")
            seen = await _frames(page, "output")
            await page.wait_for_function(f"() => ({FRAMES_JS})('output') >= {seen + 16}")
            assert await page.evaluate("() => document.getElementById('output').videoWidth") == 64
            await page.wait_for_function("() => document.getElementById('driving').videoWidth > 0")
            await page.wait_for_function("() => document.getElementById('overlay').textContent.includes('latency')")
            # Where the time goes: the server's parts, then the browser's own beside them.
            await page.wait_for_function(
                "() => document.getElementById('overlay').textContent.includes('glass to glass')"
            )
            overlay = await page.text_content("#overlay")
            for part in ("camera", "queue", "call", "decode", "pacing", "encoder", "network", "jitter buffer"):
                assert part in overlay, overlay
            await page.screenshot(path=tmp_path / "webcam-page.png")
            assert (tmp_path / "webcam-page.png").stat().st_size > 0
            await eventually(lambda: _voice_received(http, stats_url), timeout=60, what="the microphone at the server")

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
            obs_configs = _config_requests(obs)
            await obs.goto(f"{live_server.url}{urlsplit(obs_link).path}?{urlsplit(obs_link).query}")
            await obs.wait_for_function("() => document.body.dataset.state === 'playing'")
            assert len(obs_configs) == 1
            seen = await _frames(obs, "video")
            await obs.wait_for_function(f"() => ({FRAMES_JS})('video') >= {seen + 16}")
            assert await obs.evaluate("() => document.getElementById('video').videoWidth") == 64
            assert (await http.get(stats_url)).json()["viewers"] == 1
            # The delayed voice plays in the OBS view (packets are coming in, and its element plays them).
            await obs.wait_for_function(VOICE_PLAYING_JS)
            await obs.screenshot(path=tmp_path / "obs-view.png")
            style = await obs.evaluate(
                "() => { const s = getComputedStyle(document.body); return [s.backgroundColor, s.margin, s.overflow]; }"
            )
            assert style == ["rgba(0, 0, 0, 0)", "0px", "hidden"]

            # It reconnects by itself when its stream drops, and when it is reloaded.
            await obs.evaluate("() => pc.close()")
            await obs.wait_for_function("() => document.body.dataset.state === 'reconnecting'")
            await obs.wait_for_function("() => document.body.dataset.state === 'playing'")
            assert len(obs_configs) >= 2  # the new connection's ICE servers asked for afresh
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


WHIP_TOKEN = "browser-whip-token-0123456789"
TEXT_HAS_JS = "([id, text]) => document.getElementById(id).textContent.includes(text)"


@pytest.fixture(scope="module")
def whip_server(tmp_path_factory: pytest.TempPathFactory):
    """A server whose WHIP needs its token, as on a public address."""
    server = start_live_server(tmp_path_factory.mktemp("whip-server"), RAIN_WHIP_TOKEN=WHIP_TOKEN)
    yield server
    stop_live_server(server)


async def test_webcam_page_watches_and_controls_a_session_from_obs(whip_server, tmp_path) -> None:
    """OBS (an aiortc WHIP publisher) opens a session; the page lists it once given the WHIP token,
    plays its avatar over WHEP and sends its controls over REST; the server's logged link picks it."""
    from playwright.async_api import async_playwright

    auth = {"Authorization": f"Bearer {WHIP_TOKEN}"}
    async with async_playwright() as playwright, httpx.AsyncClient(base_url=whip_server.url, timeout=30) as http:
        publisher = RTCPeerConnection()
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            publisher.addTransceiver(ClipTrack(), direction="sendonly")
            await publisher.setLocalDescription(await publisher.createOffer())
            response = await http.post(
                "/whip", content=publisher.localDescription.sdp, headers={"Content-Type": "application/sdp", **auth}
            )
            assert response.status_code == 201, response.text
            await publisher.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
            session_id = response.headers["location"].removeprefix("/whip/")
            stats_url = f"/api/sessions/{session_id}/stats"

            # Without the token the page lists nothing, and its panel stays one line.
            page_errors: list[str] = []
            page = await _open_webcam_page(browser, whip_server.url, page_errors)
            assert not await page.evaluate("() => document.getElementById('whip-box').open")
            await page.click("#whip-box summary")
            await page.fill("#whip-token", "wrong-token-wrong-token")
            await page.click("#whip-list")
            await page.wait_for_function(
                "() => document.getElementById('whip-message').textContent.includes('bearer token')"
            )
            assert await page.locator("#whip-sessions li").count() == 0
            await page.fill("#whip-token", WHIP_TOKEN)
            await page.click("#whip-list")
            await page.wait_for_selector("#whip-sessions li button")
            assert await page.locator("#whip-sessions li").count() == 1
            # The token is kept for this tab only.
            kept = await page.evaluate(
                "() => [sessionStorage.getItem('rain-avatar.whip-token'), JSON.stringify(localStorage)]"
            )
            assert kept[0] == WHIP_TOKEN and WHIP_TOKEN not in kept[1]

            # Picked: the page plays the session's avatar (WHEP) and its controls go to it.
            await page.click("#whip-sessions li button")
            await page.wait_for_function("() => document.body.dataset.state === 'connected'")
            assert await page.evaluate("() => session.session_id") == session_id
            await eventually(lambda: _sent(http, stats_url), timeout=TIMEOUT_MS / 1000, what="the first avatar frame")
            seen = await _frames(page, "output")
            await page.wait_for_function(f"() => ({FRAMES_JS})('output') >= {seen + 16}")
            assert await page.evaluate("() => document.getElementById('output').videoWidth") == 64
            assert (await http.get(stats_url)).json()["viewers"] == 1
            assert await page.text_content("#stop") == "Leave"
            await page.wait_for_function("() => document.getElementById('overlay').textContent.includes('latency')")
            await page.screenshot(path=tmp_path / "webcam-page-whip.png")

            # Pause and resume, over REST (POST .../control, the channel's messages), reach the session.
            await page.click("#pause")
            await page.wait_for_function(TEXT_HAS_JS, arg=["pause", "Resume"])
            assert (await http.get(stats_url)).json()["paused"]
            await page.click("#pause")
            await page.wait_for_function(TEXT_HAS_JS, arg=["pause", "Pause"])
            assert not (await http.get(stats_url)).json()["paused"]
            # A slider, over REST too, reaches the session.
            chosen = await page.evaluate(
                """() => { const input = document.querySelector('input[name="calibration.eye_height_ratio"]');
                           input.value = 2.0; input.dispatchEvent(new Event('input')); return Number(input.value); }"""
            )
            await page.wait_for_function("() => document.getElementById('log').textContent.includes('applied')")
            stats = (await http.get(stats_url)).json()
            assert stats["params"]["calibration"]["eye_height_ratio"] == pytest.approx(chosen)
            # The character, swapped for the session; a recording started and stopped from the page.
            await page.set_input_files("#reference-file", str(ASTRONAUT))
            await page.wait_for_function(TEXT_HAS_JS, arg=["log", "character swapped"])
            assert (await http.get(stats_url)).json()["reference_id"] != "default"
            await page.click("#record")
            await page.wait_for_function("() => document.getElementById('overlay').textContent.includes('REC')")
            await page.click("#record")
            link = await page.wait_for_selector("#recordings a")
            assert session_id in await link.get_attribute("href")

            # Leave: the page's viewer goes, the session stays (OBS ends it).
            await page.click("#stop")
            await eventually(lambda: _viewers(http, stats_url, 0), timeout=60, what="the page's viewer to leave")
            assert (await http.get(stats_url)).status_code == 200 and await page.text_content("#stop") == "Stop"

            # The page link the server logged (no token, no session id in the log) picks the session again.
            logged = re.search(r"webcam page: (\S+#whip=\S+)", whip_server.log())
            assert logged, whip_server.log()
            assert WHIP_TOKEN not in whip_server.log() and session_id not in whip_server.log()
            await page.goto(logged.group(1))
            await page.wait_for_function("() => document.body.dataset.state === 'connected'")
            assert await page.evaluate("() => session.session_id") == session_id
            await eventually(lambda: _viewers(http, stats_url, 1), timeout=60, what="the page watching again")

            # OBS stops streaming: the page says so.
            assert (await http.delete(f"/whip/{session_id}", headers=auth)).status_code == 204
            await page.wait_for_function(TEXT_HAS_JS, arg=["error", "from OBS ended"])
            assert not page_errors, page_errors
        finally:
            await browser.close()
            await publisher.close()


async def _sent(http: httpx.AsyncClient, stats_url: str) -> bool:
    return (await http.get(stats_url)).json()["frames"]["sent"] > 0


async def _voice_received(http: httpx.AsyncClient, stats_url: str) -> bool:
    voice = (await http.get(stats_url)).json()["voice"]
    return voice is not None and voice["frames_received"] > 50


# The OBS view's voice: its element plays a live track, and audio packets keep arriving.
VOICE_PLAYING_JS = """async () => {
    if (!voice.srcObject || voice.paused || voice.srcObject.getAudioTracks()[0].readyState !== 'live') return false;
    let packets = 0;
    (await pc.getStats()).forEach((e) => {
        if (e.type === 'inbound-rtp' && e.kind === 'audio') packets = e.packetsReceived;
    });
    return packets > 50;
}"""


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


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory):
    """What a bare `rain-avatar serve` runs: the bundled demo model (its characters on flat backgrounds)."""
    server = start_live_server(tmp_path_factory.mktemp("demo-server"), model_args=())
    yield server
    stop_live_server(server)


async def test_webcam_page_on_a_bare_serve_shows_the_demo_character(demo_server, tmp_path) -> None:
    """What a new user sees: `rain-avatar serve` with nothing downloaded, the page, Start."""
    from playwright.async_api import async_playwright

    y4m = write_y4m(tmp_path / "webcam.y4m")
    args = [*CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={y4m}"]
    async with async_playwright() as playwright, httpx.AsyncClient(base_url=demo_server.url, timeout=30) as http:
        assert (await _health(http))["profile"] == "demo"
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            page = await _open_webcam_page(browser, demo_server.url)
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
            await page.click("#stop")
            await eventually(lambda: _no_sessions(http), timeout=60, what="the session to end")
        finally:
            await browser.close()
    assert_animates_the_demo_character(frames)


def _demo_character_regions(scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Where the demo character surely is (its reference's figure, shrunk) and surely is not (far
    from its figure, grown: the avatar moves with the webcam's pose), at `scale` times its size."""
    from PIL import Image
    from scipy import ndimage

    from rain_core.weights.profiles import DEMO_CHARACTER
    from server.media.alpha import key_colour

    image = Image.open(DEMO_CHARACTER).convert("RGB")
    rgb = np.asarray(image, np.float32)
    figure = np.linalg.norm(rgb - np.asarray(key_colour(image), np.float32), axis=-1) > 0.3 * 255
    core = ndimage.binary_erosion(figure, iterations=3)
    background = ~ndimage.binary_dilation(figure, iterations=12)
    grow = np.ones((scale, scale), bool)
    return np.kron(core, grow), np.kron(background, grow)


async def _transparent_screenshot(page, path: Path) -> np.ndarray:
    """The page over nothing, as RGBA [H, W, 4]."""
    from PIL import Image

    png = await page.screenshot(omit_background=True, path=path)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


# The preview frame shows the builder's link, and plays.
PREVIEW_PLAYING_JS = """(link) => { const frame = document.getElementById('obs-preview-frame');
    const view = frame.src === link && frame.contentDocument;
    if (!view || view.location.href !== link) return false;  // the new document, not the last one
    return Boolean(view.body && view.body.dataset.state === 'playing'
        && view.getElementById('video').getVideoPlaybackQuality().totalVideoFrames >= 8); }"""
CHECKERBOARD = {(154, 154, 154), (224, 224, 224)}  # web/style.css .checkerboard


async def test_obs_view_with_a_transparent_background(demo_server, tmp_path) -> None:
    """`&alpha=key` and `&alpha=matte` on the demo model: the background comes out transparent,
    the character opaque; the page's link builder makes the links and previews them over a
    checkerboard; a bad link says what is wrong."""
    from PIL import Image
    from playwright.async_api import async_playwright

    y4m = write_y4m(tmp_path / "webcam.y4m")
    args = [*CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={y4m}"]
    size = 256  # the view's window: the 128x128 avatar at twice its size
    core, background = _demo_character_regions(size // 128)
    async with async_playwright() as playwright, httpx.AsyncClient(base_url=demo_server.url, timeout=30) as http:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            page_errors: list[str] = []
            page = await _open_webcam_page(browser, demo_server.url, page_errors)
            await page.click("#start")
            await page.wait_for_function("() => document.body.dataset.state === 'connected'")
            view_id = re.fullmatch(r".*/obs/([^?]+)\?.*", await page.input_value("#obs-link")).group(1)
            session_id = await page.evaluate("() => session.session_id")
            assert session_id != view_id
            stats_url = f"/api/sessions/{session_id}/stats"
            await eventually(lambda: _sent(http, stats_url), timeout=TIMEOUT_MS / 1000, what="the first avatar frame")

            views = await (await browser.new_context(viewport={"width": size, "height": size})).new_page()
            views.set_default_timeout(TIMEOUT_MS)
            views.on("pageerror", lambda error: page_errors.append(str(error)))
            for mode in ("key", "matte"):
                # The builder's link, and its preview over a checkerboard (the view in a frame).
                await page.select_option("#obs-alpha", mode)
                link = await page.input_value("#obs-link")
                assert f"alpha={mode}" in link and ("tolerance=0.1" in link) == (mode == "key"), link
                await page.wait_for_function(PREVIEW_PLAYING_JS, arg=link)
                preview = np.asarray(Image.open(io.BytesIO(
                    await page.locator("#obs-preview").screenshot(path=tmp_path / f"preview-{mode}.png")
                )).convert("RGB"))
                corner = preview[8:40, 8:40].reshape(-1, 3)  # background: the checkerboard shows through
                assert {tuple(c) for c in corner} <= CHECKERBOARD, {tuple(c) for c in corner} - CHECKERBOARD
                torso = preview[128:160, 112:144].reshape(-1, 3)  # the character hides it
                assert sum(tuple(c) in CHECKERBOARD for c in torso) < 0.1 * len(torso)

                await views.goto(link)
                await views.wait_for_function("() => document.body.dataset.state === 'playing'")
                seen = await _frames(views, "video")
                await views.wait_for_function(f"() => ({FRAMES_JS})('video') >= {seen + 8}")
                assert await views.evaluate("() => document.getElementById('video').videoWidth") == (
                    256 if mode == "matte" else 128
                )
                rgba = await _transparent_screenshot(views, tmp_path / f"obs-{mode}.png")
                alpha = rgba[..., 3]
                transparent = float(np.mean(alpha[background] == 0))
                opaque = float(np.mean(alpha[core] == 255))
                assert transparent > 0.95, (mode, transparent)
                assert opaque > 0.8, (mode, opaque)

            # A bad link: a message on the page naming the problem, and no stream.
            base = f"{demo_server.url}/obs/{view_id}?token=x"
            for query, message in [
                ("alpha=green", "alpha must be key or matte"),
                ("alpha=key&tolerance=2", "tolerance must be a number from 0 to 1"),
                ("alpha=key&key=00ff0g", "key must be a colour as RRGGBB"),
                ("alpha=matte&spill=0.2", "spill: only with alpha=key"),
            ]:
                await views.goto(f"{base}&{query}")
                await views.wait_for_function("() => document.body.dataset.state === 'error'")
                assert message in await views.inner_text("#message")
            assert not page_errors, page_errors
        finally:
            await browser.close()
