"""Running `rain-avatar` and Python snippets in processes of their own, as a user's shell does."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.helpers import REPO_ROOT

# What mediapipe 0.10.21 writes to the terminal of a process that runs its face mesh.
MEDIAPIPE_NOISE = ("inference_feedback_manager.cc", "XNNPACK delegate", "absl::InitializeLog")


def run_python(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python ARGS` from the repository root, with this checkout importable and no OpenMP setting of ours."""
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                          timeout=timeout)


def run_snippet(code: str) -> subprocess.CompletedProcess:
    return run_python("-c", textwrap.dedent(code))


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return run_python("-m", "cli", *argv)
