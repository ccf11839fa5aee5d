"""What the service says about its tables: TAP_SCHEMA rows and the VOSI tableset.

Both come from the same :class:`Column` list per table: DuckDB's type of each column of the
release (mapped to the VOTable datatype the results carry) and the unit, UCD and
description the release stores in its VO-Parquet header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

#: the Gaia source key of the tables co-partitioned with gaia, and the xmatch keys (TAP_SCHEMA.keys)
FOREIGN_KEYS = (
    ("predictions", "gaia", (("source_id", "source_id"),), "The Gaia source of each prediction"),
    ("catalogue", "gaia", (("source_id", "source_id"),), "The Gaia source of each catalogue row"),
    ("distances", "gaia", (("source_id", "source_id"),), "The Gaia source of each distance"),
    ("labels", "gaia", (("source_id", "source_id"),), "The Gaia source each label belongs to"),
    ("xmatch", "gaia", (("gaia_source_id", "source_id"),), "The Gaia side of each match"),
    ("xmatch", "skymapper", (("skymapper_object_id", "object_id"),), "The SkyMapper side of each match"),
)

#: the links between the TAP_SCHEMA tables (TAP 1.1 section 4), described in TAP_SCHEMA.keys too
TAP_SCHEMA_KEYS = (
    ("tables", "schemas", (("schema_name", "schema_name"),), "The schema of each table"),
    ("columns", "tables", (("table_name", "table_name"),), "The table of each column"),
    ("keys", "tables", (("from_table", "table_name"),), "The table holding the foreign key"),
    ("keys", "tables", (("target_table", "table_name"),), "The table the foreign key points to"),
    ("key_columns", "keys", (("key_id", "key_id"),), "The key of each column pair"),
)

#: columns a client shows first (TAP_SCHEMA.columns.principal = 1)
PRINCIPAL = {"source_id", "object_id", "gaia_source_id", "skymapper_object_id", "ra", "dec", "raj2000", "dej2000",
             "phot_g_mean_mag", "bp_rp", "parallax", "teff", "logg", "feh", "e_teff", "e_logg", "e_feh", "model",
             "r_med_geo", "survey", "sep_arcsec", "g_psf", "r_psf"}

#: columns the service searches by index (TAP_SCHEMA.columns.indexed = 1): positions, through _healpix_29
INDEXED = {"_healpix_29", "ra", "dec", "raj2000", "dej2000"}

#: SQL-92 reserved words (ADQL 2.1 section 2.1.3) that are, or could be, column names here
RESERVED = frozenset("""
ABSOLUTE ACTION ALL AND ANY AS ASC AT AVG BETWEEN BIT BOTH BY CASE CAST CHAR CHARACTER CHECK COLUMN COUNT CROSS
CURRENT DATE DAY DEFAULT DESC DISTINCT DOMAIN ELSE END ESCAPE EXCEPT EXISTS EXTERNAL FALSE FIRST FOR FROM FULL
GLOBAL GROUP HAVING HOUR IN INNER INTERSECT INTERVAL INTO IS JOIN KEY LAST LEADING LEFT LEVEL LIKE LOCAL MATCH MAX MIN
MINUTE MODULE MONTH NAMES NATURAL NOT NULL OF ON ONLY OR ORDER OUTER OUTPUT PARTIAL POSITION PRIOR PUBLIC REAL
REFERENCES RELATIVE RIGHT ROWS SCHEMA SECOND SECTION SELECT SESSION SET SIZE SOME SPACE SUM TABLE THEN TIME
TIMESTAMP TO TRAILING TRUE UNION UNKNOWN USER USING VALUE VALUES VIEW WHEN WHERE WITH YEAR ZONE
ABS ACOS AREA ASIN ATAN ATAN2 BIGINT BOX CEILING CENTROID CIRCLE CONTAINS COORD1 COORD2 COORDSYS COS COT DEGREES
DISTANCE EXP FLOOR ILIKE INTERSECTS IN_UNIT LOG LOG10 LOWER MOD OFFSET PI POINT POLYGON POWER RADIANS REGION RAND
ROUND SIN SQRT TOP TAN TRUNCATE UPPER
""".split())


def adql_name(name: str) -> str:
    """A column name as TAP metadata must give it: delimited (``"_healpix_29"``, ``"size"``) when it is
    not a regular ADQL identifier or is a reserved word, so clients quote it in their queries."""
    return name if re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name) and name.upper() not in RESERVED else f'"{name}"'


TABLE_DESCRIPTIONS = {
    "gaia": "Gaia DR3 gaia_source: every ingested column (ICRS, epoch J2016.0)",
    "skymapper": "SkyMapper DR4 master table (positions raj2000, dej2000: ICRS at each object's mean epoch)",
    "distances": "Bailer-Jones et al. (2021) geometric and photogeometric distances, with the Gaia position",
    "labels": "Spectroscopic reference labels (Teff, log g, [Fe/H]) per Gaia source, with the Gaia position",
    "xmatch": "Gaia DR3 x SkyMapper crossmatch (propagated to each SkyMapper epoch), with the Gaia position",
    "predictions": "stellardb's predicted Teff, log g and [Fe/H] with errors and flags, one model",
    "catalogue": "One row per Gaia source: astrometry, photometry, distance, SkyMapper, label and the predictions "
                 "(start here)",
}


@dataclass(frozen=True)
class Column:
    name: str
    datatype: str              # VOTable datatype: boolean, short, int, long, float, double, char
    arraysize: str | None      # "*" for text
    xtype: str | None          # "timestamp" for times
    unit: str | None
    ucd: str | None
    description: str | None
    principal: bool = False
    indexed: bool = False
    std: bool = False


def votable_type(duckdb_type: str) -> tuple[str, str | None, str | None]:
    """(datatype, arraysize, xtype) of a DuckDB column type, as the service's VOTables write it
    (stellardb.catalog.export.to_astropy and votable_xml)."""
    t = duckdb_type.upper()
    simple = {"BOOLEAN": "boolean", "TINYINT": "short", "SMALLINT": "short", "INTEGER": "int", "BIGINT": "long",
              "UTINYINT": "unsignedByte", "USMALLINT": "int", "UINTEGER": "long", "FLOAT": "float",
              "DOUBLE": "double"}
    if t in simple:
        return simple[t], None, None
    if t.startswith("DECIMAL"):
        return "double", None, None
    if t.startswith("TIMESTAMP") or t == "DATE":
        return "char", "*", "timestamp"
    return "char", "*", None  # VARCHAR, HUGEINT, UBIGINT, UUID, nested: as text


def release_columns(con, tables) -> dict[str, list[Column]]:
    """Each table's columns with type, unit, UCD and description (``column_metadata`` of the release)."""
    meta = {(t, c): (u, ucd, d) for t, c, u, ucd, d in
            con.execute("select table_name, column_name, unit, ucd, description from column_metadata").fetchall()}
    found = {}
    for table in tables:
        columns = []
        for name, kind in con.execute(f"select column_name, column_type from (describe main.{table})").fetchall():
            unit, ucd, description = meta.get((table, name), (None, None, None))
            datatype, arraysize, xtype = votable_type(kind)
            ucd = ucd if ucd and _valid_ucd(ucd) else None
            columns.append(Column(name, datatype, arraysize, xtype, unit or None, ucd or None, description or None,
                                  principal=name in PRINCIPAL, indexed=name in INDEXED))
        found[table] = columns
    return found


