"""Machines on one host: network namespaces joined by a bridge, each with its own address, for a
real multi-node Ray cluster in the tests (root only; `unavailable()` says why not).

The host side of the bridge is the third address, the client's. Every process a machine runs
is started with `Machine.spawn` (`ip netns exec`). `Machine.unplug` takes its link down (a
machine gone silent: packets dropped, no connection closed), `Machine.power_off` kills exactly
the processes in that namespace: nothing else on the host is touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"rainprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` is not permitted here: {made.stderr.strip()}"
    _ip("netns", "delete", probe, check=False)
    return None


@dataclass
class Machine:
    name: str  # the namespace
    address: str
    link: str  # the host's end of its cable (a veth on the bridge)
    processes: list[subprocess.Popen] = field(default_factory=list)

    def spawn(self, command: list[str], *, env: dict[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
        with open(log, "ab") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.name, *command], env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT
            )
        self.processes.append(process)
        return process

    def unplug(self) -> None:
        _ip("link", "set", self.link, "down")

    def plug(self) -> None:
        _ip("link", "set", self.link, "up")

    def pids(self) -> list[int]:
        listed = _ip("netns", "pids", self.name, check=False)
        return [int(pid) for pid in listed.stdout.split()]

    def power_off(self) -> None:
        """Every process in the namespace killed at once (SIGKILL), as a machine that loses power."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)


class Network:
    """A bridge on the host (`.1`, the client) and one namespace per machine (`.2`, `.3`, ...)."""

    def __init__(self, names: list[str]):
        tag = os.getpid() % 100_000
        # A subnet of its own per test run (the pid), so parallel runs on one host do not collide.
        subnet = f"10.{200 + tag % 50}.{tag // 50 % 256}"
        self.bridge = f"rbr{tag}"
        self.client_address = f"{subnet}.1"
        self.machines = [
            Machine(f"rain{tag}{name}", f"{subnet}.{index + 2}", link=f"{self.bridge}v{index}")
            for index, name in enumerate(names)
        ]
        self._subnet = subnet

    def __enter__(self) -> Network:
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.client_address}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for index, machine in enumerate(self.machines):
                outside, inside = machine.link, f"{self.bridge}i{index}"
                _ip("netns", "add", machine.name)
                _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
                _ip("link", "set", outside, "master", self.bridge, "up")
                _ip("link", "set", inside, "netns", machine.name)
                for args in (
                    ("addr", "add", f"{machine.address}/24", "dev", inside),
                    ("link", "set", inside, "up"),
                    ("link", "set", "lo", "up"),
                ):
                    _ip("netns", "exec", machine.name, "ip", *args)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for machine in self.machines:
            machine.power_off()
            _ip("netns", "delete", machine.name, check=False)
        _ip("link", "delete", self.bridge, check=False)  # takes the host ends of the veth pairs along
