#!/usr/bin/env bash
# On the (offline) GPU machine: install the carried wheels (../shared/tools/gpu-wheels.sh
# --no-nvcomp fastsafetensors==0.5.0 runai-model-streamer==0.17.1 typer click shellingham
# humanize), build with the CUDA module, run the GPU and streaming tests, then bench_load.py.
# Usage: benchmarks/run_load_gpu.sh OUT_DIR [bench_load.py arguments...]
set -uo pipefail
out=${1:?output folder}
shift
. benchmarks/gpu_setup.sh
repo=$PWD
gpu_tests="$repo/tests/codec/test_gpu.py $repo/tests/zarr/test_gpu.py $repo/tests/checkpoint/test_gpu_load.py"
(cd "$out" && timeout 240 python3 -m pytest -q -p no:cacheprovider -m gpu $gpu_tests 2>&1 | tee pytest-gpu.log | tail -4)
(cd "$out" && timeout 120 python3 -m pytest -q -p no:cacheprovider "$repo/tests/checkpoint/test_streaming.py" \
  2>&1 | tee pytest-streaming.log | tail -4)
cd "$repo/benchmarks" && python3 bench_load.py --no-s3 "$@" 2>&1 | tee "$out/bench.log" | tail -40
cp "$repo"/benchmarks/results/load-*.md "$out/" 2>/dev/null
