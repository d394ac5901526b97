#!/usr/bin/env bash
# One-shot GPU run for a session lent a GPU machine, in stages that each have a time limit (a lease
# is short): environment, GPU tests (CUDA parity against float64, IOBinding), the demo's all-classes
# job on CUDA and CPU, the bench (step graph vs torch on the GPU), then a timed batch of 32 VGG-16
# classes to extrapolate to 1,000. Logs and JSON land in $OUT as each stage ends.
#
# Stage first (bench/gpu-stage.sh says how): onnxruntime-gpu into $HOME/ortgpu, and the pure-Python
# packages the machine lacks (pydantic and its needs) on PYTHONPATH. The machine has torch (CUDA),
# numpy, pillow, onnx, onnxscript, tqdm, pytest, pytest-benchmark. Then, from the repo root:
#   export PYTHONPATH=$HOME/ortgpu:/tmp/site; bash bench/gpu.sh
# Knobs: GPU_STAGES (default "env tests bench profile wgrad run32 demo", run in that order, most wanted first),
# GPU_DEADLINE (seconds for the whole script: each stage's limit is cut to what is left), BENCH_SIZES,
# BENCH_BATCH, BENCH_PRECISION, RUN_STEPS.
set -uo pipefail
OUT=${OUT:-bench-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:-}:$PWD PYTHONUNBUFFERED=1 DGN_ENGINE_CACHE=${DGN_ENGINE_CACHE:-/tmp/dgn-cache}
stage() { [[ " ${GPU_STAGES:-env tests bench profile wgrad run32 demo} " == *" $1 "* ]]; }
clock() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$(clock) - $1:.1f}')"; }
START=$(date +%s)
limit() { local left=$(( ${GPU_DEADLINE:-3600} - ($(date +%s) - START) )); echo $(( left < $1 ? (left > 1 ? left : 1) : $1 )); }

if stage env; then
  python3 -c 'import onnxruntime as o; o.preload_dlls(); print("onnxruntime", o.__version__, o.get_available_providers())' \
    2>&1 | tee "$OUT/env.log"
  python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))' 2>&1 | tee -a "$OUT/env.log"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$OUT/env.log"
fi

if stage tests; then
  timeout $(limit 150) python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py -rs 2>&1 | tee "$OUT/gpu-tests.log"
fi

if stage bench; then
  timeout $(limit 300) python3 -m dgn_engine.cli.main bench --device cuda --sizes "${BENCH_SIZES:-demo,full}" \
    --modes pretrained,untrained --batch "${BENCH_BATCH:-1,32}" --backends step-graph,torch --precision "${BENCH_PRECISION:-float32,tf32}" --steps 10 --warmup 3 \
    --cache /tmp/dgn-bench --json "$OUT/bench-gpu.json" 2>&1 | tee "$OUT/bench-gpu.log"
fi

# Where the untrained step graph's time goes at K=32 (onnxruntime's profiler; the shares, not the seconds)
rev=$(python3 -c "from dgn_engine._version import GRAPHS_REVISION as r; print(r)")  # bench names its exports by it
art_u=/tmp/dgn-bench/full-untrained-k32-step-graph-r$rev
if stage profile && [ -f "$art_u/manifest.json" ]; then
  timeout $(limit 120) python3 -m dgn_engine.cli.main bench --artifacts "$art_u" --backends step-graph --device cuda \
    --precision tf32 --steps 3 --warmup 2 --profile 2>&1 | tee "$OUT/profile-untrained.log"
fi

# Which weight-gradient form the exporter should take on this GPU (conv or products, beside cuDNN's own)
if stage wgrad; then
  timeout $(limit 180) python3 bench/weight_gradients.py --device cuda --json "$OUT/weight-gradients.json" 2>&1 \
    | tee "$OUT/weight-gradients.log"
fi

# 32 classes of the full VGG-16 + paper G, pretrained, batch 32, RUN_STEPS steps: the 1,000-class time at
# the paper's 1,200 steps is this run's time x (1200 / RUN_STEPS) x (1000 / 32), start-up aside.
art=/tmp/dgn-bench/full-pretrained-k32-step-graph-r$rev
if stage run32 && [ -f "$art/manifest.json" ]; then
  seq 0 31 | sed 's/^/class:/' > /tmp/targets32.txt
  t=$(clock)
  timeout $(limit 120) python3 -m dgn_engine.cli.main run --artifacts "$art" --targets-file /tmp/targets32.txt \
    --steps "${RUN_STEPS:-200}" --device cuda --out /tmp/run32 --quiet 2>&1 | tee "$OUT/run32.log"
  echo "run32: $(elapsed "$t") s wall" | tee -a "$OUT/run32.log"
  cp /tmp/run32/run.json "$OUT/run32.json" 2>/dev/null
fi

if stage demo; then  # the README's first command, on each device; wall time includes the export and start-up
  for device in cuda cpu; do
    for mode in pretrained untrained; do
      t=$(clock)
      timeout $(limit 120) python3 -m dgn_engine.cli.main run --all-classes --mode "$mode" --device "$device" \
        --out "/tmp/demo-$mode-$device" --quiet 2>&1 | tail -3
      echo "demo $mode all-classes on $device: $(elapsed "$t") s"
    done
  done 2>&1 | tee "$OUT/demo.log"
  tar -czf "$OUT/demo-cuda-png.tgz" -C /tmp demo-pretrained-cuda/targets demo-untrained-cuda/targets 2>/dev/null
  python3 - <<'EOF' 2>&1 | tee -a "$OUT/demo.log"
import json, pathlib
for mode in ("pretrained", "untrained"):
    runs = {}
    for device in ("cuda", "cpu"):
        for f in pathlib.Path(f"/tmp/demo-{mode}-{device}/targets").glob("*.json"):
            r = json.loads(f.read_text())
            runs.setdefault(device, {})[r["target"]] = (r["final_activation"], r["top1_is_target"])
    if len(runs) < 2:
        print(mode, "missing a device's results:", sorted(runs))
        continue
    both = sorted(set(runs["cuda"]) & set(runs["cpu"]))
    diff = max(abs(runs["cuda"][t][0] - runs["cpu"][t][0]) / max(1e-6, abs(runs["cpu"][t][0])) for t in both)
    print(f"{mode}: {len(both)} targets, top-1 cuda {sum(runs['cuda'][t][1] for t in both)} "
          f"cpu {sum(runs['cpu'][t][1] for t in both)}, max relative final-activation difference {diff:.2e}")
EOF
fi
