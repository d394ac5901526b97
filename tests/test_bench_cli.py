"""dgn-engine bench end to end on small artifacts: its rows, the ratio against torch, the profile."""

import json
import os
import subprocess
import sys

import pytest

from dgn_engine.cli.main import main


def test_bench_rows_ratio_and_profile(artifacts, tmp_path, capsys):
    art, out = artifacts["pretrained"], tmp_path / "bench.json"
    argv = ["bench", "--artifacts", art.path, "--backends", "step-graph,torch", "--device", "cpu"]
    assert main([*argv, "--steps", "2", "--warmup", "0", "--profile", "--json", str(out)]) == 0
    rows = {r["backend"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"torch", "step-graph"} and all("error" not in r for r in rows.values())
    graph = rows["step-graph"]
    assert graph["vs_torch"] == rows["torch"]["seconds_per_step"] / graph["seconds_per_step"]
    shares = dict(graph["profile"])
    assert "Conv" in shares and 0 < sum(shares.values()) <= 1 + 1e-6
    roles = dict(graph["profile_roles"])
    assert set(roles) <= {"forward", "input gradient", "weight gradient", "update", "bookkeeping", "layout"}
    assert roles["forward"] > 0 and roles["input gradient"] > 0 and abs(sum(roles.values()) - 1) < 1e-3
    printed = capsys.readouterr().out
    assert "Conv " in printed and "forward " in printed  # the shares lines under the row
    assert "profile" not in rows["torch"]


@pytest.mark.slow
def test_bench_torch_compile_row(artifacts, tmp_path):
    """`--backends torch,torch-compile`: torch.compile's row runs the same step, timed, with its ratio."""
    out = tmp_path / "bench.json"
    argv = ["bench", "--artifacts", artifacts["pretrained"].path, "--backends", "torch,torch-compile"]
    assert main([*argv, "--device", "cpu", "--steps", "2", "--warmup", "1", "--json", str(out)]) == 0
    rows = {r["backend"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"torch", "torch-compile"} and all("error" not in r for r in rows.values()), rows
    compiled = rows["torch-compile"]
    assert compiled["seconds_per_step"] > 0
    assert compiled["vs_torch"] == rows["torch"]["seconds_per_step"] / compiled["seconds_per_step"]


@pytest.mark.slow
def test_faithfulness_bench(tmp_path):
    """bench/faithfulness.py end to end, briefly: what it prints per image range is what its records say."""
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "faithfulness.py")
    argv = [sys.executable, script, "--out", str(tmp_path), "--ranges", "bounded", "--steps", "10", "--seconds", "2"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(s for s in done.stdout.splitlines() if s.startswith("bounded"))
    folder = tmp_path / "bounded" / "targets"
    records = [json.loads((folder / f).read_text()) for f in sorted(os.listdir(folder)) if f.endswith(".json")]
    assert len(records) == 10 and all((folder / f"{r['id']}.png").is_file() for r in records)
    hits = sum(r["faithfulness"]["png"]["top1_is_target"] for r in records)
    assert f"D top-1 on PNG {hits}/10," in line


def test_weight_gradient_forms_table(tmp_path, monkeypatch):
    """bench/weight_gradients.py: each form of a weight gradient through onnxruntime (the shifted
    products at stride 1 only), checked against float64 (each is a few thousand float32 products: 1e-5
    relative) and timed beside torch's."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
    import weight_gradients

    monkeypatch.setattr(weight_gradients, "SHAPES", [((2, 16, 9, 9), 8, 3, 2, 2, 1), ((1, 16, 9, 9), 4, 3, 2, 1, 0)])
    out = tmp_path / "w.json"
    assert weight_gradients.main(["--repeats", "1", "--json", str(out)]) == 0
    strided, thin_head = json.loads(out.read_text())["rows"]
    for row in (strided, thin_head):
        assert row["conv_error"] < 1e-5 and row["products_error"] < 1e-5
        assert row["conv_ms"] > 0 and row["products_ms"] > 0 and row["torch_ms"] > 0
    assert "shifted_ms" not in strided and thin_head["shifted_error"] < 1e-5 and thin_head["shifted_ms"] > 0


def test_profile_roles_leave_only_onnxruntime_reorders_as_layout(tmp_path):
    """Each node onnxruntime ran is given its role in the exported graph, under the names its rewrites
    give (fusions, the blocked layout's nodes named after their outputs): what is left as `layout` is
    only the reorders and transposes onnxruntime inserts itself."""
    from dgn_engine import bench, demo
    from dgn_engine.artifacts import load_artifacts
    from dgn_engine.engine.backends import engine_backend
    from dgn_engine.engine.backends.onnx_session import session

    art = load_artifacts(demo.shipped_artifacts("untrained"))
    backend = engine_backend("step-graph", art, "cpu", 1, "float32")
    backend.session = session(art.graph("step"), backend.providers, 1, str(tmp_path / "step"), art.weights_bytes)
    bench.time_backend(backend, art.spec, art.batch, 1, 0)
    ran = list(bench._kernel_times(backend.session.end_profiling()))
    roles = bench._node_roles(art)
    if not any(name.endswith("_nchwc") for name, _, _ in ran):
        pytest.skip("onnxruntime ran no node in its blocked layout on this CPU")
    layout = {(name, op) for name, op, _ in ran if bench._role_of(name, roles) == bench.LAYOUT}
    assert layout and {op for _, op in layout} <= {"ReorderInput", "ReorderOutput", "Transpose"}, layout


def test_alternate_rounds(tmp_path):
    """bench/alternate.py on the demo's shipped artifacts against themselves: every round timed for both,
    and the ratios are those of the recorded times."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
    import alternate

    from dgn_engine import demo

    art, out = demo.shipped_artifacts("pretrained"), tmp_path / "a.json"
    assert alternate.main([art, art, "--rounds", "3", "--steps", "1", "--threads", "1", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    before, after = got["seconds_per_step"]
    assert len(before) == len(after) == 3 and min(before + after) > 0
    assert got["ratio"] == sorted(after)[1] / sorted(before)[1]
