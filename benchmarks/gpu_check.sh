#!/usr/bin/env bash
# The GPU rows of benchmarks/RESULTS.md in one run (`## gpu`): MoCo v3 / LECL pretraining images/s at 224 px with
# bf16 autocast (mambaout_tiny, target ≥ 750/s on an H100/H200-class GPU; vmamba_tiny beside it), extraction end to
# end against the one-slice loop (target ≥ 5×), and the ABMIL 5-fold wall time of benchmarks/mil.py.
#
#   bash benchmarks/gpu_wheels.sh          # here, once: the wheels the GPU image lacks, into .whl/
#   bash benchmarks/gpu_check.sh           # on the GPU machine (device tool: carry .whl), from the repository root
#   bash benchmarks/gpu_check.sh --quick   # the same plumbing at toy sizes, on any machine (seconds on a CPU)
#
# Output: one log per benchmark in $OUT (default gpu-check/), and the machine's facts in $OUT/machine.txt.
set -euo pipefail
quick=${1:-}
out=${OUT:-gpu-check}
mkdir -p "$out"
if [ -d .whl ] && ! python3 -c "import pydicom, nibabel, pydantic, monai" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
device=$($py -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  $py -c "import torch; print('torch', torch.__version__, 'device', '$device')"; nproc; uptime; } | tee "$out/machine.txt"
if [ "$quick" = "--quick" ]; then
  step="--batch 2 --size 64 --repeats 1 --archs mambaout_test,vmamba_test"
  extract="--encoders mambaout_test --slices 8 --scans 1 --size 128 --batch-size 4 --repeats 1"
  mil="--bags 40 --instances 64 --dim 32 --epochs 2 --bag-size 32"
else
  step="--batch 128 --size 224 --repeats 5 --archs mambaout_tiny,vmamba_tiny"
  extract="--encoders mambaout_tiny,vit_conv_base --slices 200 --scans 4 --size 512 --batch-size 64 --repeats 2"
  mil=""
fi
# shellcheck disable=SC2086  # the option strings are meant to split
$py benchmarks/pretrain_step.py --device "$device" --no-loader $step 2>&1 | tee "$out/pretrain_step.txt"
$py benchmarks/extract.py --device "$device" $extract 2>&1 | tee "$out/extract.txt"
$py benchmarks/mil.py --device "$device" $mil 2>&1 | tee "$out/mil.txt"