def _valid_ucd(ucd: str) -> bool:
    """A UCD1+ that astropy's controlled vocabulary accepts (a release of an older database may
    carry one that is not: it is left out rather than sent to clients that check)."""
    from astropy.io.votable.ucd import parse_ucd

    try:
        parse_ucd(ucd, check_controlled_vocabulary=True, has_colon=False)
    except ValueError:
        return False
    return True


# TAP_SCHEMA as TAP 1.1 (section 4) defines it: (column, VOTable datatype, description)
_TAP_SCHEMA = {
    "schemas": (("schema_name", "char", "schema name for reference to tap_schema.schemas"),
                ("utype", "char", "lists the utypes of schemas in the tableset"),
                ("description", "char", "describes schemas in the tableset"),
                ("schema_index", "int", "recommended sort order when listing schemas")),
    "tables": (("schema_name", "char", "the schema this table belongs to"),
               ("table_name", "char", "the fully qualified table name"),
               ("table_type", "char", "one of: table view"),
               ("utype", "char", "lists the utype of tables in the tableset"),
               ("description", "char", "describes tables in the tableset"),
               ("table_index", "int", "recommended sort order when listing tables")),
    "columns": (("table_name", "char", "the table this column belongs to"),
                ("column_name", "char", "the column name"),
                ("utype", "char", "lists the utypes of columns in the tableset"),
                ("ucd", "char", "the UCD of column if any"),
                ("unit", "char", "the unit of the column if any"),
                ("description", "char", "describes the columns in the tableset"),
                ("datatype", "char", "the ADQL datatype of the column"),
                ("arraysize", "char", "the VOTable arraysize of the column"),
                ("xtype", "char", "a DALI or custom extended type annotation"),
                ("size", "int", "deprecated: use arraysize"),
                ("principal", "int", "a principal column; 1 means 1, 0 means 0"),
                ("indexed", "int", "an indexed column; 1 means 1, 0 means 0"),
                ("std", "int", "a standard column; 1 means 1, 0 means 0"),
                ("column_index", "int", "recommended sort order when listing columns")),
    "keys": (("key_id", "char", "unique key to join to tap_schema.key_columns"),
             ("from_table", "char", "the table with the foreign key"),
             ("target_table", "char", "the table with the primary key"),
             ("utype", "char", "lists the utype of keys in the tableset"),
             ("description", "char", "describes keys in the tableset")),
    "key_columns": (("key_id", "char", "key to join to tap_schema.keys"),
                    ("from_column", "char", "column in the from_table"),
                    ("target_column", "char", "column in the target_table")),
}
_DUCKDB = {"char": "varchar", "int": "integer"}


