"""stellardb: Gaia DR3, SkyMapper, Bailer-Jones distances and spectroscopic labels in
DuckDB, and MLP stellar parameters for every star.

``stellardb.connect(path)`` opens the database with all views of ``sql/``.
"""

from stellardb.catalog.db import connect

__all__ = ["connect"]
