"""ADQL 2.1 to DuckDB SQL: parse with sqlglot, check the tree, rewrite it.

The TAP service runs what clients send on a DuckDB that can read files, so the translation
is the security boundary.  Nothing is passed through: :func:`translate` rebuilds every node
of the output from a node of the ADQL tree that it knows (a WHITELIST of node types, each
with the arguments it may carry, and of function names), resolving every table and column
against the tables the service publishes.  Anything else - DuckDB table functions
(``read_csv``, ``glob``), ``::`` casts, lambdas, ``EXCLUDE``, ``WITH``, a second statement -
is refused with an :class:`AdqlError` that says what to write instead.  The text is also
checked before parsing (length, parenthesis depth, tokens ADQL lacks) because sqlglot's
recursive-descent parser takes ~20 Python frames per parenthesis.

What the rewrite changes besides names:

* ``ORDER BY``: services on PostgreSQL (the reference for ADQL users) sort NULL as the
  largest value, DuckDB puts NULLs last both ways; every ordering is made explicit
  (ASC NULLS LAST, DESC NULLS FIRST) so that results agree with other TAP services.
* ``*`` is expanded into quoted column references, so that :attr:`Translation.columns`
  names the source of every output column (units, UCDs) and output names are unique.
* ADQL functions get their DuckDB spelling (``LOG`` is the natural log, DuckDB's ``log`` is
  base 10; ``TRUNCATE(x, n)``; ``RAND``).
* Geometry: ``CONTAINS``/``INTERSECTS`` of a point in a circle, box or convex polygon become
  exact tests on unit vectors (the ``sky_x/y/z`` and ``vector_sep_arcsec`` macros of
  ``sql/10_macros``), accurate at tiny separations, across RA 0/360 and at the poles.
* HEALPix pruning: the release is sorted by ``_healpix_29`` and DuckDB skips row groups by
  their min/max statistics, but only when the filter names that column.  A spatial test of
  a table's own position against a constant region therefore gets an extra conjunct,
  ``_healpix_29`` ranges covering the region (computed here, from cdshealpix), in front of
  the exact test: a small cone reads a few row groups instead of the whole release, and no
  row is lost because the ranges cover the region and the exact test stays.
"""

from __future__ import annotations

import functools
import math
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.dialects.tsql import TSQL
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

#: longest ADQL text accepted (characters)
MAX_LENGTH = 100_000
#: most columns of a result (a query of many ``*`` would otherwise name tens of thousands)
MAX_COLUMNS = 2_000
#: most vertices of a POLYGON
MAX_POLYGON_VERTICES = 500
#: deepest parenthesis nesting accepted; the tree may be MAX_DEPTH * 2 deep (a function call
#: is two levels)
MAX_DEPTH = 200
#: sqlglot's parser takes ~20 frames per parenthesis level: enough for MAX_DEPTH levels
_RECURSION_LIMIT = 10_000
#: radius added to a pruning cone (arcsec): rounding may never move a row out of its ranges
_PRUNE_MARGIN_ARCSEC = 1e-3
# below this fraction of their span covered, the OR of a cone's ranges is kept (see pruning): a
# cone across a coarse pixel's edge has ranges at both ends of a wide span
_OR_WORTH_IT = 0.05
#: the largest radius (degrees) a positional join runs on zone cells (30 arcsec wide): a row is
#: offered to ~25 cells at 60 arcsec, to hundreds beyond
_XMATCH_MAX_RADIUS_DEG = 60 / 3600
#: the farthest a star's motion is followed in an upload match with epochs (degrees): 0.5 deg in
#: 100 years is 18 arcsec/yr, beyond any star's (Barnard's: 10.4 arcsec/yr)
_MAX_MOTION_REACH_DEG = 0.5
#: the schema of uploaded tables (stellardb.service.upload), whose rows carry a hidden number
UPLOAD_SCHEMA = "tap_upload"
_BEST_MATCH_USE = ("BEST_MATCH (a stellardb extension) joins an uploaded table to a table of this service, each "
                   "upload row to its nearest partner within a constant radius of at most 60 arcsec: FROM "
                   "TAP_UPLOAD.t JOIN catalogue AS c ON 1 = BEST_MATCH(POINT(c.ra, c.dec), CIRCLE(t.ra, t.dec, "
                   "1/3600.))")
#: the hidden row number every uploaded table has (BEST_MATCH: the nearest partner of each row)
UPLOAD_ROW = "_stellardb_row"


class AdqlError(ValueError):
    """One line that says what is wrong and how to fix it; names the offending token and its
    line/column when known (e.g. 'line 1, column 22: unknown column "raa" in gaia; columns
    include ra, dec, ...')."""


@dataclass(frozen=True)
class Table:
    """A table the queries may read."""

    schema: str                       # ADQL schema name, lower case, e.g. "demo_1" or "tap_schema"
    name: str                         # ADQL table name, lower case, e.g. "gaia"
    sql_name: str                     # what the DuckDB SQL reads, already quoted, e.g. '"demo_1"."gaia"'
    columns: tuple[str, ...]          # the table's column names (lower case), in order
    position: tuple[str, str] | None = None   # (ra, dec) columns, degrees ICRS, of healpix_column
    healpix_column: str | None = None         # "_healpix_29": NESTED HEALPix index, order 29
    #: the table's files as (first, last) healpix_column value of each and its name in file_column,
    #: a column of sql_name that users do not see: a spatial test then also names the files it needs
    partitions: tuple[tuple[int, int, str], ...] = ()
    file_column: str | None = None
    #: an uploaded table: coverage(reach_arcsec) gives healpix_column ranges that hold every position
    #: within reach of its rows (None: too scattered to be worth it); a positional join prunes by it
    coverage: Callable[[float], list[tuple[int, int]] | None] | None = field(default=None, compare=False)
    #: an uploaded table: cells(order, ra, dec) names a table, made for the query, of its rows'
    #: number, position and each order-``order`` HEALPix pixel within a quarter pixel of it
    cells: Callable[[int, str, str], str] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class OutputColumn:
    """One column of the result."""

    name: str                   # result column name, as the ADQL spelled it (alias, or the column)
    table: Table | None         # for a bare column reference (also from * expansion): its Table
    column: str | None          # ... and that table's column name; None for computed expressions


@dataclass(frozen=True)
class Translation:
    """The DuckDB query of an ADQL query, and what it returns."""

    sql: str                         # one DuckDB SELECT statement
    columns: tuple[OutputColumn, ...]
    top: int | None                  # the query's TOP n, if any (the service also caps rows itself)
    pruned: int                      # how many spatial predicates got HEALPix range pruning


class ADQL(TSQL):
    """sqlglot dialect of ADQL: T-SQL's ``SELECT TOP n``, with standard SQL where ADQL has it.

    Every function call parses as :class:`exp.Anonymous` under the name the query wrote
    (T-SQL would turn LOG into LN, ...), so the whitelist sees ADQL's names, and only CAST
    has special syntax.
    """

    # PostgreSQL's order: ASC puts NULLs last, DESC first (the parser records it per item)
    NULL_ORDERING = "nulls_are_large"

    class Tokenizer(TSQL.Tokenizer):
        IDENTIFIERS = ['"']  # no [bracketed] or `backquoted` identifiers
        KEYWORDS = {**TSQL.Tokenizer.KEYWORDS, "TIMESTAMP": TokenType.TIMESTAMP}

    class Parser(TSQL.Parser):
        FUNCTIONS: dict = {}
        FUNCTION_PARSERS = {"CAST": TSQL.Parser.FUNCTION_PARSERS["CAST"]}


class _Output(DuckDB):
    """DuckDB SQL with every ORDER BY item's NULL placement written out."""

    class Generator(DuckDB.Generator):
        def ordered_sql(self, expression: exp.Ordered) -> str:
            direction = " DESC" if expression.args.get("desc") else " ASC"
            nulls = " NULLS FIRST" if expression.args.get("nulls_first") else " NULLS LAST"
            return f"{self.sql(expression, 'this')}{direction}{nulls}"


# --- the whitelist --------------------------------------------------------------------------

#: tokens ADQL does not have; sqlglot would parse them into something that looks like ADQL
#: (``x::int`` is a Cast) or that the whitelist would refuse with a less useful message
_REFUSED_TOKENS = {
    TokenType.DCOLON: "'::' casts are not ADQL; use CAST(x AS type)",
    TokenType.L_BRACKET: "'[' is not ADQL (no arrays); quote names with double quotes",
    TokenType.L_BRACE: "'{' is not ADQL (no structs)",
    TokenType.ARROW: "'->' is not ADQL (no lambdas or JSON operators)",
    TokenType.DARROW: "'->>' is not ADQL (no JSON operators)",
    TokenType.FARROW: "'=>' is not ADQL",
    TokenType.PARAMETER: "'@' is not ADQL (no variables)",
    TokenType.PLACEHOLDER: "'?' is not ADQL (no parameters)",
    TokenType.LIMIT: "LIMIT is not ADQL; use SELECT TOP n ...",
}

#: the arguments each node type may carry (any other set argument is refused)
_ARGS: dict[type, set[str]] = {
    exp.Select: {"expressions", "distinct", "from_", "joins", "where", "group", "having", "order", "limit",
                 "offset"},
    exp.Union: {"this", "expression", "distinct", "order", "limit", "offset"},
    exp.Intersect: {"this", "expression", "distinct", "order", "limit", "offset"},
    exp.Except: {"this", "expression", "distinct", "order", "limit", "offset"},
    exp.Subquery: {"this", "alias"},
    exp.Table: {"this", "db", "alias"},
    exp.TableAlias: {"this"},
    exp.Join: {"this", "on", "side", "kind", "using", "method"},
    exp.Column: {"this", "table", "db"},
    exp.Alias: {"this", "alias"},
    exp.Ordered: {"this", "desc", "nulls_first"},
    exp.Limit: {"expression"},
    exp.Offset: {"expression"},
    exp.Group: {"expressions"},
    exp.Distinct: {"expressions"},
    exp.Anonymous: {"this", "expressions"},
    exp.Cast: {"this", "to"},
    exp.Case: {"this", "ifs", "default"},
    exp.If: {"this", "true"},
    exp.In: {"this", "expressions", "query"},
    exp.Between: {"this", "low", "high"},
    exp.Is: {"this", "expression"},
    exp.Exists: {"this"},
    exp.Literal: {"this", "is_string"},
}
#: operators, rebuilt as they are (args "this" and "expression"; Neg, Not, Paren only "this")
_BINARY = (exp.And, exp.Or, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Add, exp.Sub, exp.Mul,
           exp.Div, exp.DPipe, exp.Like, exp.ILike)
_UNARY = (exp.Neg, exp.Not, exp.Paren)
#: ADQL functions with a DuckDB function of the same meaning: name -> (DuckDB name, arities)
_FUNCTIONS: dict[str, tuple[str, tuple[int, ...]]] = {
    "ABS": ("abs", (1,)), "CEILING": ("ceil", (1,)), "DEGREES": ("degrees", (1,)), "EXP": ("exp", (1,)),
    "FLOOR": ("floor", (1,)), "LOG": ("ln", (1,)), "LOG10": ("log10", (1,)), "MOD": ("mod", (2,)),
    "PI": ("pi", (0,)), "POWER": ("power", (2,)), "RADIANS": ("radians", (1,)), "SQRT": ("sqrt", (1,)),
    "RAND": ("random", (0,)), "ROUND": ("round", (1, 2)), "SIN": ("sin", (1,)), "COS": ("cos", (1,)),
    "TAN": ("tan", (1,)), "ASIN": ("asin", (1,)), "ACOS": ("acos", (1,)), "ATAN": ("atan", (1,)),
    "ATAN2": ("atan2", (2,)), "COT": ("cot", (1,)), "LOWER": ("lower", (1,)), "UPPER": ("upper", (1,)),
    "COALESCE": ("coalesce", tuple(range(1, 256))),
}
_AGGREGATES = {"COUNT", "SUM", "AVG", "MIN", "MAX"}
#: ADQL geometry this service does not evaluate
_UNSUPPORTED_GEOMETRY = {"AREA", "CENTROID", "REGION", "COORDSYS"}
_REGIONS = {"POINT", "CIRCLE", "BOX", "POLYGON"}
#: CAST target types: ADQL name -> DuckDB type
_CAST_TYPES = {exp.DataType.Type.SMALLINT: "SMALLINT", exp.DataType.Type.INT: "INTEGER",
               exp.DataType.Type.BIGINT: "BIGINT", exp.DataType.Type.FLOAT: "REAL",
               exp.DataType.Type.DOUBLE: "DOUBLE", exp.DataType.Type.TIMESTAMP: "TIMESTAMP",
               exp.DataType.Type.CHAR: "VARCHAR", exp.DataType.Type.VARCHAR: "VARCHAR"}
