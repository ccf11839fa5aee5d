"""The ``stellardb`` command line: the click group, every command, and all terminal output.

A thin layer over the library: each command parses its options, calls one library
function and prints what it returns (rich tables, progress bars, one-line summaries).
Nothing below this package prints to the terminal or imports rich.
"""

from stellardb.cli.main import cli, main

__all__ = ["cli", "main"]
