"""Ray's cost and gain on one machine: the demo's all-classes job (or --artifacts) run plain, and on a
local Ray with 1 and 2 CPU workers of one thread each, every configuration in fresh folders, the median
of --repeat runs. Reported: targets per second of the job loop (run.json's seconds: from the first batch
to the last file, without start-up), the start-up of the Ray workers (actors made, artifacts shipped
and loaded), and Ray's overhead per batch: (Ray with 1 worker - plain with 1 thread) / batches, each at
--steps and at 1 step (where the overhead is nearly all there is).

    python bench/ray_scaling.py [--artifacts DIR] [--steps N] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dgn_engine.cli.main import main as cli  # noqa: E402


def job(root: str, name: str, argv: list[str]) -> tuple[float, float]:
    """(job-loop seconds, wall seconds of the whole command) of one run into a fresh folder."""
    out = tempfile.mkdtemp(prefix=name + "-", dir=root)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # each run's summary lines
        assert cli([*argv, "--out", out, "--quiet"]) == 0
    wall = time.perf_counter() - started
    with open(os.path.join(out, "run.json")) as f:
        return json.load(f)["seconds"], wall


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", help="an artifacts folder (default: the embedded demo's)")
    p.add_argument("--steps", type=int, help="steps per target (default: the artifacts')")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # shared by the Ray runs: start-up once
    base = ["run", "--all-classes"] + (["--artifacts", args.artifacts] if args.artifacts else [])
    configs = {
        "plain": [],
        "plain, 1 thread": ["--threads", "1"],
        "ray, 1 worker": ["--ray", "--workers", "1", "--threads", "1"],
        "ray, 2 workers": ["--ray", "--workers", "2", "--threads", "1"],
    }
    root = tempfile.mkdtemp(prefix="ray-scaling-")
    first = tempfile.mkdtemp(dir=root)
    cli([*base, "--steps", "1", "--out", first, "--quiet"])  # the demo's export, once, outside the timings
    with open(os.path.join(first, "run.json")) as f:
        record = json.load(f)
    targets, batch = record["progress"]["total"], record["batch"]
    batches = -(-targets // batch)
    rows = {}
    for steps in [args.steps, 1] if args.steps != 1 else [1]:
        step_args = ["--steps", str(steps)] if steps else []
        for name, extra in configs.items():
            runs = [job(root, name.split(",")[0], [*base, *step_args, *extra]) for _ in range(args.repeat)]
            loop = statistics.median(r[0] for r in runs)
            startup = statistics.median(r[1] - r[0] for r in runs)
            rows[(steps, name)] = (loop, startup)
            print(
                f"steps {steps or 'default'}: {name:15s} {targets / loop:7.2f} targets/s  loop {loop:6.2f} s  "
                f"start-up and files {startup:5.2f} s",
                flush=True,
            )
        overhead = (rows[(steps, "ray, 1 worker")][0] - rows[(steps, "plain, 1 thread")][0]) / batches
        print(f"steps {steps or 'default'}: Ray's overhead per batch {overhead * 1000:.1f} ms ({batches} batches)")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
