"""``stellardb release``: judged by hats (validation), lsdb (cone search, crossmatch), healpy,
astropy (VO-Parquet) and DuckDB on the database itself."""

from __future__ import annotations

import json
import logging
import os

import duckdb
import healpy
import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.coordinates import angular_separation
from astropy import units as u

from stellardb.release import layout
from stellardb.release.writer import TABLE_NAMES

from ..helpers import fetch
from .conftest import MAX_ROWS, MODEL

CO_PARTITIONED = ("distances", "labels", "xmatch", "predictions", "catalogue")


def partitions(release, table):
    """[(order, pixel, path)] of a catalogue, from its partition_info.csv."""
    import pandas as pd

    info = pd.read_csv(layout.catalogue_dir(release, table) / "partition_info.csv")
    base = layout.catalogue_dir(release, table) / "dataset"
    return [(int(k), int(n), base / f"Norder={k}/Dir={n // 10000 * 10000}/Npix={n}.parquet")
            for k, n in zip(info["Norder"], info["Npix"])]


def read_table(release, table):
    con = duckdb.connect()
    try:
        return con.execute(f"select * from read_parquet('{layout.data_files_glob(release, table)}', "
                           "hive_partitioning = false)").df()
    finally:
        con.close()


def test_every_catalogue_is_valid_hats_strictly(release, caplog):
    from hats.io.validation import is_valid_catalog

    folder, _, result = release
    assert set(result.catalogues) == set(TABLE_NAMES)
    with caplog.at_level(logging.WARNING):
        for table in TABLE_NAMES:
            assert is_valid_catalog(folder / table, strict=True), (table, caplog.text)
            assert is_valid_catalog(layout.catalogue_dir(folder, table), strict=True), table
        for table in ("gaia", "catalogue"):
            assert is_valid_catalog(folder / table / f"{table}_10arcs", strict=True), caplog.text


def test_every_row_is_released_once(release):
    folder, db_path, result = release
    expected = {
        "gaia": "select count(*) from gaia", "skymapper": "select count(*) from skymapper",
        "distances": "select count(*) from distances", "labels": "select count(*) from labels",
        "xmatch": "select count(*) from xmatch",
        "predictions": f"select count(*) from predictions where model = '{MODEL}'",
        "catalogue": "select count(*) from gaia",
    }
    manifest = json.loads((folder / "manifest.json").read_text())
    for table, sql in expected.items():
        n = fetch(db_path, sql)[0][0]
        assert n > 0, table
        frame = read_table(folder, table)
        assert len(frame) == n == result.catalogues[table].rows == manifest["catalogues"][table]["rows"], table
    ids = read_table(folder, "gaia").source_id
    assert ids.is_unique and set(ids) == {r[0] for r in fetch(db_path, "select source_id from gaia")}


def test_gaia_rows_are_the_databases_column_for_column(release):
    folder, db_path, _ = release
    con = duckdb.connect()
    try:
        con.execute(f"attach '{db_path}' as db (read_only)")
        columns = [r[0] for r in con.execute(
            "select column_name from duckdb_columns() where database_name = 'db' and table_name = 'gaia'").fetchall()]
        released = f"read_parquet('{layout.data_files_glob(folder, 'gaia')}', hive_partitioning = false)"
        names = ", ".join(columns)
        differ = con.execute(f"select count(*) from (select {names} from db.gaia except all select {names} from "
                             f"{released})").fetchone()[0]
        types_db = con.execute("select column_name, data_type from duckdb_columns() where database_name = 'db' and "
                               "table_name = 'gaia'").fetchall()
        types_rel = {r[0]: r[1] for r in con.execute(f"describe select * from {released}").fetchall()}
    finally:
        con.close()
    assert differ == 0
    assert all(types_rel[c] == t for c, t in types_db)


def test_healpix_29_is_healpys_and_rows_sit_in_their_partition_sorted(release):
    folder, _, _ = release
    for table, ra, dec in (("gaia", "ra", "dec"), ("skymapper", "raj2000", "dej2000")):
        frame = read_table(folder, table)
        expected = healpy.ang2pix(2**29, frame[ra].to_numpy(), frame[dec].to_numpy(), nest=True, lonlat=True)
        assert np.array_equal(frame["_healpix_29"].to_numpy(), expected), table
    for table in TABLE_NAMES:
        for order, pixel, path in partitions(folder, table):
            h = pq.read_table(path, columns=["_healpix_29"])["_healpix_29"].to_numpy()
            shift = 2 * (29 - order)
            assert len(h) > 0, (table, order, pixel)
            assert np.all(h >> shift == pixel), (table, order, pixel)
            assert np.all(np.diff(h) >= 0), (table, order, pixel, "rows are not sorted by _healpix_29")


