"""A catalogue made by hats-import (the reference HATS writer) from the simulated files ingests into
the same tables as the files themselves."""

from __future__ import annotations

import duckdb
import pytest

from ..helpers import invoke


def hats_import(files, name, out, reader, ra, dec):
    from dask.distributed import Client
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.catalog.file_readers import get_file_reader
    from hats_import.pipeline import pipeline_with_client

    arguments = ImportArguments(
        output_artifact_name=name, input_file_list=[str(f) for f in files], output_path=out,
        # the Gaia archive writes "null" for a missing value (astropy's ECSV reader needs telling)
        file_reader=get_file_reader("ecsv", fill_values=[("null", "0")]) if reader == "ecsv" else reader,
        ra_column=ra, dec_column=dec, pixel_threshold=5000, progress_bar=False, resume=False,
        tmp_dir=out / "tmp", dask_tmp=out / "dask")
    with Client(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as client:
        pipeline_with_client(arguments, client)
    return out / name


@pytest.mark.timeout(600)
def test_hats_import_catalogues_ingest_like_their_files(sky, sky_db_path, tmp_path):
    gaia = hats_import([sky.files["gaia"]], "gaia", tmp_path / "hats", "ecsv", "ra", "dec")
    skymapper = hats_import([sky.files["skymapper"]], "skymapper", tmp_path / "hats", "csv", "raj2000", "dej2000")
    target = tmp_path / "from_hats.duckdb"
    for table, folder in (("gaia", gaia), ("skymapper", skymapper)):
        result = invoke(target, "ingest", table, folder, "-q")
        assert result.exit_code == 0, result.output
    for table, path in (("distances", sky.files["distances"]), ("sos", sky.files["sos"])):
        assert invoke(target, "ingest", table, path, "-q").exit_code == 0
    con = duckdb.connect()
    try:
        con.execute(f"attach '{sky_db_path}' as files (read_only); attach '{target}' as hats (read_only)")
        for table in ("gaia", "skymapper", "xmatch", "xmatch_labels"):
            columns = con.execute("select column_name, data_type from duckdb_columns() where database_name = $d and "
                                  "table_name = $t and column_name <> 'ingest_id'", {"d": "files", "t": table}).fetchall()
            assert columns == con.execute(
                "select column_name, data_type from duckdb_columns() where database_name = $d and table_name = $t "
                "and column_name <> 'ingest_id'", {"d": "hats", "t": table}).fetchall(), table
            names = ", ".join(c for c, _ in columns)
            n = con.execute(f"select count(*) from files.{table}").fetchone()[0]
            assert n == con.execute(f"select count(*) from hats.{table}").fetchone()[0], table
            assert n > 0 or table == "xmatch_labels", table  # the simulated labels all carry a Gaia id
            for a, b in (("files", "hats"), ("hats", "files")):
                assert con.execute(f"select count(*) from (select {names} from {a}.{table} except all "
                                   f"select {names} from {b}.{table})").fetchone()[0] == 0, table
        formats = dict(con.execute("select table_name, format from hats.ingests").fetchall())
        assert formats["gaia"] == formats["skymapper"] == "hats"
    finally:
        con.close()
