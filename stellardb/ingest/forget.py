"""``stellardb ingests`` and ``stellardb forget``: list the ingested files, and undo one.

Forgetting an ingest removes, in one transaction, the rows that file brought
(every stored row carries its ``ingest_id``) and what was derived from them:

* the crossmatches (``xmatch``, ``xmatch_labels``) are materialised again from
  what remains, so a pair never points at a forgotten row;
* ``predictions`` made from the forgotten rows are deleted: every prediction of a
  forgotten Gaia source, and of the stars whose SkyMapper photometry or Bailer-Jones
  distance came from the forgotten file (they were network inputs).  Forgetting a
  label file keeps the predictions (labels are no input), and says that models
  trained on those labels are unchanged until they are retrained;
* the ``ingests`` row itself, so the same file can be ingested again.

Any failure rolls everything back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from stellardb.catalog import db, xmatch
from stellardb.catalog.surveys import SURVEYS
from stellardb.errors import UserError

#: tables whose rows carry an ingest_id
INGESTED_TABLES = ("gaia", *SURVEYS, "distances", "sos")


@dataclass
class Ingest:
    ingest_id: int
    table: str
    file: str
    sha256: str
    format: str | None
    preset: str | None
    rows: int  # rows the ingest stored
    rows_now: int  # of those, rows still in the table
    ingested_at: object


@dataclass
class ForgetPlan:
    """What forgetting an ingest deletes (counted before anything changes)."""

    ingest: Ingest
    rows: int
    predictions: int  # predictions of Gaia sources that go with the rows
    xmatch_pairs: int  # crossmatch pairs that involve the rows


@dataclass
class ForgetResult:
    plan: ForgetPlan
    xmatch_pairs: int | None  # pairs after the refresh (None: not refreshed)
    label_matches: int | None


def list_ingests(db_path) -> list[Ingest]:
    """Every ingested file, oldest first, with the rows it stored and how many are still there."""
    con = db.connect(db_path, read_only=True)
    try:
        return _ingests(con)
    finally:
        con.close()


def _ingests(con, where: str = "true", params: dict | None = None) -> list[Ingest]:
    counts = " union all ".join(f"select ingest_id, count(*) as n from {t} group by ingest_id" for t in INGESTED_TABLES)
    rows = con.execute(
        f"select i.ingest_id, i.table_name, i.file, i.sha256, i.format, i.preset, i.rows, coalesce(c.n, 0), "
        f"i.ingested_at from ingests i left join ({counts}) c using (ingest_id) where {where} order by i.ingest_id",
        params or {},
    ).fetchall()
    return [Ingest(*r) for r in rows]


def find_ingest(con, target: str) -> Ingest:
    """The ingest named by ``target``: its ingest_id, or the file (path, or same content by sha256)."""
    text = str(target).strip()
    if text.isdigit():
        found = _ingests(con, "i.ingest_id = $id", {"id": int(text)})
        if found:
            return found[0]
        raise UserError(f"No ingest with id {text}; `stellardb ingests` lists them.")
    path = Path(text)
    found = _ingests(con, "i.file = $f", {"f": str(path.absolute())})
    if not found and path.is_file():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        found = _ingests(con, "i.sha256 = $h", {"h": digest})
    if not found:
        raise UserError(f"{text} is neither an ingest id nor an ingested file; `stellardb ingests` lists them.")
    if len(found) > 1:
        ids = ", ".join(str(i.ingest_id) for i in found)
        raise UserError(f"{text} was ingested {len(found)} times (ingest ids {ids}, into different tables); "
                        "name one by its id.")
    return found[0]


def plan_forget(db_path, target: str) -> ForgetPlan:
    """Count what ``forget`` would delete, changing nothing (for the confirmation prompt)."""
    con = db.connect(db_path, read_only=True)
    try:
        return _plan(con, find_ingest(con, target))
    finally:
        con.close()


#: Per table: the Gaia sources whose network inputs came from an ingest's rows ($id).
DERIVED_STARS = {
    "gaia": "select source_id from gaia where ingest_id = $id",
    **{name: f"select gaia_source_id from {s.xmatch_table} where {s.xmatch_key} in "
             f"(select {s.key} from {s.table} where ingest_id = $id)" for name, s in SURVEYS.items()},
    "distances": "select source_id from distances where ingest_id = $id",
}


def _USED(table: str) -> str:
    """SQL restricting predictions to those a survey's rows went into: a prediction whose feature set
    does not include the survey (feature_set "gaia" for a forgotten PS1 file) did not use them.  A
    prediction without a feature_set (scored before it was recorded) may have: it goes."""
    if table not in SURVEYS:
        return ""
    return f" and (feature_set is null or list_contains(string_split(feature_set, '-'), '{table}'))"


def _plan(con, ingest: Ingest) -> ForgetPlan:
    table = ingest.table
    params = {"id": ingest.ingest_id}
    predictions = pairs = 0
    if table in DERIVED_STARS:
        predictions = con.execute(f"select count(*) from predictions where source_id in ({DERIVED_STARS[table]})"
                                  f"{_USED(table)}", params).fetchone()[0]
    if table == "gaia":
        pairs = sum(con.execute(f"select count(*) from {s.xmatch_table} where gaia_source_id in "
                                "(select source_id from gaia where ingest_id = $id)", params).fetchone()[0]
                    for s in SURVEYS.values())
    elif table in SURVEYS:
        s = SURVEYS[table]
        pairs = con.execute(f"select count(*) from {s.xmatch_table} where {s.xmatch_key} in "
                            f"(select {s.key} from {s.table} where ingest_id = $id)", params).fetchone()[0]
    return ForgetPlan(ingest=ingest, rows=ingest.rows_now, predictions=predictions, xmatch_pairs=pairs)


def forget(db_path, target: str) -> ForgetResult:
    """Remove one ingest's rows and everything derived from them, in one transaction.

    Parameters
    ----------
    target : str
        An ``ingest_id`` (``stellardb ingests``), or the ingested file (its path, or
        any copy with the same content).

    Raises
    ------
    UserError
        No such ingest, or the database is in use; nothing changes then.
    """
    con = db.connect(db_path, read_only=False)
    try:
        ingest = find_ingest(con, target)
        with db.transaction(con, f"forgetting ingest {ingest.ingest_id} ({ingest.file})"):
            plan = _plan(con, ingest)
            params = {"id": ingest.ingest_id}
            table = ingest.table
            if table in DERIVED_STARS:  # before the rows (and the pairs that lead to them) go
                con.execute(f"delete from predictions where source_id in ({DERIVED_STARS[table]}){_USED(table)}", params)
            con.execute(f"delete from {table} where ingest_id = $id", params)
            con.execute("delete from predictions where source_id not in (select source_id from gaia)")
            con.execute("delete from ingests where ingest_id = $id", params)
            pairs = labels = None
            touched = xmatch.surveys_touched_by(table)
            if touched:
                # pairs of the survey forgotten (or, for a Gaia file, of every survey) after the refresh
                pairs = sum(xmatch.refresh_survey(con, name) for name in touched)
            if table in ("gaia", "sos"):
                labels = xmatch.refresh_label_match(con) if db.row_count(con, "gaia") else _clear(con, "xmatch_labels")
        return ForgetResult(plan=plan, xmatch_pairs=pairs, label_matches=labels)
    finally:
        con.close()


def _clear(con, table: str) -> int:
    con.execute(f"delete from {table}")
    return 0
