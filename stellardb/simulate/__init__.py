"""``stellardb simulate``: a realistic simulated sky (southern, or all of it) in the surveys' own formats.

The model lives with the code that implements it:

* :mod:`stellardb.simulate.galaxy` - sky density, populations, stellar parameters,
  distances, dust, motions;
* :mod:`stellardb.simulate.photometry` - colour model, extinction, photometric errors;
* :mod:`stellardb.simulate.surveys` - what Gaia, SkyMapper, Bailer-Jones and the
  spectroscopic surveys publish about each star (errors, faults, nulls, epochs);
* :mod:`stellardb.simulate.photometric_surveys` - the same for 2MASS, AllWISE,
  Pan-STARRS1 and SDSS;
* :mod:`stellardb.simulate.writers` - the file formats.

Stars are simulated and written in chunks of :data:`CHUNK_STARS`, each from its own
random stream ``SeedSequence([seed, chunk])``, so memory is bounded and the same
seed always gives byte-identical files whatever the machine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from stellardb.cores import process_pool, usable_cores
from stellardb.errors import UserError
from stellardb.simulate import writers

CHUNK_STARS = 200_000
FIRST_OBJECT_ID = 100_000_001
FORMATS = ("csv", "parquet")
#: --sky: the northern limit of the simulated stars (SkyMapper stays south of +2 deg either way)
SKIES = {"south": 2.0, "all": 90.0}

GAIA_FILE = "gaia_source.csv.gz"
TRUTH_FILE = "truth.parquet"


def output_names(fmt: str) -> dict[str, str]:
    """File name of each catalogue for ``fmt`` (Gaia is always the archive's csv.gz)."""
    ext = "parquet" if fmt == "parquet" else "csv"
    return {
        "gaia": GAIA_FILE,
        "skymapper": f"skymapper_master.{ext}",
        "tmass": f"tmass_psc.{ext}",
        "allwise": f"allwise_source.{ext}",
        "ps1": f"ps1_dr2_mean.{ext}",
        "sdss": f"sdss_dr17_photoobj.{ext}",
        "distances": f"bailer_jones_distances.{ext}",
        "sos": f"sos_spectro.{ext}",
    }


@dataclass
class SimulationSummary:
    outdir: Path
    stars: int
    seed: int
    rows: dict[str, int] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)


def _check_outdir(outdir: Path, overwrite: bool) -> None:
    if outdir.exists() and not outdir.is_dir():
        raise UserError(f"{outdir} exists and is not a directory; choose another OUTDIR.")
    if outdir.exists() and any(outdir.iterdir()) and not overwrite:
        raise UserError(f"{outdir} already exists and is not empty. Use --overwrite to replace its files, or choose another OUTDIR.")
    parent = outdir.resolve().parent
    if not parent.is_dir():
        raise UserError(f"Cannot create {outdir}: {parent} is not an existing directory. Create it first or choose another OUTDIR.")
    if not os.access(parent, os.W_OK | os.X_OK) or (outdir.exists() and not os.access(outdir, os.W_OK | os.X_OK)):
        raise UserError(f"Cannot write to {outdir}: permission denied. Choose a writable OUTDIR.")


def check_arguments(outdir, stars, seed, fmt: str, overwrite: bool, sky: str = "south") -> Path:
    """Validate :func:`simulate`'s arguments before any work; raises UserError."""
    if isinstance(stars, bool) or not isinstance(stars, (int, np.integer)) or stars < 1:
        raise UserError(f"--stars must be a positive whole number of stars, got {stars!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {seed!r}.")
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}.")
    if sky not in SKIES:
        raise UserError(f"--sky must be one of {', '.join(SKIES)}, got {sky!r}.")
    outdir = Path(outdir)
    _check_outdir(outdir, overwrite)
    return outdir