def test_partitions_are_adaptive_and_hold_at_most_max_rows(release):
    folder, _, _ = release
    for table in ("gaia", "skymapper"):
        found = partitions(folder, table)
        rows = [pq.read_metadata(p).num_rows for _, _, p in found]
        assert max(rows) <= MAX_ROWS
        assert len({k for k, _, _ in found}) >= 2, "dense and sparse sky at different orders"


def test_source_keyed_tables_are_co_partitioned_with_gaia(release):
    """Every row of distances, labels, xmatch, predictions and catalogue lies in the gaia partition
    that holds its Gaia source: a join by source_id never crosses partitions."""
    folder, _, _ = release
    gaia_pixels = {(k, n) for k, n, _ in partitions(folder, "gaia")}
    where = {}
    for k, n, path in partitions(folder, "gaia"):
        for sid in pq.read_table(path, columns=["source_id"])["source_id"].to_pylist():
            where[sid] = (k, n)
    for table in CO_PARTITIONED:
        key = "gaia_source_id" if table == "xmatch" else "source_id"
        assert {(k, n) for k, n, _ in partitions(folder, table)} <= gaia_pixels, table
        for k, n, path in partitions(folder, table):
            ids = pq.read_table(path, columns=[key])[key].to_pylist()
            assert all(where[i] == (k, n) for i in ids), table


def _boundary_distance_arcsec(order, pixel, ra, dec):
    """Brute force: angular distance from each point to the outline of a HEALPix pixel, healpy's
    boundary sampled 100 times per edge, as the distance to the nearest of its short chords."""
    x, y, z = healpy.boundaries(2**order, pixel, step=100, nest=True)
    a = np.stack([x, y, z], axis=1)
    b = np.roll(a, -1, axis=0)
    p = np.stack(healpy.ang2vec(ra, dec, lonlat=True).reshape(-1, 3).T, axis=1)[:, None, :]
    ab = (b - a)[None, :, :]
    t = np.clip(np.sum((p - a[None]) * ab, axis=2) / np.sum(ab * ab, axis=2), 0, 1)
    chord = np.linalg.norm(p - (a[None] + t[..., None] * ab), axis=2)
    return np.degrees(2 * np.arcsin(np.min(chord, axis=1) / 2)) * 3600


@pytest.mark.parametrize("table", ["gaia", "catalogue"])
def test_margin_holds_every_row_within_the_threshold_of_a_partition(release, table):
    folder, _, _ = release
    frame = read_table(folder, table)
    margin_dir = folder / table / f"{table}_10arcs" / "dataset"
    margins = {}
    for path in margin_dir.rglob("Npix=*.parquet"):
        k = int(path.parts[-3].split("=")[1])
        n = int(path.stem.split("=")[1])
        margins[(k, n)] = set(pq.read_table(path, columns=["source_id"])["source_id"].to_pylist())
    checked = 0
    for k, n, _ in partitions(folder, table):
        outside = frame[(frame._healpix_29.to_numpy() >> 2 * (29 - k)) != n]
        # cheap pre-filter: rows within 2 degrees of the pixel centre's disc of the pixel's size
        centre_ra, centre_dec = healpy.pix2ang(2**k, n, nest=True, lonlat=True)
        radius = np.degrees(healpy.max_pixrad(2**k)) + 0.01
        sep = np.degrees(angular_separation(*np.radians([outside.ra, outside.dec]), np.radians(centre_ra),
                                            np.radians(centre_dec)))
        near = outside[sep <= radius]
        if len(near) == 0:
            continue
        d = _boundary_distance_arcsec(k, n, near.ra.to_numpy(), near.dec.to_numpy())
        must = set(near.source_id[d <= 9.5])  # a little below the threshold: the outline is sampled
        checked += len(must)
        assert must <= margins.get((k, n), set()), (table, k, n, must - margins.get((k, n), set()))
        # and nothing of the partition itself is in its own margin
        inside = set(frame.source_id[(frame._healpix_29.to_numpy() >> 2 * (29 - k)) == n])
        assert not (margins.get((k, n), set()) & inside)
    assert checked > 0, "no row near a partition border: the test proved nothing"


def _brute_cone(frame, ra, dec, radius_deg, ra_col="ra", dec_col="dec"):
    sep = np.degrees(angular_separation(np.radians(frame[ra_col].to_numpy()), np.radians(frame[dec_col].to_numpy()),
                                        np.radians(ra), np.radians(dec)))
    return set(frame.source_id[sep <= radius_deg])


