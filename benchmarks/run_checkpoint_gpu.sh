#!/usr/bin/env bash
# On the (offline) GPU machine: install the carried wheels, build with the CUDA module, run the
# GPU and checkpoint tests, then bench_checkpoint.py --gpu on a carried safetensors model (and
# its int8 per-row quantization, made there).
# Usage: benchmarks/run_checkpoint_gpu.sh OUT_DIR MODEL.safetensors
set -uo pipefail
out=${1:?output folder}
model=$(realpath "${2:?safetensors model}")
. benchmarks/gpu_setup.sh
repo=$PWD
gpu_tests="$repo/tests/codec/test_gpu.py $repo/tests/zarr/test_gpu.py $repo/tests/checkpoint/test_gpu_load.py"
cd "$out" || exit 1
timeout 200 python3 -m pytest -q -p no:cacheprovider -m gpu $gpu_tests 2>&1 | tee pytest-gpu.log | tail -4
timeout 200 python3 -m pytest -q -p no:cacheprovider "$repo/tests/checkpoint/test_checkpoint.py" 2>&1 | tee pytest-checkpoint.log | tail -4
int8=$out/$(basename "$model" .safetensors)-int8.safetensors
python3 -c "
import sys, numpy as np
from safetensors.numpy import load_file, save_file
from wcodec_zarr.testing.weights import quantize_int8_per_row
t = load_file(sys.argv[1])
save_file({k: quantize_int8_per_row(v.astype(np.float32)) for k, v in t.items() if v.ndim == 2}, sys.argv[2])
" "$model" "$int8"
cd "$repo/benchmarks" && timeout 250 python3 bench_checkpoint.py --gpu --no-dask --repeats 10 \
  --model "$model" --model "$int8" 2>&1 | tee "$out/bench.log" | tail -20
rm -f "$int8"
cp "$repo"/benchmarks/results/checkpoint-*.md "$out/" 2>/dev/null
