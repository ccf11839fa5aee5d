"""Rows read from the release's row groups (stellardb.service.rowgroups: the star page and /scs)
against DuckDB: the service's DuckDB queries of the same rows, and DuckDB directly on the
release's files; the Python cone tests against DuckDB's macros, to the bit; cone_ranges's
direct call to cdshealpix against cdshealpix's own (astropy) one.

A second release of the test sky is written with row groups of 2048 rows (DuckDB's least; the
service's are 20,000: one per partition file of the test sky) and partitions of up to 40k rows,
so that a lookup has to pick row groups.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from stellardb.service import adql, rowgroups, web

from .conftest import TIMEOUT_S

SMALL_GROUPS = 2048


@pytest.fixture(scope="module")
def grouped(service_db, tmp_path_factory):
    """(Served, DuckDB on its files) of a release of the test sky with SMALL_GROUPS-row row groups and
    partitions of up to 40k rows (up to several row groups a file)."""
    from stellardb.release import reader, writer
    from stellardb.service.served import open_release

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(writer, "ROW_GROUP_ROWS", SMALL_GROUPS)
        result = writer.write_release(service_db, "groups-1", out=tmp_path_factory.mktemp("groups"),
                                      max_rows=40_000)
    served = open_release(result.path, memory_limit="1GB")
    con = reader.connect(result.path)
    yield served, con
    con.close()
    served.retire()


class _Holder:
    def __init__(self, served):
        self.served = served

    def lease(self):
        return self.served.lease()


def _by_duckdb(served, source_id):
    """star_rows with the row-group reader switched off: every row from the service's DuckDB."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rowgroups.ReleaseRowGroups, "table", lambda self, name, timeout_s: None)
        return web.star_rows(_Holder(served), source_id, TIMEOUT_S)


@pytest.fixture(scope="module")
def stars(grouped) -> list[int]:
    """40 random stars, and those at the edges: the pole, RA 0 from both sides, without a SkyMapper
    match, without a prediction, with most labels, with most neighbours within 10 arcsec."""
    from scipy.spatial import cKDTree

    _, con = grouped
    rng = np.random.default_rng(5)
    sky = con.execute("select source_id, ra, dec from gaia order by source_id").fetchnumpy()
    ids = [int(i) for i in sky["source_id"]]
    picked = [ids[i] for i in rng.choice(len(ids), 40, replace=False)]
    for sql in ("select source_id from gaia order by dec limit 1",
                "select source_id from gaia order by ra limit 1",
                "select source_id from gaia order by ra desc limit 1",
                ("select source_id from gaia anti join xmatch on xmatch.gaia_source_id = gaia.source_id "
                 "order by source_id limit 1"),
                "select source_id from gaia anti join predictions using (source_id) order by source_id limit 1",
                "select source_id from labels group by 1 order by count(*) desc, 1 limit 1"):
        picked.append(int(con.execute(sql).fetchone()[0]))
    ra, dec = np.radians(sky["ra"]), np.radians(sky["dec"])
    tree = cKDTree(np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)]))
    crowded = np.argmax([len(n) for n in tree.query_ball_point(tree.data, math.radians(10 / 3600))])
    picked.append(ids[int(crowded)])
    return picked


def _plain(found: dict) -> dict:
    return {k: v for k, v in found.items() if k != "served"}


def test_rows_from_row_groups_are_duckdbs(grouped, stars):
    served, _ = grouped
    calls = {"read": 0}
    real_rows = rowgroups._TableFiles.rows

    def counted(self, *args, **kwargs):
        found = real_rows(self, *args, **kwargs)
        calls["read"] += found is not None
        return found

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rowgroups._TableFiles, "rows", counted)
        matched = 0
        for source_id in stars:
            fast = web.star_rows(_Holder(served), source_id, TIMEOUT_S)
            assert fast is not None, source_id
            assert _plain(fast) == _plain(_by_duckdb(served, source_id)), source_id
            matched += bool(fast["xmatch"])
    # every table of every star was read from the row groups (none fell back to DuckDB; skymapper
    # is read for a star with a match only), and the files have many row groups each
    assert calls["read"] == 6 * len(stars) + matched
    gaia = served.row_groups().table("gaia", TIMEOUT_S)
    groups = [gaia.groups(f) for _, _, f in gaia.spec.partitions]
    assert max(len(lo) for lo, _ in groups) >= 3 and sum(len(lo) for lo, _ in groups) > 2 * len(groups)
    # at least one star of each kind the page shows something for
    shown = [web.star_rows(_Holder(served), s, TIMEOUT_S) for s in stars]
    for key in ("predictions", "distances", "labels", "xmatch", "skymapper", "neighbours"):
        assert any(f[key] for f in shown), key
        assert any(not f[key] for f in shown) or key in ("distances", "xmatch"), key


