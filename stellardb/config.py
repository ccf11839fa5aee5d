"""Every setting stellardb reads, in one declarative table.

Each setting has a name, a default, the environment variable that overrides it and a
help line; ``stellardb --help`` lists them from here (and tests/cli/test_docs.py checks
that the README's settings table names each).  Precedence is the same everywhere: a
command-line option (or a library argument) beats the environment, which beats the
default (:func:`get`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    envvar: str
    help: str


SETTINGS = (
    Setting("db", "stellardb.duckdb", "STELLARDB_DB",
            "The stellardb DuckDB file (`--db PATH` before the command)."),
    Setting("models", None, "STELLARDB_MODELS",
            "Folder of the model folders; unset: models/ beside the database file."),
    Setting("memory_limit", "4GB", "STELLARDB_MEMORY_LIMIT",
            "DuckDB's memory limit (e.g. 8GB); queries beyond it spill to disk instead of failing."),
    Setting("tf_verbose", None, "STELLARDB_TF_VERBOSE",
            "Set to 1 to see TensorFlow's start-up and device messages (hidden by default)."),
)
_BY_NAME = {s.name: s for s in SETTINGS}

#: TensorFlow's C++ log level while stellardb imports it: 3 hides its start-up notes and the
#: "failed call to cuInit" error every CPU-only machine prints; stellardb reports its own errors.
TF_LOG_LEVEL = "3"


def setting(name: str) -> Setting:
    return _BY_NAME[name]


def get(name: str, given=None):
    """The value of setting ``name``: ``given`` (a CLI option or argument) when not None,
    else its environment variable when set and not empty, else its default."""
    if given is not None:
        return given
    s = _BY_NAME[name]
    from_env = os.environ.get(s.envvar, "").strip()
    return from_env or s.default


def quiet_tensorflow_logs() -> None:
    """Set TensorFlow's C++ log level before it is imported (the one place it is set);
    a value the user exported, or STELLARDB_TF_VERBOSE, wins."""
    if not get("tf_verbose"):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_LOG_LEVEL)
