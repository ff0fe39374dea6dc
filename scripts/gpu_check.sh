#!/usr/bin/env bash
# One-command GPU check: correctness and speed of the engine on one NVIDIA GPU, in under
# 8 minutes, with no network. Prints one table and writes it to $OUT (default
# /tmp/tartok-gpu-check-out).
#
#   bash scripts/gpu_check.sh                             # on the GPU machine
#   GPU_CHECK_DEVICE=cpu bash scripts/gpu_check.sh        # quick mode on the CPU (tiny model)
#
# Python: $PYTHON, else this checkout's .venv, else python3 (which must hold torch 2.11 and
# torchaudio). Packages that python lacks travel as wheels in .whl/ (scripts/gpu_wheels.sh
# builds it); they are installed into a private folder first, without the network.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE="${GPU_CHECK_DEVICE:-cuda}"
OUT="${OUT:-/tmp/tartok-gpu-check-out}"
export OUT PYTHONUNBUFFERED=1

if [ -n "${PYTHON:-}" ]; then
    :
elif [ -x .venv/bin/python ]; then
    PYTHON=.venv/bin/python  # holds every dependency: no wheels to install
else
    PYTHON=python3
fi

if [ "$PYTHON" != .venv/bin/python ] && compgen -G ".whl/*.whl" >/dev/null; then
    SITE="${GPU_CHECK_SITE:-/tmp/tartok-gpu-check-site}"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl
    export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

ARGS=(--device "$DEVICE" --out "$OUT")
if [ "$DEVICE" = "cpu" ]; then
    ARGS+=(--quick --workdir "${GPU_CHECK_WORKDIR:-/tmp/tartok-gpu-check-quick}")
fi
exec "$PYTHON" scripts/gpu_check.py "${ARGS[@]}" "$@"
