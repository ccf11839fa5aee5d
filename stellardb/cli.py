"""The ``stellardb`` command line: a thin layer over the library.

Each command parses its options and calls one library function; errors a user
can fix are :class:`stellardb.errors.UserError` and are printed as one line.
TensorFlow is never imported here, so ``stellardb --help`` stays fast.
"""

from __future__ import annotations

import functools
import sys

import click

from .errors import UserError


def _user_errors(fn):
    """Turn UserError into click's one-line ``Error: ...`` and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stellardb")
def cli():
    """stellardb: Gaia DR3, SkyMapper, Bailer-Jones distances and spectroscopic
    labels in DuckDB, and better Teff, log g and [Fe/H] for every star."""


@cli.command()
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option("--stars", default=200_000, show_default=True, type=int, help="Number of Gaia sources to simulate.")
@click.option("--seed", default=42, show_default=True, type=int, help="Random seed; the same seed gives identical files.")
@click.option(
    "--format", "fmt", default="csv", show_default=True, type=click.Choice(["csv", "parquet"]),
    help="Format of the SkyMapper, distance and label files (Gaia is always the archive's csv.gz).",
)
@click.option("--overwrite", is_flag=True, help="Replace the files of an existing, non-empty OUTDIR.")
@click.option("--truth", is_flag=True, help="Also write truth.parquet (true parameters, for validation only).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
@_user_errors
def simulate(outdir, stars, seed, fmt, overwrite, truth, quiet):
    """Write a simulated southern sky to OUTDIR in the surveys' own formats.

    Four files describe the same simulated stars: gaia_source.csv.gz (Gaia
    archive bulk ECSV, DR3 columns), skymapper_master.csv (SkyMapper master
    columns, positions at each row's mean_epoch), bailer_jones_distances.csv and
    sos_spectro.csv (reference labels for about 5 per cent of the stars).  The
    model is documented in the stellardb.simulate modules.

    Example:

        stellardb simulate data/sky --stars 200000 --seed 42
    """
    from . import simulate as sim
    from .progress import progress_bar

    sim.check_arguments(outdir, stars, seed, fmt, overwrite)
    with progress_bar("simulating stars", total=stars, disable=quiet) as advance:
        summary = sim.simulate(outdir, stars=stars, seed=seed, fmt=fmt, overwrite=overwrite, truth=truth, progress=advance)
    if not quiet:
        from .report import print_simulation_summary

        print_simulation_summary(summary)


def main():  # pragma: no cover - entry point for python -m stellardb
    cli(prog_name="stellardb")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
