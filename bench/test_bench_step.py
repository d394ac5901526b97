"""pytest-benchmark suites: one optimisation step of each backend on the same work.

    python -m pytest bench/ --benchmark-columns=median,min,rounds     (demo size)
    DGN_BENCH_SIZES=demo,full python -m pytest bench/                 (adds VGG-16 + the paper's G)

Compare rows of one run only: the ratio between backends is the result, not the seconds.
"""
import os
import tempfile

import numpy as np
import pytest

from dgn_engine.bench import _targets, artifacts_for

SIZES = os.environ.get("DGN_BENCH_SIZES", "demo").split(",")
BATCHES = [int(k) for k in os.environ.get("DGN_BENCH_BATCH", "1,5").split(",")]
CACHE = os.environ.get("DGN_BENCH_CACHE", os.path.join(tempfile.gettempdir(), "dgn-engine-bench"))


def make_backend(name, art):
    if name == "step-graph":
        from dgn_engine.engine.backends.step_graph import StepGraphBackend
        return StepGraphBackend(art, "cpu")
    from dgn_engine.export.coupled import Sources, build_coupled
    from dgn_engine.export.reference import TorchBackend
    return TorchBackend(build_coupled(Sources.from_json(art.manifest["sources"]), art.spec, []), "float32", "cpu")


@pytest.mark.parametrize("backend", ["step-graph", "torch"])
@pytest.mark.parametrize("k", BATCHES)
@pytest.mark.parametrize("mode", ["pretrained", "untrained"])
@pytest.mark.parametrize("size", SIZES)
def test_step(benchmark, size, mode, k, backend):
    os.makedirs(CACHE, exist_ok=True)
    art = artifacts_for(size, mode, k, CACHE)
    b = make_backend(backend, art)
    b.start(_targets(k, art.manifest["num_classes"]), art.spec)
    noise = np.random.default_rng(0).standard_normal((k, b.features))
    benchmark.group = f"{size} {mode} K={k}"
    benchmark.extra_info["step_flops"] = art.manifest["step_flops"]
    out = benchmark.pedantic(b.step, args=(noise, True, False), rounds=10, warmup_rounds=2)
    assert np.all(np.isfinite(out.loss))
