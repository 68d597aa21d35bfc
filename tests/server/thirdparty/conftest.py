"""Third-party clients from npm, for the tests in this folder: `npm ci` here once a session (the
versions pinned by package-lock.json), esbuild bundles them into one browser script, and a small
static server shows the test page on an origin of its own (`http://localhost:PORT`, while the
avatar server is `http://127.0.0.1:PORT`), so that the clients reach our endpoints across origins,
through CORS, as a page on another site does.

Without npm, or without the registry, the tests skip, saying why; any other failure of npm or
esbuild fails them."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PAGE_FILES = ("index.html", "clients.js")  # ours; thirdparty.js is the bundle
NPM_TIMEOUT = 300  # seconds: a cold cache downloads a few MB
# What npm prints when it cannot reach the registry (DNS, refused, timed out, offline cache miss).
UNREACHABLE = re.compile(r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|ENOTCACHED|network", re.I)


def _run(command: list[str], what: str) -> None:
    try:
        done = subprocess.run(command, cwd=HERE, capture_output=True, text=True, timeout=NPM_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.skip(f"{what} took over {NPM_TIMEOUT} s (is the npm registry reachable?)")
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-3000:]
        unreachable = UNREACHABLE.search(output)
        if what.startswith("npm ci") and unreachable:
            pytest.skip(f"the npm registry is unreachable ({what}: {unreachable.group(0)}):\n{output[-800:]}")
        pytest.fail(f"{what} failed with {done.returncode}:\n{output}")


@pytest.fixture(scope="session")
def thirdparty_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the test page and the bundled npm packages (thirdparty.js, global `thirdparty`)."""
    if shutil.which("npm") is None:
        pytest.skip("needs node and npm (Node 20+) to install the third-party WHIP/WHEP clients")
    # No install scripts: esbuild finds its binary in its platform package without its postinstall.
    _run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline"], "npm ci")
    folder = tmp_path_factory.mktemp("thirdparty-page")
    esbuild = str(HERE / "node_modules" / ".bin" / "esbuild")
    _run([esbuild, "entry.js", "--bundle", "--format=iife", "--global-name=thirdparty", "--platform=browser",
          f"--outfile={folder / 'thirdparty.js'}", "--log-level=warning"], "esbuild")
    for name in PAGE_FILES:
        shutil.copy(HERE / name, folder / name)
    return folder


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass


@pytest.fixture(scope="session")
def page_origin(thirdparty_page: Path) -> Iterator[str]:
    """The origin that serves the test page: `localhost`, a secure context (camera allowed) and
    another origin than the server's `127.0.0.1`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(thirdparty_page)))
    thread = threading.Thread(target=server.serve_forever, name="thirdparty-page", daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
