#!/usr/bin/env bash
# Every GPU figure in BENCHMARKS.md, in one go: under 8 minutes on one H100/H200, no network.
#
# Here (with the package registry), once:
#     benchmarks/gpu.sh --fetch-wheels     # wheels the GPU image lacks -> benchmarks/results/wheels (17 MB)
# On the GPU machine, in a copy of the working tree with those wheels beside it:
#     benchmarks/gpu.sh                    # prints one summary; JSON reports in $OUT/ (or benchmarks/results/gpu/)
#     benchmarks/gpu.sh --families         # then the other detector families (a second command)
# Here, before a device is lent (the device's minutes are few): the same command lines on the CPU with
# tiny checkpoints and two VGA images, so a broken line fails here rather than there (tested):
#     benchmarks/gpu.sh --check             # also: --check --families
#
# The GPU image's python3 has torch/torchvision/numpy/pillow/scipy/opencv; the wheels add the pinned
# transformers (the version the CPU figures used) and what autolabel imports besides (pycocotools,
# pydantic-settings). Random-weight full-size checkpoints are built on the machine (about a minute).
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=benchmarks/results/wheels

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    mkdir -p "$WHEELS"
    exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHEELS" \
        transformers==5.24.0 pycocotools==2.0.11 pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 \
        python-dotenv==1.2.4 typing-inspection==0.4.5 annotated-types==0.8.0 typing-extensions==4.16.0 \
        regex==2026.11.19
fi

CHECK=0
if [[ "${1:-}" == "--check" ]]; then CHECK=1; shift; fi
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if (( CHECK )); then
    export PYTHONPATH=$PWD/src
elif compgen -G "$WHEELS/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/al-site "$WHEELS"/*.whl \
        || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/al-site:$PWD/src
else
    export PYTHONPATH=$PWD/src
fi
DEST=${OUT:-benchmarks/results}/gpu
(( CHECK )) && DEST=${OUT:-benchmarks/results}/gpu-check
mkdir -p "$DEST"
DEVICE=cuda
(( CHECK )) && DEVICE=cpu
started=$(date +%s)
failed=()
# step SECONDS NAME COMMAND...: one part of the run; a failure is named in the summary (and fails --check).
step() {
    local seconds=$1 name=$2; shift 2
    (( CHECK )) && seconds=600
    timeout "$seconds" "$@" || failed+=("$name (exit $?)")
}
finish() {  # the last line, and the exit status
    if (( ${#failed[@]} )); then echo "FAILED: ${failed[*]}"; exit 1; fi
    echo "every step ran"; exit 0
}

# bench SECONDS NAME ARGS...: one throughput run. Under --check the same arguments, then later ones
# that shrink it to tiny checkpoints on the CPU (argparse keeps the last value of an option).
bench() {
    local seconds=$1 name=$2; shift 2
    if (( CHECK )); then
        step "$seconds" "$name" $PY benchmarks/throughput.py --device cpu --precision bf16 --recipe-precision bf16 \
            "$@" --smoke --generate vga:2 --recipe-images 1 --batch-size 2 --workers 1 --precision fp32 \
            --recipe-precision fp32 --cache "$DEST/cache" --image-cache "$DEST/images"
    else
        step "$seconds" "$name" $PY benchmarks/throughput.py --device cuda --precision bf16 \
            --recipe-precision bf16 --workers 12 "$@"
    fi
}

# The other detector families (`gpu.sh --families`, a second command: the device caps one command at
# 10 minutes): ours vs each family's recipe on 2 MP JPEGs, bf16, full-size random weights.
if [[ "${1:-}" == "--families" ]]; then
    for family in owlvit grounding-dino mm-grounding-dino omdet-turbo sam3; do
        bench 110 "$family" --family "$family" --generate 2mp:128 --batch-size 8 --recipe-images 8 \
            --modes detect --json "$DEST/detect-$family-2mp.json"
    done
    echo; echo "==================== families ($(( $(date +%s) - started )) s) ===================="
    $PY benchmarks/throughput.py --summarize "$DEST"/detect-*-2mp.json
    finish
fi

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
$PY -c "import torch, torchvision, transformers; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__)"

# 0. The engine on CUDA (device-side preprocessing) gives the CPU's detections and masks.
step 90 parity $PY benchmarks/cuda_parity.py --device $DEVICE
# 1. Detection, OWLv2 B/16 at 960 px, 2 MP JPEGs: ours and model-only on 1024 images, the recipe on 48.
bench 140 detect-2mp --owlv2 random:base-patch16 --generate 2mp:1024 --batch-size 32 --recipe-images 48 \
    --modes detect --json "$DEST/detect-b16-2mp.json"
# 2. Segmentation, B/16 + SAM2 hiera-large, 10 boxes per image: ours/model on 384 images, the recipe on 16.
bench 160 segment-2mp --owlv2 random:base-patch16 --sam2 random:hiera-large --generate 2mp:384 --batch-size 16 \
    --recipe-images 16 --boxes 10 --modes segment --json "$DEST/segment-b16-sam2l-2mp.json"
# 3. 12 MP JPEGs (the decode-bound case), then a compiled vision tower (static shapes; compiling
#    takes about a minute, so it runs last).
bench 90 detect-12mp --owlv2 random:base-patch16 --generate 12mp:256 --unique 32 --batch-size 32 --recipe-images 8 \
    --modes detect --json "$DEST/detect-b16-12mp.json"
bench 100 compiled --owlv2 random:base-patch16 --generate 2mp:1024 --batch-size 32 --sides ours,model --compile \
    --modes detect --json "$DEST/detect-b16-2mp-compiled.json"

echo; echo "==================== summary ($(( $(date +%s) - started )) s) ===================="
$PY benchmarks/throughput.py --summarize "$DEST"/detect-b16-2mp.json "$DEST"/segment-b16-sam2l-2mp.json \
    "$DEST"/detect-b16-12mp.json "$DEST"/detect-b16-2mp-compiled.json
finish
