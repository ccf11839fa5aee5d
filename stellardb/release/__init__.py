"""Releases: the database published as immutable HATS catalogues (docs/releases.md).

    writer     stellardb release: DuckDB writes the Parquet, hats the HATS metadata
    partition  the sky's cut: adaptive partitions, co-partitioning, margin pixels
    layout     where releases live; names, the latest pointer, listing
    reader     DuckDB views over a release (stellardb query --release), cone search

This layer sits beside ingest and ml: it reads the database through stellardb.catalog and
the model card through stellardb.ml.model_store; only the command line imports it.
"""
