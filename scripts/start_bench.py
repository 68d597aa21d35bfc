"""`rain-avatar serve` from start to first avatar frame, with a cold and then a warm compiler cache.

    python scripts/start_bench.py [--cache DIR] [--runs cold warm] [-- extra serve options]

Each run starts the server as a user does (the default model: on a CPU the bundled demo), with its
compiler cache in DIR (default: a new temporary directory, so the first run is cold), and times:
the server answering /api/health, a webcam session's first avatar frame (an aiortc client streaming
the astronaut clip), and the background preparation (compiling) finishing, read from /api/health.
It also counts the files the run added to the cache: a warm start that compiles nothing adds none.
One JSON line per run on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.avatar_client import WebcamClient, eventually  # noqa: E402

logger = logging.getLogger("start_bench")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cache_files(directory: Path) -> int:
    return sum(1 for path in directory.rglob("*") if path.is_file()) if directory.exists() else 0


async def one_run(name: str, cache: Path, extra: list[str], log_dir: Path) -> dict:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAIN_")}
    env.update(RAIN_COMPILE_CACHE_DIR=str(cache), RAIN_ICE_LOOPBACK="true", RAIN_ICE_SERVERS="[]")
    files_before = cache_files(cache)
    log_path = log_dir / f"serve-{name}.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--port", str(port), *extra],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    result: dict = {"run": name, "cache": str(cache), "cache_files_before": files_before}
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            async def answers() -> bool:
                if process.poll() is not None:
                    raise RuntimeError(f"the server exited:\n{log_path.read_text()[-2000:]}")
                try:
                    return (await http.get("/api/health")).status_code == 200
                except httpx.HTTPError:
                    return False

            await eventually(answers, timeout=600, what="/api/health", interval=0.1)
            result["health_s"] = round(time.monotonic() - started, 2)
            logger.info("%s: the server answers after %.1f s", name, result["health_s"])
            client = WebcamClient(http)
            try:
                response = await client.open()
                response.raise_for_status()
                await eventually(lambda: client.engine_out_above(0), timeout=600, what="the first avatar frame")
                result["first_frame_s"] = round(time.monotonic() - started, 2)
                logger.info("%s: first avatar frame after %.1f s", name, result["first_frame_s"])
                result["engine_fps_while_preparing"] = await _fps(client)
            finally:
                await client.close()

            async def prepared() -> bool:
                preparation = (await http.get("/api/health")).json()["fast_paths"]["preparation"]
                return preparation is None or preparation["done"]

            await eventually(prepared, timeout=3600, what="the background preparation", interval=1.0)
            result["prepared_s"] = round(time.monotonic() - started, 2)
            health = (await http.get("/api/health")).json()
            result["profile"] = health["profile"]
            result["fast_paths"] = health["fast_paths"]
            # A new session on the prepared model (the first one's clip may have ended meanwhile).
            client = WebcamClient(http)
            try:
                (await client.open()).raise_for_status()
                await eventually(lambda: client.engine_out_above(8), timeout=600, what="avatar frames")
                result["engine_fps_prepared"] = await _fps(client)
            finally:
                await client.close()
    finally:
        process.terminate()
        process.wait(60)
    result["cache_files_added"] = cache_files(cache) - files_before
    logger.info("%s: prepared after %.1f s; %d files added to the cache", name, result["prepared_s"],
                result["cache_files_added"])
    return result


async def _fps(client: WebcamClient, seconds: float = 10.0) -> float:
    """The session's engine frames a second over `seconds`, once prepared."""
    before = (await client.stats())["frames"]["engine_out"]
    await asyncio.sleep(seconds)
    return round(((await client.stats())["frames"]["engine_out"] - before) / seconds, 2)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=None, help="compiler cache directory (default: a new one)")
    parser.add_argument("--runs", nargs="+", default=["cold", "warm"])
    parser.add_argument("extra", nargs="*", help="options passed to rain-avatar serve (after --)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="rain-start-bench-") as scratch:
        cache = args.cache or Path(scratch) / "cache"
        for name in args.runs:
            sys.stdout.write(json.dumps(await one_run(name, cache, args.extra, Path(scratch))) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
