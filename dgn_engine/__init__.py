"""dgn-engine: preferred inputs of image classifiers through deep generator networks.

import dgn_engine as dgn
results = dgn.synthesize(model, ["class:3", dgn.Class(9) + 0.5 * dgn.Channel("layer3", 17)])
dgn.grid(results)
"""

__version__ = "0.1.0"

from .api import Engine, export, grid, synthesize  # noqa: E402
from .results import Result  # noqa: E402
from .targets import Channel, Class, Neuron, Target, all_classes  # noqa: E402

__all__ = [
    "synthesize",
    "export",
    "Engine",
    "grid",
    "Result",
    "Target",
    "Class",
    "Channel",
    "Neuron",
    "all_classes",
    "__version__",
]
