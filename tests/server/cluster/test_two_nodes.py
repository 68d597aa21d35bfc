"""A real two-machine Ray cluster on one host: a head and a worker, each `ray start`ed in its own
network namespace with its own address and Ray's token authentication, `rain-avatar serve --ray`
deployed onto it as a user would (one avatar replica per node, by a custom resource), and the
client on a third address. Then the worker machine is lost (its link taken down: silent, as a
machine that loses power or network) while a session streams on each node, and comes back later.

Skipped, with the reason, where network namespaces cannot be made (not root, no iproute2).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from PIL import Image

from tests.avatar_client import WebcamClient, eventually
from tests.server.cluster import netns
from tests.server.test_live import upload
from tests.webcam import ASTRONAUT

REASON = netns.unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"two-node cluster: {REASON}")
# The sessions' aiortc clients live across the tests: one event loop for the module.
on_the_module_loop = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[3]
RAY = str(Path(sys.executable).parent / "ray")
GCS_PORT, HTTP_PORT = 6379, 8000
SESSIONS_PER_REPLICA = 2
START_TIMEOUT = 300  # seconds: two Ray nodes and two model replicas on a loaded 2-core machine
FIRST_FRAME_TIMEOUT = 180
# The bound: with a machine lost, no request of the API may take longer.
SLOWEST_ANSWER = 5.0
# Seconds until the silent machine's sessions are 404: Ray's health checks declare the node dead
# (about 3 s with the settings below), then Serve drops its replica. The bound leaves room for a
# loaded machine.
LOSS_DETECTED = 30


@dataclass
class Cluster:
    network: netns.Network
    url: str
    env: dict[str, str]  # what the nodes and the driver run with (the token among it)
    log_dir: Path

    @property
    def head(self) -> netns.Machine:
        return self.network.machines[0]

    @property
    def worker(self) -> netns.Machine:
        return self.network.machines[1]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in self.log_dir.glob("*.log"))


def _environment(token: str, ray_tmp: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RAIN_", "RAY_"))}
    env.update({
        "PYTHONPATH": str(ROOT),  # the nodes' workers import this checkout
        # Ray's session files, and the "current cluster" address that a later `ray.init()` on this
        # host would join, kept out of /tmp/ray (short: Ray's socket paths must fit 107 bytes).
        "RAY_TMPDIR": str(ray_tmp),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_USAGE_STATS_ENABLED": "0",
        # How soon the head declares a silent machine dead: docs/ray.md's advice (Ray's default
        # takes tens of seconds).
        "RAY_health_check_period_ms": "1000",
        "RAY_health_check_timeout_ms": "1000",
        "RAY_health_check_failure_threshold": "3",
    })
    return env


def _start_node(machine: netns.Machine, env: dict[str, str], log_dir: Path, *, head: str | None) -> None:
    # One CPU and one `rain_avatar` unit per machine: the placement settings below put one
    # avatar replica on each; no dashboard (its job API runs code for whoever reaches it).
    where = ["--head", f"--port={GCS_PORT}", "--include-dashboard=false"] if head is None else [f"--address={head}"]
    command = [
        RAY, "start", "--block", *where, f"--node-ip-address={machine.address}", "--num-cpus=1",
        '--resources={"rain_avatar": 1}', "--object-store-memory=100000000", "--disable-usage-stats",
    ]
    machine.spawn(command, env=env, log=log_dir / f"{machine.name}.log")


def _serve_command(cluster_address: str, tmp: Path) -> tuple[list[str], dict[str, str]]:
    command = [sys.executable, "-m", "cli", "serve", "--ray", cluster_address, "--host", "0.0.0.0",
               "--port", str(HTTP_PORT), "--profile", "tiny", "--random-weights"]
    settings = {
        "RAIN_RAY_REPLICAS": "2",
        "RAIN_RAY_REPLICA_RESOURCE": "rain_avatar",
        "RAIN_RAY_MAX_REPLICAS_PER_NODE": "1",
        "RAIN_MAX_SESSIONS": str(SESSIONS_PER_REPLICA),
        "RAIN_ICE_SERVERS": "[]",
        "RAIN_TORCH_THREADS": "1",
        "RAIN_COMPILE": "off",  # a background compile in each replica would take both cores for minutes
        "RAIN_SILENCE_TIMEOUT": "30",
        "RAIN_REFERENCES_DIR": str(tmp / "references"),  # one host: the machines share it, like an NFS mount
        "RAIN_RECORDINGS_DIR": str(tmp / "recordings"),
    }
    return command, settings


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("two-nodes")
    log_dir = tmp / "logs"
    log_dir.mkdir()
    ray_tmp = Path(tempfile.mkdtemp(prefix="rain-ray-", dir="/tmp"))
    env = _environment(secrets.token_hex(32), ray_tmp)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, ray_tmp, ignore_errors=True)
        network = cleanup.enter_context(netns.Network(["head", "worker"]))
        cluster = Cluster(network, f"http://{network.machines[0].address}:{HTTP_PORT}", env, log_dir)
        head_address = f"{cluster.head.address}:{GCS_PORT}"
        _start_node(cluster.head, env, log_dir, head=None)
        time.sleep(5)  # the GCS up before the worker dials it (it retries, but briefly)
        _start_node(cluster.worker, env, log_dir, head=head_address)
        command, settings = _serve_command(head_address, tmp)
        driver = cluster.head.spawn(command, env={**env, **settings}, log=log_dir / "serve.log", cwd=tmp)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert driver.poll() is None, f"serve --ray exited with {driver.returncode}:\n{cluster.logs()}"
            try:
                health = httpx.get(f"{cluster.url}/api/health", timeout=5)
                if health.status_code == 200 and len(health.json()["replicas"]) == 2:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"the cluster did not serve two replicas:\n{cluster.logs()}"
            time.sleep(2)
        yield cluster


@dataclass
class Streams:
    http: httpx.AsyncClient
    clients: list[WebcamClient]
    reference_id: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def streams(cluster: Cluster) -> AsyncIterator[Streams]:
    async with httpx.AsyncClient(base_url=cluster.url, timeout=90) as http:
        shared = Streams(http, [], await upload(http, Image.open(ASTRONAUT).convert("RGB")))
        try:
            for _ in range(2):
                client = WebcamClient(http)
                shared.clients.append(client)
                response = await client.open(reference_id=shared.reference_id, params={"fps": 8})
                assert response.status_code == 200, response.text
            yield shared
        finally:
            await asyncio.gather(*(client.close() for client in shared.clients))


def _candidate_addresses(sdp: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^a=candidate:\S+ \d+ udp \d+ (\S+) \d+ typ host", sdp, flags=re.M)}


async def _frames_grow(client: WebcamClient, what: str, timeout: float = 60) -> None:
    received = client.avatar.count
    await eventually(lambda: client.avatar.count >= received + 8, timeout=timeout, what=what)


@on_the_module_loop
async def test_one_replica_per_machine_with_media_straight_to_it(cluster: Cluster, streams: Streams) -> None:
    health = (await streams.http.get("/api/health")).json()
    addresses = {r["address"] for r in health["replicas"]}
    assert addresses == {cluster.head.address, cluster.worker.address}, health["replicas"]
    assert len({r["node"] for r in health["replicas"]}) == 2
    by_replica = {r["replica"]: r["address"] for r in health["replicas"]}
    for client in streams.clients:
        # The answer's candidates are its owner's machine: the browser sends media there, not through the head.
        owner = by_replica[client.session_id.split(".")[0]]
        assert _candidate_addresses(client.pc.remoteDescription.sdp) == {owner}
        await eventually(lambda c=client: c.engine_out_above(0), timeout=FIRST_FRAME_TIMEOUT, what="engine frames")
        await _frames_grow(client, "avatar frames")
        assert (await client.stats())["reference_id"] == streams.reference_id


async def _timed(http: httpx.AsyncClient, method: str, path: str, **kwargs) -> httpx.Response:
    started = time.monotonic()
    response = await http.request(method, path, timeout=SLOWEST_ANSWER * 4, **kwargs)
    elapsed = time.monotonic() - started
    assert elapsed < SLOWEST_ANSWER, f"{method} {path} took {elapsed:.1f} s ({response.status_code})"
    return response


@on_the_module_loop
async def test_losing_the_worker_machine_leaves_the_rest_answering(cluster: Cluster, streams: Streams) -> None:
    http = streams.http
    health = (await http.get("/api/health")).json()
    on_worker = {r["replica"] for r in health["replicas"] if r["address"] == cluster.worker.address}
    (lost,) = [c for c in streams.clients if c.session_id.split(".")[0] in on_worker]
    (survivor,) = [c for c in streams.clients if c is not lost]

    # The machine goes silent: its link down, nothing closed (its processes die only later).
    cluster.worker.unplug()
    lost_at = time.monotonic()

    # The lost machine's session: a clear 404 "the stream ended" once Ray has declared the machine
    # dead; until then 503 with Retry-After ("does not answer"): never a 500, never a hang.
    statuses: list[int] = []

    async def lost_session_ended() -> bool:
        response = await _timed(http, "GET", f"/api/sessions/{lost.session_id}/stats")
        statuses.append(response.status_code)
        assert response.status_code in (404, 503), response.text
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) > 0 and "does not answer" in response.json()["detail"]
        return response.status_code == 404 and "ended" in response.json()["detail"]

    await eventually(lost_session_ended, timeout=LOSS_DETECTED, what="the lost session's 404", interval=0.5)
    ended_after = time.monotonic() - lost_at
    cluster.worker.power_off()  # what was left running there, before the machine comes back

    # The API answers all along, and health drops the lost replica.
    async def replica_dropped() -> bool:
        response = await _timed(http, "GET", "/api/health")
        assert response.status_code == 200, response.text
        return {r["address"] for r in response.json()["replicas"]} == {cluster.head.address}

    await eventually(replica_dropped, timeout=60, what="health without the lost replica", interval=0.5)

    # The survivor's session streams on, and is still answered.
    await _frames_grow(survivor, "the survivor's frames")
    assert (await _timed(http, "GET", f"/api/sessions/{survivor.session_id}/stats")).status_code == 200

    # The character uploaded before the loss still serves a new session, on the machine with room.
    third = WebcamClient(http)
    try:
        response = await third.open(reference_id=streams.reference_id, params={"fps": 8})
        assert response.status_code == 200, response.text
        assert _candidate_addresses(third.pc.remoteDescription.sdp) == {cluster.head.address}
        assert (await third.stats())["reference_id"] == streams.reference_id
        # Now no machine has room (at most one replica per machine): 503 with Retry-After.
        fourth = WebcamClient(http)
        try:
            response = await fourth.open(params={"fps": 8})
            assert response.status_code == 503 and int(response.headers["retry-after"]) > 0, response.text
        finally:
            await fourth.close()
        assert (await _timed(http, "DELETE", f"/api/sessions/{third.session_id}")).status_code == 204
    finally:
        await third.close()
    sys.stderr.write(
        f"the lost machine's session answered 404 after {ended_after:.1f} s (statuses before: {statuses})\n"
    )


def _without_token(env: dict[str, str], home: Path) -> dict[str, str]:
    """`env` with Ray's token authentication off and no token anywhere Ray looks."""
    stripped = {key: value for key, value in env.items() if key != "RAY_AUTH_TOKEN"}
    return {**stripped, "RAY_AUTH_MODE": "disabled", "HOME": str(home)}


