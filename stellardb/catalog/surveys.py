"""Photometric surveys as declared specs: one entry each, never a special case in the code.

A :class:`Survey` says what stellardb needs to know about a photometric catalogue: its
key, position columns and epoch convention, its bands (magnitude and error columns, the
missing-value convention, A_band / E(B-V) with its published source), the default
crossmatch radius and which stored tables hold it.  Its SQL lives in ``sql/`` under the
survey's name (``00_tables/NAME.sql``, ``20_sources/NAME_src.sql``,
``30_crossmatch/NAME_positions.sql``, ``00_tables/xmatch_NAME.sql``,
``40_marts/NAME_features.sql``); tests/catalog/test_surveys.py checks that the two
agree.  The crossmatch itself is one definition for every survey
(``sql/30_crossmatch/xm_gaia_survey.sql``), and ingest presets for each survey's
spellings in the wild are in :mod:`stellardb.ingest.presets`.

Plain Python, imported by ingest, the simulator and the models alike.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Band:
    #: short name, used in the simulator and in messages ("j", "w1", "g")
    name: str
    #: the survey's magnitude column
    mag: str
    #: the survey's 1-sigma magnitude error column
    err: str
    #: A_band / E(B-V) (see Survey.extinction_source)
    r_ebv: float
    #: "AB" or "Vega"
    system: str


@dataclass(frozen=True)
class Survey:
    #: table name, command-line name, and prefix of its SQL files
    name: str
    title: str
    #: the survey's integer object id
    key: str
    #: (ra, dec) columns, degrees ICRS, at the row's epoch
    position: tuple[str, str]
    #: column holding the epoch of the position, and its unit ("mjd" or "jd");
    #: None: the survey publishes no per-row epoch
    epoch_column: str | None
    epoch_unit: str | None
    #: Julian year used when there is no epoch column (or it is NULL)
    epoch_default_yr: float | None
    bands: tuple[Band, ...]
    #: where the A_band / E(B-V) values come from
    extinction_source: str
    #: how a missing magnitude is written by the survey, and how stellardb reads it
    missing: str
    #: default crossmatch radius (arcsec) and the settings row that holds it
    radius_arcsec: float
    radius_setting: str
    #: the materialised crossmatch table and its column holding this survey's key
    xmatch_table: str
    xmatch_key: str
    #: a star needs at least this many of the bands to use the survey in a model
    min_bands: int
    #: columns a file needs to look like this survey (tells users which table a file is)
    signature: tuple[str, ...]
    #: where the survey looks (for messages and the simulator)
    footprint: str

    @property
    def table(self) -> str:
        return self.name

    @property
    def positions_view(self) -> str:
        return f"{self.name}_positions"

    @property
    def features_view(self) -> str:
        return f"{self.name}_features"

    @property
    def passes_column(self) -> str:
        """Column of the survey's features view: the star has enough of its bands."""
        return f"passes_{self.name}_cuts"

    def band(self, name: str) -> Band:
        for b in self.bands:
            if b.name == name:
                return b
        raise KeyError(f"{self.name} has no band {name!r}; it has {', '.join(b.name for b in self.bands)}")


# Schlafly & Finkbeiner 2011 (ApJ 737, 103), Table 6, R_V = 3.1: A_band / E(B-V)_SFD for
# the SFD map's E(B-V).  The same source for 2MASS, Pan-STARRS1 and SDSS keeps them
# mutually consistent.
_SF11 = "Schlafly & Finkbeiner 2011 (ApJ 737, 103), Table 6, R_V = 3.1"