#: constant folding of geometry arguments (CIRCLE(10, -20.5, 1/60), PI() ...)
_CONSTANT_FUNCTIONS: dict[str, Callable[..., float]] = {
    "PI": lambda: math.pi, "RADIANS": math.radians, "DEGREES": math.degrees, "SQRT": math.sqrt,
    "SIN": math.sin, "COS": math.cos, "TAN": math.tan, "ABS": abs, "POWER": math.pow}


# --- the scope of names ---------------------------------------------------------------------

@dataclass
class _SourceColumn:
    name: str                   # as the source exposes it (what the SQL names)
    table: Table | None         # provenance, for OutputColumn
    column: str | None


@dataclass
class _Source:
    """A table or subquery of a FROM clause, under its correlation name."""

    corr: str                   # correlation name, the output's alias
    label: str                  # how messages name it
    columns: list[_SourceColumn]
    table: Table | None = None  # a published table (None: a subquery)
    _index: dict | None = field(default=None, repr=False)
    #: its node in the output's FROM (a positional join replaces it by a subquery with zone cells)
    out: exp.Expression | None = field(default=None, repr=False)

    def find(self, name: str) -> _SourceColumn | None:
        if self._index is None:  # by lower-case name, the first of each (a table has ~80 columns)
            self._index = {}
            for c in self.columns:
                self._index.setdefault(c.name.lower(), c)
        return self._index.get(name.lower())


@dataclass
class _Resolved:
    """A column reference: its SQL, its provenance, and its source (for pruning)."""

    sql: exp.Expression
    table: Table | None
    column: str | None
    source: _Source | None = None


@dataclass
class _Scope:
    sources: list[_Source] = field(default_factory=list)
    #: columns of USING / NATURAL joins, referred to without a table name
    merged: dict[str, _Resolved] = field(default_factory=dict)
    parent: _Scope | None = None


@dataclass
class _Point:
    ra: exp.Expression
    dec: exp.Expression
    const: tuple[float, float] | None       # (ra, dec) when both are constants
    position_of: _Source | None             # the source whose position (ra, dec) this is
    columns_of: _Source | None = None       # the source whose two plain columns ra and dec are


@dataclass
class _Circle:
    center: _Point
    radius: exp.Expression
    radius_const: float | None


@dataclass
class _Polygon:
    vertices: list[tuple[float, float]]


@dataclass
class _Query:
    sql: exp.Expression
    names: list[str]
    columns: list[OutputColumn]


# --- the translation ------------------------------------------------------------------------

def translate(adql: str, tables: Sequence[Table], default_schema: str | None = None,
              tree: exp.Expression | None = None) -> Translation:
    """The DuckDB SELECT of the ADQL query ``adql``, which may read ``tables`` (``tree``: what
    :func:`parse` gave for ``adql``, not parsed again).

    Raises
    ------
    AdqlError
        The query is not ADQL this service runs: one line saying what and where.
    """
    if len(adql) > MAX_LENGTH:
        raise AdqlError(f"the query is {len(adql):,} characters long; the limit is {MAX_LENGTH:,}")
    # sqlglot parses and generates recursively (~20 frames per parenthesis level)
    if sys.getrecursionlimit() < _RECURSION_LIMIT:
        sys.setrecursionlimit(_RECURSION_LIMIT)
    try:
        return _Translator(adql, tables, default_schema).run(tree)
    except RecursionError:
        raise AdqlError("the query is too deeply nested; simplify it") from None
    except (TokenError, ParseError):  # SQL the translator builds itself (a positional join) did not read back
        raise AdqlError("the query could not be translated; simplify its names (letters, digits and _)") from None


def parse(adql: str) -> exp.Expression:
    """The syntax tree of ``adql`` as :func:`translate` reads it (its checks of the text, tokens and
    depth included), for :func:`plain_cone` and then ``translate(..., tree=...)``.

    Raises
    ------
    AdqlError
        As :func:`translate` would for the text.
    """
    if len(adql) > MAX_LENGTH:
        raise AdqlError(f"the query is {len(adql):,} characters long; the limit is {MAX_LENGTH:,}")
    if sys.getrecursionlimit() < _RECURSION_LIMIT:
        sys.setrecursionlimit(_RECURSION_LIMIT)
    try:
        return _Translator(adql, (), None).parse()
    except RecursionError:
        raise AdqlError("the query is too deeply nested; simplify it") from None
    except (TokenError, ParseError, ValueError):  # (sqlglot raises ValueError on 'SELECT source_id.5 ...')
        raise AdqlError("the query could not be translated; simplify its names (letters, digits and _)") from None


@dataclass(frozen=True)
class PlainCone:
    """A query that is one table's rows in one cone and nothing else (:func:`plain_cone`)."""

    table: Table
    columns: tuple[str, ...]            # the table's columns selected, in order
    output: tuple[OutputColumn, ...]    # what translate's Translation.columns would be
    ra: float                           # the centre (degrees), as the translation takes it
    dec: float
    radius_deg: float                   # the radius: a literal, read as DuckDB reads it
    #: the translated test: "contains" (sep_arcsec <= r * 3600.0), "<" or "<=" (sep_arcsec / 3600.0 < r)
    test: str
    top: int | None


def plain_cone(tree: exp.Expression, tables: Sequence[Table], default_schema: str | None) -> PlainCone | None:
    """``tree`` (from :func:`parse`) when it is exactly

        SELECT [TOP n] columns | * FROM [schema.]table [[AS] t]
        WHERE 1 = CONTAINS(POINT(['ICRS',] ra, dec), CIRCLE(['ICRS',] ra0, dec0, r))

    (either side of the =, CIRCLE(POINT(ra0, dec0), r) too, or DISTANCE(POINT(ra, dec), POINT(ra0,
    dec0)) < r, <= r, and r > / >= DISTANCE(...)), where (ra, dec) is the table's position, ra0
    and dec0 constants, r a number, the columns plain columns of the table (aliases allowed, no
    name twice): what the translation reads as a test of the rows of the cone's HEALPix ranges and
    nothing else.  None for anything else (translate it).  Never raises: a query in doubt is None."""
    try:
        return _plain_cone(tree, tables, default_schema)
    except (AttributeError, TypeError, ValueError, KeyError, IndexError, RecursionError):
        return None


def _only(node: exp.Expression, allowed: set[str]) -> bool:
    """``node`` has no set argument but ``allowed`` (as _Translator.check)."""
    return not any(v not in (None, False, [], "") and k not in allowed for k, v in node.args.items())


_INT32 = 2**31


def _as_duckdb_computes(node, depth: int) -> tuple[int | float, bool] | None:
    """(value, is it a double) of a radius written as numbers, + - * / and parentheses, as DuckDB
    computes the translation of it: 1.5 and 1e-3 are written 1.5e0, 1e-3 (DOUBLEs: Python's float
    of the text), 60 stays an INTEGER (exact; refused where DuckDB's 32-bit arithmetic would
    overflow), / divides as doubles, an INTEGER meets a DOUBLE as a DOUBLE.  None for anything
    else (a function, a column, a division by 0, more than a few operations)."""
    if depth > 8:
        return None
    kind = type(node)
    if kind is exp.Literal:
        if node.is_string or not _only(node, {"this", "is_string"}):
            return None
        text = node.this
        if any(ch in text for ch in ".eE"):
            return float(text), True
        if not text.isdigit() or len(text) > 9:
            return None
        return int(text), False
    if kind is exp.Paren and _only(node, {"this"}):
        return _as_duckdb_computes(node.this, depth + 1)
    if kind is exp.Neg and _only(node, {"this"}):
        inner = _as_duckdb_computes(node.this, depth + 1)
        return None if inner is None else (-inner[0], inner[1])
    if kind in (exp.Add, exp.Sub, exp.Mul, exp.Div) and _only(node, {"this", "expression", "typed", "safe"}):
        a, b = _as_duckdb_computes(node.this, depth + 1), _as_duckdb_computes(node.expression, depth + 1)
        if a is None or b is None:
            return None
        if kind is exp.Div:
            if b[0] == 0:
                return None
            return float(a[0]) / float(b[0]), True
        double = a[1] or b[1]
        x, y = (float(a[0]), float(b[0])) if double else (a[0], b[0])
        value = x + y if kind is exp.Add else x - y if kind is exp.Sub else x * y
        if not double and not -_INT32 <= value < _INT32:
            return None
        return value, double
    return None


def _plain_cone(tree, tables, default_schema) -> PlainCone | None:
    if type(tree) is not exp.Select or not _only(tree, {"expressions", "from_", "where", "limit"}):
        return None
    top = None
    limit = tree.args.get("limit")
    if limit is not None:
        value = limit.expression
        if type(limit) is not exp.Limit or not _only(limit, {"expression"}) or not (
                type(value) is exp.Literal and not value.is_string and value.this.isdigit()):
            return None
        top = int(value.this)
    # FROM one published table
    source = tree.args["from_"].this
    if type(source) is not exp.Table or not _only(source, {"this", "db", "alias"}) \
            or type(source.this) is not exp.Identifier:
        return None
    alias = source.args.get("alias")
    if alias is not None and (type(alias) is not exp.TableAlias or not _only(alias, {"this"})):
        return None
    name, schema = source.name.lower(), source.db.lower() if source.db else None
    if schema is not None:
        found = [t for t in tables if t.schema == schema and t.name == name]
    else:
        found = [t for t in tables if t.name == name]
        found = [t for t in found if t.schema == (default_schema or "").lower()] or found
    if len(found) != 1 or not found[0].position or not found[0].healpix_column:
        return None
    table = found[0]
    corr = (source.alias or table.name).lower()
    index: dict[str, str] = {}
    for c in table.columns:
        index.setdefault(c.lower(), c)

    def column(node) -> str | None:
        """The table column that plain column reference ``node`` names."""
        if type(node) is not exp.Column or not _only(node, {"this", "table"}) \
                or type(node.this) is not exp.Identifier:
            return None
        if node.table and node.table.lower() != corr:
            return None
        return index.get(node.name.lower())

    # the select list: plain columns (aliased or not) and * / t.*
    pairs: list[tuple[str, str]] = []
    for item in tree.expressions:
        if type(item) is exp.Star or (type(item) is exp.Column and type(item.this) is exp.Star):
            star = item if type(item) is exp.Star else item.this
            if not _only(star, set()) or (type(item) is exp.Column and (
                    not _only(item, {"this", "table"}) or item.table.lower() != corr)):
                return None
            pairs.extend((c, c) for c in table.columns)
            continue
        label = None
        if type(item) is exp.Alias:
            if not _only(item, {"this", "alias"}) or not item.alias:
                return None
            label, item = item.alias, item.this
        real = column(item)
        if real is None:
            return None
        pairs.append((label or item.name, real))
    names = [n for n, _ in pairs]
    columns = tuple(c for _, c in pairs)
    if not pairs or len({n.lower() for n in names}) != len(names) or len(set(columns)) != len(columns) \
            or len(columns) > MAX_COLUMNS:
        return None
    # WHERE: the one spatial test
    where = tree.args["where"].this
    while type(where) is exp.Paren:
        where = where.this

    def point(node):
        if not (type(node) is exp.Anonymous and node.name.upper() == "POINT" and _only(node, {"this", "expressions"})):
            return None
        args = list(node.expressions)
        if args and type(args[0]) is exp.Literal and args[0].is_string:
            if args[0].this.strip().upper() not in ("", "ICRS"):
                return None
            args = args[1:]
        return args if len(args) == 2 else None

    def position(args) -> bool:
        return args is not None and (column(args[0]), column(args[1])) == table.position

    def constant(args):
        if args is None:
            return None
        ra, dec = _finite_constant(args[0]), _finite_constant(args[1])
        return (ra, dec) if ra is not None and dec is not None and abs(dec) <= 90 else None

    def radius(node) -> float | None:
        found = _as_duckdb_computes(node, 0)
        if found is None:
            return None
        value = float(found[0])
        return value if math.isfinite(value) and 0 < value < 180 else None

    test = None
    if type(where) is exp.EQ and _only(where, {"this", "expression"}):
        call, one = where.this, where.expression
        if _is_call(one, "CONTAINS"):
            call, one = one, call
        if not (_is_call(call, "CONTAINS") and _only(call, {"this", "expressions"}) and len(call.expressions) == 2
                and type(one) is exp.Literal and not one.is_string and _constant(one) == 1.0):
            return None
        first, circle = call.expressions
        if not (_is_call(circle, "CIRCLE") and _only(circle, {"this", "expressions"})):
            return None
        args = list(circle.expressions)
        if args and type(args[0]) is exp.Literal and args[0].is_string:
            if args[0].this.strip().upper() not in ("", "ICRS"):
                return None
            args = args[1:]
        if len(args) == 2:
            centre = constant(point(args[0]))
        elif len(args) == 3:
            centre = constant(args[:2])
        else:
            return None
        if not position(point(first)):
            return None
        test, r = "contains", radius(args[-1])
    elif type(where) in (exp.LT, exp.LTE, exp.GT, exp.GTE) and _only(where, {"this", "expression"}):
        if type(where) in (exp.LT, exp.LTE):
            distance, limit_node = where.this, where.expression
        else:
            distance, limit_node = where.expression, where.this
        if not (_is_call(distance, "DISTANCE") and _only(distance, {"this", "expressions"})
                and len(distance.expressions) == 2):
            return None
        a, b = (point(p) for p in distance.expressions)
        if position(a):
            centre = constant(b)
        elif position(b):
            centre = constant(a)
        else:
            return None
        test, r = ("<" if type(where) in (exp.LT, exp.GT) else "<="), radius(limit_node)
    else:
        return None
    if centre is None or r is None:
        return None
    output = tuple(OutputColumn(n, table, c) for n, c in zip(names, columns))
    return PlainCone(table, columns, output, centre[0], centre[1], r, test, top)


