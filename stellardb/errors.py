"""Errors stellardb reports to users as one clear line (no traceback)."""


class UserError(Exception):
    """Bad input or environment: the message says what is wrong and how to fix it."""


def is_interrupt(exc: BaseException) -> bool:
    """Ctrl-C or SIGTERM, however it surfaced: between statements as KeyboardInterrupt or
    SystemExit (the CLI's SIGTERM handler), inside a DuckDB statement as DuckDB's
    interrupt (a RuntimeError "Query interrupted" in duckdb 2.0)."""
    import duckdb

    if isinstance(exc, (KeyboardInterrupt, duckdb.InterruptException)):
        return True
    if isinstance(exc, SystemExit):
        return exc.code in (130, 143)  # the CLI's SIGTERM handler exits 143
    return isinstance(exc, RuntimeError) and "interrupted" in str(exc).lower()


def require_ml(what: str, modules=("keras", "matplotlib")) -> None:
    """Raise a UserError naming the ``ml`` extra when ``what`` needs a package it installs.

    Keras, TensorFlow and matplotlib are heavy and optional (``pip install stellardb``
    leaves them out); ``train``, old model folders and ``xmatch --plot`` need them.
    """
    import importlib.util

    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a module set to None in sys.modules, or a broken install
            found = False
        if not found:
            missing.append(name)
    if missing:
        raise UserError(f"{what} needs {', '.join(missing)}, from the ml extra: pip install 'stellardb[ml]'.")


class InterruptedAfterCommit(UserError):
    """Ctrl-C or SIGTERM arrived as the transaction was committing, after the commit: the
    work is stored, and the command must say so rather than report a failure."""
