"""The avatar under UDP loss, as Chromium on the webcam page sees it (a benchmark, not a test).

Usage (root, Linux with `ip netns` and nftables, Debian's /usr/bin/chromium):
    PYTHONPATH=<checkout> python scripts/loss_bench.py [--loss 0 5 15] [--seconds 25] [--runs 1]
        [--no-repair] [--server-arg ARG ...] [--json OUT]

The server runs in one network namespace, headless Chromium in another, joined by a veth pair;
nftables in each namespace drops the given share of arriving UDP (so both directions lose it,
silently, and HTTP over TCP does not). For each loss level a new session starts on the webcam page with the
astronaut clip as its fake camera, warms up losslessly, then the loss is switched on and the page
samples every avatar frame it presents (`requestVideoFrameCallback`, 48x48 on a canvas): a frame
that differs from the one before by more than `--distinct` (mean absolute difference, 0-255) is a
new frame, anything else a repeat. Reported per run: distinct frames per second, the longest
freeze (the longest time between two distinct frames) and the longest gap between driving frames
at the server (its stats' `camera.gap_max_ms`), plus the server's repair counts (among them
`longest_block_ms`, the longest a gap held webcam frames back: the loss's own stall, apart from
what a busy CPU adds).

`--no-repair` runs the server with `RAIN_LOSS_REPAIR=false` (aiortc's receiver as it is).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER_NS, CLIENT_NS = "rainloss-s", "rainloss-c"
SERVER_IP, CLIENT_IP = "10.228.0.1", "10.228.0.2"
PORT = 8000
URL = f"http://{SERVER_IP}:{PORT}"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--disable-features=WebRtcHideLocalIpsWithMdns", "--autoplay-policy=no-user-gesture-required",
    "--disable-renderer-backgrounding", "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows", f"--unsafely-treat-insecure-origin-as-secure={URL}",
]
logger = logging.getLogger("loss_bench")

# Samples every presented frame of the avatar <video>: [time (ms), mean absolute difference].
SAMPLER_JS = """() => {
  const video = document.getElementById('output');
  const canvas = document.createElement('canvas'); canvas.width = canvas.height = 48;
  const context = canvas.getContext('2d', {willReadFrequently: true});
  window.lossSamples = []; let previous = null;
  const sample = (now) => {
    context.drawImage(video, 0, 0, 48, 48);
    const pixels = context.getImageData(0, 0, 48, 48).data;
    let diff = 0;
    if (previous !== null) { for (let i = 0; i < pixels.length; i += 4) {
      diff += Math.abs(pixels[i] - previous[i]) + Math.abs(pixels[i + 1] - previous[i + 1])
            + Math.abs(pixels[i + 2] - previous[i + 2]); } diff /= 48 * 48 * 3; }
    else { diff = 255; }
    previous = pixels; window.lossSamples.push([now, diff]);
    video.requestVideoFrameCallback(sample);
  };
  video.requestVideoFrameCallback(sample);
}"""


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True)


def netns(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *args, check=check)


def set_up_network() -> None:
    tear_down_network()
    for ns in (SERVER_NS, CLIENT_NS):
        sh("ip", "netns", "add", ns)
        netns(ns, "ip", "link", "set", "lo", "up")
    sh("ip", "link", "add", "rl-s", "netns", SERVER_NS, "type", "veth", "peer", "name", "rl-c", "netns", CLIENT_NS)
    for ns, dev, ip in ((SERVER_NS, "rl-s", SERVER_IP), (CLIENT_NS, "rl-c", CLIENT_IP)):
        netns(ns, "ip", "addr", "add", f"{ip}/24", "dev", dev)
        netns(ns, "ip", "link", "set", dev, "up")
        netns(ns, "nft", "add table inet rainloss")
        # On input, not output: a packet dropped on output fails its sendto() with EPERM, which the
        # sender sees (and may act on); the network's loss is silent, as a drop on arrival is.
        netns(ns, "nft", "add chain inet rainloss in { type filter hook input priority 0 ; }")


def set_loss(percent: int) -> None:
    for ns in (SERVER_NS, CLIENT_NS):
        netns(ns, "nft", "flush chain inet rainloss in")
        if percent > 0:
            netns(ns, "nft", f"add rule inet rainloss in meta l4proto udp numgen random mod 100 < {percent} drop")


def tear_down_network() -> None:
    for ns in (SERVER_NS, CLIENT_NS):
        sh("ip", "netns", "del", ns, check=False)


def start_server(workdir: Path, repair: bool, extra: list[str]) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAIN_")}
    # Eager: a server compiles in the background by default, which would share the CPU with the
    # measurement (the figures in docs/benchmarks.md were taken eager).
    env.update({"PYTHONPATH": str(ROOT), "RAIN_LOSS_REPAIR": "true" if repair else "false", "RAIN_ICE_SERVERS": "[]",
                "RAIN_COMPILE": "off"})
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    command = ["ip", "netns", "exec", SERVER_NS, sys.executable, "-m", "cli", "serve", "--host", SERVER_IP,
               "--port", str(PORT), *extra]
    return subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)


def emit(message: dict) -> None:
    """One JSON line to the parent process (the client's stdout is its channel to it)."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def analyse(samples: list[list[float]], distinct: float, seconds: float) -> dict:
    times = [t / 1000 for t, diff in samples if diff > distinct]
    diffs = sorted(diff for _, diff in samples[1:]) or [0.0]
    spread = {"diff_p10": round(diffs[len(diffs) // 10], 2), "diff_p50": round(diffs[len(diffs) // 2], 2),
              "diff_p90": round(diffs[9 * len(diffs) // 10], 2)}
    if len(times) < 2:
        return {"distinct_fps": 0.0, "longest_freeze_s": seconds, "presented": len(samples), "distinct": len(times),
                **spread}
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return {
        "distinct_fps": round((len(times) - 1) / (times[-1] - times[0]), 2),
        "longest_freeze_s": round(max(gaps), 3),
        "freezes_over_0_5_s": sum(gap > 0.5 for gap in gaps),
        "presented": len(samples),
        "distinct": len(times),
        **spread,
    }


async def run_client(args: argparse.Namespace) -> list[dict]:
    """In the client namespace: one webcam session per loss level; returns a result per level."""
    from playwright.async_api import async_playwright

    sys.path.insert(0, str(ROOT))
    from tests.webcam import write_y4m

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        y4m = write_y4m(Path(tmp) / "webcam.y4m")
        launch_args = [*CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={y4m}"]
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=launch_args)
            for loss in args.loss:
                page = await (await browser.new_context()).new_page()
                page.set_default_timeout(180_000)
                await page.goto(f"{URL}/")
                await page.wait_for_function("() => document.querySelectorAll('#params input').length > 10")
                await page.click("#start")
                await page.wait_for_function("() => document.body.dataset.state === 'connected'")
                session = await page.evaluate("() => session.session_id")  # the OBS link carries the view id
                stats_js = f"() => fetch('/api/sessions/{session}/stats').then((r) => r.json())"
                while ((await page.evaluate(stats_js))["frames"]["sent"]) < 32:
                    await asyncio.sleep(0.5)
                emit({"set_loss": loss})  # the parent applies it, then answers
                sys.stdin.readline()
                await asyncio.sleep(args.settle)
                await page.evaluate(SAMPLER_JS)
                before = await page.evaluate(stats_js)
                camera_before = before["frames"]["camera"]
                gap_max, started = 0.0, time.monotonic()
                while time.monotonic() - started < args.seconds:
                    await asyncio.sleep(2.0)
                    stats = await page.evaluate(stats_js)
                    gap_max = max(gap_max, stats["camera"]["gap_max_ms"] or 0.0)
                after = await page.evaluate(stats_js)
                samples = await page.evaluate("() => window.lossSamples")
                result = {"loss_percent": loss, **analyse(samples, args.distinct, args.seconds),
                          "driving_gap_max_s": round(gap_max / 1000, 3),
                          "camera_fps": round((after["frames"]["camera"] - camera_before) / args.seconds, 1),
                          "server_sent": after["frames"]["sent"] - before["frames"]["sent"],
                          "server_repeated": after["frames"]["repeated"] - before["frames"]["repeated"],
                          "repair": after["camera"]["repair"], "latency_ms": after["latency_ms"],
                          "latency_parts_ms": after.get("latency_parts_ms")}
                results.append(result)
                emit({"set_loss": 0})
                sys.stdin.readline()
                await page.click("#stop")
                await page.context.close()
            await browser.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loss", type=int, nargs="+", default=[0, 5, 15], help="percent of UDP dropped each way")
    parser.add_argument("--seconds", type=float, default=25.0, help="measured seconds per loss level")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds under loss before measuring")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--distinct", type=float, default=0.2, help="mean abs difference of a new frame (0-255)")
    parser.add_argument("--no-repair", dest="repair", action="store_false")
    parser.add_argument("--server-arg", action="append", default=[], help="passed to `rain-avatar serve`")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.client:
        results = asyncio.run(run_client(args))
        emit({"results": results})
        return
    if os.geteuid() != 0:
        raise SystemExit("needs root: it creates network namespaces and nftables rules")
    set_up_network()
    workdir = Path(tempfile.mkdtemp(prefix="loss-bench-"))
    server = start_server(workdir, args.repair, args.server_arg)
    all_results = []
    try:
        deadline = time.monotonic() + 240
        while netns(CLIENT_NS, "python3", "-c", f"import urllib.request; urllib.request.urlopen('{URL}/api/health')",
                    check=False).returncode != 0:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not come up: see {workdir / 'server.log'}")
            time.sleep(1)
        for run in range(args.runs):
            client_args = ["--loss", *map(str, args.loss), "--seconds", str(args.seconds),
                           "--settle", str(args.settle), "--distinct", str(args.distinct)]
            client = subprocess.Popen(
                ["ip", "netns", "exec", CLIENT_NS, sys.executable, __file__, "--client", *client_args],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            assert client.stdin is not None and client.stdout is not None
            for line in client.stdout:
                message = json.loads(line)
                if "set_loss" in message:
                    set_loss(message["set_loss"])
                    client.stdin.write("\n")
                    client.stdin.flush()
                elif "results" in message:
                    for result in message["results"]:
                        result["run"] = run
                        logger.info(json.dumps(result))
                    all_results.extend(message["results"])
            if client.wait() != 0:
                raise SystemExit(f"the client failed ({client.returncode})")
    finally:
        set_loss(0)
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
        tear_down_network()
    if args.json is not None:
        args.json.write_text(json.dumps({"repair": args.repair, "results": all_results}, indent=1))


if __name__ == "__main__":
    main()