@pytest.mark.parametrize("radius_arcsec", [web.NEIGHBOUR_RADIUS_ARCSEC, 900.0])
def test_rows_from_row_groups_against_duckdb_on_the_files(grouped, stars, radius_arcsec, monkeypatch):
    """DuckDB on the release directly (no translator, no service): the same rows, same types (and
    neighbours within 15 arcmin: several, in their order)."""
    served, con = grouped
    monkeypatch.setattr(web, "NEIGHBOUR_RADIUS_ARCSEC", radius_arcsec)
    most = 0

    def duck(sql, *params):
        cursor = con.execute(sql, list(params))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    for source_id in stars[-17:]:
        found = web.star_rows(_Holder(served), source_id, TIMEOUT_S)
        assert found["gaia"] == duck("select * from gaia where source_id = ?", source_id)[0]
        for table in ("predictions", "distances"):
            assert found[table] == duck(f"select * from {table} where source_id = ?", source_id)
        assert sorted(found["labels"], key=lambda r: r["survey"]) == \
            duck("select * from labels where source_id = ? order by survey", source_id)
        assert found["xmatch"] == duck("select * from xmatch where gaia_source_id = ?", source_id)
        assert [{k: v for k, v in r.items() if not k.startswith("xmatch_")} for r in found["skymapper"]] == duck(
            "select s.* from xmatch as x join skymapper as s on s.object_id = x.skymapper_object_id "
            "where x.gaia_source_id = ? order by s.object_id", source_id)
        star = found["gaia"]
        near = duck("select source_id, ra, dec, phot_g_mean_mag, bp_rp, teff, logg, feh, "
                    "vector_sep_arcsec(sky_x(ra, dec), sky_y(ra, dec), sky_z(ra, dec), sky_x($2, $3), sky_y($2, $3), "
                    "sky_z($2, $3)) / 3600.0 * 3600 as sep_arcsec from catalogue where source_id <> $1 and "
                    "vector_sep_arcsec(sky_x(ra, dec), sky_y(ra, dec), sky_z(ra, dec), sky_x($2, $3), sky_y($2, $3), "
                    "sky_z($2, $3)) <= $4 * 3600.0 order by sep_arcsec, source_id",
                    source_id, star["ra"], star["dec"], radius_arcsec / 3600)
        assert found["neighbours"] == near
        most = max(most, len(near))
    assert most >= (4 if radius_arcsec > 60 else 1)


def test_a_lookup_past_its_limits_is_asked_of_duckdb(grouped, stars, monkeypatch):
    """No row group may be read (MAX_ROW_GROUPS 0), or one footer kept at a time: the same rows."""
    served, _ = grouped
    stars = stars[-8:]
    expected = [_plain(_by_duckdb(served, s)) for s in stars]
    monkeypatch.setattr(rowgroups, "FOOTER_CACHE_BYTES", 1)
    fresh = rowgroups.ReleaseRowGroups(served)
    monkeypatch.setattr(served, "row_groups", lambda: fresh)
    assert [_plain(web.star_rows(_Holder(served), s, TIMEOUT_S)) for s in stars] == expected
    assert len(fresh._footers) == 1
    monkeypatch.setattr(rowgroups, "MAX_ROW_GROUPS", 0)
    read = []
    monkeypatch.setattr(pytest.importorskip("pyarrow.parquet").ParquetFile, "read_row_group",
                        lambda *a, **k: read.append(1))
    assert [_plain(web.star_rows(_Holder(served), s, TIMEOUT_S)) for s in stars] == expected
    assert not read


