"""The catalogue: the DuckDB file, the SQL of ``sql/``, queries, exports and sky maths.

The bottom layer: it imports nothing from ``stellardb.ingest``, ``stellardb.ml`` or
``stellardb.cli`` (tests/test_architecture.py), so a web process can read releases and run
queries without loading the ingest pipeline, TensorFlow or the terminal front end.
"""
