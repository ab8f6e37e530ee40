#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py) on one GPU without network, within a 300 s budget:
#
#   bash benchmarks/gpu_check.sh                # writes $OUT/gpu_check.json and $OUT/gpu_check.log (or ./)
#   bash benchmarks/gpu_check.sh --cpu-tiny     # the same path with a tiny model on CPU
#
# Python packages the machine lacks travel as wheels in .whl/ (installed to /tmp/site first).
# This project's H200 image has torch, transformers, accelerate, peft, pyyaml and pytest; the
# others are pinned in benchmarks/gpu_wheels.txt (Python 3.11, bitsandbytes 0.50.2 with its
# CUDA 13 library: about 46 MiB in all, under the 64 MiB that travels):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
#       --platform manylinux_2_24_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl -r benchmarks/gpu_wheels.txt
# and the device run names `.whl` in `carry`. Without bitsandbytes the QLoRA part is skipped,
# without flash-attn attention runs on sdpa; the JSON says so.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
out=${OUT:-.}
mkdir -p "$out"
# the script skips parts that would run past --budget-s (300 s); the timeout is the backstop,
# and the JSON is rewritten after every part, so a cut-short run keeps what it finished
timeout 330 "$python" benchmarks/gpu_check.py --out "$out/gpu_check.json" "$@" 2>&1 | tee "$out/gpu_check.log"