def test_the_python_cone_test_is_duckdbs_to_the_bit(release_con):
    """rowgroups.in_circle and the neighbours' separation repeat the translated SQL in Python: the
    same doubles as DuckDB's macros, on random pairs, close pairs, the poles and RA 0/360."""
    rng = np.random.default_rng(1)
    n = 20_000
    ra, dec = rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    ra0, dec0 = rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    close = slice(0, n // 2)
    ra0[close] = (ra[close] + rng.normal(0, 3 / 3600, n // 2)) % 360
    dec0[close] = np.clip(dec[close] + rng.normal(0, 3 / 3600, n // 2), -90, 90)
    ra[:200], dec0[200:400], dec[400:600], ra0[600:800] = 0.0, 90.0, -90.0, 359.99999999
    centres = np.array([adql._unit(float(r), float(d)) for r, d in zip(ra0, dec0)])
    duck = release_con.execute(
        "select vector_sep_arcsec(sky_x(ra, dec), sky_y(ra, dec), sky_z(ra, dec), x, y, z) as sep, "
        "vector_sep_arcsec(sky_x(ra, dec), sky_y(ra, dec), sky_z(ra, dec), x, y, z) / 3600.0 * 3600 as shown "
        "from (select unnest($1::double[]) as ra, unnest($2::double[]) as dec, unnest($3::double[]) as x, "
        "unnest($4::double[]) as y, unnest($5::double[]) as z)",
        [ra.tolist(), dec.tolist(), *(centres[:, i].tolist() for i in range(3))]).fetchnumpy()
    ours = np.array([rowgroups.vector_sep_arcsec(rowgroups.sky_unit(float(r), float(d)), tuple(c))
                     for r, d, c in zip(ra, dec, centres)])
    assert np.array_equal(ours, duck["sep"])
    assert np.array_equal(ours / 3600.0 * 3600, duck["shown"])
    # a radius of exactly a row's separation keeps the row, a hair less does not
    import pyarrow as pa

    for i in range(0, 1000, 97):
        table = pa.table({"ra": [float(ra[i])], "dec": [float(dec[i])]})
        radius_deg = float(duck["sep"][i]) / 3600.0
        keep = rowgroups.in_circle("ra", "dec", tuple(centres[i]), radius_deg)(table)
        assert list(keep) == ([0] if duck["sep"][i] <= radius_deg * 3600.0 else [])
        below = rowgroups.in_circle("ra", "dec", tuple(centres[i]), math.nextafter(radius_deg, 0) * 0.999999)(table)
        assert list(below) == []


def test_cone_ranges_call_cdshealpix_as_its_wrapper_does(monkeypatch):
    """reader.cone_ranges calls cdshealpix's compiled cone search with the radians astropy would
    give it: the same ranges as through cdshealpix.nested.cone_search, at RA 0/360, the poles, tiny
    and large cones."""
    from stellardb.release import reader

    assert reader._native_cone_search() is not None  # the fast call is the one in use
    rng = np.random.default_rng(2)
    cones = [(0.0, 0.0, 1.0), (-1e-20, 10.0, 5.0), (359.9999999999, -89.9999, 30.0), (0.0, 90.0, 1.0),
             (0.0, -90.0, 3600.0), (180.0, 45.0, 36000.0), (12.3, 45.6, 1e-3), (720.5, -3.0, 10.0)]
    cones += [(float(rng.uniform(-360, 720)), float(np.degrees(np.arcsin(rng.uniform(-1, 1)))),
               float(10 ** rng.uniform(-3, 5.5))) for _ in range(400)]
    fast = [reader.cone_ranges(*c) for c in cones]
    monkeypatch.setattr(reader, "_native_cone_search", lambda: None)
    assert fast == [reader.cone_ranges(*c) for c in cones]


# -- /scs ------------------------------------------------------------------------------------------
def _cones(con, n: int = 30) -> list[tuple[float, float, float]]:
    """(ra, dec, radius deg): around random stars (1 arcsec to 3 degrees), at the pole, across RA 0,
    and radii that are exactly a star's separation (the row on the edge is in)."""
    rng = np.random.default_rng(9)
    sky = con.execute("select ra, dec from gaia order by source_id").fetchnumpy()
    picks = rng.choice(len(sky["ra"]), n, replace=False)
    cones = [(float(sky["ra"][i]), float(sky["dec"][i]), float(10 ** rng.uniform(-3.5, 0.5))) for i in picks]
    cones += [(0.0, -90.0, 3.0), (359.9, -30.0, 0.5), (0.05, -30.0, 0.5), (360.0, 0.0, 0.3)]
    for i in picks[:10]:
        ra0, dec0 = float(sky["ra"][i] + 0.01), float(sky["dec"][i] - 0.01)
        edge = con.execute("select vector_sep_arcsec(sky_x($1, $2), sky_y($1, $2), sky_z($1, $2), sky_x($3, $4), "
                           "sky_y($3, $4), sky_z($3, $4)) / 3600.0", [sky["ra"][i], sky["dec"][i], ra0, dec0]).fetchone()[0]
        cones.append((ra0 % 360, dec0, float(edge)))
    return cones


def _by_translation(served, table, position, ra, dec, radius, columns):
    """The same cone as ADQL, translated and run on the service's DuckDB."""
    query = (f"SELECT {', '.join(columns)} FROM {served.schema}.{table} WHERE "
             f"1 = CONTAINS(POINT({position[0]}, {position[1]}), CIRCLE({ra!r}, {dec!r}, {radius!r}))")
    translation = adql.translate(query, served.tables, default_schema=served.schema)
    return served.execute(translation.sql, TIMEOUT_S)


@pytest.mark.parametrize("table", ["catalogue", "skymapper"])
def test_cone_from_row_groups_is_the_translated_querys(grouped, table):
    served, con = grouped
    position = ("raj2000", "dej2000") if table == "skymapper" else ("ra", "dec")
    key = "object_id" if table == "skymapper" else "source_id"
    every = [c.name for c in served.columns[table]]
    answered, rows_seen = 0, 0
    for k, (ra, dec, radius) in enumerate(_cones(con)):
        columns = every if k % 3 == 0 else [key, *position, every[-1]]
        found = rowgroups.cone(served, table, position, ra, dec, radius, columns, TIMEOUT_S)
        expected = _by_translation(served, table, position, ra, dec, radius, columns)
        if found is None:  # a wide cone: DuckDB answers (more than MAX_ROW_GROUPS row groups)
            continue
        answered += 1
        got, output = found
        assert [c.name for c in output] == columns and all(c.table.name == table for c in output)
        assert got.schema.equals(expected.schema), (got.schema, expected.schema)
        assert got.sort_by(key).equals(expected.sort_by(key)), (ra, dec, radius)
        rows_seen += got.num_rows
    assert answered >= 25 and rows_seen > 100


def test_numpys_cone_test_with_its_exact_recheck_is_duckdbs(release_con):
    """rowgroups.within (numpy, rows near the edge rechecked exactly) keeps exactly the rows DuckDB's
    translated test keeps, radii set to rows' exact separations included."""
    import pyarrow as pa

    rng = np.random.default_rng(4)
    n = 50_000
    ra0, dec0 = 10.0, -89.5
    ra = (ra0 + rng.uniform(-40, 40, n)) % 360
    dec = np.clip(dec0 + rng.normal(0, 0.5, n), -90, 90)
    ra[:100], dec[:100] = 0.0, -90.0
    centre = adql._unit(ra0, dec0)
    seps = release_con.execute(
        "select vector_sep_arcsec(sky_x(ra, dec), sky_y(ra, dec), sky_z(ra, dec), $3, $4, $5) as s from "
        "(select unnest($1::double[]) as ra, unnest($2::double[]) as dec)",
        [ra.tolist(), dec.tolist(), *centre]).fetchnumpy()["s"]
    table = pa.table({"ra": ra, "dec": dec})
    for radius_deg in (*(float(seps[i]) / 3600.0 for i in rng.choice(n, 8)), 0.3, 1.0):
        kept = rowgroups.within("ra", "dec", centre, radius_deg)(table)
        assert kept.tolist() == np.flatnonzero(seps <= radius_deg * 3600.0).tolist(), radius_deg


def test_scs_answers_as_through_duckdb(client, monkeypatch, release_con):
    """/scs on the service (the row groups) and with rowgroups.cone switched off (the translated
    query on DuckDB): the same VOTable rows and fields."""
    from astropy.io.votable import parse

    def table(response):
        assert response.status_code == 200, response.text[:300]
        votable = parse(__import__("io").BytesIO(response.content)).get_first_table()
        got = votable.to_table()
        return [f.name for f in votable.fields], [(f.datatype, f.unit, f.ucd) for f in votable.fields], \
            sorted(tuple(str(v) for v in row) for row in got)

    sky = release_con.execute("select ra, dec from gaia using sample 6 rows (reservoir, 3)").fetchall()
    cones = [{"RA": ra, "DEC": dec, "SR": 0.2, "VERB": verb} for (ra, dec), verb in zip(sky, "123123")]
    cones += [{"RA": 0.0, "DEC": -90.0, "SR": 2.0}, {"RA": 359.99, "DEC": -20, "SR": 0.7}, {"RA": 1, "DEC": 1, "SR": 0}]
    calls = []
    real = rowgroups.cone
    monkeypatch.setattr(rowgroups, "cone", lambda *a, **k: calls.append(1) or real(*a, **k))
    direct = [table(client.get("/scs", params=p)) for p in cones]
    assert len(calls) == len(cones)
    monkeypatch.setattr(rowgroups, "cone", lambda *a, **k: None)
    assert direct == [table(client.get("/scs", params=p)) for p in cones]
    assert sum(len(rows) for _, _, rows in direct) > 20
