"""The road a `dgn-engine run` takes through the package, measured from a real run (sys.setprofile).

    python tools/road.py [--classifier NAME --backend torch ...]   (any `run` options; --out is made)

Prints, for the calls between dgn_engine's modules: the modules entered, the distinct calls from one
module into another, those that climb back to a higher layer (cli > api, session, export_cache >
exporter > engine > the data modules), and how often the run built a spec, parsed each target and
loaded D.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile

LAYERS = (
    ("dgn_engine.cli", 0),
    ("dgn_engine.api", 1),
    ("dgn_engine.session", 1),
    ("dgn_engine.export_cache", 1),
    ("dgn_engine.exporter", 2),
)
COUNTED = {
    ("dgn_engine.spec", "with_settings"): "specs built",
    ("dgn_engine.exporter.classifiers", "_load"): "classifiers loaded by name or file",
    ("dgn_engine.exporter.classifiers", "classifier_from_module"): "classifiers copied from a module",
}


def layer(module: str) -> int:
    for prefix, rank in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return 3 if module.startswith("dgn_engine.engine") else 4


def measure(argv: list[str]) -> dict:
    from dgn_engine.cli.main import main

    edges: collections.Counter = collections.Counter()
    order: dict[str, None] = {}  # modules in the order the run first enters them
    counts: collections.Counter = collections.Counter()
    parses: collections.Counter = collections.Counter()

    def profile(frame, event, _arg):
        if event != "call":
            return
        callee = frame.f_globals.get("__name__", "")
        if not callee.startswith("dgn_engine"):
            return
        name = frame.f_code.co_name
        if (callee, name) in COUNTED:
            counts[COUNTED[callee, name]] += 1
        if callee == "dgn_engine.targets" and name == "parse_target":
            parses[frame.f_locals.get("spec")] += 1
        caller = frame.f_back.f_globals.get("__name__", "") if frame.f_back else ""
        if caller.startswith("dgn_engine") and caller != callee:
            edges[caller, callee] += 1
            order.setdefault(callee)

    sys.setprofile(profile)
    try:
        code = main(argv)
    finally:
        sys.setprofile(None)
    climbs = sorted(e for e in edges if layer(e[1]) < layer(e[0]))
    return {
        "exit": code,
        "modules": sorted({m for e in edges for m in e}),
        "order": list(order),
        "edges": len(edges),
        "climbs": climbs,
        "counts": dict(counts),
        "parses per target": max(parses.values(), default=0),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _, given = p.parse_known_args()  # everything is a run option (no --out)
    options = given or ["--target", "class:1", "--target", "class:3", "--steps", "5"]
    with tempfile.TemporaryDirectory() as tmp:
        found = measure(["run", *options, "--out", os.path.join(tmp, "out"), "--quiet"])
    print(f"exit {found['exit']}; {len(found['modules'])} modules, {found['edges']} distinct calls between them")
    for what, n in sorted(found["counts"].items()):
        print(f"{what}: {n}")
    print(f"parses per target: {found['parses per target']}")
    print("first entered, by layer:")
    for rank in range(5):
        print(f"  {rank}: " + ", ".join(m.removeprefix("dgn_engine.") for m in found["order"] if layer(m) == rank))
    print(f"climbs to a higher layer: {len(found['climbs'])}")
    for caller, callee in found["climbs"]:
        print(f"  {caller} -> {callee}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