# -- plain cones without parsing: a cache of query shapes ------------------------------------
# A service is asked the same query with other numbers again and again (a cone at another
# centre): parsing is a third of the CPU such a query costs (1.2-2 ms; the answer from the row
# groups ~3 ms).  The shape of a query is its tokens (sqlglot's own tokenizer, a fifth of the
# parse) with the text of each number left out: two texts of one shape parse to the same tree
# but for the numbers' literals.  The tree of a plain cone is kept per shape; another query of
# that shape gets its own numbers put into the kept tree's literals, and plain_cone reads that.
# Whatever is not a plain cone with its own numbers is parsed from its own text.

#: shapes kept (least recently used dropped), their longest text and most tokens: a kept tree
#: takes ~1.4 KB a token (review: 256 shapes of 4,000 characters grew a worker by 350 MB); a cone
#: of 17 columns is ~70 tokens, of all 71 columns of catalogue ~180
_SHAPES_KEPT = 64
_SHAPE_MAX_LENGTH = 4_000
_SHAPE_MAX_TOKENS = 300


@dataclass
class _Shape:
    tree: exp.Expression
    slots: list                  # the tree's number literals, in the order of the text's number tokens
    lock: threading.Lock = field(default_factory=threading.Lock)


_shapes: OrderedDict[tuple, _Shape] = OrderedDict()
_shapes_lock = threading.Lock()


def _shape_of(text: str) -> tuple[tuple, list] | None:
    """(the shape of ``text``: its tokens, the numbers' text left out, comments kept; [its number
    tokens]); None when the text is too long, has too many tokens or does not tokenize."""
    if len(text) > _SHAPE_MAX_LENGTH:
        return None
    try:
        tokens = ADQL().tokenize(text)
    except TokenError:
        return None
    if len(tokens) > _SHAPE_MAX_TOKENS:
        return None
    numbers = [t for t in tokens if t.token_type == TokenType.NUMBER]
    shape = tuple((t.token_type, None if t.token_type == TokenType.NUMBER else t.text, tuple(t.comments))
                  for t in tokens)
    return shape, numbers


def plain_cone_of_text(text: str, tables: Sequence[Table], default_schema: str | None
                       ) -> tuple[PlainCone | None, exp.Expression | None]:
    """(``plain_cone(parse(text), tables, default_schema)``, the tree when ``text`` was parsed),
    parsing ``text`` only when its shape (its tokens, other numbers) was not seen as a plain cone
    yet.

    Raises
    ------
    AdqlError
        As :func:`parse`, for a text that does not parse (so that it is not parsed again to say why).
    """
    found = _shape_of(text)
    if found is not None:
        shape, numbers = found
        with _shapes_lock:
            cached = _shapes.get(shape)
            if cached is not None:
                _shapes.move_to_end(shape)
        if cached is not None:
            with cached.lock:
                for node, number in zip(cached.slots, numbers):
                    node.args["this"] = number.text
                query = plain_cone(cached.tree, tables, default_schema)
            if query is not None:
                return query, None
    tree = parse(text)
    query = plain_cone(tree, tables, default_schema)
    if query is not None and found is not None:
        _remember(found[0], found[1], tree, query, tables, default_schema)
    return query, tree


def _remember(shape: tuple, numbers: list, tree: exp.Expression, query: PlainCone, tables, default_schema) -> None:
    """Keep a copy of ``tree`` (a plain cone, ``query``) for ``shape`` if each of its number
    literals is one of the text's number tokens (by position) and each token one literal."""
    tree = tree.copy()  # the caller's tree may be translated (and changed) after this
    at = {token.start: i for i, token in enumerate(numbers)}
    slots: list = [None] * len(numbers)
    for node in tree.find_all(exp.Literal):
        if node.is_string:
            continue
        i = at.get(node.meta.get("start"))
        if i is None or slots[i] is not None or node.this != numbers[i].text:
            return
        slots[i] = node
    if any(node is None for node in slots) or plain_cone(tree, tables, default_schema) != query:
        return
    with _shapes_lock:
        _shapes[shape] = _Shape(tree, slots)
        _shapes.move_to_end(shape)
        while len(_shapes) > _SHAPES_KEPT:
            _shapes.popitem(last=False)


