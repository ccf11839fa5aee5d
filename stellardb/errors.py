"""Errors stellardb reports to users as one clear line (no traceback)."""


class UserError(Exception):
    """Bad input or environment: the message says what is wrong and how to fix it."""


def user_errors(fn):
    """CLI decorator: a UserError becomes click's one-line ``Error: ...`` and exit status 1."""
    import functools

    import click

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper
