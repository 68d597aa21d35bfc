#!/usr/bin/env bash
# Download the wheels scripts/gpu_check.sh installs on a GPU machine that reaches no package index.
#
#   scripts/gpu_check_wheels.sh [WHEEL_DIR]        (default: .whl, ignored by git)
#
# Only the pure-Python packages the check imports and the GPU image lacks travel (diffusers,
# pydantic and what they need that the image does not hold); the image's own torch, numpy,
# safetensors, huggingface_hub, pillow, tqdm and prometheus_client are used as they are. The
# versions are those of this checkout's environment (PYTHON, default .venv/bin/python, else
# python3), so the check runs the code the tests ran. The wheels are for CPython 3.12 on
# x86-64 Linux, the GPU image's Python; set GPU_PYTHON_VERSION for another.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
wheels="${1:-$repo/.whl}"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x "$repo/.venv/bin/python" ]]; then python="$repo/.venv/bin/python"; else python=python3; fi
fi
target_python="${GPU_PYTHON_VERSION:-3.12}"

# Distribution names as pip knows them. typing-extensions travels because pydantic needs a newer
# one than the image may hold; a newer typing-extensions keeps every older name.
packages=(diffusers pydantic pydantic-core pydantic-settings python-dotenv annotated-types typing-inspection
          typing-extensions)

pins=()
for name in "${packages[@]}"; do
    version="$("$python" -c 'import importlib.metadata, sys; print(importlib.metadata.version(sys.argv[1]))' "$name")" || {
        echo "gpu_check_wheels: $name is not installed in $python; install the project first" >&2
        exit 1
    }
    pins+=("$name==$version")
done

mkdir -p "$wheels"
# One version of each: an older wheel beside a newer one would stop the install there.
rm -f "$wheels"/*.whl
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$target_python" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$wheels" "${pins[@]}"
echo "gpu_check_wheels: $(ls "$wheels"/*.whl | wc -l) wheels in $wheels ($(du -sh "$wheels" | cut -f1)):" >&2
ls "$wheels" >&2
