"""dgn-engine bench end to end on small artifacts: its rows, the ratio against torch, the profile."""

import json

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
    assert "Conv " in capsys.readouterr().out  # the shares line under the row
    assert "profile" not in rows["torch"]
