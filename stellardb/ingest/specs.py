"""The four stored tables as ``ingest`` sees them: keys, required columns, positions, HEALPix rule."""

from __future__ import annotations

from dataclasses import dataclass, field

from stellardb.catalog.surveys import NEW_SURVEYS, SURVEYS




STAGE = "_ingest_stage"


NUMERIC_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "FLOAT", "DOUBLE", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}


FLOAT_TYPES = {"FLOAT", "DOUBLE"}


#: stellardb's own columns, computed here, never read from a file
DERIVED = {"healpix_12", "ingest_id"}


@dataclass(frozen=True)
class TableSpec:
    name: str
    #: columns that identify a row (checked for duplicates)
    key: tuple[str, ...]
    #: columns a file must have (after renaming)
    required: tuple[str, ...]
    #: (lon, lat) columns in degrees, if the table is positional
    position: tuple[str, str] | None
    #: how healpix_12 is computed: from Gaia's source_id, from the position, or either
    healpix_from: str
    #: columns a file needs to look like this table, to tell users which table a file belongs to
    signature: tuple[str, ...] = field(default=())


TABLES: dict[str, TableSpec] = {
    "gaia": TableSpec(
        "gaia", ("source_id",), ("source_id", "ra", "dec"), ("ra", "dec"), "source_id",
        signature=("source_id", "ra", "dec", "phot_g_mean_mag", "parallax", "pmra"),
    ),
    "skymapper": TableSpec(
        "skymapper", ("object_id",), ("object_id", "raj2000", "dej2000", "mean_epoch"), ("raj2000", "dej2000"), "position",
        signature=("object_id", "raj2000", "dej2000", "mean_epoch", "g_psf", "u_psf"),
    ),
    "distances": TableSpec(
        "distances", ("source_id",), ("source_id", "r_med_geo"), None, "source_id",
        signature=("source_id", "r_med_geo", "r_lo_geo", "r_hi_geo"),
    ),
    "sos": TableSpec(
        "sos", ("survey", "source_id"), (), ("ra", "dec"), "source_id_or_position",
        signature=("teff", "logg", "feh"),
    ),
}

# the photometric surveys declared in stellardb.catalog.surveys (SkyMapper is above: its
# table predates the specs); each is positional, keyed by its integer id
TABLES.update({
    name: TableSpec(
        name, (SURVEYS[name].key,),
        # an epoch column is required where the survey has no single epoch to fall back on (2MASS's jdate)
        (SURVEYS[name].key, *SURVEYS[name].position,
         *([SURVEYS[name].epoch_column] if SURVEYS[name].epoch_default_yr is None and SURVEYS[name].epoch_column else [])),
        SURVEYS[name].position, "position",
        signature=SURVEYS[name].signature,
    )
    for name in NEW_SURVEYS
})


#: Rows that can be stored: a source of gaia/skymapper/distances needs its id; a label
#: needs a Gaia id or a position, else it can never be matched to a star.
KEEP_ROW = {"sos": "source_id is not null or (ra is not null and dec is not null)"}
