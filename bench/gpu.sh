#!/usr/bin/env bash
# One-shot GPU run for a session lent a GPU machine: GPU tests (parity on CUDA), then the GPU bench,
# then a timed all-classes run; results as JSON and logs under $OUT.
#
# Stage first (../shared/tools/gpu-staging.md): onnxruntime-gpu into $HOME/ortgpu, and the pure-Python
# packages the machine lacks (onnx, onnxscript, onnx_ir, ml_dtypes, tqdm, pytest, pytest-benchmark)
# into the same folder. The machine has torch (CUDA), numpy and pillow. Then, from the repo root:
#   export PYTHONPATH=$HOME/ortgpu:$PWD; bash bench/gpu.sh
set -uo pipefail
OUT=${OUT:-bench-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:-}:$PWD PYTHONUNBUFFERED=1 DGN_ENGINE_CACHE=${DGN_ENGINE_CACHE:-/tmp/dgn-cache}
python3 -c 'import onnxruntime as o; o.preload_dlls(); print("onnxruntime", o.__version__, o.get_available_providers())' \
  2>&1 | tee "$OUT/env.log"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$OUT/env.log"

python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu-tests.log"

python3 -m dgn_engine.cli.main bench --device cuda --sizes demo,full --modes pretrained,untrained \
  --batch "${BENCH_BATCH:-1,8,32}" --backends step-graph,torch --steps 10 --warmup 3 --cache /tmp/dgn-bench \
  --json "$OUT/bench-gpu.json" 2>&1 | tee "$OUT/bench-gpu.log"

# 64 classes of the full VGG-16 + paper G, pretrained, 1200 steps, batch 32: the all-classes time
# on this GPU is this run's time x 1000/64.
art=/tmp/dgn-bench/full-pretrained-k32-step-graph
if [ -f "$art/manifest.json" ]; then
  seq 0 63 | sed 's/^/class:/' > /tmp/targets64.txt
  /usr/bin/time -v python3 -m dgn_engine.cli.main run --artifacts "$art" --targets-file /tmp/targets64.txt \
    --device cuda --out /tmp/run64 --quiet 2>&1 | tee "$OUT/run64.log"
  cp /tmp/run64/run.json "$OUT/run64.json" 2>/dev/null
fi
