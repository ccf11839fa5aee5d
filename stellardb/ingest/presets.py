"""Column spellings found in the wild, one preset per source (see docs/catalogues.md).

A preset maps a file's column names onto stellardb's (the surveys' own archive
names: Gaia DR3 ``gaia_source``, SkyMapper ``master``, the Bailer-Jones archive
table, and the Survey-of-Surveys label schema), says which values mean
"missing", and for label tables names the survey and the epoch of the positions.
``stellardb ingest`` picks the preset whose names fit the file when none is given;
``--rename OLD=NEW`` adjusts any of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Preset:
    name: str
    table: str
    description: str
    #: file column -> stellardb column; matched exactly first, then ignoring case
    rename: dict[str, str] = field(default_factory=dict)
    #: stellardb column -> numeric values that mean "missing" there (NaN always does;
    #: "*" applies to every numeric column)
    null_values: dict[str, tuple[float, ...]] = field(default_factory=dict)
    #: label tables: survey name written to sos.survey when the file has none
    survey: str | None = None
    #: Julian epoch of the positions of a file without ref_epoch (label tables: J2000 catalogues;
    #: a gaia table copied by another catalogue with that catalogue's positions)
    ref_epoch: float | None = None
    #: the survey's own quality flags: (file column, SQL test on it that means "bad",
    #: stellardb columns set to NULL for such rows); the flag columns are not stored
    quality_flags: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    #: stellardb column -> file columns whose value is taken where the renamed one is empty
    #: (SWEET-Cat's exoplanet.eu position, else its NASA Exoplanet Archive one)
    fallbacks: dict[str, tuple[str, ...]] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        # ------------------------------------------------------------ gaia
        Preset("gaia-archive", "gaia", "Gaia DR3 gaia_source as the archive writes it (bulk ECSV, ADQL results)"),
        # ------------------------------------------------------------ skymapper
        Preset("skymapper-master", "skymapper", "SkyMapper DR2/DR4 master table (TAP/CSV/FITS/Parquet export)"),
        # ------------------------------------------------------------ 2MASS PSC
        Preset("tmass-irsa", "tmass", "2MASS All-Sky PSC as IRSA (fp_psc) writes it"),
        Preset(
            "tmass-gaia-archive",
            "tmass",
            "2MASS PSC as the Gaia archive copies it (gaiadr1.tmass_original_valid); tmass_oid stands in for pts_key",
            rename={"tmass_oid": "pts_key", "ks_m": "k_m", "ks_msigcom": "k_msigcom", "j_date": "jdate"},
        ),
        Preset(
            "gbs-v3-tmass",
            "tmass",
            "2MASS columns of the Gaia FGK benchmark stars v3 table (its ra/dec are 2MASS's)",
            rename={"tmass_oid": "pts_key", "designation_tmass": "designation", "ph_qual_tmass": "ph_qual",
                    "ks_m": "k_m", "ks_msigcom": "k_msigcom", "j_date": "jdate", "tmass_key": ""},
        ),
        # ------------------------------------------------------------ AllWISE
        Preset("allwise-irsa", "allwise", "AllWISE Source Catalog as IRSA (allwise_p3as_psd) writes it"),
        Preset(
            "allwise-gaia-archive",
            "allwise",
            "AllWISE as the Gaia archive copies it (gaiadr1.allwise_original_valid); allwise_oid stands in for cntr",
            rename={"allwise_oid": "cntr", "ra_error": "sigra", "dec_error": "sigdec", "w1mjd_mean": "w1mjdmean",
                    **{f"w{k}mpro_error": f"w{k}sigmpro" for k in range(1, 5)}},
        ),
        Preset(
            "gbs-v3-allwise",
            "allwise",
            "AllWISE columns of the Gaia FGK benchmark stars v3 table (ra_allwise/dec_allwise; its ra/dec are 2MASS's)",
            rename={"allwise_oid": "cntr", "designation_allwise": "designation", "ra_allwise": "ra",
                    "dec_allwise": "dec", "ra": "", "dec": "", "ra_error": "", "dec_error": "",
                    "ph_qual_allwise": "ph_qual", "w1mjd_mean": "w1mjdmean",
                    **{f"w{k}mpro_error": f"w{k}sigmpro" for k in range(1, 5)}},
        ),
        # ------------------------------------------------------------ Pan-STARRS1
        Preset("ps1-mast", "ps1", "Pan-STARRS1 DR2 ObjectThin + MeanObject as MAST (CasJobs, catalogs API) writes it; "
               "-999 is missing", null_values={"*": (-999.0,)}),
        Preset(
            "ps1-vizier",
            "ps1",
            "Pan-STARRS1 DR1 as VizieR II/349/ps1 writes it",
            rename={"RAJ2000": "raMean", "DEJ2000": "decMean", "e_RAJ2000": "raMeanErr", "e_DEJ2000": "decMeanErr",
                    "Epoch": "epochMean", "Nd": "nDetections",
                    **{f"{b}mag": f"{b}MeanPSFMag" for b in "grizy"}, **{f"e_{b}mag": f"{b}MeanPSFMagErr" for b in "grizy"}},
            null_values={"*": (-999.0,)},
        ),
        # ------------------------------------------------------------ SDSS
        Preset(
            "sdss-casjobs",
            "sdss",
            "SDSS DR17 PhotoObj/PhotoPrimary as CasJobs or SkyServer writes it; -9999 is missing, clean = 0 photometry "
            "is not used",
            null_values={"*": (-9999.0,)},
            # the SDSS "clean photometry" flag (no saturation, edge, deblending or interpolation problems)
            quality_flags=(("clean", "= 0", tuple(c for b in "ugriz" for c in (f"psfMag_{b}", f"psfMagErr_{b}"))),),
        ),
        # ------------------------------------------------------------ distances
        Preset("bailer-jones-archive", "distances", "Bailer-Jones 2021, Gaia archive external.gaiaedr3_distance"),
        Preset(
            "bailer-jones-vizier",
            "distances",
            "Bailer-Jones 2021, VizieR I/352/gedr3dis",
            rename={
                "Source": "source_id",
                "rgeo": "r_med_geo",
                "b_rgeo": "r_lo_geo",
                "B_rgeo": "r_hi_geo",
                "rpgeo": "r_med_photogeo",
                "b_rpgeo": "r_lo_photogeo",
                "B_rpgeo": "r_hi_photogeo",
                "Flag": "flag",
            },
        ),
        # ------------------------------------------------------------ labels
        Preset("sos", "sos", "Survey of Surveys spectro (our label schema)", survey="SoS"),
        Preset(
            "apogee-dr17",
            "sos",
            "APOGEE DR17 allStar",
            rename={
                "GAIAEDR3_SOURCE_ID": "source_id",
                "RA": "ra",
                "DEC": "dec",
                "TEFF": "teff",
                "TEFF_ERR": "e_teff",
                "LOGG": "logg",
                "LOGG_ERR": "e_logg",
                "FE_H": "feh",
                "FE_H_ERR": "e_feh",
            },
            null_values={"*": (-9999.0,)},
            survey="APOGEE-DR17",
            ref_epoch=2000.0,
            # ASPCAPFLAG bit 23 is STAR_BAD (APOGEE DR17 bitmask documentation)
            quality_flags=(("ASPCAPFLAG", "& 8388608 <> 0", ("teff", "e_teff", "logg", "e_logg", "feh", "e_feh")),),
        ),
        Preset(
            "galah-dr3",
            "sos",
            "GALAH DR3 main catalogue",
            rename={
                "dr3_source_id": "source_id",
                "teff": "teff",
                "e_teff": "e_teff",
                "logg": "logg",
                "e_logg": "e_logg",
                "fe_h": "feh",
                "e_fe_h": "e_feh",
            },
            survey="GALAH-DR3",
            ref_epoch=2015.5,
            # Buder et al. 2021: use flag_sp == 0 for stellar parameters, flag_fe_h == 0 for [Fe/H]
            quality_flags=(
                ("flag_sp", "<> 0", ("teff", "e_teff", "logg", "e_logg", "feh", "e_feh")),
                ("flag_fe_h", "<> 0", ("feh", "e_feh")),
            ),
        ),
        Preset(
            "pastel",
            "sos",
            "PASTEL (Soubiran+2016, VizieR B/pastel); positions only, J2000",
            rename={"RA": "ra", "DEC": "dec", "TEFF": "teff", "LOGG": "logg", "FEH": "feh"},
            survey="PASTEL",
            ref_epoch=2000.0,
        ),
        Preset(
            "sweetcat",
            "sos",
            "SWEET-Cat (Santos+2013, Sousa+2021); gaia_dr3 = -1 means no Gaia id",
            rename={
                "gaia_dr3": "source_id",
                "RA_EU": "ra",
                "DEC_EU": "dec",
                "Teff": "teff",
                "eTeff": "e_teff",
                "Logg": "logg",
                "eLogg": "e_logg",
                "[Fe/H]": "feh",
                "e[Fe/H]": "e_feh",
            },
            # -1 marks a missing Gaia id; missing labels are empty cells, and a real
            # [Fe/H] of -1.0 must survive, so the sentinel is for source_id only
            null_values={"source_id": (-1.0,)},
            survey="SWEET-Cat",
            ref_epoch=2000.0,
        ),
        Preset(
            "gbs-v3",
            "sos",
            "Gaia FGK benchmark stars v3 (Soubiran+2024) labels; positions are 2MASS J2000",
            rename={
                "source_id_gaiadr3": "source_id",
                "ra_j2000": "ra",
                "dec_j2000": "dec",
                # the file's ref_epoch (2016.0) is Gaia's, not that of ra_j2000/dec_j2000
                "ref_epoch": "gaia_ref_epoch",
                "fe_h": "feh",
            },
            survey="GBS-v3",
            ref_epoch=2000.0,
        ),
        Preset(
            "sweetcat-gaia",
            "gaia",
            "Gaia DR3 photometry and parallax that SWEET-Cat copies (gaia_dr3, Gmag, BPmag, RPmag, Plx); positions are "
            "its exoplanet.eu J2000 ones",
            rename={"gaia_dr3": "source_id", "RA_EU": "ra", "DEC_EU": "dec", "Gmag": "phot_g_mean_mag",
                    "BPmag": "phot_bp_mean_mag", "RPmag": "phot_rp_mean_mag", "Plx": "parallax", "ePlx": "parallax_error",
                    "FG": "phot_g_mean_flux", "eFG": "phot_g_mean_flux_error",
                    # the catalogue's own columns that a Gaia row has no place for
                    "RA": "", "DEC": "", "Distance": "", "Teff": "", "Logg": "", "[Fe/H]": ""},
            null_values={"source_id": (-1.0,)},
            ref_epoch=2000.0,
            fallbacks={"ra": ("RA_NASA",), "dec": ("DEC_NASA",)},
        ),
        Preset(
            "sweetcat-distances",
            "distances",
            "the Bailer-Jones (2021) geometric distance SWEET-Cat copies (Distance_b, pc)",
            rename={"gaia_dr3": "source_id", "Distance_b": "r_med_geo", "Distance": ""},
            # SWEET-Cat writes 0 or -1 where it has no distance
            null_values={"source_id": (-1.0,), "r_med_geo": (0.0, -1.0)},
        ),
        Preset(
            "gbs-v3-gaia",
            "gaia",
            "Gaia DR3 columns of the Gaia FGK benchmark stars v3 table (source_id_gaiadr3)",
            rename={"source_id_gaiadr3": "source_id"},
        ),
        Preset(
            "gbs-v3-distances",
            "distances",
            "Bailer-Jones columns of the Gaia FGK benchmark stars v3 table",
            rename={"source_id_gaiadr3": "source_id"},
        ),
    ]
}


def presets_for(table: str) -> list[Preset]:
    """The presets that write ``table``, default (identity) first."""
    return [p for p in PRESETS.values() if p.table == table]


def resolve_names(columns: list[str], rename: dict[str, str]) -> dict[str, str]:
    """Map file columns to stellardb names: {file column: stellardb column}.

    ``rename`` keys match a file column exactly when possible (VizieR's ``b_rgeo``
    and ``B_rgeo`` differ only in case), otherwise ignoring case.  Columns that
    ``rename`` does not mention keep their name, lower-cased.
    """
    mapping: dict[str, str] = {}
    lower_to_column = {}
    for col in columns:
        lower_to_column.setdefault(col.lower(), col)
    for old, new in rename.items():
        if old in columns:
            mapping[old] = new
        elif old.lower() in lower_to_column and lower_to_column[old.lower()] not in mapping:
            mapping[lower_to_column[old.lower()]] = new
    taken = set(mapping.values())
    for col in columns:
        if col not in mapping and col.lower() not in taken:
            mapping[col] = col.lower()
            taken.add(col.lower())
    return mapping
