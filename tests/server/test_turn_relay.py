"""TURN end to end, relay only: the server and a webcam client in network namespaces with no route
between them, both reaching just a coturn (Debian's `turnserver`, `use-auth-secret`) between them,
so that the avatar can only come through the relay, with credentials the server minted.

    root ns --(HTTP only)-- server ns --(veth)-- turn ns --(veth)-- client ns
                             10.28.1.2           10.28.0.1           10.28.2.2

The turn namespace owns 10.28.0.1 (the only address the others route to) and forwards nothing.
The client's signalling goes to the server's HTTP through a Unix socket the test forwards; its
media has no way but coturn's relay.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import select
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import start_live_server, stop_live_server

TURN_IP = "10.28.0.1"
HTTP_ROOT_IP, HTTP_SERVER_IP = "10.28.9.1", "10.28.9.2"
TAG = f"r28{os.getpid() % 100000}"
SERVER_NS, TURN_NS, CLIENT_NS = f"{TAG}s", f"{TAG}t", f"{TAG}c"


def ip(*args: str, ns: str | None = None) -> None:
    command = ["ip", "netns", "exec", ns, "ip", *args] if ns else ["ip", *args]
    subprocess.run(command, check=True, capture_output=True, timeout=10)


def set_up_network() -> None:
    for ns in (SERVER_NS, TURN_NS, CLIENT_NS):
        ip("netns", "add", ns)
        ip("link", "set", "lo", "up", ns=ns)
    ip("addr", "add", f"{TURN_IP}/32", "dev", "lo", ns=TURN_NS)
    for side, subnet in ((SERVER_NS, "10.28.1"), (CLIENT_NS, "10.28.2")):
        outer, inner = f"{side}a", f"{side}b"
        ip("link", "add", outer, "netns", TURN_NS, "type", "veth", "peer", "name", inner, "netns", side)
        ip("addr", "add", f"{subnet}.1/24", "dev", outer, ns=TURN_NS)
        ip("addr", "add", f"{subnet}.2/24", "dev", inner, ns=side)
        ip("link", "set", outer, "up", ns=TURN_NS)
        ip("link", "set", inner, "up", ns=side)
        ip("route", "add", f"{TURN_IP}/32", "via", f"{subnet}.1", ns=side)
    # The test's own way to the server's HTTP (the client never gets one).
    ip("link", "add", f"{TAG}h", "type", "veth", "peer", "name", f"{TAG}i", "netns", SERVER_NS)
    ip("addr", "add", f"{HTTP_ROOT_IP}/30", "dev", f"{TAG}h")
    ip("addr", "add", f"{HTTP_SERVER_IP}/30", "dev", f"{TAG}i", ns=SERVER_NS)
    ip("link", "set", f"{TAG}h", "up")
    ip("link", "set", f"{TAG}i", "up", ns=SERVER_NS)


def tear_down_network() -> None:
    for ns in (SERVER_NS, TURN_NS, CLIENT_NS):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def no_route(ns: str, address: str) -> bool:
    result = subprocess.run(["ip", "netns", "exec", ns, "ip", "route", "get", address], capture_output=True, timeout=10)
    return result.returncode != 0 and b"unreachable" in result.stderr


@pytest.fixture
def namespaces() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("needs root: it creates network namespaces")
    if shutil.which("turnserver") is None:
        pytest.skip("needs coturn's turnserver (Debian package coturn)")
    try:
        set_up_network()
    except subprocess.CalledProcessError as error:
        tear_down_network()
        pytest.skip(f"network namespaces not permitted here: {error.stderr.decode(errors='replace').strip()}")
    try:
        yield
    finally:
        tear_down_network()


class _Forward(socketserver.BaseRequestHandler):
    """One signalling connection from the client's Unix socket to the server's HTTP port."""

    def handle(self) -> None:
        with socket.create_connection(self.server.target, timeout=30) as upstream:
            ends = [self.request, upstream]
            while True:
                readable, _, _ = select.select(ends, [], [], 60)
                if not readable:
                    return
                for end in readable:
                    data = end.recv(65536)
                    if not data:
                        return
                    (upstream if end is self.request else self.request).sendall(data)


def start_coturn(secret: str, directory: Path) -> subprocess.Popen:
    """coturn on the turn namespace's address, secret-based credentials, nothing from /etc; its
    log in `directory / "turn.log"`."""
    command = [
        "ip", "netns", "exec", TURN_NS, "turnserver", "-n", "--no-cli", "-v", "--log-file=stdout",
        f"--pidfile={directory / 'turn.pid'}", f"--db={directory / 'turndb'}", "--no-tls", "--no-dtls",
        "--fingerprint", "--use-auth-secret", f"--static-auth-secret={secret}", "--realm=rain-avatar",
        f"--listening-ip={TURN_IP}", f"--relay-ip={TURN_IP}", "--listening-port=3478",
        "--min-port=49160", "--max-port=49200",
    ]
    with open(directory / "turn.log", "wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def start_signalling(directory: Path) -> tuple[socketserver.ThreadingUnixStreamServer, str]:
    """The client's only way to the server's HTTP: a Unix socket forwarded to it -> (forwarder, path)."""
    uds = str(directory / "signalling.sock")
    forwarder = socketserver.ThreadingUnixStreamServer(uds, _Forward)
    forwarder.daemon_threads = True
    forwarder.target = (HTTP_SERVER_IP, 8000)
    threading.Thread(target=forwarder.serve_forever, daemon=True).start()
    return forwarder, uds


def relay_server(directory: Path, secret: str, ttl: int):
    """The server in its namespace, relaying through coturn with credentials valid `ttl` seconds."""
    return start_live_server(
        directory, netns=SERVER_NS, host=HTTP_SERVER_IP, RAIN_ICE_LOOPBACK="false",
        RAIN_TURN_URLS=json.dumps([f"turn:{TURN_IP}:3478?transport=udp"]), RAIN_TURN_SECRET=secret,
        RAIN_TURN_TTL=str(ttl),
    )


def run_client(uds: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """The webcam client (tests/server/relay_client.py) in the client namespace."""
    return subprocess.run(
        ["ip", "netns", "exec", CLIENT_NS, sys.executable, "-m", "tests.server.relay_client", "--uds", uds, *args],
        capture_output=True, text=True, timeout=timeout, cwd=Path(__file__).resolve().parents[2],
    )


@pytest.fixture
def turn(namespaces, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    secret = secrets.token_hex(32)
    process = start_coturn(secret, tmp_path)
    try:
        yield secret, tmp_path / "turn.log"
    finally:
        stop(process)


def test_avatar_reaches_a_client_only_through_the_relay(turn, tmp_path: Path) -> None:
    secret, turn_log = turn
    # The premise: neither side has a route to the other, and the turn namespace forwards nothing.
    assert no_route(CLIENT_NS, "10.28.1.2") and no_route(CLIENT_NS, HTTP_SERVER_IP)
    assert no_route(SERVER_NS, "10.28.2.2")
    forwarding = subprocess.run(["ip", "netns", "exec", TURN_NS, "sysctl", "-n", "net.ipv4.ip_forward"],
                                capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    assert forwarding == "0"

    server = relay_server(tmp_path, secret, ttl=600)
    forwarder, uds = start_signalling(tmp_path)
    try:
        client = run_client(uds, "--frames", "15", "--timeout", "60", timeout=120)
        assert client.returncode == 0, f"client:\n{client.stderr[-4000:]}\nserver:\n{server.log()[-4000:]}"
    finally:
        forwarder.shutdown()
        forwarder.server_close()
        stop_live_server(server)
    result = json.loads(client.stdout.strip().splitlines()[-1])
    # The avatar arrived, at the stream's size.
    assert result["frames"] >= 15 and [result["width"], result["height"]] == result["config_size"]
    # With a credential minted for this page load (the secret itself went nowhere).
    assert secret not in client.stdout and result["turn_usernames"][-1].endswith(":page")
    # coturn allocated relays for these credentials and carried media through them.
    log = turn_log.read_text(errors="replace")
    assert re.search(r"ALLOCATE processed, success", log), log[-4000:]
    users = set(re.findall(r"user <\d+:(\w+)>: incoming packet ALLOCATE processed, success", log))
    assert users == {"page", "server"}, log[-4000:]
    # What coturn relayed for each allocation when it closed: rp came from peers to the allocation's owner,
    # sp went from the owner to peers. ICE may pick either relay (or both), so the avatar's direction is
    # what reached the page through its relay plus what the server sent through its own; likewise the camera's.
    received: dict[str, int] = {"page": 0, "server": 0}
    sent: dict[str, int] = {"page": 0, "server": 0}
    for user, rp, sp in re.findall(r"peer usage: realm=<rain-avatar>, username=<\d+:(\w+)>, rp=(\d+), rb=\d+, sp=(\d+)",
                                   log):
        received[user] += int(rp)
        sent[user] += int(sp)
    assert received["page"] + sent["server"] >= result["frames"], log[-4000:]
    assert sent["page"] + received["server"] > 0, log[-4000:]


# A TURN allocation from the client's namespace: exits 0 once coturn granted one.
ALLOCATE = """
import asyncio, sys
from aioice.turn import create_turn_endpoint

