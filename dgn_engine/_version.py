"""The version, in one place: the package face, the records and pyproject.toml (setuptools reads it) use it."""

__version__ = "0.1.0"
