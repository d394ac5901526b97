"""Are the preferred inputs recognised? The script form of `dgn-engine bench --quality` (no
pytest-benchmark): for classifier D (default: the embedded demo, with its ResNet and MLP judges) per
mode and transforms setting, the share of class targets whose written PNG is D's top-1, D's mean
probability of the target, each judge's top-1 and top-5 share, and D's seconds per target.

    python bench/quality.py [--modes untrained,pretrained,pixel] [--transforms none,standard]
                            [--seeds 0,1,2] [--classes 10] [--steps N] [--out DIR] [--json FILE]
                            [--classifier D --judge J ...]

All options are `dgn-engine bench --quality`'s (dgn_engine/quality.py).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dgn_engine.cli.main import main as cli  # noqa: E402


def main(argv=None) -> int:
    return cli(["bench", "--quality", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
