"""dgn-engine: preferred inputs of image classifiers through deep generator networks.

import dgn_engine as dgn
results = dgn.synthesize(model, ["class:3", dgn.Class(9) + 0.5 * dgn.Channel("layer3", 17)])
dgn.grid(results)
"""

from ._version import __version__
from .api import Engine, export, grid, synthesize
from .results import Result
from .targets import Channel, Class, Neuron, Target, all_classes

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
