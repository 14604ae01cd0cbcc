# Sourced by the run_*gpu.sh scripts on the (offline) GPU machine, in the repository root with
# $out set: installs the carried wheels (.whl, from ../shared/tools/gpu-wheels.sh) into .site,
# records the GPU and the CPU, and builds the package with its CUDA module.
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .site .whl/*.whl
export PYTHONPATH=$PWD/.site
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
grep -m1 "model name" /proc/cpuinfo | tee -a "$out/gpu.txt"
WCODEC_CUDA=ON timeout 400 python3 -m pip install -q --no-build-isolation --no-deps . >"$out/build.log" 2>&1 \
  || { tail -40 "$out/build.log"; exit 1; }
