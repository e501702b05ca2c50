#!/usr/bin/env bash
# Every GPU figure in BENCHMARKS.md, in one go: under 8 minutes on one H100/H200, no network.
#
# Here (with the package registry), once:
#     benchmarks/gpu.sh --fetch-wheels     # wheels the GPU image lacks -> benchmarks/results/wheels (17 MB)
# On the GPU machine, in a copy of the working tree with those wheels beside it:
#     benchmarks/gpu.sh                    # prints one summary; JSON reports in $OUT/ (or benchmarks/results/gpu/)
#     benchmarks/gpu.sh --families         # then the other detector families (a second command)
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

PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/al-site "$WHEELS"/*.whl \
        || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/al-site:$PWD/src
else
    export PYTHONPATH=$PWD/src
fi
DEST=${OUT:-benchmarks/results}/gpu
mkdir -p "$DEST"
BENCH="$PY benchmarks/throughput.py --device cuda --precision bf16 --recipe-precision bf16 --workers 12"
started=$(date +%s)

# The other detector families (`gpu.sh --families`, a second command: the device caps one command at
# 10 minutes): ours vs each family's recipe on 2 MP JPEGs, bf16, full-size random weights.
if [[ "${1:-}" == "--families" ]]; then
    for family in owlvit grounding-dino mm-grounding-dino omdet-turbo sam3; do
        timeout 110 $BENCH --family "$family" --generate 2mp:128 --batch-size 8 --recipe-images 8 \
            --modes detect --json "$DEST/detect-$family-2mp.json"
    done
    echo; echo "==================== families ($(( $(date +%s) - started )) s) ===================="
    exec $PY benchmarks/throughput.py --summarize "$DEST"/detect-*-2mp.json
fi

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
$PY -c "import torch, torchvision, transformers; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__)"

# 0. The engine on CUDA (device-side preprocessing) gives the CPU's detections and masks.
timeout 90 $PY benchmarks/cuda_parity.py
# 1. Detection, OWLv2 B/16 at 960 px, 2 MP JPEGs: ours and model-only on 1024 images, the recipe on 48.
timeout 140 $BENCH --owlv2 random:base-patch16 --generate 2mp:1024 --batch-size 32 --recipe-images 48 \
    --modes detect --json "$DEST/detect-b16-2mp.json"
# 2. Segmentation, B/16 + SAM2 hiera-large, 10 boxes per image: ours/model on 384 images, the recipe on 16.
timeout 160 $BENCH --owlv2 random:base-patch16 --sam2 random:hiera-large --generate 2mp:384 --batch-size 16 \
    --recipe-images 16 --boxes 10 --modes segment --json "$DEST/segment-b16-sam2l-2mp.json"
# 3. 12 MP JPEGs (the decode-bound case), then a compiled vision tower (static shapes; compiling
#    takes about a minute, so it runs last).
timeout 90 $BENCH --owlv2 random:base-patch16 --generate 12mp:256 --unique 32 --batch-size 32 --recipe-images 8 \
    --modes detect --json "$DEST/detect-b16-12mp.json"
timeout 100 $BENCH --owlv2 random:base-patch16 --generate 2mp:1024 --batch-size 32 --sides ours,model --compile \
    --modes detect --json "$DEST/detect-b16-2mp-compiled.json"

echo; echo "==================== summary ($(( $(date +%s) - started )) s) ===================="
$PY benchmarks/throughput.py --summarize "$DEST"/detect-b16-2mp.json "$DEST"/segment-b16-sam2l-2mp.json \
    "$DEST"/detect-b16-12mp.json "$DEST"/detect-b16-2mp-compiled.json
