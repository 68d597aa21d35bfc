#!/usr/bin/env bash
# The GPU check: every GPU figure the project needs, in one command, within 8 minutes.
#
#   scripts/gpu_check.sh [rain-avatar gpu-check options]
#   scripts/gpu_check.sh --dry-run          # the same sections on the CPU, tiny profile, seconds
#
# It runs `rain-avatar gpu-check` from this checkout on the machine's own PyTorch (it never
# installs or replaces torch): the official profile with random weights at 512x512, G=P=4, eager
# first, then the served paths, compiled / CUDA graphs, batched streams 1-8, G x P variants, the
# model worker, and steady memory. It prints the markdown report and writes gpu_check.json +
# gpu_check.md into --out (default gpu_check/) and into $OUT when that is set, after every
# section. Each section has its own time limit (360 s in all, one cold compile): a section cut at
# its limit keeps its figures, one hung 15 s past it is interrupted, 15 s more end the check with
# the report written (exit status 3); a failing section is recorded and the next one runs.
# `rain-avatar gpu-check --help` lists every option.
#
# On a machine that reaches no package index (the lent GPU machines), the few pure-Python
# packages the check needs and the GPU image lacks travel as wheels. Build them here, once:
#
#   scripts/gpu_check_wheels.sh             # -> .whl/ (ignored by git; about 9 MB)
#
# and carry .whl with the working tree (the device tool: carry [".whl"]). When this checkout's
# imports already work, nothing is installed; otherwise the wheels go into a separate
# directory ($GPU_CHECK_SITE, default /tmp/rain-gpu-check-site) put before the machine's
# packages on PYTHONPATH. Set PYTHON for another interpreter, GPU_CHECK_WHEELS for another
# wheel directory. docs/benchmarks.md ("GPU check") says what the report holds.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
wheels="${GPU_CHECK_WHEELS:-$repo/.whl}"
site="${GPU_CHECK_SITE:-/tmp/rain-gpu-check-site}"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# Exactly what the check imports before it measures anything.
imports='import torch, cli.bench, rain_core.bench.gpu_check, server.worker_bench'

if ! "$python" -c "$imports" 2>/dev/null; then
    if ! compgen -G "$wheels/*.whl" >/dev/null; then
        echo "gpu_check: this checkout's imports fail and there are no wheels in $wheels:" >&2
        "$python" -c "$imports" || true
        echo "gpu_check: build them where pip reaches an index: scripts/gpu_check_wheels.sh" >&2
        exit 1
    fi
    echo "gpu_check: installing $(ls "$wheels"/*.whl | wc -l) wheels from $wheels into $site" >&2
    "$python" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "$wheels"/*.whl
    export PYTHONPATH="$repo:$site${PYTHONPATH#"$repo"}"
    "$python" -c "$imports"
fi

"$python" -c 'import sys, torch; print(f"gpu_check: python {sys.version.split()[0]}, torch {torch.__version__}, "
              f"cuda {torch.version.cuda}, gpu {torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}",
              file=sys.stderr)'
exec "$python" -m cli gpu-check "$@"
