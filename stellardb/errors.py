"""Errors stellardb reports to users as one clear line (no traceback)."""


class UserError(Exception):
    """Bad input or environment: the message says what is wrong and how to fix it."""


def user_errors(fn):
    """CLI decorator: a UserError becomes click's one-line ``Error: ...`` and exit status 1."""
    import errno
    import functools

    import click

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import duckdb

        try:
            return fn(*args, **kwargs)
        except InterruptedAfterCommit as exc:
            click.echo(str(exc), err=True)
            raise SystemExit(130) from None
        except UserError as exc:
            raise click.ClickException(str(exc)) from None
        except BaseException as exc:  # noqa: BLE001 - sorted below, re-raised unless recognised
            if is_interrupt(exc):
                # Ctrl-C or kill: every command rolls back its transaction on the way out
                click.echo("Interrupted; nothing was changed by the unfinished step.", err=True)
                raise SystemExit(130) from None
            if isinstance(exc, (OSError, duckdb.Error)) and (
                    getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc)):
                raise click.ClickException(
                    "The disk is full (no space left on device); free some space and run again: the database and "
                    "any output file are as they were before this command.") from None
            if isinstance(exc, duckdb.OutOfMemoryException):
                raise click.ClickException(
                    f"DuckDB ran out of memory ({str(exc).splitlines()[0]}); raise STELLARDB_MEMORY_LIMIT "
                    "(default 4GB) or free memory, then run again.") from None
            raise

    return wrapper


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
