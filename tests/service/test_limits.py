"""What a cheap request must not be able to cost, and answers the review found wrong (each of these
failed before its fix)."""

from __future__ import annotations

import io
import json
import warnings

import pytest
from astropy.io.votable import parse

from stellardb.service import adql, results


def _infos(body: bytes) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vot = parse(io.BytesIO(body), verify="ignore")
    return {(i.name, i.value): i.content for r in vot.resources for i in r.infos}


def test_many_stars_are_refused_before_they_cost(holder):
    """SELECT *,*,... repeats every name: the translation was quadratic in them (minutes for 3 KB)."""
    served = holder.current
    with pytest.raises(adql.AdqlError, match="more than 2,000 columns"):
        adql.translate("SELECT " + ",".join(["*"] * 1500) + " FROM gaia", served.tables, served.schema)
    names = adql._unique(["ra"] * 3000 + ["ra_2"])
    # a later real ra_2 keeps its name, so the repeats of ra skip it
    assert len(set(n.lower() for n in names)) == len(names) == 3001 and names[:3] == ["ra", "ra_3", "ra_4"]
    assert names[-2:] == ["ra_3001", "ra_2"]


@pytest.mark.parametrize("fmt", ["json", "votable/td"])
def test_answers_written_in_python_are_capped_in_values(client, holder, monkeypatch, fmt):
    """JSON and TABLEDATA are built value by value after DuckDB: at most results.CELLS values, then
    OVERFLOW with the reason (not MAXREC's)."""
    monkeypatch.setitem(results.CELLS, "json", 1000)
    monkeypatch.setitem(results.CELLS, "votable-td", 1000)
    r = client.get("/tap/sync", params={"QUERY": f"SELECT source_id, ra, dec, teff_gspphot FROM {holder.current.schema}.gaia",
                                        "MAXREC": 50_000, "RESPONSEFORMAT": fmt})
    assert r.status_code == 200
    if fmt == "json":
        body = json.loads(r.content)
        assert len(body["data"]) == 250 and body["query_status"] == "OVERFLOW"
    else:
        assert r.text.count("<TR>") == 250
        assert any(name == "QUERY_STATUS" and value == "OVERFLOW" and "RESPONSEFORMAT=parquet" in text
                   for (name, value), text in _infos(r.content).items())


def test_pruning_keeps_three_valued_logic_under_not(client, holder, release_con):
    """NULL positions (a left join without a match) under NOT: the pruned spatial test must be NULL
    where the exact test is, also for a region that meets no partition at all."""
    s = holder.current.schema
    base = f"SELECT COUNT(*) AS n FROM {s}.labels AS l LEFT JOIN {s}.gaia AS g ON g.source_id = l.source_id + 1 WHERE "
    for ra, dec in ((45.0, 60.0), (10.0, -30.0)):  # no star there (the sky is southern); many stars there
        pruned = f"NOT (1 = CONTAINS(POINT(g.ra, g.dec), CIRCLE({ra}, {dec}, 1)))"
        unpruned = f"NOT (DISTANCE(POINT(g.ra, g.dec), POINT({ra}, {dec})) * 1 <= 1)"
        counts = []
        for where in (pruned, unpruned, f"CONTAINS(POINT(g.ra, g.dec), CIRCLE({ra}, {dec}, 1)) = 0"):
            r = client.get("/tap/sync", params={"QUERY": base + where, "RESPONSEFORMAT": "csv"})
            counts.append(int(r.text.split()[1]))
        assert counts[0] == counts[1] == counts[2], (ra, dec, counts)


@pytest.mark.parametrize("region", ["CIRCLE(1e308 * 10, 0, 1)", "BOX(1e308 * 10, 0, 1, 1)",
                                    "POLYGON(1e308 * 10, 0, 1, 1, 2, 0)", "CIRCLE(1e308 * 10 - 1e308 * 10, 0, 1)"])
def test_infinite_or_nan_coordinates_are_not_internal_errors(client, holder, region):
    r = client.get("/tap/sync", params={
        "QUERY": f"SELECT COUNT(*) AS n FROM {holder.current.schema}.gaia WHERE 1 = CONTAINS(POINT(ra, dec), {region})"})
    assert r.status_code in (200, 400) and "Internal error" not in r.text and "nane0" not in r.text


def test_sums_of_integers_are_numbers(client, holder, release_con):
    """SUM over integers is a HUGEINT in DuckDB; the answer carries it as a long, not text."""
    r = client.get("/tap/sync", params={
        "QUERY": f"SELECT SUM(1) AS n, SUM(CAST(phot_g_mean_mag AS INTEGER)) AS g FROM {holder.current.schema}.gaia"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = parse(io.BytesIO(r.content), verify="exception").get_first_table()
    assert [f.datatype for f in table.fields] == ["long", "long"]
    want = release_con.execute("select count(*), sum(phot_g_mean_mag::integer) from gaia").fetchone()
    assert tuple(int(v) for v in table.array[0]) == tuple(int(v) for v in want)


def test_scs_errors_and_sr_zero(client):
    bad = client.get("/scs", params={"RA": "abc", "DEC": 0, "SR": 1})
    infos = _infos(bad.content)
    assert any(name == "Error" and "RA" in value for name, value in infos)  # SCS 1.03: the value explains
    empty = client.get("/scs", params={"RA": 10, "DEC": -30, "SR": 0})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = parse(io.BytesIO(empty.content), verify="ignore").get_first_table()
    assert empty.status_code == 200 and len(table.array) == 0 and [f.ucd for f in table.fields][:3] == \
        ["ID_MAIN", "POS_EQ_RA_MAIN", "POS_EQ_DEC_MAIN"]


def test_errors_name_the_release_too(client):
    for response in (client.get("/nowhere"), client.put("/tap/sync"), client.get("/tap/async")):
        assert response.headers["X-Stellardb-Release"] == "svc-1"
    assert "GET" in client.put("/tap/sync").headers["Allow"]


def test_query_cursors_keep_parquet_footers_cached(holder):
    """Queries run on cursors of the service's connection; a plain SET of DuckDB's footer cache
    reaches only the connection itself, and every cone then re-read every footer (21 -> 13 ms a
    cone on 10 M stars).  The settings that lock the service down must reach the cursors too."""
    served = holder.current
    with served.lease():
        cursor = served.con.cursor()
        try:
            settings = dict(cursor.execute(
                "select name, value from duckdb_settings() where name in ('parquet_metadata_cache', "
                "'enable_external_access', 'lock_configuration', 'autoload_known_extensions')").fetchall())
        finally:
            cursor.close()
    assert settings == {"parquet_metadata_cache": "true", "enable_external_access": "false",
                        "lock_configuration": "true", "autoload_known_extensions": "false"}
