"""Helpers shared by test modules (imported, not fixtures)."""

from __future__ import annotations

import duckdb


def fetch(db_path, sql: str, params=None) -> list[tuple]:
    """``sql`` on a plain read-only duckdb connection to ``db_path``: the rows as tuples."""
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        return con.execute(sql, params or {}).fetchall()
    finally:
        con.close()