def tap_schema_columns() -> dict[str, list[Column]]:
    """The columns of the TAP_SCHEMA tables themselves (they are described in TAP_SCHEMA too)."""
    return {table: [Column(name, kind, "*" if kind == "char" else None, None, None, None, text, principal=True,
                           std=True) for name, kind, text in columns]
            for table, columns in _TAP_SCHEMA.items()}


def create_tap_schema(con, schema: str, release_name: str, manifest: dict, columns: dict[str, list[Column]]) \
        -> dict[str, tuple[str, ...]]:
    """Create the tables of schema ``tap_schema`` in ``con`` describing ``columns``; their column names."""
    about = release_description(release_name, manifest)
    schemas = [(schema, None, about, 0), ("tap_schema", None, "Table and column metadata of this service (TAP 1.1)", 1)]
    tables, cols, keys, key_cols = [], [], [], []
    for i, (table, table_columns) in enumerate(columns.items()):
        rows = manifest.get("catalogues", {}).get(table, {}).get("rows")
        text = TABLE_DESCRIPTIONS.get(table, table) + (f"; {rows:,} rows" if isinstance(rows, int) else "")
        tables.append((schema, f"{schema}.{table}", "table", None, text, i))
        for k, c in enumerate(table_columns):
            cols.append(_column_row(f"{schema}.{table}", c, k))
    for i, (table, table_columns) in enumerate(tap_schema_columns().items()):
        tables.append(("tap_schema", f"tap_schema.{table}", "table", None, f"TAP_SCHEMA {table}", 100 + i))
        for k, c in enumerate(table_columns):
            cols.append(_column_row(f"tap_schema.{table}", c, k))
    for from_table, target, pairs, text in FOREIGN_KEYS:
        if from_table not in columns or target not in columns:
            continue
        key_id = f"{from_table}_{pairs[0][0]}"
        keys.append((key_id, f"{schema}.{from_table}", f"{schema}.{target}", None, text))
        key_cols.extend((key_id, a, b) for a, b in pairs)
    for from_table, target, pairs, text in TAP_SCHEMA_KEYS:
        key_id = f"tap_schema_{from_table}_{pairs[0][0]}"
        keys.append((key_id, f"tap_schema.{from_table}", f"tap_schema.{target}", None, text))
        key_cols.extend((key_id, a, b) for a, b in pairs)
    con.execute("create schema tap_schema")
    data = {"schemas": schemas, "tables": tables, "columns": cols, "keys": keys, "key_columns": key_cols}
    import pyarrow as pa

    for table, spec in _TAP_SCHEMA.items():
        definition = ", ".join(f'"{name}" {_DUCKDB[kind]}' for name, kind, _ in spec)
        con.execute(f"create table tap_schema.{table} ({definition})")
        if data[table]:
            # one INSERT from Arrow (executemany takes 0.4 s for a release's 600 column rows)
            rows = pa.table({name: pa.array([r[i] for r in data[table]], pa.string() if kind == "char" else pa.int32())
                             for i, (name, kind, _) in enumerate(spec)})
            con.register("_tap_rows", rows)
            con.execute(f"insert into tap_schema.{table} select * from _tap_rows")
            con.unregister("_tap_rows")
    return {table: tuple(name for name, _, _ in spec) for table, spec in _TAP_SCHEMA.items()}