class _Translator:
    def __init__(self, text: str, tables: Sequence[Table], default_schema: str | None):
        self.text = text
        self.tables = tables
        self.default_schema = default_schema.lower() if default_schema else None
        self.pruned = 0
        #: while a JOIN's ON is translated: (sources before it, the joined source, LEFT/RIGHT/FULL/None)
        self.join_context: tuple | None = None
        self.xmatched = 0

    # errors ------------------------------------------------------------------------------

    def error(self, message: str, node: exp.Expression | None = None) -> AdqlError:
        """AdqlError with the position of the first token of ``node``, when known."""
        starts = [n.meta["start"] for n in node.dfs() if "start" in n.meta] if node is not None else []
        return AdqlError(self.where(min(starts, default=None)) + message)

    def where(self, start: int | None) -> str:
        if start is None:
            return ""
        line = self.text.count("\n", 0, start) + 1
        return f"line {line}, column {start - self.text.rfind(chr(10), 0, start)}: "

    # the text ----------------------------------------------------------------------------

    def run(self, tree: exp.Expression | None = None) -> Translation:
        tree = self.parse() if tree is None else tree
        query = self.query(tree, None)
        limit = tree.args.get("limit")
        top = int(limit.expression.this) if isinstance(tree, exp.Select) and limit else None
        sql = query.sql.sql(dialect=_Output, identify=True, copy=False)
        return Translation(sql=sql, columns=tuple(query.columns), top=top, pruned=self.pruned)

    def parse(self) -> exp.Expression:
        try:
            tokens = ADQL().tokenize(self.text)
        except TokenError as exc:
            raise AdqlError(f"the query cannot be read ({str(exc).splitlines()[0]}); check quotes and "
                            "comments") from None
        depth = 0
        for i, token in enumerate(tokens):  # (the position is worked out only for an error: it scans the text)
            if token.token_type == TokenType.SEMICOLON:
                if i != len(tokens) - 1:
                    raise AdqlError(f"{self.where(token.start)}only one statement is allowed; remove ';' and what "
                                    "follows")
            elif token.token_type in _REFUSED_TOKENS:
                raise AdqlError(self.where(token.start) + _REFUSED_TOKENS[token.token_type])
            elif token.token_type == TokenType.L_PAREN:
                depth += 1
                if depth > MAX_DEPTH:
                    raise AdqlError(f"{self.where(token.start)}the query is too deeply nested (more than "
                                    f"{MAX_DEPTH} parentheses); simplify it")
            elif token.token_type == TokenType.R_PAREN:
                depth -= 1
        if not tokens:
            raise AdqlError("the query is empty; write SELECT ... FROM ...")
        # a query starts with SELECT (or a parenthesis around one); anything else is refused here,
        # before sqlglot parses it as a command
        if tokens[0].token_type not in (TokenType.SELECT, TokenType.L_PAREN):
            raise AdqlError(f"{self.where(tokens[0].start)}only SELECT queries are allowed, not "
                            f"{tokens[0].text.upper()[:40]}")
        try:
            # the tokens above, not the text again (tokenizing is a third of the parse)
            statements = [s for s in ADQL().parser().parse(tokens, self.text) if s is not None]
        except ParseError as exc:
            raise self.parse_error(exc) from None
        if len(statements) != 1:
            raise AdqlError("only one statement is allowed")
        tree = statements[0]
        self.check_depth(tree)
        if tree.args.get("with_"):
            raise self.error("WITH is not ADQL; use a subquery in FROM instead", tree.args["with_"])
        if isinstance(tree, exp.Subquery):  # (SELECT ...)
            tree = tree.this
        if not isinstance(tree, (exp.Select, exp.Union, exp.Intersect, exp.Except)):
            raise self.error(f"only SELECT queries are allowed, not {tree.key.upper()}", tree)
        return tree

    def parse_error(self, exc: ParseError) -> AdqlError:
        first = exc.errors[0] if exc.errors else {}
        description = str(first.get("description") or str(exc).splitlines()[0]).rstrip(".")
        description = description.split(" for <class")[0]  # sqlglot's class names mean nothing to users
        token = first.get("highlight")
        if first.get("line") and first.get("col"):
            column = first["col"] - len(token or "x") + 1
            where = f"line {first['line']}, column {column}: "
        else:
            where = ""
        near = f" near '{token}'" if token else ""
        return AdqlError(f"{where}syntax error{near} ({description.lower()}); check the query against ADQL 2.1")

    def check_depth(self, tree: exp.Expression) -> None:
        stack = [(tree, 0)]
        while stack:
            node, depth = stack.pop()
            if depth > 2 * MAX_DEPTH:
                raise self.error("the query is too deeply nested; simplify it (long OR chains: use IN (...))",
                                 node)
            stack.extend((child, depth + 1) for child in node.iter_expressions())

    def check(self, node: exp.Expression, allowed: set[str]) -> None:
        """Refuse arguments of ``node`` that its translation would not carry over."""
        extra = sorted(k for k, v in node.args.items() if v not in (None, False, [], "") and k not in allowed)
        if extra:
            raise self.error(f"{node.key.upper()} with {extra[0].rstrip('_').upper()} is not ADQL", node)

    # queries -----------------------------------------------------------------------------

    def query(self, node: exp.Expression, parent: _Scope | None) -> _Query:
        """A SELECT or set operation; ``parent`` is the scope of a correlated subquery."""
        if isinstance(node, exp.Subquery) and not node.alias:
            inner = self.query(node.this, parent)
            return _Query(exp.Subquery(this=inner.sql), inner.names, inner.columns)
        if isinstance(node, exp.Select):
            return self.select(node, parent)
        if isinstance(node, (exp.Union, exp.Intersect, exp.Except)):
            return self.set_operation(node, parent)
        raise self.error("a subquery must be a SELECT", node)

    def set_operation(self, node: exp.Union, parent: _Scope | None) -> _Query:
        self.check(node, _ARGS[type(node)])
        left, right = self.query(node.this, parent), self.query(node.expression, parent)
        if len(left.names) != len(right.names):
            raise self.error(f"{node.key.upper()} of queries with {len(left.names)} and {len(right.names)} "
                             "columns; select as many columns on both sides", node)
        out = type(node)(this=left.sql, expression=right.sql, distinct=bool(node.args.get("distinct")))
        self.modifiers(node, out, left.names, lambda n: self.error(
            f"ORDER BY of {node.key.upper()}: use a column number or an output name", n))
        return _Query(out, left.names, left.columns)

    def modifiers(self, node: exp.Expression, out: exp.Expression, names: list[str],
                  other: Callable[[exp.Expression], exp.Expression]) -> None:
        """ORDER BY, TOP and OFFSET of ``node`` onto ``out``; ``other`` translates an ORDER BY
        expression that is not an output column."""
        order = node.args.get("order")
        if order:
            self.check(order, {"expressions"})
            out.set("order", exp.Order(expressions=[self.ordered(o, names, other) for o in order.expressions]))
        for key, cls in (("limit", exp.Limit), ("offset", exp.Offset)):
            clause = node.args.get(key)
            if clause:
                if not isinstance(clause, cls):
                    raise self.error(f"{clause.key.upper()} is not ADQL; use SELECT TOP n and OFFSET n", clause)
                self.check(clause, _ARGS[cls])
                value = clause.expression
                if not (isinstance(value, exp.Literal) and not value.is_string and value.this.isdigit()):
                    what = "TOP" if key == "limit" else "OFFSET"
                    raise self.error(f"{what} must be a non-negative integer, like {what} 100", value or clause)
                out.set(key, cls(expression=exp.Literal.number(int(value.this))))

    def ordered(self, node: exp.Ordered, names: list[str],
                other: Callable[[exp.Expression], exp.Expression]) -> exp.Ordered:
        self.check(node, _ARGS[exp.Ordered])
        item = node.this
        lowered = [n.lower() for n in names]
        if isinstance(item, exp.Literal) and not item.is_string:
            if not (item.this.isdigit() and 1 <= int(item.this) <= len(names)):
                raise self.error(f"ORDER BY {item.this}: the query has {len(names)} output column(s); "
                                 f"use a number from 1 to {len(names)}", item)
            sql = exp.Literal.number(int(item.this))
        elif isinstance(item, exp.Column) and not item.table and item.name.lower() in lowered:
            sql = exp.Literal.number(lowered.index(item.name.lower()) + 1)
        else:
            sql = other(item)
        return exp.Ordered(this=sql, desc=bool(node.args.get("desc")), nulls_first=bool(node.args.get("nulls_first")))

    def select(self, node: exp.Select, parent: _Scope | None) -> _Query:
        self.check(node, _ARGS[exp.Select])
        scope = _Scope(parent=parent)
        out = exp.Select()
        if node.args.get("from_"):
            out.set("from_", exp.From(this=self.source(node.args["from_"].this, scope)))
            joins = [self.join(j, scope) for j in node.args.get("joins") or []]
            if joins:
                out.set("joins", joins)
        distinct = node.args.get("distinct")
        if distinct:
            if distinct.args.get("on"):
                raise self.error("DISTINCT ON is not ADQL", distinct)
            out.set("distinct", exp.Distinct())
        items, names, columns = self.select_list(node, scope)
        out.set("expressions", items)
        if node.args.get("where"):
            out.set("where", exp.Where(this=self.expr(node.args["where"].this, scope)))
        group = node.args.get("group")
        if group:
            self.check(group, _ARGS[exp.Group])
            out.set("group", exp.Group(expressions=[self.group_item(g, scope, names, items)
                                                    for g in group.expressions]))
        if node.args.get("having"):
            out.set("having", exp.Having(this=self.expr(node.args["having"].this, scope)))
        self.modifiers(node, out, names, lambda n: self.expr(n, scope))
        return _Query(out, names, columns)

    def group_item(self, node: exp.Expression, scope: _Scope, names: list[str],
                   items: list[exp.Expression]) -> exp.Expression:
        """A GROUP BY item; a bare name that is no column may be an output name (as in PostgreSQL)."""
        if isinstance(node, exp.Column) and not node.table and self.lookup(node, scope) is None:
            lowered = [n.lower() for n in names]
            if node.name.lower() in lowered:
                return items[lowered.index(node.name.lower())].this.copy()
        return self.expr(node, scope)

    def select_list(self, node: exp.Select, scope: _Scope) -> tuple[list[exp.Expression], list[str],
                                                                       list[OutputColumn]]:
        pairs: list[tuple[exp.Expression, str, Table | None, str | None]] = []
        for position, item in enumerate(node.expressions, 1):
            if isinstance(item, exp.Star) or (isinstance(item, exp.Column) and isinstance(item.this, exp.Star)):
                self.check(item if isinstance(item, exp.Star) else item.this, set())
                pairs.extend((r.sql, name, r.table, r.column) for name, r in self.star(item, scope))
                if len(pairs) > MAX_COLUMNS:
                    raise self.error(f"the query selects more than {MAX_COLUMNS:,} columns; name the columns "
                                     "wanted instead of repeating *", item)
                continue
            name = None
            if isinstance(item, exp.Alias):
                self.check(item, _ARGS[exp.Alias])
                name = item.alias
                item = item.this
            if isinstance(item, exp.Column):
                resolved = self.column(item, scope)
                pairs.append((resolved.sql, name or item.name, resolved.table, resolved.column))
                continue
            if isinstance(item, exp.Anonymous) and item.name.upper() in _REGIONS:
                raise self.error(f"{item.name.upper()} cannot be selected; select its coordinates "
                                 "(COORD1(p), COORD2(p)) or test it with CONTAINS/INTERSECTS/DISTANCE", item)
            sql = self.expr(item, scope)
            default = item.name.lower() if isinstance(item, exp.Anonymous) else f"expr_{position}"
            pairs.append((sql, name or default, None, None))
        if not pairs:
            raise self.error("the select list is empty", node)
        names = _unique([p[1] for p in pairs])
        items = [exp.alias_(sql, n, quoted=True) for (sql, *_), n in zip(pairs, names)]
        return items, names, [OutputColumn(n, t, c) for n, (_, _, t, c) in zip(names, pairs)]

    def star(self, item: exp.Expression, scope: _Scope) -> list[tuple[str, _Resolved]]:
        """The columns of ``*`` (USING columns once, first, as SQL does) or of ``t.*``."""
        if isinstance(item, exp.Column):
            source = self.source_named(item, scope.sources)
            if source is None:
                raise self.error(f'unknown table "{item.table}" in {item.table}.*; tables here: '
                                 f"{', '.join(s.label for s in scope.sources) or 'none'}", item)
            return [(c.name, self.reference(source, c)) for c in source.columns]
        if not scope.sources:
            raise self.error("SELECT * needs a FROM clause", item)
        found = list(scope.merged.items())
        for source in scope.sources:
            found.extend((c.name, self.reference(source, c)) for c in source.columns
                         if c.name.lower() not in scope.merged)
        return found

    # FROM --------------------------------------------------------------------------------

    def source(self, node: exp.Expression, scope: _Scope) -> exp.Expression:
        """A table or subquery of FROM, added to ``scope``; its SQL."""
        if isinstance(node, exp.Table):
            self.check(node, _ARGS[exp.Table])
            if isinstance(node.this, exp.Anonymous) or not isinstance(node.this, exp.Identifier):
                raise self.error(f"{node.this.sql() if node.this else 'this'} is not a table; FROM takes "
                                 "published tables (see TAP_SCHEMA.tables) and subqueries", node)
            table = self.table(node)
            corr = node.alias or table.name
            columns = [_SourceColumn(c, table, c) for c in table.columns]
            self.add(scope, _Source(corr.lower(), corr, columns, table), node)
            out = _parsed_table(table.sql_name).copy()
            out.set("alias", exp.TableAlias(this=exp.to_identifier(corr.lower(), quoted=True)))
            scope.sources[-1].out = out
            return out
        if isinstance(node, exp.Subquery):
            self.check(node, _ARGS[exp.Subquery])
            if not node.alias:
                raise self.error("a subquery in FROM needs a name: (SELECT ...) AS s", node)
            if node.args["alias"].args.get("columns"):
                raise self.error("column names after a subquery alias are not ADQL; name them in its "
                                 "select list", node)
            inner = self.query(node.this, None)
            columns = [_SourceColumn(n, c.table, c.column) for n, c in zip(inner.names, inner.columns)]
            self.add(scope, _Source(node.alias.lower(), node.alias, columns), node)
            scope.sources[-1].out = exp.Subquery(this=inner.sql, alias=exp.TableAlias(
                this=exp.to_identifier(node.alias.lower(), quoted=True)))
            return scope.sources[-1].out
        if isinstance(node, exp.Anonymous):
            raise self.error(f"{node.name}(...) is not a table; FROM takes published tables "
                             "(see TAP_SCHEMA.tables) and subqueries", node)
        raise self.error(f"{node.key.upper()} is not allowed in FROM; use tables and subqueries", node)

    def add(self, scope: _Scope, source: _Source, node: exp.Expression) -> None:
        if any(s.corr == source.corr for s in scope.sources):
            raise self.error(f'"{source.label}" appears twice in FROM; give each an alias: ... AS a, ... AS b',
                             node)
        scope.sources.append(source)

    def table(self, node: exp.Table) -> Table:
        name, schema = node.name.lower(), node.db.lower() if node.db else None
        if schema is not None:
            found = [t for t in self.tables if t.schema == schema and t.name == name]
        else:
            found = [t for t in self.tables if t.name == name]
            preferred = [t for t in found if t.schema == self.default_schema]
            found = preferred or found
        if len(found) == 1:
            return found[0]
        full = f"{node.db}.{node.name}" if schema else node.name
        if found:
            raise self.error(f'table "{full}" is in several schemas ({", ".join(t.schema for t in found)}); '
                             f"write schema.{node.name}", node)
        if schema is not None and not any(t.schema == schema for t in self.tables):
            schemas = ", ".join(sorted({t.schema for t in self.tables}))
            raise self.error(f'unknown schema "{node.db}"; schemas: {schemas}', node)
        names = ", ".join(sorted({f"{t.schema}.{t.name}" for t in self.tables if t.schema != "tap_schema"}))
        raise self.error(f'unknown table "{full}"; tables: {names} (all in TAP_SCHEMA.tables)', node)

    def join(self, node: exp.Join, scope: _Scope) -> exp.Join:
        self.check(node, _ARGS[exp.Join])
        side, kind, method = (node.args.get(k) for k in ("side", "kind", "method"))
        if kind not in (None, "INNER", "OUTER", "CROSS") or method not in (None, "NATURAL"):
            raise self.error(f"{' '.join(filter(None, (method, side, kind)))} JOIN is not ADQL", node)
        before = list(scope.sources)
        out = exp.Join(this=self.source(node.this, scope))
        right = scope.sources[-1]
        for key in ("side", "kind"):
            if node.args.get(key):
                out.set(key, node.args[key])
        using = [u.name for u in node.args.get("using") or []]
        if method == "NATURAL":
            using = [c.name for c in right.columns
                     if any(s.find(c.name) for s in before) or c.name.lower() in scope.merged]
        if using:
            out.set("using", [exp.to_identifier(u.lower(), quoted=True) for u in using])
            for name in using:
                self.merge(name, before, right, side, scope, node)
        elif node.args.get("on"):
            # a positional join may be run on zone cells: not where the exploded table's rows are
            # kept unmatched (an outer join's preserved side), whose copies would all show
            self.join_context = (before, right, side)
            try:
                out.set("on", self.expr(node.args["on"], scope))
            finally:
                self.join_context = None
        return out

    def merge(self, name: str, before: list[_Source], right: _Source, side: str | None, scope: _Scope,
              node: exp.Expression) -> None:
        """Column ``name`` of USING/NATURAL: one column, whose value is that of the left side (right
        side for RIGHT JOIN, either for FULL JOIN)."""
        on_right = right.find(name)
        left = scope.merged.get(name.lower())
        if left is None:
            sides = [s for s in before if s.find(name)]
            if len(sides) != 1 or on_right is None:
                raise self.error(f'USING ({name}): the column must be in exactly one table on each side', node)
            left = self.reference(sides[0], sides[0].find(name))
        right_ref = self.reference(right, on_right) if on_right else None
        if right_ref is None:
            raise self.error(f'USING ({name}): no column "{name}" in {right.label}', node)
        if side == "RIGHT":
            merged = right_ref
        elif side == "FULL":
            merged = _Resolved(exp.Coalesce(this=left.sql, expressions=[right_ref.sql]), left.table, left.column)
        else:
            merged = left
        scope.merged[name.lower()] = merged

    # names -------------------------------------------------------------------------------

    def reference(self, source: _Source, column: _SourceColumn) -> _Resolved:
        sql = exp.Column(this=exp.to_identifier(column.name, quoted=True),
                         table=exp.to_identifier(source.corr, quoted=True))
        return _Resolved(sql, column.table, column.column, source)

    def source_named(self, node: exp.Column, sources: list[_Source]) -> _Source | None:
        """The source that ``t`` or ``schema.t`` of ``node`` names."""
        for source in sources:
            if node.args.get("db"):
                if source.table and source.table.schema == node.text("db").lower() \
                        and source.table.name == node.table.lower() and source.corr == source.table.name:
                    return source
            elif source.corr == node.table.lower():
                return source
        return None

    def lookup(self, node: exp.Column, scope: _Scope) -> _Resolved | None:
        """Column ``node`` in ``scope`` or the scopes around it (correlated subqueries)."""
        name = node.name
        while scope is not None:
            if node.table:
                source = self.source_named(node, scope.sources)
                if source is not None:
                    column = source.find(name)
                    if column is None:
                        raise self.error(f'unknown column "{name}" in {source.label}; columns include '
                                         f"{_some(c.name for c in source.columns)}", node)
                    return self.reference(source, column)
            else:
                if name.lower() in scope.merged:
                    return scope.merged[name.lower()]
                found = [(s, c) for s in scope.sources for c in [s.find(name)] if c is not None]
                if len(found) > 1:
                    raise self.error(f'column "{name}" is in {" and ".join(s.label for s, _ in found)}; '
                                     f"write {found[0][0].label}.{name}", node)
                if found:
                    return self.reference(*found[0])
            scope = scope.parent
        return None

    def column(self, node: exp.Column, scope: _Scope) -> _Resolved:
        self.check(node, _ARGS[exp.Column])
        if not isinstance(node.this, exp.Identifier):
            raise self.error(f"{node.sql()} is not a column", node)
        found = self.lookup(node, scope)
        if found is not None:
            return found
        if node.table:
            here = [s.label for s in _all_sources(scope)]
            raise self.error(f'unknown table "{node.table}" in {node.sql(dialect=ADQL)}; tables here: '
                             f"{', '.join(here) or 'none'}", node)
        columns = [c.name for s in _all_sources(scope) for c in s.columns]
        hint = f"columns include {_some(columns)}" if columns else "the query has no FROM"
        raise self.error(f'unknown column "{node.name}"; {hint}', node)

    # expressions -------------------------------------------------------------------------

    def expr(self, node: exp.Expression, scope: _Scope) -> exp.Expression:
        """The DuckDB SQL of ADQL value expression or condition ``node``."""
        if isinstance(node, exp.Column):
            return self.column(node, scope).sql
        if isinstance(node, exp.Literal):
            self.check(node, _ARGS[exp.Literal])
            if node.is_string:
                return exp.Literal.string(node.this)
            try:
                float(node.this)
            except ValueError:
                raise self.error(f"{node.this} is not a number", node) from None
            if any(ch in node.this for ch in ".eE"):
                # DuckDB reads 150.4325413543 as a DECIMAL(13,10), and DECIMAL products overflow
                # (radius * 3600); astronomers mean a double, as PostgreSQL's float8 contexts do
                text = node.this
                return exp.Literal.number(text if "e" in text.lower() else text + "e0")
            return exp.Literal.number(node.this)
        if isinstance(node, exp.Null):
            return exp.Null()  # built anew: a copy would carry the query's comments into the SQL
        if isinstance(node, exp.Boolean):
            return exp.Boolean(this=bool(node.this))
        if isinstance(node, (exp.EQ, exp.NEQ, exp.LT, exp.LTE, exp.GT, exp.GTE)):
            special = self.spatial_comparison(node, scope)
            if special is not None:
                return special
        if isinstance(node, _BINARY):
            # DPipe: sqlglot marks T-SQL's NULL handling (safe); Div: T-SQL's integer division (typed).
            # Neither carries over: || is SQL's, and / divides as DuckDB does (1/3600 is not 0)
            self.check(node, {"this", "expression", "safe", "typed"})
            return type(node)(this=self.expr(node.this, scope), expression=self.expr(node.expression, scope))
        if isinstance(node, _UNARY):
            self.check(node, {"this"})
            return type(node)(this=self.expr(node.this, scope))
        if isinstance(node, exp.Mod):
            raise self.error("'%' is not ADQL; use MOD(x, y)", node)
        if isinstance(node, exp.Anonymous):
            return self.function(node, scope)
        if isinstance(node, exp.Between):
            self.check(node, _ARGS[exp.Between])
            return exp.Between(this=self.expr(node.this, scope), low=self.expr(node.args["low"], scope),
                               high=self.expr(node.args["high"], scope))
        if isinstance(node, exp.In):
            self.check(node, _ARGS[exp.In])
            if node.args.get("query"):
                return exp.In(this=self.expr(node.this, scope), query=self.subquery(node.args["query"], scope))
            return exp.In(this=self.expr(node.this, scope), expressions=[self.expr(e, scope) for e in node.expressions])
        if isinstance(node, exp.Is):
            self.check(node, _ARGS[exp.Is])
            if not isinstance(node.expression, exp.Null):
                raise self.error("IS takes NULL only: x IS NULL, x IS NOT NULL", node)
            return exp.Is(this=self.expr(node.this, scope), expression=exp.Null())
        if isinstance(node, exp.Exists):
            self.check(node, _ARGS[exp.Exists])
            return exp.Exists(this=self.query(node.this, scope).sql)
        if isinstance(node, exp.Subquery):
            return self.subquery(node, scope)
        if isinstance(node, exp.Case):
            return self.case(node, scope)
        if isinstance(node, exp.Cast):
            return self.cast(node, scope)
        if isinstance(node, (exp.Select, exp.Union, exp.Intersect, exp.Except)):
            return self.query(node, scope).sql
        raise self.error(f"{_describe(node)} is not ADQL this service supports", node)

    def subquery(self, node: exp.Expression, scope: _Scope) -> exp.Expression:
        if isinstance(node, exp.Subquery):
            self.check(node, {"this"})
            node = node.this
        return exp.Subquery(this=self.query(node, scope).sql)

    def case(self, node: exp.Case, scope: _Scope) -> exp.Case:
        self.check(node, _ARGS[exp.Case])
        out = exp.Case()
        if node.this:
            out.set("this", self.expr(node.this, scope))
        ifs = []
        for when in node.args.get("ifs") or []:
            self.check(when, _ARGS[exp.If])
            ifs.append(exp.If(this=self.expr(when.this, scope), true=self.expr(when.args["true"], scope)))
        out.set("ifs", ifs)
        if node.args.get("default") is not None:
            out.set("default", self.expr(node.args["default"], scope))
        return out

    def cast(self, node: exp.Cast, scope: _Scope) -> exp.Expression:
        self.check(node, _ARGS[exp.Cast])
        to = node.args["to"]
        target = _CAST_TYPES.get(to.this)
        if target is None:
            raise self.error(f"CAST to {to.sql(dialect=ADQL)} is not ADQL; use SMALLINT, INTEGER, BIGINT, REAL, "
                             "DOUBLE PRECISION, CHAR(n), VARCHAR(n) or TIMESTAMP", to)
        out = exp.Cast(this=self.expr(node.this, scope), to=exp.DataType.build(target))
        params = to.expressions
        if target == "VARCHAR" and params:
            # DuckDB ignores string lengths; ADQL (PostgreSQL) cuts the string
            length = params[0].this if isinstance(params[0], exp.DataTypeParam) else params[0]
            if not (isinstance(length, exp.Literal) and length.this.isdigit()):
                raise self.error("the length of CHAR(n)/VARCHAR(n) must be a positive integer", to)
            return exp.Anonymous(this="left", expressions=[out, exp.Literal.number(int(length.this))])
        return out

    def function(self, node: exp.Anonymous, scope: _Scope) -> exp.Expression:
        self.check(node, _ARGS[exp.Anonymous])
        name = node.name.upper()
        args = node.expressions
        if name in _AGGREGATES:
            return self.aggregate(node, name, scope)
        if name == "TRUNCATE":
            self.arity(node, (1, 2))
            value = self.expr(args[0], scope)
            if len(args) == 1:
                return exp.Anonymous(this="trunc", expressions=[value])
            scale = exp.Anonymous(this="power", expressions=[exp.Literal.number(10),
                                                             self.expr(args[1], scope)])
            # the scaled value rounded to 9 decimals first: 0.29 * 100 is 28.999999999999996 in doubles,
            # and TRUNCATE(0.29, 2) is 0.29 on the PostgreSQL-based services
            scaled = exp.Anonymous(this="round", expressions=[exp.Mul(this=value, expression=scale),
                                                              exp.Literal.number(9)])
            return exp.Div(this=exp.Anonymous(this="trunc", expressions=[scaled]), expression=scale.copy())
        if name == "RAND" and args:
            raise self.error("RAND(seed) is not supported; use RAND()", node)
        if name in _FUNCTIONS:
            duck, arities = _FUNCTIONS[name]
            self.arity(node, arities)
            return exp.Anonymous(this=duck, expressions=[self.expr(a, scope) for a in args])
        if name == "BEST_MATCH":
            raise self.error(_BEST_MATCH_USE, node)
        if name in ("CONTAINS", "INTERSECTS"):
            # outside a comparison with 0 or 1: the integer ADQL defines
            predicate, _, _ = self.containment(node, scope)
            return exp.Cast(this=exp.Paren(this=predicate), to=exp.DataType.build("INTEGER"))
        if name == "DISTANCE":
            first, second = self.distance_points(node, scope)
            return exp.Div(this=_separation_arcsec(first, second), expression=exp.Literal.number("3600.0"))
        if name in ("COORD1", "COORD2"):
            self.arity(node, (1,))
            point = self.geometry(args[0], scope)
            if not isinstance(point, _Point):
                raise self.error(f"{name} takes a POINT", node)
            return exp.Paren(this=point.ra if name == "COORD1" else point.dec)
        if name in _REGIONS:
            raise self.error(f"{name} can only be an argument of CONTAINS, INTERSECTS, DISTANCE (POINT) or "
                             "COORD1/COORD2 (POINT)", node)
        if name in _UNSUPPORTED_GEOMETRY:
            raise self.error(f"{name} is not supported by this service", node)
        raise self.error(f"unknown function {node.name}; ADQL functions include ABS, ROUND, LOG, DISTANCE, "
                         "CONTAINS (TAP_SCHEMA and the capabilities list them)", node)

    def arity(self, node: exp.Anonymous, arities: tuple[int, ...]) -> None:
        if len(node.expressions) not in arities:
            wanted = " or ".join(str(a) for a in arities[:2])
            raise self.error(f"{node.name.upper()} takes {wanted} argument{'s' if arities != (1,) else ''}, "
                             f"not {len(node.expressions)}", node)

    def aggregate(self, node: exp.Anonymous, name: str, scope: _Scope) -> exp.Expression:
        self.arity(node, (1,))
        arg = node.expressions[0]
        if isinstance(arg, exp.Star):
            if name != "COUNT":
                raise self.error(f"{name}(*) is not ADQL; only COUNT(*)", node)
            inner: exp.Expression = exp.Star()
        elif isinstance(arg, exp.Distinct):
            self.check(arg, _ARGS[exp.Distinct])
            if len(arg.expressions) != 1:
                raise self.error(f"{name}(DISTINCT ...) takes one expression", node)
            inner = exp.Distinct(expressions=[self.expr(arg.expressions[0], scope)])
        else:
            inner = self.expr(arg, scope)
        return exp.Anonymous(this=name.lower(), expressions=[inner])

    # geometry ----------------------------------------------------------------------------

    def spatial_comparison(self, node: exp.Expression, scope: _Scope) -> exp.Expression | None:
        """``CONTAINS(...) = 1`` and the like, and ``DISTANCE(...) < r``; None for other comparisons."""
        left, right = node.this, node.expression
        if _is_call(right, "CONTAINS", "INTERSECTS", "BEST_MATCH"):
            left, right = right, left
        if _is_call(left, "BEST_MATCH"):
            if _constant(right) != 1.0 or not isinstance(node, exp.EQ):
                raise self.error("compare BEST_MATCH(...) with = 1", node)
            return self.best_match(left, scope)
        if _is_call(left, "CONTAINS", "INTERSECTS"):
            value = _constant(right)
            if value not in (0.0, 1.0) or not isinstance(node, (exp.EQ, exp.NEQ)):
                raise self.error(f"compare {left.name.upper()}(...) with = 1 or = 0", node)
            predicate, prune, pair = self.containment(left, scope)
            if (value == 1.0) == isinstance(node, exp.EQ):
                if prune is None and pair is not None:
                    joined = self.positional_join(predicate, *pair)
                    if joined is not None:
                        return joined
                return exp.Paren(this=self.pruning(predicate, prune))
            return exp.Not(this=exp.Paren(this=predicate))
        if isinstance(node, (exp.LT, exp.LTE)) and _is_call(node.this, "DISTANCE"):
            distance, radius = node.this, node.expression
        elif isinstance(node, (exp.GT, exp.GTE)) and _is_call(node.expression, "DISTANCE"):
            distance, radius = node.expression, node.this
        else:
            return None
        first, second = self.distance_points(distance, scope)
        degrees = exp.Div(this=_separation_arcsec(first, second), expression=exp.Literal.number("3600.0"))
        limit = self.expr(radius, scope)
        sides = (degrees, limit) if isinstance(node, (exp.LT, exp.LTE)) else (limit, degrees)
        test = type(node)(this=sides[0], expression=sides[1])
        cone = _cone_of(first, second, _constant(radius))
        if cone is None:
            joined = self.positional_join(test, first, second, _finite_constant(radius))
            if joined is not None:
                return joined
        return exp.Paren(this=self.pruning(test, cone))

    def distance_points(self, node: exp.Anonymous, scope: _Scope) -> tuple[_Point, _Point]:
        args = node.expressions
        if len(args) == 4:
            return (self.point_from(args[0], args[1], scope), self.point_from(args[2], args[3], scope))
        if len(args) == 2:
            first, second = self.geometry(args[0], scope), self.geometry(args[1], scope)
            if isinstance(first, _Point) and isinstance(second, _Point):
                return first, second
        raise self.error("DISTANCE takes two POINTs or four numbers: DISTANCE(POINT(ra1, dec1), POINT(ra2, dec2))",
                         node)

    def containment(self, node: exp.Anonymous, scope: _Scope) -> tuple[exp.Expression, _Cone | None, tuple | None]:
        """The exact test of CONTAINS/INTERSECTS ``node``, the cone for pruning, if any, and for a
        circle (point, centre, constant radius or None): what a positional join is made of."""
        name = node.name.upper()
        if len(node.expressions) != 2:
            raise self.error(f"{name} takes two arguments: {name}(POINT(ra, dec), CIRCLE(ra, dec, r))", node)
        first, second = (self.geometry(a, scope) for a in node.expressions)
        if name == "INTERSECTS" and isinstance(second, _Point) and not isinstance(first, _Point):
            first, second = second, first
        if not isinstance(first, _Point):
            raise self.error(f"{name} of two regions is not supported; the first argument must be a POINT", node)
        if isinstance(second, _Point):
            raise self.error(f"{name} of two points is not supported; use DISTANCE(p1, p2) = 0", node)
        if isinstance(second, _Circle):
            test = exp.LTE(this=_separation_arcsec(first, second.center),
                           expression=exp.Mul(this=exp.Paren(this=second.radius),
                                              expression=exp.Literal.number("3600.0")))
            return test, _cone_of(first, second.center, second.radius_const), \
                (first, second.center, second.radius_const)
        return (*self.in_polygon(first, second, node), None)

    def in_polygon(self, point: _Point, polygon: _Polygon, node: exp.Expression) -> tuple[exp.Expression, _Cone | None]:
        """Inside a convex polygon: on the inner side of every edge's great circle."""
        vectors = [_unit(ra, dec) for ra, dec in polygon.vertices]
        normals = [_cross(a, b) for a, b in zip(vectors, vectors[1:] + vectors[:1])]
        if any(_norm(n) < 1e-15 for n in normals):
            raise self.error("the polygon has two equal or opposite consecutive vertices", node)
        center = _normalized([sum(c) for c in zip(*vectors)])
        # the interior is on the side of each edge where the other vertices are (either winding)
        sign = 1.0 if _dot(normals[0], center) >= 0 else -1.0
        normals = [[sign * c for c in n] for n in normals]
        # every vertex on the inner side of every edge (NumPy: the check is quadratic in the vertices)
        import numpy as np

        sides = np.asarray(normals) @ np.asarray(vectors).T
        k = np.arange(len(vectors))
        sides[k, k] = sides[k, (k + 1) % len(vectors)] = 0.0  # an edge's own vertices lie on it
        if (sides < -1e-12).any():
            raise self.error("the polygon is not convex (or its edges cross); only convex polygons are "
                             "supported: split it into convex ones joined with OR", node)
        xyz = [exp.Anonymous(this=f"sky_{axis}", expressions=[_copy(point.ra), _copy(point.dec)]) for axis in "xyz"]
        tests: list[exp.Expression] = []
        for n in normals:
            total: exp.Expression = exp.Mul(this=_number(n[0]), expression=_copy(xyz[0]))
            for k in (1, 2):
                total = exp.Add(this=total, expression=exp.Mul(this=_number(n[k]), expression=_copy(xyz[k])))
            tests.append(exp.GTE(this=total, expression=exp.Literal.number(0)))
        radius = max(_angle(center, v) for v in vectors)
        cone = None
        if point.position_of is not None and radius < math.pi / 2:
            ra, dec = _radec(center)
            cone = _Cone(point.position_of, ra, dec, math.degrees(radius))
        return exp.and_(*tests, copy=False), cone

    def geometry(self, node: exp.Expression, scope: _Scope) -> _Point | _Circle | _Polygon:
        """A POINT, CIRCLE, BOX or POLYGON argument."""
        if not (isinstance(node, exp.Anonymous) and node.name.upper() in _REGIONS):
            if isinstance(node, exp.Anonymous) and node.name.upper() in _UNSUPPORTED_GEOMETRY:
                raise self.error(f"{node.name.upper()} is not supported by this service", node)
            raise self.error("expected POINT(ra, dec), CIRCLE(ra, dec, r), BOX(ra, dec, w, h) or POLYGON(ra1, dec1, "
                             "ra2, dec2, ...) here (columns of geometry type are not supported)", node)
        self.check(node, _ARGS[exp.Anonymous])
        name = node.name.upper()
        args = self.without_frame(node)
        if name == "POINT":
            if len(args) != 2:
                raise self.error("POINT takes ra and dec: POINT(ra, dec) or POINT('ICRS', ra, dec)", node)
            return self.point_from(args[0], args[1], scope)
        if name == "CIRCLE":
            if len(args) == 3:
                center = self.point_from(args[0], args[1], scope)
            elif len(args) == 2 and isinstance(center := self.geometry(args[0], scope), _Point):
                pass
            else:
                raise self.error("CIRCLE takes a center and a radius in degrees: CIRCLE(ra, dec, r) or "
                                 "CIRCLE(POINT(ra, dec), r)", node)
            return _Circle(center, self.expr(args[-1], scope), _finite_constant(args[-1]))
        if name == "BOX":
            if len(args) == 3 and _is_call(args[0], "POINT"):
                args = [*self.without_frame(args[0]), *args[1:]]
            values = [_finite_constant(a) for a in args]
            if len(args) != 4 or None in values:
                raise self.error("BOX takes a center, a width and a height in degrees, all numbers: "
                                 "BOX(ra, dec, width, height)", node)
            ra, dec, width, height = values
            if abs(dec) + height / 2 >= 90 or width <= 0 or height <= 0 or width >= 180:
                raise self.error("the BOX must have a positive size and stay clear of the poles; use a CIRCLE "
                                 "or a POLYGON there", node)
            return _Polygon([(ra - width / 2, dec - height / 2), (ra + width / 2, dec - height / 2),
                             (ra + width / 2, dec + height / 2), (ra - width / 2, dec + height / 2)])
        # POLYGON: numbers, or points
        if all(_is_call(a, "POINT") for a in args):
            args = [c for a in args for c in self.without_frame(a)]
        values = [_finite_constant(a) for a in args]
        if len(args) < 6 or len(args) % 2 or None in values:
            raise self.error("POLYGON takes at least 3 vertices as numbers: POLYGON(ra1, dec1, ra2, dec2, ra3, dec3, "
                             "...) (vertices that are columns are not supported)", node)
        if any(abs(d) > 90 for d in values[1::2]):
            raise self.error("a POLYGON vertex has |dec| > 90", node)
        if len(args) // 2 > MAX_POLYGON_VERTICES:
            # each vertex is one more term DuckDB evaluates for every row the polygon's cone holds
            raise self.error(f"the POLYGON has {len(args) // 2:,} vertices; at most {MAX_POLYGON_VERTICES:,} are "
                             "accepted: simplify it, or split it into polygons joined with OR", node)
        return _Polygon(list(zip(values[0::2], values[1::2])))

    def without_frame(self, node: exp.Anonymous) -> list[exp.Expression]:
        """The arguments of a geometry function without its optional coordinate system (ICRS only)."""
        args = list(node.expressions)
        if args and isinstance(args[0], exp.Literal) and args[0].is_string:
            frame = args[0].this.strip().upper()
            if frame not in ("", "ICRS"):
                raise self.error(f"coordinate system '{args[0].this}' is not supported; positions are ICRS "
                                 "(write 'ICRS' or leave it out)", args[0])
            args = args[1:]
        return args

    def point_from(self, ra: exp.Expression, dec: exp.Expression, scope: _Scope) -> _Point:
        ra_value, dec_value = _finite_constant(ra), _finite_constant(dec)
        const = (ra_value, dec_value) if ra_value is not None and dec_value is not None else None
        if const is not None and abs(const[1]) > 90:
            raise self.error(f"declination {const[1]:g} is outside [-90, 90]", dec)
        position_of = None
        if isinstance(ra, exp.Column) and isinstance(dec, exp.Column):
            a, b = self.column(ra, scope), self.column(dec, scope)
            source = a.source
            if source is not None and source is b.source and source.table is not None \
                    and source.table.healpix_column and source.table.position == (a.column, b.column):
                position_of = source
            return _Point(a.sql, b.sql, None, position_of,
                          source if source is not None and source is b.source else None)
        return _Point(self.expr(ra, scope), self.expr(dec, scope), const, None)

    def best_match(self, node: exp.Anonymous, scope: _Scope) -> exp.Expression:
        """``1 = BEST_MATCH(POINT(c.ra, c.dec), CIRCLE(t.ra, t.dec, r))`` in a JOIN's ON: CONTAINS,
        keeping for each upload row only its nearest partner (a stellardb extension)."""
        if len(node.expressions) != 2:
            raise self.error(_BEST_MATCH_USE, node)
        containment = exp.Anonymous(this="CONTAINS", expressions=node.expressions)
        predicate, prune, pair = self.containment(containment, scope)
        joined = None
        if prune is None and pair is not None:
            joined = self.positional_join(predicate, *pair, best=True)
        if joined is None:
            raise self.error(_BEST_MATCH_USE, node)
        return joined

    def positional_join(self, test: exp.Expression, first: _Point, second: _Point,
                        radius_deg: float | None, best: bool = False) -> exp.Expression | None:
        """A JOIN's ``ON`` test that two tables' positions lie within a constant radius, run as
        the project's crossmatch runs (sql/30_crossmatch): a hash join on zone cells instead of
        comparing every pair.  The table with a HEALPix index (a release table) offers each row to
        every zone cell its disk of the radius reaches (zone_search_cells); the other table (an
        upload) has each row in its one cell (zone_cell_of); the exact ``test`` then runs on the
        candidates only.  None where that cannot be done (the test then compares every pair)."""
        if self.join_context is None or radius_deg is None or not 0 <= radius_deg <= _XMATCH_MAX_RADIUS_DEG:
            return None
        before, right, side = self.join_context
        for wide, narrow in ((first, second), (second, first)):
            big = wide.position_of or wide.columns_of
            small = narrow.columns_of
            if big is None or small is None or big is small or big.out is None or small.out is None:
                continue
            if wide.position_of is None and narrow.position_of is not None:
                continue  # the indexed table is the one offered to several cells
            # the offered table's copies must meet their partner's cell: never on a preserved side
            preserved = {"LEFT": before, "RIGHT": [right], "FULL": before + [right]}.get(side, [])
            if any(big is s for s in preserved) or not (big is right or small is right):
                continue
            self.xmatched += 1
            if small.table is not None and small.table.schema == UPLOAD_SCHEMA:
                return self.upload_pairs(big, small, wide, narrow, radius_deg, test, best)
            if best:
                break
            cell = f"_xm_cell_{self.xmatched}"
            reach_deg = radius_deg + _PRUNE_MARGIN_ARCSEC / 3600
            # (the table's HEALPix index is of its own position: of no use for other columns)
            big_inner = self.cells_subquery(big, wide, f"UNNEST(zone_search_cells({{ra}}, {{dec}}, "
                                                        f"{_number(reach_deg).sql()})) AS \"{cell}\"",
                                            self.coverage_filter(big, small, reach_deg * 3600)
                                            if wide.position_of is big else None)
            small_inner = self.cells_subquery(small, narrow, f"zone_cell_of({{ra}}, {{dec}}) AS \"{cell}\"", None)
            big.out.replace(big_inner)
            big.out = big_inner
            small.out.replace(small_inner)
            small.out = small_inner
            equal = exp.EQ(this=exp.Column(this=exp.to_identifier(cell, quoted=True),
                                           table=exp.to_identifier(big.corr, quoted=True)),
                           expression=exp.Column(this=exp.to_identifier(cell, quoted=True),
                                                 table=exp.to_identifier(small.corr, quoted=True)))
            return exp.Paren(this=exp.and_(equal, test, copy=False))
        return None

    def upload_pairs(self, big: _Source, small: _Source, wide: _Point, narrow: _Point, radius_deg: float,
                     test: exp.Expression, best: bool) -> exp.Expression:
        """The positional join of the upload ``small`` with ``big`` as the pairs themselves: ``big``
        becomes the subquery of its rows that meet an upload row (zone cells, then the exact test),
        each with that row's number, and the join an equality on it.  So an upload row keeps its
        multiplicity whatever the join (a LEFT JOIN shows an unmatched row once), BEST_MATCH keeps
        the nearest partner of each upload row (ties: the smaller id), and an upload column
        ``epoch`` (Julian years) moves ``big``'s stars with their proper motions to it."""
        def ident(name: str) -> str:  # every name quoted by sqlglot: an upload's names are the user's
            return exp.to_identifier(name, quoted=True).sql(dialect=_Output)

        def plain(column: exp.Expression) -> str:
            return ident(column.name)

        def on(corr: str, column: str) -> str:
            return f"{ident(corr)}.{ident(column)}"

        r, u = big.corr, small.corr
        row = f"_xm_row_{self.xmatched}"
        cell = f"_xm_cell_{self.xmatched}"
        radius_arcsec = radius_deg * 3600
        big_columns = {c.name.lower() for c in big.columns}
        # the tested separation is a column of the pairs (a name the table does not have already)
        separation_column = next(name for name in (f"upload_sep_arcsec{suffix}" for suffix in ("", "_2", "_3", "_4",
                                                                                               f"_{self.xmatched}_x"))
                                 if name not in big_columns)
        moving = "epoch" in small.table.columns and {"pmra", "pmdec"} <= big_columns
        ra, dec = on(r, wide.ra.name), on(r, wide.dec.name)
        q = [f"sky_{axis}({on(u, narrow.ra.name)}, {on(u, narrow.dec.name)})" for axis in "xyz"]
        if moving:
            # as sql/30_crossmatch/gaia_motion.sql: unit vector at ref_epoch plus the tangent motion
            # (rad/yr), seen at the upload row's epoch; the reach grows by the motion over the largest
            # epoch difference of the upload
            ref = f"coalesce({on(r, 'ref_epoch')}, 2016.0)" if "ref_epoch" in big_columns else "2016.0"
            pm_ra = f"radians(coalesce({on(r, 'pmra')}, 0.0) / 3600000.0)"
            pm_dec = f"radians(coalesce({on(r, 'pmdec')}, 0.0) / 3600000.0)"
            v = [f"(-{pm_ra} * sin(radians({ra})) - {pm_dec} * sin(radians({dec})) * cos(radians({ra})))",
                 f"({pm_ra} * cos(radians({ra})) - {pm_dec} * sin(radians({dec})) * sin(radians({ra})))",
                 f"({pm_dec} * cos(radians({dec})))"]
            dt = f"(coalesce({on(u, 'epoch')}, {ref}) - {ref})"  # no epoch: the table's own
            p = [f"sky_{axis}({ra}, {dec})" for axis in "xyz"]
            separation = f"moved_sep_arcsec({', '.join(p)}, {', '.join(v)}, {dt}, {', '.join(q)})"
            exact = f"{separation} <= {radius_arcsec!r}"
            # the reach, per row of big (in its own subquery: columns unqualified)
            upload, own_ref = small.table.sql_name, ("coalesce(\"ref_epoch\", 2016.0)" if "ref_epoch" in big_columns
                                                     else "2016.0")
            span = f'greatest(abs("_xm_epoch_lo" - {own_ref}), abs("_xm_epoch_hi" - {own_ref}))'
            # (the upload's epochs come in as columns: DuckDB takes no subquery inside the macro's lambdas)
            epochs = f' CROSS JOIN (SELECT min("epoch") AS "_xm_epoch_lo", max("epoch") AS "_xm_epoch_hi" FROM {upload})'
            # at most _MAX_MOTION_REACH_DEG: a star faster than any real one (absurd pm) is not followed
            reach = (f'least(({radius_arcsec!r} + {_PRUNE_MARGIN_ARCSEC!r} + sqrt(coalesce("pmra", 0.0) ^ 2 + '
                     f'coalesce("pmdec", 0.0) ^ 2) / 1000.0 * coalesce({span}, 0.0)) / 3600.0, '
                     f'{_MAX_MOTION_REACH_DEG!r})')
        else:
            separation = (f"vector_sep_arcsec(sky_x({ra}, {dec}), sky_y({ra}, {dec}), sky_z({ra}, {dec}), "
                          f"{', '.join(q)})")
            exact = test.sql(dialect=_Output)
            reach = _number(radius_deg + _PRUNE_MARGIN_ARCSEC / 3600).sql(dialect=_Output)
            epochs = ""
        # the coverage of the upload bounds the rows read; not with motions (the reach varies), nor
        # when the join is on other columns than the position the table's HEALPix index is of
        indexed = wide.position_of is big
        where = None if moving or not indexed else self.coverage_filter(big, small,
                                                                        radius_arcsec + _PRUNE_MARGIN_ARCSEC)
        key = next((c for c in ("source_id", "object_id") if c in big_columns), None)
        order_by = f"{separation}" + (f", {on(r, key)}" if key else "")
        # the upload side: only the columns the match reads (its own names cannot meet ours)
        needed = [UPLOAD_ROW, narrow.ra.name, narrow.dec.name] + (["epoch"] if moving else [])
        healpix = big.table.healpix_column if big.table is not None else None
        if not moving and indexed and healpix and small.table.cells is not None:
            # Still stars: HEALPix cells, an integer shift of the index the table already has (no
            # trigonometry on its side, measured 16.3 -> ~2 s for 1 M x 10 M).  Each upload row
            # is offered to its pixel and the 8 around it, at the finest order whose pixels are at
            # least 4x the reach wide: any point within the reach then lies in one of the nine
            order = cells_order(radius_deg + _PRUNE_MARGIN_ARCSEC / 3600)
            cells_table = small.table.cells(order, narrow.ra.name, narrow.dec.name)
            sql = (f'SELECT {ident(r)}.*, {on(u, UPLOAD_ROW)} AS "{row}", {separation} AS {ident(separation_column)} '
                   f'FROM (SELECT *, ({ident(healpix)} >> {2 * (29 - order)}) AS "{cell}" FROM _big'
                   + (f" WHERE {where}" if where else "") + f") AS {ident(r)} "
                   f"JOIN {cells_table} AS {ident(u)} ON {on(r, cell)} = {on(u, '_cell')} "
                   f"WHERE {exact}"
                   + (f' QUALIFY row_number() OVER (PARTITION BY {on(u, UPLOAD_ROW)} ORDER BY {order_by}) = 1'
                      if best else ""))
            return self.replace_with_pairs(big, small, r, u, row, separation_column, sql)
        sql = (f'SELECT {ident(r)}.*, {on(u, UPLOAD_ROW)} AS "{row}", {separation} AS {ident(separation_column)} '
               f'FROM (SELECT *, UNNEST(zone_search_cells({plain(wide.ra)}, {plain(wide.dec)}, {reach})) AS "{cell}" '
               f'FROM _big{epochs}' + (f" WHERE {where}" if where else "") + f") AS {ident(r)} "
               f"JOIN (SELECT {', '.join(ident(c) for c in dict.fromkeys(needed))}, "
               f'zone_cell_of({plain(narrow.ra)}, {plain(narrow.dec)}) AS "{cell}" '
               f"FROM {small.table.sql_name}) AS {ident(u)} ON {on(r, cell)} = {on(u, cell)} "
               f"WHERE {exact}"
               + (f' QUALIFY row_number() OVER (PARTITION BY {on(u, UPLOAD_ROW)} ORDER BY {order_by}) = 1'
                  if best else ""))
        return self.replace_with_pairs(big, small, r, u, row, separation_column, sql)

    def replace_with_pairs(self, big: _Source, small: _Source, r: str, u: str, row: str, separation_column: str,
                           sql: str) -> exp.Expression:
        """``big``'s FROM node replaced by the pairs subquery ``sql`` (its innermost FROM ``_big`` is
        ``big``'s own table); the join's new test."""
        select = sqlglot.parse_one(sql, dialect=_Output)
        inner = select.args["from_"].this.this
        big_from = big.out.copy()
        big_from.set("alias", None)
        inner.args["from_"].set("this", big_from)
        pairs = exp.Subquery(this=select, alias=exp.TableAlias(this=exp.to_identifier(r, quoted=True)))
        big.out.replace(pairs)
        big.out = pairs
        # the separation (at the upload's epoch, with motions) can be selected as c.upload_sep_arcsec
        big.columns.append(_SourceColumn(separation_column, None, None))
        big._index = None
        return exp.EQ(this=exp.Column(this=exp.to_identifier(row, quoted=True), table=exp.to_identifier(r, quoted=True)),
                      expression=exp.Column(this=exp.to_identifier(UPLOAD_ROW, quoted=True),
                                            table=exp.to_identifier(u, quoted=True)))

    def cells_subquery(self, source: _Source, point: _Point, cell_sql: str, where: str | None) -> exp.Subquery:
        """``source``'s FROM node as ``(SELECT *, <cell> FROM <it> [WHERE ...]) AS corr``; ``cell_sql``
        names the position as {ra} and {dec}."""
        def plain(column: exp.Expression) -> str:
            return exp.Column(this=exp.to_identifier(column.name, quoted=True)).sql(dialect=_Output)

        inner_from = source.out.copy()
        inner_from.set("alias", None)
        body = cell_sql.format(ra=plain(point.ra), dec=plain(point.dec))
        select = sqlglot.parse_one(f"SELECT *, {body} FROM _x" + (f" WHERE {where}" if where else ""),
                                   dialect=_Output)
        select.args["from_"].set("this", inner_from)
        return exp.Subquery(this=select, alias=exp.TableAlias(this=exp.to_identifier(source.corr, quoted=True)))

    def coverage_filter(self, big: _Source, small: _Source, reach_arcsec: float) -> str | None:
        """SQL keeping the rows of the indexed table ``big`` that can be near a row of ``small`` (an
        upload that knows where its rows are): HEALPix ranges, and the files that hold them."""
        table, other = big.table, small.table
        if table is None or not table.healpix_column or other is None or other.coverage is None:
            return None
        ranges = other.coverage(reach_arcsec)
        if ranges is None:
            return None
        if not ranges:
            return "FALSE"
        column = f'"{table.healpix_column}"'
        terms = " OR ".join(f"{column} BETWEEN {lo} AND {hi}" for lo, hi in ranges)
        where = f"{column} BETWEEN {ranges[0][0]} AND {ranges[-1][1]} AND ({terms})"
        if table.partitions and table.file_column:
            files = [name for first, last, name in table.partitions
                     if any(first <= hi and lo <= last for lo, hi in ranges)]
            if files and len(files) < len(table.partitions):
                where += f' AND "{table.file_column}" IN (' + ", ".join(
                    exp.Literal.string(f).sql(dialect=_Output) for f in files) + ")"
        return where

    def pruning(self, test: exp.Expression, cone: _Cone | None) -> exp.Expression:
        """``test``, with the HEALPix ranges of ``cone`` in front when it has some."""
        if cone is None:
            return test
        from stellardb.release.reader import cone_ranges

        ranges = cone_ranges(cone.ra, cone.dec, cone.radius_deg * 3600 + _PRUNE_MARGIN_ARCSEC)
        if not ranges:  # nothing can match (or the cone is not one): no pruning to add
            return test
        column = exp.Column(this=exp.to_identifier(cone.source.table.healpix_column, quoted=True),
                            table=exp.to_identifier(cone.source.corr, quoted=True))
        terms = [exp.Between(this=_copy(column), low=exp.Literal.number(lo), high=exp.Literal.number(hi))
                 for lo, hi in ranges]
        self.pruned += 1
        # the ranges' span first: DuckDB skips row groups by their min/max for a BETWEEN, not for an
        # OR of them (one 1M-row file: 5.3 -> 4.3 ms a cone, measured; more in larger files)
        span = exp.Between(this=_copy(column), low=exp.Literal.number(min(lo for lo, _ in ranges)),
                           high=exp.Literal.number(max(hi for _, hi in ranges)))
        ors = exp.Paren(this=exp.or_(*terms, copy=False))
        pruned = [span, ors] if len(ranges) > 1 else [ors]
        low, high = min(lo for lo, _ in ranges), max(hi for _, hi in ranges)
        if len(ranges) > 1 and sum(hi - lo + 1 for lo, hi in ranges) >= _OR_WORTH_IT * (high - low + 1):
            # The ranges fill much of their span (a small cone away from a coarse pixel's edge): the
            # OR would skip no row group the span does not, and DuckDB checks it against every row
            # group's statistics (10.0 -> 8.4 ms a 1 arcmin cone on 10 M stars, measured)
            pruned = [span]
        table = cone.source.table
        if table.partitions and table.file_column:
            # The files whose pixel meets a range.  Rows of other files fail the ranges anyway, so the
            # test means the same; DuckDB skips those files unopened (row-group statistics alone
            # still open every file: 8.7 -> 4.3 ms a cone over 12 files, measured)
            files = [name for first, last, name in table.partitions
                     if any(first <= hi and lo <= last for lo, hi in ranges)]
            # (no file at all: no file test, whose FALSE would not be NULL for a NULL position under NOT)
            if files and len(files) < len(table.partitions):
                file_column = exp.Column(this=exp.to_identifier(table.file_column, quoted=True),
                                         table=exp.to_identifier(cone.source.corr, quoted=True))
                pruned.append(exp.In(this=file_column, expressions=[exp.Literal.string(f) for f in files]))
        return exp.and_(*pruned, test, copy=False)


