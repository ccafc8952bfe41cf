#!/usr/bin/env bash
# Build (once) and install MinkowskiEngine 0.5.4 into a virtualenv.
#
# Usage: scripts/install_minkowski.sh [PYTHON]
#   PYTHON           venv interpreter (default: <repo>/.venv/bin/python)
#   CNX2LITE_CACHE   cache root (default: ~/.cache/cnx2lite); wheels are kept in
#                    $CNX2LITE_CACHE/wheels/torch-<torch version>-<cpXY>-<cpu|cuda>/
#   ME_CUDA=1        build with CUDA kernels (needs nvcc / CUDA_HOME matching torch)
#                    instead of the default CPU-only build
#   MAX_JOBS         parallel compile jobs (default: nproc)
#
# `pip install minkowskiengine` does not work out of the box: its setup.py BLAS
# probe breaks on current numpy, so the wheel is built without build isolation
# against the venv's torch, with the BLAS library named explicitly. The build
# takes ~10 min on 2 cores; later runs reuse the cached wheel and take seconds.
set -euo pipefail

ME_VERSION=0.5.4
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${1:-$REPO_ROOT/.venv/bin/python}"
CACHE_ROOT="${CNX2LITE_CACHE:-$HOME/.cache/cnx2lite}"
ME_CUDA="${ME_CUDA:-0}"

log() { echo "[install_minkowski] $*"; }

[[ -x "$PYTHON" ]] || { log "python interpreter not found: $PYTHON"; exit 1; }
# The venv's bin dir must be on PATH so torch's extension builder finds `ninja`.
export PATH="$(dirname "$PYTHON"):$PATH"

# MinkowskiEngine 0.5.4 does `from collections import Sequence`, removed in
# Python 3.10; alias it before importing (cnx2lite.sparse.minkowski does the same).
# With ME_CUDA=1 a CPU-only install does not count.
me_importable() {
    ME_CUDA="$ME_CUDA" "$PYTHON" - <<'EOF' >/dev/null 2>&1
import collections, collections.abc, os, sys
if not hasattr(collections, "Sequence"):
    collections.Sequence = collections.abc.Sequence
import MinkowskiEngine
sys.exit(os.environ["ME_CUDA"] == "1" and not MinkowskiEngine.is_cuda_available())
EOF
}

if me_importable; then
    log "MinkowskiEngine already importable with $PYTHON; nothing to do"
    exit 0
fi

# System packages: OpenBLAS headers for the build (pulls the libopenblas0 runtime).
if ! dpkg -s libopenblas-dev >/dev/null 2>&1; then
    SUDO=""
    [[ "$(id -u)" -eq 0 ]] || SUDO="sudo"
    log "installing libopenblas-dev via apt-get"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y libopenblas-dev
else
    log "libopenblas-dev already installed"
fi

if "$PYTHON" -c "import ninja, setuptools, wheel" >/dev/null 2>&1; then
    log "ninja/setuptools/wheel already in the venv"
else
    log "installing ninja/setuptools/wheel into the venv"
    "$PYTHON" -m pip install ninja setuptools wheel
fi

# The extension links against torch's C++ ABI: key the cache on torch version,
# Python tag and device flavour.
TORCH_VERSION="$("$PYTHON" -c "import torch; print(torch.__version__)")"
PY_TAG="$("$PYTHON" -c "import sys; print(f'cp{sys.version_info.major}{sys.version_info.minor}')")"
if [[ "$ME_CUDA" == "1" ]]; then
    FLAVOUR=cuda
    BUILD_OPTS="--blas=openblas"
else
    FLAVOUR=cpu
    BUILD_OPTS="--cpu_only --blas=openblas"
fi
WHEEL_DIR="$CACHE_ROOT/wheels/torch-$TORCH_VERSION-$PY_TAG-$FLAVOUR"

shopt -s nullglob
wheels=("$WHEEL_DIR"/[Mm]inkowski[Ee]ngine-"$ME_VERSION"-*.whl)
if (( ${#wheels[@]} == 0 )); then
    log "no cached wheel in $WHEEL_DIR; building MinkowskiEngine $ME_VERSION ($FLAVOUR), this takes ~10 min"
    mkdir -p "$CACHE_ROOT/wheels"
    # Build into a scratch dir and move the wheel in only on success, so an
    # interrupted build never leaves a half-written cache entry.
    tmp_dir="$(mktemp -d "$CACHE_ROOT/wheels/.build.XXXXXX")"
    trap 'rm -rf "$tmp_dir"' EXIT
    start=$SECONDS
    MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$PYTHON" -m pip wheel -v --no-deps --no-build-isolation \
        --config-settings="--global-option=$BUILD_OPTS" \
        -w "$tmp_dir" "minkowskiengine==$ME_VERSION"
    mkdir -p "$WHEEL_DIR"
    mv "$tmp_dir"/*.whl "$WHEEL_DIR"/
    wheels=("$WHEEL_DIR"/[Mm]inkowski[Ee]ngine-"$ME_VERSION"-*.whl)
    log "built ${wheels[0]} in $((SECONDS - start)) s"
else
    log "using cached wheel ${wheels[0]}"
fi

"$PYTHON" -m pip install --no-deps --force-reinstall "${wheels[0]}"
if me_importable; then
    log "installed MinkowskiEngine $ME_VERSION ($FLAVOUR) into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
else
    log "MinkowskiEngine installed but failed to import; check that libopenblas0 is present"
    exit 1
fi
