#!/usr/bin/env bash
# On the (offline) GPU machine: install the carried wheels, build the package with its CUDA
# module, run the GPU tests (also under compute-sanitizer memcheck) and the GPU benchmark.
# Usage: benchmarks/run_gpu.sh OUT_DIR [bench_gpu.py arguments...]
set -uo pipefail
out=${1:?output folder}
shift
. benchmarks/gpu_setup.sh
cd "$out" && repo=$OLDPWD
gpu_tests="$repo/tests/codec/test_gpu.py $repo/tests/zarr/test_gpu.py $repo/tests/checkpoint/test_gpu_load.py"
timeout 300 python3 -m pytest -q -p no:cacheprovider -m gpu $gpu_tests 2>&1 | tee pytest-gpu.log | tail -5
timeout 300 compute-sanitizer --tool memcheck --error-exitcode 9 \
  python3 -m pytest -q -p no:cacheprovider -m gpu $gpu_tests -k "matches or corrupt or batch or whole_load or checkpoint" \
  >sanitizer.log 2>&1; echo "compute-sanitizer exit: $?" | tee -a sanitizer.log; tail -4 sanitizer.log
cd "$repo/benchmarks" && timeout 400 python3 bench_gpu.py "$@" 2>&1 | tee "$out/bench.log" | tail -30
cp "$repo"/benchmarks/results/gpu-*.md "$out/" 2>/dev/null