@dataclass
class _Cone:
    """A cone that covers a spatial test of ``source``'s position."""

    source: _Source
    ra: float
    dec: float
    radius_deg: float


# --- helpers --------------------------------------------------------------------------------

def cells_order(reach_deg: float) -> int:
    """The finest HEALPix order (at most 16) whose pixels are at least 4x ``reach_deg`` wide
    (healpy's resolution, the square root of a pixel's area): a point within the reach of a
    position then lies in the position's pixel or one of its 8 neighbours (checked on 2 M random
    points near the poles and base-pixel corners with a margin of 2: none outside)."""
    order = 0
    while order < 16 and math.sqrt(4 * math.pi / (12 * 4 ** (order + 1))) >= 4 * math.radians(reach_deg):
        order += 1
    return order


def _cone_of(first: _Point, second: _Point, radius: float | None) -> _Cone | None:
    """The pruning cone of ``separation(first, second) <= radius``: one point a table's position,
    the other and the radius constants."""
    if radius is None or not math.isfinite(radius) or radius <= 0:
        return None
    for point, other in ((first, second), (second, first)):
        if point.position_of is not None and other.const is not None:
            return _Cone(point.position_of, other.const[0], other.const[1], radius)
    return None


def _separation_arcsec(first: _Point, second: _Point) -> exp.Expression:
    """Angle between two points in arcsec (atan2 of cross and dot products of unit vectors)."""
    def xyz(point: _Point) -> list[exp.Expression]:
        if point.const is not None:
            return [_number(c) for c in _unit(*point.const)]
        return [exp.Anonymous(this=f"sky_{axis}", expressions=[_copy(point.ra), _copy(point.dec)]) for axis in "xyz"]

    return exp.Anonymous(this="vector_sep_arcsec", expressions=[*xyz(first), *xyz(second)])


