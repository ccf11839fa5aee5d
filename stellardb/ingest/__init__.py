"""Getting survey files into the catalogue: readers, column presets, checks, the pipeline, forget.

Uses :mod:`stellardb.catalog`; never imports :mod:`stellardb.ml` (nor the other way round).
"""