def simulate(
    outdir: str | os.PathLike,
    stars: int = 200_000,
    seed: int = 42,
    fmt: str = "csv",
    overwrite: bool = False,
    truth: bool = False,
    progress=None,
    workers: int | None = None,
    sky: str = "south",
) -> SimulationSummary:
    """Simulate ``stars`` Gaia sources and write the four catalogues to ``outdir``.

    Parameters
    ----------
    outdir : path
        Output directory; created.  Must be empty or absent unless ``overwrite``.
    stars : int
        Number of Gaia sources (>= 1).  SkyMapper gets about 0.97x as many rows,
        distances about 0.95x, reference labels about 5 per cent.
    seed : int
        Random seed (>= 0); the same seed gives byte-identical files.
    fmt : {"csv", "parquet"}
        Format of the SkyMapper, distance and label files.  The Gaia file is always
        the archive's bulk ECSV ``.csv.gz``.
    overwrite : bool
        Replace the files of an existing non-empty ``outdir``.
    truth : bool
        Also write ``truth.parquet`` (true parameters and the Gaia-SkyMapper
        identity of each star) for validating the pipeline.  It is never read by
        stellardb itself.
    progress : callable(done_stars, total_stars) or None
    workers : int or None
        Processes that simulate chunks in parallel (default: up to 2 CPUs).
        Output does not depend on it.
    sky : {"south", "all"}
        Stars south of dec +2 deg (SkyMapper's sky), or over the whole sky, where
        Pan-STARRS1 and SDSS reach the north and SkyMapper does not.

    Raises
    ------
    UserError
        Bad arguments or an unusable ``outdir``; nothing is left behind.
    """
    outdir = check_arguments(outdir, stars, seed, fmt, overwrite, sky)

    # Write into a sibling temporary directory and move the files in only when
    # everything succeeded, so a failed or interrupted run leaves nothing half-written.
    parent = outdir.resolve().parent
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.partial-", dir=parent))
    except OSError as exc:
        raise UserError(f"Cannot write to {outdir}: {exc.strerror}. Choose a writable OUTDIR.") from None
    try:
        summary = _simulate_into(tmp, int(stars), int(seed), fmt, truth, progress, workers or _default_workers(), sky)
        outdir.mkdir(exist_ok=True)
        # --overwrite: files of an earlier run in the other format, or its truth table,
        # would otherwise sit beside these and be mixed in by a later `ingest dir/*`
        for name in {*output_names("csv").values(), *output_names("parquet").values(), TRUTH_FILE}:
            (outdir / name).unlink(missing_ok=True)
        for key, path in summary.files.items():
            final = outdir / path.name
            os.replace(path, final)
            summary.files[key] = final
        summary.outdir = outdir
        return summary
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build(args):
    from stellardb.simulate.surveys import build_chunk

    chunk, lo, n, seed, dec_max = args
    rng = np.random.default_rng(np.random.SeedSequence([seed, chunk]))
    return chunk, n, build_chunk(rng, n, first_index=lo, first_object_id=0, seed=seed, dec_max_deg=dec_max)


def _chunks(n_stars: int, seed: int, workers: int, sky: str = "south"):
    """Yield (chunk, n, tables) in chunk order, simulated by ``workers`` processes."""
    jobs = [(chunk, lo, min(CHUNK_STARS, n_stars - lo), seed, SKIES[sky])
            for chunk, lo in enumerate(range(0, n_stars, CHUNK_STARS))]
    if workers <= 1 or len(jobs) == 1:
        yield from map(_build, jobs)
        return
    # created before the parent starts any pyarrow writer threads (process_pool forks)
    with process_pool(workers) as pool:
        yield from pool.imap(_build, jobs)


def _offset_object_ids(tables: dict[str, pa.Table], offset: int) -> dict[str, pa.Table]:
    """Chunks number their SkyMapper rows from 0; make the ids global."""
    import pyarrow.compute as pc

    for key, column in (("skymapper", "object_id"), ("truth", "skymapper_object_id")):
        t = tables[key]
        i = t.schema.get_field_index(column)
        tables[key] = t.set_column(i, column, pc.add(t[column], pa.scalar(offset, pa.int64())))
    return tables


def _default_workers() -> int:
    return min(2, usable_cores())


def _simulate_into(tmp: Path, n_stars: int, seed: int, fmt: str, truth: bool, progress, workers: int,
                   sky: str = "south") -> SimulationSummary:
    names = output_names(fmt)
    summary = SimulationSummary(outdir=tmp, stars=n_stars, seed=seed)
    sinks: dict[str, writers.TableSink] = {"gaia": writers.GaiaSink(tmp / names["gaia"])}
    truth_writer = None
    stats = {"sky_dec_min": 90.0, "g_le_18": 0, "gsp_phot": 0}
    done = 0
    object_id = FIRST_OBJECT_ID
    try:
        for chunk, n, tables in _chunks(n_stars, seed, workers, sky):
            tables = _offset_object_ids(tables, object_id)
            object_id += tables["skymapper"].num_rows
            for key in names:
                if key not in sinks:
                    sinks[key] = writers.TableSink(tmp / names[key], tables[key].schema, fmt)
                sinks[key].write(tables[key])
                summary.rows[key] = summary.rows.get(key, 0) + tables[key].num_rows
            if truth:
                if truth_writer is None:
                    import pyarrow.parquet as pq

                    truth_writer = pq.ParquetWriter(tmp / TRUTH_FILE, tables["truth"].schema, compression="zstd")
                truth_writer.write_table(tables["truth"])
            _accumulate_stats(stats, tables)
            done += n
            if progress is not None:
                progress(done, n_stars)
    finally:
        for sink in sinks.values():
            sink.close()
        if truth_writer is not None:
            truth_writer.close()
    summary.files = {key: tmp / names[key] for key in names}
    if truth:
        summary.files["truth"] = tmp / TRUTH_FILE
    summary.stats = stats
    return summary


def _accumulate_stats(stats: dict, tables: dict[str, pa.Table]) -> None:
    import pyarrow.compute as pc

    gaia = tables["gaia"]
    stats["sky_dec_min"] = min(stats["sky_dec_min"], pc.min(gaia["dec"]).as_py())
    stats["g_le_18"] += pc.sum(pc.less_equal(gaia["phot_g_mean_mag"], 18.0)).as_py() or 0
    stats["gsp_phot"] += gaia.num_rows - gaia["teff_gspphot"].null_count