SURVEYS: dict[str, Survey] = {
    s.name: s
    for s in [
        Survey(
            name="skymapper",
            title="SkyMapper Southern Survey DR4 master",
            key="object_id",
            position=("raj2000", "dej2000"),
            epoch_column="mean_epoch",
            epoch_unit="mjd",
            epoch_default_yr=None,
            bands=tuple(Band(b, f"{b}_psf", f"e_{b}_psf", r, "AB") for b, r in
                        (("u", 4.294), ("v", 4.026), ("g", 2.986), ("r", 2.288), ("i", 1.588), ("z", 1.206))),
            extinction_source="Wolf et al. 2018 (PASA 35, e010), Table 3",
            missing="NULL (empty in CSV)",
            radius_arcsec=1.0,
            radius_setting="xmatch_radius_arcsec",
            xmatch_table="xmatch",
            xmatch_key="skymapper_object_id",
            min_bands=4,
            signature=("object_id", "raj2000", "dej2000", "mean_epoch", "g_psf", "u_psf"),
            footprint="southern sky, dec < +2 deg (DR4 reaches about +16 deg in places)",
        ),
        Survey(
            name="tmass",
            title="2MASS All-Sky Point Source Catalog (PSC)",
            key="pts_key",
            position=("ra", "dec"),
            epoch_column="jdate",
            epoch_unit="jd",
            epoch_default_yr=None,
            bands=(Band("j", "j_m", "j_msigcom", 0.709, "Vega"),
                   Band("h", "h_m", "h_msigcom", 0.449, "Vega"),
                   Band("ks", "k_m", "k_msigcom", 0.302, "Vega")),
            extinction_source=_SF11,
            # 2MASS Explanatory Supplement sec. 4.4: an undetected band has a 95 % upper
            # limit in *_m, no *_msigcom, and ph_qual "U"
            missing="an upper limit: *_m is a 95 % confidence limit, *_msigcom is NULL and ph_qual says U; "
                    "stellardb uses *_m only where *_msigcom is given",
            radius_arcsec=1.0,
            radius_setting="tmass_match_radius_arcsec",
            xmatch_table="xmatch_tmass",
            xmatch_key="tmass_pts_key",
            min_bands=2,
            signature=("ra", "dec", "j_m", "h_m", "k_m", "jdate"),
            footprint="all sky, 1997-2001",
        ),
        Survey(
            name="allwise",
            title="AllWISE Source Catalog",
            key="cntr",
            position=("ra", "dec"),
            epoch_column="w1mjdmean",
            epoch_unit="mjd",
            # AllWISE positions combine the cryogenic and post-cryogenic passes (2010.0-2011.1)
            epoch_default_yr=2010.5,
            bands=(Band("w1", "w1mpro", "w1sigmpro", 0.18, "Vega"),
                   Band("w2", "w2mpro", "w2sigmpro", 0.16, "Vega"),
                   Band("w3", "w3mpro", "w3sigmpro", 0.15, "Vega"),
                   Band("w4", "w4mpro", "w4sigmpro", 0.11, "Vega")),
            extinction_source="W1, W2: Yuan, Liu & Xiang 2013 (MNRAS 430, 2188); W3, W4: approximate, A_band / A_Ks of "
                              "about 0.5 and 0.35 (mid-infrared law of Xue et al. 2016, ApJS 224, 23) times A_Ks / E(B-V) "
                              "= 0.302, uncertain by a third",
            # AllWISE Explanatory Supplement sec. 2.2: S/N < 2 gives a 95 % upper limit in
            # w?mpro, w?sigmpro NULL and ph_qual U
            missing="an upper limit: w?mpro is a 95 % confidence limit, w?sigmpro is NULL and ph_qual says U; "
                    "stellardb uses w?mpro only where w?sigmpro is given",
            radius_arcsec=2.0,
            radius_setting="allwise_match_radius_arcsec",
            xmatch_table="xmatch_allwise",
            xmatch_key="allwise_cntr",
            min_bands=2,
            signature=("cntr", "ra", "dec", "w1mpro", "w2mpro"),
            footprint="all sky, 2010-2011",
        ),
        Survey(
            name="ps1",
            title="Pan-STARRS1 DR2 mean object photometry (ObjectThin + MeanObject)",
            key="objID",
            position=("raMean", "decMean"),
            epoch_column="epochMean",
            epoch_unit="mjd",
            epoch_default_yr=2012.0,
            bands=(Band("g", "gMeanPSFMag", "gMeanPSFMagErr", 3.172, "AB"),
                   Band("r", "rMeanPSFMag", "rMeanPSFMagErr", 2.271, "AB"),
                   Band("i", "iMeanPSFMag", "iMeanPSFMagErr", 1.682, "AB"),
                   Band("z", "zMeanPSFMag", "zMeanPSFMagErr", 1.322, "AB"),
                   Band("y", "yMeanPSFMag", "yMeanPSFMagErr", 1.087, "AB")),
            extinction_source=_SF11,
            missing="-999 in every column (the MAST database's null); ingest reads it as NULL",
            radius_arcsec=1.0,
            radius_setting="ps1_match_radius_arcsec",
            xmatch_table="xmatch_ps1",
            xmatch_key="ps1_objid",
            min_bands=3,
            signature=("objID", "raMean", "decMean", "gMeanPSFMag", "rMeanPSFMag"),
            footprint="dec > -30 deg, 2009-2014",
        ),
        Survey(
            name="sdss",
            title="SDSS DR17 PhotoObj (primary photometry)",
            key="objID",
            position=("ra", "dec"),
            epoch_column="mjd",
            epoch_unit="mjd",
            epoch_default_yr=2004.0,
            bands=(Band("u", "psfMag_u", "psfMagErr_u", 4.239, "AB"),
                   Band("g", "psfMag_g", "psfMagErr_g", 3.303, "AB"),
                   Band("r", "psfMag_r", "psfMagErr_r", 2.285, "AB"),
                   Band("i", "psfMag_i", "psfMagErr_i", 1.698, "AB"),
                   Band("z", "psfMag_z", "psfMagErr_z", 1.263, "AB")),
            extinction_source=_SF11,
            missing="-9999 (CasJobs' null); ingest reads it as NULL.  Magnitudes are asinh (luptitudes)",
            radius_arcsec=1.0,
            radius_setting="sdss_match_radius_arcsec",
            xmatch_table="xmatch_sdss",
            xmatch_key="sdss_objid",
            min_bands=3,
            signature=("objID", "ra", "dec", "psfMag_u", "psfMag_g", "psfMag_r"),
            footprint="north Galactic cap and Stripe 82, 1998-2008",
        ),
    ]
}

#: surveys other than SkyMapper (which predates the specs and keeps its historical
#: table names: xmatch, and the seed's feature names)
NEW_SURVEYS = tuple(name for name in SURVEYS if name != "skymapper")


def survey(name: str) -> Survey:
    try:
        return SURVEYS[name]
    except KeyError:
        raise KeyError(f"unknown survey {name!r}; stellardb knows {', '.join(SURVEYS)}") from None


def epoch_yr_sql(s: Survey, alias: str = "") -> str:
    """SQL for the Julian year of a row's position (Julian years of 365.25 days from J2000.0 = JD 2451545.0)."""
    a = f"{alias}." if alias else ""
    if s.epoch_column is None:
        return f"{s.epoch_default_yr!r}"
    col = f"{a}{s.epoch_column}"
    jd = f"{col} + 2400000.5" if s.epoch_unit == "mjd" else col
    converted = f"2000.0 + ({jd} - 2451545.0) / 365.25"
    if s.epoch_default_yr is None:
        return converted
    return f"coalesce({converted}, {s.epoch_default_yr!r})"
