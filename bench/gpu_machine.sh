#!/bin/bash
# The 3D back ends (CPU and OpenGL) measured on a GPU machine that reaches no package index, such as
# a lent NVIDIA machine with its own Python 3.12, NumPy and numba but no vispy, no DICOM files and
# no EGL loader (docs/benchmarks-3d.md, "On a GPU").
#
#   bash bench/gpu_machine.sh prepare       # here: fills .gpu/ (about 28 MB, ignored by git)
#   bash bench/gpu_machine.sh run [REPEAT]  # there, in a copy of the working tree with .gpu/
#
# `run` writes bench3d_gpu.json and bench3d_gpu.log into $OUT (default: bench/results).
set -euo pipefail
cd "$(dirname "$0")/.."
GPU=.gpu

prepare() {
    local python=${PYTHON:-.venv/bin/python}
    mkdir -p "$GPU/whl" "$GPU/gl" "$GPU/fontdeb"
    local exclude
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    grep -qx "/$GPU/" "$exclude" 2>/dev/null || echo "/$GPU/" >>"$exclude"
    # the real CT's 100 slices (bench_3d derives the 555-slice volume from them on the other machine)
    "$python" bench/bench_3d.py --save-stack "$GPU/stack.xz"
    # the 3D back end's packages at the project's locked versions, built for the GPU machine's Python
    local wanted=()
    for name in vispy hsluv pyopengl; do
        wanted+=("$(grep -i -o "^$name==[^ ]*" requirements/runtime.txt)")
    done
    "$python" -m pip download --no-deps --only-binary=:all: --python-version "${GPU_PYTHON:-3.12}" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$GPU/whl" "${wanted[@]}"
    # glvnd's EGL and GL loaders (the driver brings its vendor library), and fontconfig, which
    # vispy's app module loads at import
    local apt=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/sivr-apt-amd64)
    mkdir -p /tmp/sivr-apt-amd64/partial
    apt-get "${apt[@]}" update >/dev/null
    (cd "$GPU/gl" && apt-get "${apt[@]}" download libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
    (cd "$GPU/fontdeb" && apt-get "${apt[@]}" download libfontconfig1 libfreetype6 libpng16-16 libbrotli1)
    du -sh "$GPU"
}

run() {
    local repeat=${1:-9} out=${OUT:-bench/results}
    mkdir -p "$out"
    for deb in "$GPU"/gl/*.deb; do dpkg -x "$deb" /; done
    ldconfig
    # fontconfig and what it needs go in a folder of their own, and only those the machine lacks:
    # nothing of the machine's own libraries is replaced
    mkdir -p /tmp/sivr-fontlibs /tmp/sivr-fontonly
    for deb in "$GPU"/fontdeb/*.deb; do dpkg -x "$deb" /tmp/sivr-fontlibs; done
    local known
    known=$(ldconfig -p)  # read once: `ldconfig -p | grep -q` under pipefail can fail on SIGPIPE
    for lib in /tmp/sivr-fontlibs/usr/lib/x86_64-linux-gnu/*.so.*; do
        grep -q "$(basename "$lib" | cut -d. -f1)\.so" <<<"$known" || cp -a "$lib" /tmp/sivr-fontonly/
    done
    echo /tmp/sivr-fontonly >/etc/ld.so.conf.d/zz-sivr-bench.conf
    ldconfig
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/sivr-site "$GPU"/whl/*.whl
    export PYTHONPATH=/tmp/sivr-site:$PWD PYTHONUNBUFFERED=1
    local vendor=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
    if [ -f "$vendor" ]; then export __EGL_VENDOR_LIBRARY_FILENAMES=$vendor; fi
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
    python3 -c "import numpy, numba; print('numpy', numpy.__version__, 'numba', numba.__version__)"
    # the node sets EGL_PLATFORM=surfaceless unless told otherwise; some drivers want `device`
    local platform
    for platform in surfaceless device; do
        if EGL_PLATFORM=$platform python3 -c "from daemons.render.volume.backend import probe_gl
p = probe_gl(); print(p.renderer or p.reason); raise SystemExit(not p.ok)"; then
            export EGL_PLATFORM=$platform
            break
        fi
    done
    echo "EGL_PLATFORM=${EGL_PLATFORM:-none}"
    python3 bench/bench_3d.py --stack "$GPU/stack.xz" --views-only --repeat "$repeat" \
        --json "$out/bench3d_gpu.json" 2>&1 | tee "$out/bench3d_gpu.log"
}

case ${1:-} in
    prepare) prepare ;;
    run) shift; run "$@" ;;
    *) echo "usage: bash bench/gpu_machine.sh prepare | run [REPEAT]" >&2; exit 2 ;;
esac