def release_description(release_name: str, manifest: dict) -> str:
    """The release's manifest in words (TAP_SCHEMA.schemas and /tap/tables): when and by what it was
    made, the model and the ingested files with their SHA-256, so a result can be traced to its inputs."""
    model = manifest.get("model") or {}
    parts = [f"stellardb release {release_name}, made {manifest.get('created_utc', '?')} by stellardb "
             f"{manifest.get('stellardb_version', '?')} (DuckDB {manifest.get('duckdb_version', '?')}, hats "
             f"{manifest.get('hats_version', '?')})"]
    if model.get("name"):
        parts.append(f"Predictions of model {model['name']}"
                     + (f" (card sha256 {model['card_sha256']})" if model.get("card_sha256") else ""))
    files = [f"{i.get('table')}: {i.get('file')} ({i.get('rows', 0):,} rows, sha256 {i.get('sha256', '?')})"
             for i in manifest.get("ingests") or []]
    if files:
        parts.append("Ingested " + "; ".join(files))
    return ". ".join(parts) + "."


def _column_row(table_name: str, c: Column, index: int) -> tuple:
    return (table_name, adql_name(c.name), None, c.ucd, c.unit, c.description, c.datatype, c.arraysize, c.xtype, None,
            int(c.principal), int(c.indexed), int(c.std), index)


def tableset_xml(served) -> str:
    """The VOSI tableset (``/tap/tables``): every schema, table and column, and the foreign keys."""
    con = served.con.cursor()
    try:
        schemas = con.execute("select schema_name, description from tap_schema.schemas order by schema_index") \
            .fetchall()
        tables = con.execute("select schema_name, table_name, table_type, description from tap_schema.tables "
                             "order by table_index").fetchall()
        keys = con.execute("select k.key_id, k.from_table, k.target_table, k.description, c.from_column, "
                           "c.target_column from tap_schema.keys k join tap_schema.key_columns c using (key_id)"
                           ).fetchall()
    finally:
        con.close()
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<vosi:tableset xmlns:vosi="http://www.ivoa.net/xml/VOSITables/v1.0" '
           'xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1" '
           'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">']
    for schema, about in schemas:
        out.append(f"  <schema><name>{escape(schema)}</name>"
                   + (f"<description>{escape(about)}</description>" if about else ""))
        for table_schema, table_name, table_type, description in tables:
            if table_schema != schema:
                continue
            short = table_name.split(".", 1)[1]
            key = short if schema == served.schema else f"tap_schema.{short}"
            out.append(f'    <table type={quoteattr(table_type)}><name>{escape(table_name)}</name>'
                       f"<description>{escape(description or '')}</description>")
            for c in served.columns.get(key, ()):
                size = f" arraysize={quoteattr(c.arraysize)}" if c.arraysize else ""
                xtype = f" extendedType={quoteattr(c.xtype)}" if c.xtype else ""
                parts = [f"<name>{escape(adql_name(c.name))}</name>"]
                if c.description:
                    parts.append(f"<description>{escape(c.description)}</description>")
                if c.unit:
                    parts.append(f"<unit>{escape(c.unit)}</unit>")
                if c.ucd:
                    parts.append(f"<ucd>{escape(c.ucd)}</ucd>")
                parts.append(f'<dataType xsi:type="vs:VOTableType"{size}{xtype}>{c.datatype}</dataType>')
                flags = (["indexed"] if c.indexed else []) + (["principal"] if c.principal else []) + (
                    ["std"] if c.std else [])
                parts.extend(f"<flag>{f}</flag>" for f in flags)
                out.append("      <column>" + "".join(parts) + "</column>")
            for key_id, from_table, target, text, from_column, target_column in keys:
                if from_table == table_name:
                    out.append(f"      <foreignKey><targetTable>{escape(target)}</targetTable><fkColumn>"
                               f"<fromColumn>{escape(from_column)}</fromColumn><targetColumn>"
                               f"{escape(target_column)}</targetColumn></fkColumn>"
                               f"<description>{escape(text or '')}</description></foreignKey>")
            out.append("    </table>")
        out.append("  </schema>")
    out.append("</vosi:tableset>")
    return "\n".join(out) + "\n"