def _serve_until_it_exits(machine: netns.Machine, cluster_address: str, env: dict[str, str], tmp: Path) -> str:
    """`rain-avatar serve --ray` run against a cluster it must refuse: its log, once it exited with 2."""
    command, settings = _serve_command(cluster_address, tmp)
    log = tmp / "serve.log"
    process = machine.spawn(command, env={**env, **settings}, log=log, cwd=tmp)
    try:
        process.wait(180)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"serve --ray hung:\n{log.read_text()}") from None
    assert process.returncode == 2, log.read_text()
    return log.read_text()


def test_serve_refuses_to_join_without_the_token(cluster: Cluster, tmp_path: Path) -> None:
    """Against a cluster that asks for Ray's token, a driver without it stops with what to set."""
    env = _without_token(cluster.env, tmp_path)
    log = _serve_until_it_exits(cluster.head, f"{cluster.head.address}:{GCS_PORT}", env, tmp_path)
    assert "RAY_AUTH_TOKEN" in log and "Traceback" not in log, log


def test_serve_refuses_a_cluster_without_authentication(cluster: Cluster, tmp_path: Path) -> None:
    """A cluster whose nodes run without Ray's token (anyone reaching it runs code there): the
    command will not deploy onto it unless told `--insecure-cluster`. (The lost machine's
    namespace, empty now, holds that cluster's head.)"""
    machine = cluster.worker
    env = _without_token(cluster.env, tmp_path)
    _start_node(machine, env, tmp_path, head=None)
    try:
        log = _serve_until_it_exits(machine, f"{machine.address}:{GCS_PORT}", env, tmp_path)
        assert "without token authentication" in log and "--insecure-cluster" in log, log
        assert "Application 'rain-avatar' is ready" not in log, log
    finally:
        machine.power_off()


