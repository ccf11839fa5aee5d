"""How the command line reports failures: one line and a non-zero exit, never a traceback for input."""

from __future__ import annotations

import errno
import functools

import click

from stellardb.catalog.schema import SchemaError
from stellardb.errors import InterruptedAfterCommit, UserError, is_interrupt


def user_errors(fn):
    """CLI decorator: a UserError becomes click's one-line ``Error: ...`` and exit status 1."""
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
        except SchemaError as exc:
            raise click.ClickException(f"{exc} (stellardb's own SQL failed on this database, which is unchanged; "
                                       "please report it with this line)") from None
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