def _constant(node: exp.Expression) -> float | None:
    """The value of a constant numeric ADQL expression (literals, arithmetic, PI() ...), else None."""
    try:
        if isinstance(node, exp.Literal) and not node.is_string:
            return float(node.this)
        if isinstance(node, exp.Paren):
            return _constant(node.this)
        if isinstance(node, exp.Neg):
            value = _constant(node.this)
            return None if value is None else -value
        if isinstance(node, (exp.Add, exp.Sub, exp.Mul, exp.Div)):
            a, b = _constant(node.this), _constant(node.expression)
            if a is None or b is None:
                return None
            operations = {exp.Add: a.__add__, exp.Sub: a.__sub__, exp.Mul: a.__mul__, exp.Div: a.__truediv__}
            return operations[type(node)](b)
        if isinstance(node, exp.Anonymous) and node.name.upper() in _CONSTANT_FUNCTIONS:
            values = [_constant(a) for a in node.expressions]
            if None not in values:
                return float(_CONSTANT_FUNCTIONS[node.name.upper()](*values))
    except (ArithmeticError, ValueError, TypeError):
        return None
    return None


def _finite_constant(node: exp.Expression) -> float | None:
    """_constant, but None for an infinite or NaN value (1e308 * 10): never a region's number."""
    value = _constant(node)
    return value if value is not None and math.isfinite(value) else None


