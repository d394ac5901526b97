"""pytest-benchmark suites: one optimisation step of each backend on the same work.

    python -m pytest bench/ --benchmark-columns=median,min,rounds     (demo size)
    DGN_BENCH_SIZES=demo,full python -m pytest bench/                 (adds VGG-16 + the paper's G)

The training-api rows run in the training-API environment (see the README).

Compare rows of one run only: the ratio between backends is the result, not the seconds.
"""

import os
import tempfile

import numpy as np
import pytest

from dgn_engine.bench import ENGINE_BACKENDS, _targets, artifacts_for

SIZES = os.environ.get("DGN_BENCH_SIZES", "demo").split(",")
BATCHES = [int(k) for k in os.environ.get("DGN_BENCH_BATCH", "1,5").split(",")]
CACHE = os.environ.get("DGN_BENCH_CACHE", os.path.join(tempfile.gettempdir(), "dgn-engine-bench"))


def has_training_api() -> bool:
    """Only the one error that says the training API is missing means its rows are left out."""
    from dgn_engine.engine.backends.training_api import training_bindings
    from dgn_engine.errors import UsageError

    try:
        training_bindings()
        return True
    except UsageError as e:
        if "has no training API" not in str(e) and "needs onnxruntime" not in str(e):
            raise
        return False


def make_backend(name, art):
    if name in ENGINE_BACKENDS:
        from dgn_engine.engine.backends import engine_backend

        return engine_backend(name, art, "cpu")
    from dgn_engine.engine.backends.torch_reference import TorchBackend
    from dgn_engine.exporter.coupled import Sources, build_coupled

    return TorchBackend(build_coupled(Sources.from_json(art.manifest["sources"]), art.spec, []), "float32", "cpu")


@pytest.mark.parametrize(
    "backend",
    [
        "step-graph",
        "torch",
        pytest.param(
            "training-api",
            marks=pytest.mark.skipif(
                not has_training_api(), reason="onnxruntime-training is not installed here (its own environment)"
            ),
        ),
    ],
)
@pytest.mark.parametrize("k", BATCHES)
@pytest.mark.parametrize("mode", ["pretrained", "untrained"])
@pytest.mark.parametrize("size", SIZES)
def test_step(benchmark, size, mode, k, backend):
    os.makedirs(CACHE, exist_ok=True)
    art = artifacts_for(size, mode, k, CACHE, (backend,))
    b = make_backend(backend, art)
    b.start(_targets(k, art.manifest["num_classes"]), art.spec)
    noise = np.random.default_rng(0).standard_normal((k, b.features))
    benchmark.group = f"{size} {mode} K={k}"
    benchmark.extra_info["step_flops"] = art.manifest["step_flops"]
    out = benchmark.pedantic(b.step, args=(noise, True, False), rounds=10, warmup_rounds=2)
    assert np.all(np.isfinite(out.loss))
