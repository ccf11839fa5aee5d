"""The library versions that made a model or a set of predictions, recorded beside them.

A prediction in a paper must be traceable to the code that made it: ``card.json``
holds the versions that trained a model, and table ``model_runs`` holds, per
``train`` and ``score`` run, the versions that ran it.
"""

from __future__ import annotations

import platform
from importlib import metadata

#: distributions whose version changes numbers (absent ones are left out)
_RECORDED = ("stellardb", "duckdb", "numpy", "pyarrow", "threadpoolctl")
_RECORDED_ML = ("keras", "tensorflow")


def library_versions(ml: bool = False) -> dict:
    """``{"python": ..., "stellardb": ..., "duckdb": ..., ...}``; with ``ml``, Keras and
    TensorFlow too (read from package metadata: nothing is imported)."""
    versions = {"python": platform.python_version()}
    for name in _RECORDED + (_RECORDED_ML if ml else ()):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions
