"""stellardb: Gaia DR3, SkyMapper, Bailer-Jones distances and spectroscopic labels in
DuckDB, and MLP stellar parameters for every star.

``stellardb.connect(path)`` opens the database with all views of ``sql/``.
"""

from importlib.metadata import PackageNotFoundError, version

from stellardb.catalog.db import connect

try:
    __version__ = version("stellardb")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["connect", "__version__"]
