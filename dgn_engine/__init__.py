"""dgn-engine: preferred inputs of image classifiers through deep generator networks."""

__version__ = "0.1.0"