def _cones(release):
    """A cone at the south pole, one across RA 0/360, and one centred on the corner of a gaia
    partition with the most stars around it (a cone there reads four partitions)."""
    folder, _, _ = release
    frame = read_table(folder, "gaia")
    corners = []
    for k, n, _ in partitions(folder, "gaia"):
        x, y, z = healpy.boundaries(2**k, n, step=1, nest=True)
        c_ra, c_dec = healpy.vec2ang(np.stack([x, y, z], axis=1), lonlat=True)
        corners += list(zip(c_ra.tolist(), c_dec.tolist()))
    corner = max(corners, key=lambda c: len(_brute_cone(frame, c[0], c[1], 1.0)))
    return [(0.0, -90.0, 4.0), (0.05, -40.0, 3.0), (corner[0], corner[1], 1.0)]


def test_lsdb_cone_search_returns_the_brute_force_rows(release):
    import lsdb

    folder, _, _ = release
    for table in ("catalogue", "gaia"):
        catalog = lsdb.open_catalog(folder / table)
        assert catalog.margin is not None, "the collection's default margin is opened with it"
        frame = read_table(folder, table)
        for ra, dec, radius in _cones(release):
            expected = _brute_cone(frame, ra, dec, radius)
            assert expected, (ra, dec, "an empty cone proves nothing")
            found = catalog.cone_search(ra, dec, radius * 3600).compute()
            assert set(found.source_id) == expected, (table, ra, dec)


def test_query_release_cone_macro_returns_the_brute_force_rows_and_prunes(release):
    from stellardb.release.reader import connect

    folder, _, _ = release
    frame = read_table(folder, "catalogue")
    con = connect(folder)
    try:
        for ra, dec, radius in _cones(release):
            found = {r[0] for r in con.execute(
                f"select source_id from catalogue_cone({ra}, {dec}, {radius * 3600})").fetchall()}
            assert found == _brute_cone(frame, ra, dec, radius)
        ra, dec, _ = _cones(release)[1]
        plan = con.execute(f"explain analyze select * from gaia_cone({ra}, {dec}, 60)").fetchall()[0][1]
        scanned, total = [int(x) for x in plan.split("Row Groups Scanned:")[1].split("│")[0].split("/")]
    finally:
        con.close()
    assert scanned <= 2 < total


def test_lsdb_crossmatch_finds_our_xmatch_pairs_for_slow_stars(release):
    """lsdb's nearest-neighbour crossmatch of skymapper with gaia (and gaia's margin) at 1 arcsec
    gives the pairs of our xmatch table wherever proper motion moves the Gaia source by less than
    0.02 arcsec between the epochs (ours propagates it; lsdb compares positions as they are)."""
    import lsdb

    folder, db_path, _ = release
    skymapper = lsdb.open_catalog(folder / "skymapper")
    gaia = lsdb.open_catalog(folder / "gaia")
    pairs = skymapper.crossmatch(gaia, radius_arcsec=1.0, n_neighbors=1, suffixes=("_sm", "_g")).compute()
    found = set(zip(pairs.object_id_sm, pairs.source_id_g))
    rows = fetch(db_path, "select x.skymapper_object_id, x.gaia_source_id, g.pmra, g.pmdec, s.mean_epoch "
                          "from xmatch x join gaia g on g.source_id = x.gaia_source_id "
                          "join skymapper s on s.object_id = x.skymapper_object_id")
    slow_gaia = {r[0] for r in fetch(db_path, "select g.source_id from gaia g where sqrt(coalesce(pmra, 0)^2 + "
                                               "coalesce(pmdec, 0)^2) * 8 / 1000 < 0.02")}
    ours = {(s, g) for s, g, *_ in rows if g in slow_gaia}
    lsdb_slow = {(s, g) for s, g in found if g in slow_gaia}
    assert len(ours) > 100
    assert ours == lsdb_slow


def test_column_metadata_travels_in_vo_parquet(release):
    """Every catalogue's _common_metadata and data files carry the VO-Parquet header, with the
    database's units; astropy's VO-Parquet reader reads the catalogues whose column types it can
    merge (not predictions and catalogue: astropy 8.0 cannot merge a timestamp or a boolean with
    NULLs with their VOTable FIELDs, TableMergeError)."""
    import io

    from astropy.io.votable import parse
    from astropy.table import Table

    folder, db_path, _ = release
    for table in TABLE_NAMES:
        common = layout.catalogue_dir(folder, table) / "dataset" / "_common_metadata"
        xml = pq.read_schema(common).metadata[b"IVOA.VOTable-Parquet.content"]
        fields = {f.name: f for f in parse(io.BytesIO(xml)).get_first_table().fields}
        assert list(fields) == pq.read_schema(common).names, table
        source = {"catalogue": "stars", "labels": "sos"}.get(table, table)
        units = dict(fetch(db_path, "select column_name, unit from column_metadata where table_name = $t and "
                                    "unit is not null", {"t": source}))
        checked = [c for c in units if c in fields]
        assert checked and all(u.Unit(fields[c].unit) == u.Unit(units[c], format="vounit", parse_strict="silent")
                               for c in checked), table
        if table in ("predictions", "catalogue"):
            continue
        for path in [common, *[p for _, _, p in partitions(folder, table)]]:
            read = Table.read(path, format="parquet.votable")
            assert all(read[c].unit == u.Unit(units[c], format="vounit", parse_strict="silent") for c in checked)
    assert fields_of(folder, "gaia")["parallax"].ucd == "pos.parallax.trig"