async def allocate():
    endpoint = create_turn_endpoint(asyncio.DatagramProtocol, (sys.argv[1], 3478), sys.argv[2], sys.argv[3])
    transport, _ = await asyncio.wait_for(endpoint, 10)
    transport.close()

asyncio.run(allocate())
"""


def test_the_compose_turn_service_keeps_its_secret_off_the_command_line(namespaces, tmp_path: Path) -> None:
    """docker/compose.yaml's coturn command, run as its container's shell runs it (with Debian's
    coturn): the secret reaches coturn, which grants credentials minted from it, and is neither on
    its command line nor in its environment, where other processes could read it."""
    import yaml

    from server.rtc.turn import mint_turn_credential

    compose = Path(__file__).resolve().parents[2] / "docker" / "compose.yaml"
    command = yaml.safe_load(compose.read_text())["services"]["turn"]["command"][0].replace("$$", "$")
    secret = secrets.token_hex(32)
    env = {"PATH": os.environ["PATH"], "RAIN_TURN_SECRET": secret}
    with open(tmp_path / "turn.log", "wb") as log:
        # `ip netns exec` and the shell both exec: the process is coturn itself.
        coturn = subprocess.Popen(["ip", "netns", "exec", TURN_NS, "sh", "-c", command], env=env, cwd=tmp_path,
                                  stdout=log, stderr=subprocess.STDOUT)
    try:

        def allocate(key: str) -> subprocess.CompletedProcess:
            username, credential = mint_turn_credential(key, "check", 60)
            return subprocess.run(["ip", "netns", "exec", CLIENT_NS, sys.executable, "-c", ALLOCATE, TURN_IP,
                                   username, credential], capture_output=True, text=True, timeout=60)

        deadline = time.monotonic() + 30
        while (granted := allocate(secret)).returncode != 0 and time.monotonic() < deadline:
            assert coturn.poll() is None, (tmp_path / "turn.log").read_text(errors="replace")[-4000:]
            time.sleep(0.5)
        assert granted.returncode == 0, granted.stderr[-2000:] + (tmp_path / "turn.log").read_text(errors="replace")
        assert allocate(secrets.token_hex(32)).returncode != 0  # another secret's credentials: refused
        proc = Path(f"/proc/{coturn.pid}")
        assert (proc / "exe").resolve().name == "turnserver"
        assert secret.encode() not in (proc / "cmdline").read_bytes()
        assert secret.encode() not in (proc / "environ").read_bytes()
    finally:
        stop(coturn)
