#!/usr/bin/env bash
# On the (offline) GPU machine: install the carried wheels (../shared/tools/gpu-wheels.sh, with
# nvCOMP), build the package with its CUDA module, run the GPU tests (also under compute-sanitizer
# memcheck) and the torch tests, then the GPU benchmark.
# The machine has no MiniLM: export its fp32 weights here first, within the upload limit,
#   python benchmarks/bench_gpu.py --export .gpudata/fp32 --skip 'word_embeddings|layer\.[2-5]\.'
# (.gpudata ignored by git and carried), then pass --from "$PWD/.gpudata/fp32".
# Usage: benchmarks/run_gpu.sh OUT_DIR [bench_gpu.py arguments...]
set -uo pipefail
out=${1:?output folder}
shift
. benchmarks/gpu_setup.sh
cd "$out" && repo=$OLDPWD
gpu_tests="$repo/tests/codec/test_gpu.py $repo/tests/zarr/test_gpu.py $repo/tests/checkpoint/test_gpu_load.py"
timeout 300 python3 -m pytest -q -p no:cacheprovider -m gpu $gpu_tests 2>&1 | tee pytest-gpu.log | tail -5
timeout 120 python3 -m pytest -q -p no:cacheprovider "$repo/tests/checkpoint/test_streaming.py" \
  "$repo/tests/checkpoint/test_safe_open_api.py" "$repo/tests/checkpoint/test_checkpoint.py" 2>&1 \
  | tee pytest-torch.log | tail -3
timeout 300 compute-sanitizer --tool memcheck --error-exitcode 9 \
  python3 -m pytest -q -p no:cacheprovider -m gpu $gpu_tests \
  -k "matches or corrupt or batch or whole_load or checkpoint or device_resident or padding" \
  >sanitizer.log 2>&1; echo "compute-sanitizer exit: $?" | tee -a sanitizer.log; tail -4 sanitizer.log
cd "$repo/benchmarks" && timeout 400 python3 bench_gpu.py "$@" 2>&1 | tee "$out/bench.log" | tail -30
cp "$repo"/benchmarks/results/gpu-*.md "$out/" 2>/dev/null