def fields_of(folder, table):
    import io

    from astropy.io.votable import parse

    xml = pq.read_schema(layout.catalogue_dir(folder, table) / "dataset" / "_common_metadata").metadata
    return {f.name: f for f in parse(io.BytesIO(xml[b"IVOA.VOTable-Parquet.content"])).get_first_table().fields}


@pytest.mark.parametrize("sql", [
    "select count(*), sum(hash(source_id)) from gaia",
    "select object_id, raj2000, dej2000, r_psf from skymapper order by object_id",
    "select survey, source_id, teff, e_teff from labels order by 1, 2",
    "select skymapper_object_id, gaia_source_id, sep_arcsec, n_candidates, dt_yr from xmatch order by 1",
    "select * from xmatch_src order by skymapper_object_id",
    "select * from predictions_src order by source_id",
    "select source_id, teff, logg, feh, model from stars_with_predictions where model = 'm1' and feh < -1 "
    "order by source_id",
    "select label_survey, count(*), round(avg(r_med_geo), 6) from stars group by 1 order by 1",
    "select count(*) from features where passes_feature_cuts",
])
def test_query_release_returns_the_databases_rows(release, sql):
    from stellardb.release.reader import connect

    folder, db_path, _ = release
    con = connect(folder)
    try:
        got = con.execute(sql).fetchall()
    finally:
        con.close()
    assert got == fetch(db_path, sql)


def test_release_tables_are_the_databases_plus_healpix_and_position(release):
    """Each catalogue has the database's columns, in order, after _healpix_29; tables without a
    position carry their Gaia source's ra and dec last (HATS needs one)."""
    from stellardb.release.reader import connect

    folder, db_path, _ = release
    con = connect(folder)
    try:
        for table, source in (("gaia", "gaia"), ("skymapper", "skymapper"), ("distances", "distances"),
                              ("xmatch", "xmatch"), ("predictions", "predictions"), ("labels", "labels")):
            released = [r[0] for r in con.execute(f"describe {table}").fetchall()]
            stored = [r[0] for r in fetch(db_path, f"describe {source}")]
            extra = ["ra", "dec"] if table in ("distances", "xmatch", "predictions", "labels") else []
            assert released == ["_healpix_29", *stored, *extra], table
    finally:
        con.close()


def test_manifest_records_ingests_model_rows_and_versions(release):
    folder, db_path, _ = release
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["name"] == "r1" and manifest["model"]["name"] == MODEL
    ingests = fetch(db_path, "select table_name, sha256, rows from ingests order by ingest_id")
    assert [(i["table"], i["sha256"], i["rows"]) for i in manifest["ingests"]] == ingests
    assert all("/" not in i["file"] for i in manifest["ingests"]), "no local paths in a publication"
    assert manifest["parameters"] == {"max_rows_per_partition": MAX_ROWS, "margin_arcsec": 10.0}
    assert manifest["catalogues"]["gaia"]["margin_rows"] > 0
    assert manifest["stellardb_version"] and manifest["hats_version"]


def test_latest_points_to_the_release(release):
    folder, _, _ = release
    assert os.readlink(folder.parent / "latest") == "r1"
    assert [r.name for r in layout.list_releases(folder.parent)] == ["r1"]


def test_a_release_made_before_feature_sets_still_opens(release, tmp_path):
    """Releases are never rewritten: one whose predictions have no feature_set column (made before
    families existed) opens, and reads feature_set as NULL."""
    import shutil

    from stellardb.release import reader

    folder = release[0]
    old = tmp_path / "old-release"
    shutil.copytree(folder, old)
    for path in layout.data_files(old, "predictions"):
        table = pq.read_table(path)
        assert "feature_set" in table.column_names
        pq.write_table(table.drop_columns(["feature_set"]), path)
    con = reader.connect(old)
    try:
        n, with_set = con.execute("select count(*), count(feature_set) from stars_with_predictions").fetchone()
    finally:
        con.close()
    assert n > 0 and with_set == 0
