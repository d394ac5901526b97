"""Two artifacts folders' step graphs timed in one process, in alternating rounds: the ratio of a graph
change where separate runs differ by more than the change (a shared 2-core machine's run-to-run spread).

    python bench/alternate.py BEFORE AFTER [--rounds 16] [--steps 4] [--threads 2] [--device cpu]

Each round times --steps steps of each folder (median seconds per step, after one untimed step), the
order flipped every round so that neither is always first. Prints each folder's median over the rounds
and the ratio AFTER / BEFORE two ways: of the medians, and the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before", help="artifacts folder timed as the baseline")
    p.add_argument("after", help="artifacts folder compared with it (the same batch and mode)")
    p.add_argument("--rounds", type=int, default=16)
    p.add_argument("--steps", type=int, default=4, help="timed steps per folder and round")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)

    import numpy as np

    from dgn_engine.artifacts import load_artifacts
    from dgn_engine.bench import time_backend
    from dgn_engine.engine.backends import engine_backend

    folders = [args.before, args.after]
    arts = [load_artifacts(f) for f in folders]
    backends = [engine_backend("step-graph", a, args.device, args.threads, "float32") for a in arts]
    times = [[], []]
    for r in range(args.rounds):
        for i in (0, 1) if r % 2 == 0 else (1, 0):
            times[i].append(time_backend(backends[i], arts[i].spec, arts[i].batch, args.steps, 1)["seconds_per_step"])
    medians = [float(np.median(t)) for t in times]
    paired = float(np.median(np.array(times[1]) / np.array(times[0])))
    for folder, m in zip(folders, medians):
        print(f"{folder}: median {m:.4f} s/step over {args.rounds} rounds")
    print(f"after / before: {medians[1] / medians[0]:.3f} (medians), {paired:.3f} (median of per-round ratios)")
    if args.json:
        with open(args.json, "w") as f:
            record = {"folders": folders, "seconds_per_step": times, "ratio": medians[1] / medians[0], "paired": paired}
            json.dump(record, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
