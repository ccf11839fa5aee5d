"""Errors stellardb reports to users as one clear line (no traceback)."""


class UserError(Exception):
    """Bad input or environment: the message says what is wrong and how to fix it."""