def _copy(node: exp.Expression) -> exp.Expression:
    """A copy of ``node``; a column reference is rebuilt (sqlglot's deepcopy took half of a cone's
    translation: a spatial test repeats the point's columns a dozen times)."""
    if isinstance(node, exp.Column) and set(node.args) <= {"this", "table"} \
            and all(isinstance(node.args.get(k), (exp.Identifier, type(None))) for k in ("this", "table")):
        parts = {k: exp.Identifier(this=v.this, quoted=v.args.get("quoted"))
                 for k, v in node.args.items() if v is not None}
        return exp.Column(**parts)
    if isinstance(node, exp.Anonymous) and all(isinstance(a, exp.Column) for a in node.expressions):
        return exp.Anonymous(this=node.this, expressions=[_copy(a) for a in node.expressions])
    return node.copy()


@functools.lru_cache(maxsize=256)
def _parsed_table(sql_name: str) -> exp.Table:
    """The table expression of a published table's DuckDB name (parsed once; callers copy it)."""
    return exp.to_table(sql_name, dialect="duckdb")


def _is_call(node: exp.Expression, *names: str) -> bool:
    return isinstance(node, exp.Anonymous) and node.name.upper() in names


def _number(value: float) -> exp.Expression:
    """A DOUBLE literal that reads back as ``value`` exactly (exponent form: DuckDB reads a
    plain decimal as DECIMAL)."""
    if not math.isfinite(value):
        raise AdqlError(f"{value} is not a finite number; give finite coordinates and sizes")
    text = repr(abs(float(value)))
    literal = exp.Literal.number(text if "e" in text else text + "e0")
    return exp.Neg(this=literal) if value < 0 else literal


