"""VOSI capabilities and availability, and the DALI examples document, as XML.

Capabilities follow TAPRegExt 1.0: the TAP capability names ADQL 2.1 with the geometry,
string, set, offset, type and conditional features the translator (service.adql) supports,
the output formats (service.results) and the row limits; the VOSI endpoints and the
examples page are capabilities of their own.
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

#: (TAPRegExt feature type, forms): what stellardb.service.adql translates
LANGUAGE_FEATURES = (
    ("ivo://ivoa.net/std/TAPRegExt#features-adqlgeo",
     ("POINT", "CIRCLE", "BOX", "POLYGON", "CONTAINS", "INTERSECTS", "DISTANCE", "COORD1", "COORD2")),
    ("ivo://ivoa.net/std/TAPRegExt#features-adql-string", ("LOWER", "UPPER", "ILIKE")),
    ("ivo://ivoa.net/std/TAPRegExt#features-adql-sets", ("UNION", "EXCEPT", "INTERSECT")),
    ("ivo://ivoa.net/std/TAPRegExt#features-adql-offset", ("OFFSET",)),
    ("ivo://ivoa.net/std/TAPRegExt#features-adql-type", ("CAST",)),
)

#: stellardb's own functions (TAPRegExt user-defined functions): (form, description)
UDFS = (
    ("BEST_MATCH(p POINT, c CIRCLE) -> INTEGER",
     "In the ON of a JOIN of an uploaded table with a table of this service: 1 = BEST_MATCH(POINT(c.ra, c.dec), "
     "CIRCLE(t.ra, t.dec, r)) is CONTAINS keeping, for each upload row, only its nearest partner (ties to the "
     "smaller id). Such a join adds c.upload_sep_arcsec; an upload column epoch (Julian years) moves the stars "
     "with their proper motions to it first."),
)

#: (TAPRegExt ivo-id or None, media type, alias)
OUTPUT_FORMATS = (
    ("ivo://ivoa.net/std/TAPRegExt#output-votable-binary2", "application/x-votable+xml", "votable"),
    ("ivo://ivoa.net/std/TAPRegExt#output-votable-td", "application/x-votable+xml;serialization=TABLEDATA",
     "votable/td"),
    (None, "text/csv", "csv"),
    (None, "text/tab-separated-values", "tsv"),
    (None, "application/json", "json"),
    (None, "application/vnd.apache.parquet", "parquet"),
)

_NAMESPACES = ('xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0" '
               'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
               'xmlns:vr="http://www.ivoa.net/xml/VOResource/v1.0" '
               'xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1" '
               'xmlns:tr="http://www.ivoa.net/xml/TAPRegExt/v1.0"')


def capabilities_xml(base_url: str, limits) -> str:
    """``/tap/capabilities``; ``base_url`` is the service root (no trailing slash)."""
    tap = f"{base_url}/tap"
    features = "".join(
        f'   <languageFeatures type={quoteattr(kind)}>'
        + "".join(f"<feature><form>{form}</form></feature>" for form in forms) + "</languageFeatures>\n"
        for kind, forms in LANGUAGE_FEATURES)
    features += ('   <languageFeatures type="ivo://ivoa.net/std/TAPRegExt#features-udf">'
                 + "".join(f"<feature><form>{escape(form)}</form><description>{escape(text)}</description></feature>"
                           for form, text in UDFS) + "</languageFeatures>\n")
    formats = "".join(
        "  <outputFormat" + (f" ivo-id={quoteattr(ivo)}" if ivo else "") + f"><mime>{escape(mime)}</mime>"
        f"<alias>{alias}</alias></outputFormat>\n" for ivo, mime, alias in OUTPUT_FORMATS)

    def vosi(standard: str, path: str) -> str:
        return (f' <capability standardID="ivo://ivoa.net/std/VOSI#{standard}">\n'
                f'  <interface xsi:type="vs:ParamHTTP" role="std"><accessURL use="full">{escape(tap)}/{path}'
                "</accessURL></interface>\n </capability>\n")

    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<vosi:capabilities {_NAMESPACES}>\n"
        ' <capability standardID="ivo://ivoa.net/std/TAP" xsi:type="tr:TableAccess">\n'
        '  <interface xsi:type="vs:ParamHTTP" role="std" version="1.1">'
        f'<accessURL use="base">{escape(tap)}</accessURL></interface>\n'
        "  <language>\n   <name>ADQL</name>\n"
        '   <version ivo-id="ivo://ivoa.net/std/ADQL#v2.1">2.1</version>\n'
        "   <description>ADQL 2.1 translated to DuckDB SQL; spatial constraints on a constant region read "
        "only the HEALPix partitions and row groups they need.</description>\n"
        + features + "  </language>\n" + formats
        + '  <uploadMethod ivo-id="ivo://ivoa.net/std/TAPRegExt#upload-inline"/>\n'
        + '  <uploadMethod ivo-id="ivo://ivoa.net/std/TAPRegExt#upload-http"/>\n'
        + '  <uploadMethod ivo-id="ivo://ivoa.net/std/TAPRegExt#upload-https"/>\n'
        # asynchronous jobs: how long they are kept, and run (a synchronous query: limits.timeout_s)
        + f"  <retentionPeriod><default>{limits.job_lifetime_s}</default><hard>{limits.job_lifetime_s}</hard>"
        "</retentionPeriod>\n"
        + f"  <executionDuration><default>{limits.async_duration_s}</default><hard>{limits.async_max_duration_s}"
        "</hard></executionDuration>\n"
        f'  <outputLimit><default unit="row">{limits.maxrec_default}</default>'
        f'<hard unit="row">{limits.maxrec_limit}</hard></outputLimit>\n'
        f'  <uploadLimit><default unit="row">{limits.max_upload_rows_sync}</default>'
        f'<hard unit="row">{limits.max_upload_rows_async}</hard></uploadLimit>\n'
        " </capability>\n"
        + vosi("capabilities", "capabilities") + vosi("availability", "availability") + vosi("tables", "tables")
        + ' <capability standardID="ivo://ivoa.net/std/DALI#examples">\n'
        f'  <interface xsi:type="vr:WebBrowser"><accessURL use="full">{escape(tap)}/examples</accessURL>'
        "</interface>\n </capability>\n"
        ' <capability standardID="ivo://ivoa.net/std/ConeSearch">\n'
        f'  <interface xsi:type="vs:ParamHTTP" role="std"><accessURL use="base">{escape(base_url)}/scs?'
        "</accessURL></interface>\n </capability>\n"
        "</vosi:capabilities>\n")


def availability_xml(available: bool, note: str) -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<vosi:availability xmlns:vosi="http://www.ivoa.net/xml/VOSIAvailability/v1.0">\n'
            f" <vosi:available>{'true' if available else 'false'}</vosi:available>\n"
            f" <vosi:note>{escape(note)}</vosi:note>\n</vosi:availability>\n")


#: The DALI examples (``/tap/examples``): (id, title, what it shows, ADQL with {s} for the release's schema).
#: tests/service run each of them against a release.
EXAMPLES = (
    ("cone", "Cone search with predictions",
     "Every star within 0.5 degrees of a position, with stellardb's Teff, log g and [Fe/H]. The circle is "
     "constant, so only the HEALPix partitions and row groups it touches are read.",
     "SELECT source_id, ra, dec, phot_g_mean_mag, teff, logg, feh\nFROM {s}.catalogue\n"
     "WHERE 1 = CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 150.0, -45.0, 0.5))"),
    ("nearest", "Nearest neighbours of a position",
     "The ten Gaia sources nearest to a position within 1 arcmin, nearest first (DISTANCE is in degrees).",
     "SELECT TOP 10 source_id, phot_g_mean_mag,\n  DISTANCE(POINT('ICRS', ra, dec), POINT('ICRS', 150.0, -45.0)) * 3600 AS sep_arcsec\n"
     "FROM {s}.gaia\nWHERE 1 = CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 150.0, -45.0, 1.0 / 60))\nORDER BY sep_arcsec"),
    ("join_predictions", "Gaia rows joined to their predictions",
     "Gaia astrometry and GSP-Phot next to the predictions of the same source, in a 1-degree cone.",
     "SELECT g.source_id, g.parallax, g.teff_gspphot, p.teff, p.teff_err, p.logg, p.feh\n"
     "FROM {s}.gaia AS g\nJOIN {s}.predictions AS p ON p.source_id = g.source_id\n"
     "WHERE 1 = CONTAINS(POINT('ICRS', g.ra, g.dec), CIRCLE('ICRS', 150.0, -45.0, 1.0))"),
    ("kiel", "Kiel diagram (Teff, log g) counts",
     "Stars per 100 K in Teff and 0.2 dex in log g: the data of a Kiel diagram.",
     "SELECT teff_bin_k, logg_bin, COUNT(*) AS n_stars\nFROM (SELECT FLOOR(teff / 100) * 100 AS teff_bin_k,\n"
     "             FLOOR(logg / 0.2) * 0.2 AS logg_bin\n      FROM {s}.predictions\n"
     "      WHERE teff IS NOT NULL AND logg IS NOT NULL) AS binned\n"
     "GROUP BY teff_bin_k, logg_bin\nORDER BY teff_bin_k, logg_bin"),
    ("metal_poor_giants", "Metal-poor giants",
     "Giants with predicted [Fe/H] below -1.5, the most metal-poor first.",
     "SELECT TOP 1000 source_id, ra, dec, phot_g_mean_mag, teff, logg, feh, feh_err\nFROM {s}.catalogue\n"
     "WHERE feh < -1.5 AND logg < 3.0 AND teff BETWEEN 4000 AND 5500\nORDER BY feh"),
    ("vs_gspphot", "Predictions against GSP-Phot",
     "How stellardb's Teff compares with Gaia's GSP-Phot, per magnitude bin.",
     "SELECT g_mag_bin, COUNT(*) AS n_stars, AVG(dteff_k) AS mean_dteff_k, AVG(ABS(dteff_k)) AS mean_abs_dteff_k\n"
     "FROM (SELECT FLOOR(phot_g_mean_mag) AS g_mag_bin, teff - teff_gspphot AS dteff_k\n"
     "      FROM {s}.catalogue\n      WHERE teff IS NOT NULL AND teff_gspphot IS NOT NULL) AS diffs\n"
     "GROUP BY g_mag_bin\nORDER BY g_mag_bin"),
    ("vs_labels", "Predictions against the spectroscopic labels",
     "Mean absolute differences between predictions and reference labels, per survey.",
     "SELECT l.survey, COUNT(*) AS n_stars, AVG(ABS(p.teff - l.teff)) AS mean_abs_dteff_k,\n"
     "  AVG(ABS(p.logg - l.logg)) AS mean_abs_dlogg, AVG(ABS(p.feh - l.feh)) AS mean_abs_dfeh\n"
     "FROM {s}.labels AS l\nJOIN {s}.predictions AS p USING (source_id)\nGROUP BY l.survey"),
    ("skymapper_match", "Gaia and SkyMapper photometry of matched stars",
     "The crossmatch joined to both sides, in a 0.5-degree cone on the SkyMapper positions.",
     "SELECT x.gaia_source_id, s.object_id, x.sep_arcsec, g.phot_g_mean_mag, s.g_psf, s.r_psf, s.i_psf\n"
     "FROM {s}.skymapper AS s\nJOIN {s}.xmatch AS x ON x.skymapper_object_id = s.object_id\n"
     "JOIN {s}.gaia AS g ON g.source_id = x.gaia_source_id\n"
     "WHERE 1 = CONTAINS(POINT('ICRS', s.raj2000, s.dej2000), CIRCLE('ICRS', 150.0, -45.0, 0.5))"),
    ("distances", "Nearby stars with distances",
     "Stars closer than 200 pc by their Bailer-Jones geometric distance, with predictions.",
     "SELECT TOP 1000 c.source_id, d.r_med_geo AS dist_pc, d.r_lo_geo, d.r_hi_geo, c.teff, c.logg, c.feh\n"
     "FROM {s}.distances AS d\nJOIN {s}.catalogue AS c USING (source_id)\nWHERE d.r_med_geo < 200\n"
     "ORDER BY dist_pc"),
    ("box", "Stars in a box",
     "A 2 x 1 degree box (great-circle edges), bright stars only.",
     "SELECT source_id, ra, dec, phot_g_mean_mag, teff\nFROM {s}.catalogue\n"
     "WHERE 1 = CONTAINS(POINT('ICRS', ra, dec), BOX('ICRS', 150.0, -45.0, 2.0, 1.0)) AND phot_g_mean_mag < 16"),
    ("polygon", "Stars in a polygon",
     "A convex polygon given by its corners, counter-clockwise.",
     "SELECT COUNT(*) AS n_stars, AVG(teff) AS mean_teff_k\nFROM {s}.catalogue\n"
     "WHERE 1 = CONTAINS(POINT('ICRS', ra, dec), POLYGON('ICRS', 149.0, -46.0, 151.0, -46.0, 151.0, -44.0, 149.0, -44.0))"),
    ("hot_dwarfs_flagged", "Predictions outside the training labels",
     "How many predictions rest on inputs outside the training set, per flag.",
     "SELECT inputs_outside_training, teff_outside_training, COUNT(*) AS n_stars\nFROM {s}.predictions\n"
     "GROUP BY inputs_outside_training, teff_outside_training"),
    ("columns", "What a table holds",
     "Each column of the catalogue with its unit, UCD and description, from TAP_SCHEMA.",
     "SELECT column_name, unit, ucd, description\nFROM TAP_SCHEMA.columns\n"
     "WHERE table_name = '{s}.catalogue'\nORDER BY column_index"),
)


def examples(schema: str) -> list[tuple[str, str, str, str]]:
    """The examples with the release's schema filled in."""
    return [(key, title, about, query.replace("{s}", schema)) for key, title, about, query in EXAMPLES]


def examples_xhtml(schema: str, release_name: str) -> str:
    """DALI examples (section 2.3): XHTML with RDFa, one ``typeof="example"`` block per query."""
    blocks = []
    for key, title, about, query in examples(schema):
        blocks.append(
            f'<div typeof="example" id={quoteattr(key)} resource="#{key}">\n'
            f'  <h2 property="name">{escape(title)}</h2>\n  <p>{escape(about)}</p>\n'
            f'  <pre property="query">{escape(query)}</pre>\n</div>')
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML+RDFa 1.1//EN" "http://www.w3.org/MarkUp/DTD/xhtml-rdfa-2.dtd">\n'
            '<html xmlns="http://www.w3.org/1999/xhtml" version="XHTML+RDFa 1.1">\n'
            f"<head><title>stellardb TAP examples ({escape(release_name)})</title></head>\n"
            '<body vocab="http://www.ivoa.net/rdf/examples#">\n'
            f"<h1>Example queries for release {escape(release_name)}</h1>\n" + "\n".join(blocks)
            + "\n</body>\n</html>\n")
