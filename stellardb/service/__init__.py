"""The service: ``stellardb serve``, IVOA TAP and Simple Cone Search over a release (docs/service.md).

    adql      ADQL 2.1 -> DuckDB SQL: sqlglot's tree, checked against a whitelist, rewritten
    served    the release being served: its DuckDB, TAP_SCHEMA, and the switch to a new `latest`
    metadata  TAP_SCHEMA rows and the VOSI tableset from the release's column metadata
    results   query results as VOTable (BINARY2, TABLEDATA), CSV, TSV, JSON, Parquet; error documents
    vosi      capabilities, availability and the DALI examples document
    app       the ASGI app (Starlette): routes, limits, errors
    server    `stellardb serve`: settings, the release, uvicorn

This layer reads releases only (stellardb.release.reader), never the database file, so
``ingest``, ``train``, ``score`` and ``release`` never wait for it; only the command line imports it.
"""
