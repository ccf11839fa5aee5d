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
        except (KeyboardInterrupt, duckdb.InterruptException):
            # Ctrl-C: every command rolls back its transaction on the way out
            click.echo("Interrupted; nothing was changed by the unfinished step.", err=True)
            raise SystemExit(130) from None
        except (OSError, duckdb.IOException) as exc:
            if getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc):
                raise click.ClickException(
                    "The disk is full (no space left on device); free some space and run again: the database and "
                    "any output file are as they were before this command.") from None
            raise
        except duckdb.OutOfMemoryException as exc:
            raise click.ClickException(
                f"DuckDB ran out of memory ({str(exc).splitlines()[0]}); raise STELLARDB_MEMORY_LIMIT "
                "(default 4GB) or free memory, then run again.") from None

    return wrapper


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