def _unique(names: list[str]) -> list[str]:
    """``names`` with repeats (case-insensitive: VOTable) made unique by _2, _3 ... (linear: a query
    of many ``*`` repeats every name hundreds of times)."""
    taken = {n.lower() for n in names}
    seen: set[str] = set()
    next_suffix: dict[str, int] = {}
    out = []
    for name in names:
        candidate = name
        if candidate.lower() in seen:
            # a suffixed name may not take the name of another column either
            k = next_suffix.get(name.lower(), 1)
            while True:
                k += 1
                candidate = f"{name}_{k}"
                if candidate.lower() not in seen and candidate.lower() not in taken:
                    break
            next_suffix[name.lower()] = k
        seen.add(candidate.lower())
        out.append(candidate)
    return out


def _some(names) -> str:
    names = list(names)
    return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")


def _all_sources(scope: _Scope | None) -> list[_Source]:
    found = []
    while scope is not None:
        found.extend(scope.sources)
        scope = scope.parent
    return found


def _describe(node: exp.Expression) -> str:
    text = node.sql(dialect=ADQL)
    return f"'{text[:40]}{'...' if len(text) > 40 else ''}' ({node.key.upper()})"


def _unit(ra_deg: float, dec_deg: float) -> list[float]:
    ra, dec = math.radians(ra_deg), math.radians(dec_deg)
    return [math.cos(dec) * math.cos(ra), math.cos(dec) * math.sin(ra), math.sin(dec)]


def _cross(a: list[float], b: list[float]) -> list[float]:
    return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]


def _dot(a: list[float], b: list[float]) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _norm(a: list[float]) -> float:
    return math.sqrt(_dot(a, a))


def _normalized(a: list[float]) -> list[float]:
    n = _norm(a)
    return [c / n for c in a] if n > 0 else [0.0, 0.0, 1.0]


def _angle(a: list[float], b: list[float]) -> float:
    return math.atan2(_norm(_cross(a, b)), _dot(a, b))


def _radec(v: list[float]) -> tuple[float, float]:
    return math.degrees(math.atan2(v[1], v[0])) % 360, math.degrees(math.asin(max(-1.0, min(1.0, v[2]))))
