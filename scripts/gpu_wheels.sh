#!/usr/bin/env bash
# Build .whl/: the wheels scripts/gpu_check.sh installs on a GPU machine without network whose
# python3 already holds torch 2.11, torchaudio, numpy, pyyaml, safetensors, psutil, rich, pyarrow
# and fsspec. Versions are this checkout's locked ones; wheels are for CPython 3.12 on x86-64.
#
#   bash scripts/gpu_wheels.sh            # soundfile, cffi, pycparser, soxr, typer, click
#   bash scripts/gpu_wheels.sh av         # ... and any other locked package named
#
# .whl/ is git-ignored locally (.git/info/exclude); carry it with the tree (it counts towards
# the 64 MiB the tree may weigh). Prints its size.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(soundfile cffi pycparser soxr typer click "$@")
exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
rm -rf .whl
mkdir -p .whl
for name in "${PACKAGES[@]}"; do
    version=$(uv run --quiet python -c "import importlib.metadata as m; print(m.version('$name'))")
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d .whl "$name==$version"
done
ls -1 .whl
du -sh .whl