@on_the_module_loop
async def test_a_machine_that_rejoins_gets_the_lost_replica_and_the_old_characters(
    cluster: Cluster, streams: Streams
) -> None:
    """The lost replica, waiting unplaced since, starts on the machine when it comes back, and
    serves a character uploaded before the loss (the issue's 404 after a rejoin)."""
    cluster.worker.plug()
    _start_node(cluster.worker, cluster.env, cluster.log_dir, head=f"{cluster.head.address}:{GCS_PORT}")

    async def replaced() -> bool:
        replicas = (await streams.http.get("/api/health")).json()["replicas"]
        return {r["address"] for r in replicas} == {cluster.head.address, cluster.worker.address}

    await eventually(replaced, timeout=START_TIMEOUT, what="a replica on the machine that rejoined", interval=2)
    # Two offers: at least one lands on the new replica, the one with the most room (the head's
    # may hold the survivor, or nothing: the synchronous tests before paused the client's media,
    # and the server reaps a silent session).
    clients = [WebcamClient(streams.http) for _ in range(2)]
    try:
        for client in clients:
            response = await client.open(reference_id=streams.reference_id, params={"fps": 8})
            assert response.status_code == 200, response.text
        by_address = {_candidate_addresses(c.pc.remoteDescription.sdp).pop(): c for c in clients}
        assert cluster.worker.address in by_address, by_address
        rejoined = by_address[cluster.worker.address]
        assert (await rejoined.stats())["reference_id"] == streams.reference_id
        await eventually(lambda: rejoined.engine_out_above(0), timeout=FIRST_FRAME_TIMEOUT, what="engine frames")
    finally:
        await asyncio.gather(*(client.close() for client in clients))
