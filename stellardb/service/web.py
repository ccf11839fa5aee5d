"""The service's pages for people: ``/`` (cone form, ADQL box, results, plots, sky map, release and
model card) and ``/star/{source_id}`` (everything the release holds on one star).

The pages are HTML built on the server from the release's manifest and queries; their script and
style are the service's own files under ``static/`` (nothing is loaded from another host, and the
Content-Security-Policy says so to the browser).  The script queries the same ``/tap/sync`` every
client uses (JSON rows, ``MAXREC`` and ``OFFSET`` for paging): there is no second query path.

What keeps the page cheap (it is meant to take 50 loads a second on two cores): ``/`` runs no query
at all (row counts and the model card come from the manifest); the sky map is one ``GROUP BY`` on
``_healpix_29`` per release, drawn once and kept in memory; the star page runs a handful of queries
that read one or two row groups each (an id lookup, then cones of 1 to 10 arcsec).
"""

from __future__ import annotations

import math
import re
import threading
import time
from html import escape
from importlib import resources
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from stellardb.service import rowgroups

#: what the browser may load: only this service's own files (no inline script or style, no frames)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}

#: the files under static/ the pages use (a whitelist: nothing else under the package is served)
STATIC_FILES = {"web.js": "text/javascript; charset=utf-8", "web.css": "text/css; charset=utf-8",
                "favicon.svg": "image/svg+xml"}

#: neighbours shown on a star's page
NEIGHBOUR_RADIUS_ARCSEC = 10.0
#: the co-partitioned tables carry their Gaia source's exact ra, dec: a tiny cone finds the row and
#: lets the translator read only that row's partition and row group
SAME_POSITION_ARCSEC = 1.0
#: SkyMapper positions are at their own epoch: the cone allows for the match distance and proper motion
SKYMAPPER_MIN_RADIUS_ARCSEC = 10.0

#: the sky map: size (pixels) and the finest HEALPix order drawn (order 7: 0.46 deg pixels, about
#: one pixel of the 900-pixel-wide image)
SKYMAP_SIZE_PX = (900, 500)
SKYMAP_MAX_ORDER = 7
SKYMAP_MIN_ORDER = 3
#: the count reads one column of every Gaia row: minutes on a billion stars, so its own time limit
SKYMAP_TIMEOUT_S = 900.0
#: after a sky map failed, the next try waits this long (each try reads the whole table)
SKYMAP_RETRY_S = 60.0

#: the columns of ``catalogue`` the cone form asks for: position, photometry, predictions and GSP-Phot
#: (the Kiel diagrams need the last two groups)
CONE_COLUMNS = ("source_id", "ra", "dec", "phot_g_mean_mag", "bp_rp", "parallax", "teff", "teff_err", "logg",
                "logg_err", "feh", "feh_err", "teff_gspphot", "logg_gspphot", "mh_gspphot")
#: the largest cone of the form (arcmin): the cone search's own limit, 10 degrees
CONE_MAX_RADIUS_ARCMIN = 600.0
#: rows per page of the results (the first is the default)
PAGE_ROWS = (100, 25, 500, 2000)
#: the largest source_id (int64)
_MAX_ID = 2**63 - 1

PARAMETERS = (("teff", "Teff", "K"), ("logg", "log g", "dex"), ("feh", "[Fe/H]", "dex"))
GSPPHOT = {"teff": "teff_gspphot", "logg": "logg_gspphot", "feh": "mh_gspphot"}


def routes(holder, limits, root_url) -> list[Route]:
    """The pages' routes, for the app of ``holder``'s release (stellardb.service.served.Holder);
    ``root_url(request)`` is the service's public address."""
    import anyio

    skymaps = SkyMaps(holder)
    static = {name: (resources.files("stellardb.service").joinpath("static", name).read_bytes(), media)
              for name, media in STATIC_FILES.items()}

    def prefix(request: Request) -> str:
        # links are paths on this host (a proxy's prefix kept): the page stays same-origin for its CSP
        return urlsplit(root_url(request)).path.rstrip("/")

    async def home(request: Request) -> Response:
        served = holder.get()
        return _html(home_html(served, root_url(request), prefix(request), limits), served)

    async def star(request: Request) -> Response:
        served = holder.get()
        raw = request.path_params["source_id"]
        source_id = parse_source_id(raw)
        if source_id is None:
            return _message(404, "Not a source_id", f"{raw[:40]!r} is not a Gaia DR3 source_id: give a whole number "
                            "between 0 and 9223372036854775807, e.g. /star/4295806720.", prefix(request), served)
        try:
            found = await anyio.to_thread.run_sync(star_rows, holder, source_id, limits.timeout_s)
        except StarQueryError as exc:
            return _message(503, "Try again", str(exc), prefix(request), served)
        if found is None:
            return _message(404, "No such star", f"Release {served.name} has no Gaia DR3 source {source_id}.",
                            prefix(request), served)
        return _html(star_html(found, prefix(request)), found["served"])

    async def static_file(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in static:
            return _message(404, "Not found", "No such file; the page's files are " + ", ".join(STATIC_FILES) + ".",
                            prefix(request), holder.get())
        body, media = static[name]
        # not immutable: a new version of the service may change them under the same name
        return Response(body, media_type=media, headers={**SECURITY_HEADERS, "Cache-Control": "public, max-age=300"})

    async def skymap(request: Request) -> Response:
        served = holder.get()
        if request.path_params["release"] != served.name:
            return _message(404, "Not found", f"The sky map served is that of release {served.name}: "
                            f"{prefix(request)}/sky/{served.name}.png.", prefix(request), served)
        png = await anyio.to_thread.run_sync(skymaps.png, served.name)
        if png is None:
            return _message(503, "Try again", "The sky map could not be drawn just now; try again in a minute.",
                            prefix(request), served)
        # a release never changes: its map may be kept
        return Response(png, media_type="image/png", headers={**SECURITY_HEADERS, **_release_header(served),
                                                              "Cache-Control": "public, max-age=86400"})

    return [Route("/", home), Route("/star/{source_id}", star), Route("/static/{name}", static_file),
            Route("/sky/{release}.png", skymap)]


# -- responses ------------------------------------------------------------------------------------
def _release_header(served) -> dict:
    return {"X-Stellardb-Release": served.name}


def _html(body: str, served, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers={**SECURITY_HEADERS, **_release_header(served)})


def _message(status: int, title: str, message: str, prefix: str, served) -> HTMLResponse:
    """A small page with one line that says what is wrong (no path, no trace)."""
    body = (f"<h1>{escape(title)}</h1>\n<p class=\"message\">{escape(' '.join(message.split()))}</p>\n"
            f"<p><a href=\"{escape(prefix)}/\">The release's page</a></p>")
    return _html(_layout(title, body, prefix), served, status)


def _layout(title: str, main: str, prefix: str, script: bool = False, data: str = "") -> str:
    p = escape(prefix)
    js = f'\n<script src="{p}/static/web.js" defer></script>' if script else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{escape(title)}</title>\n<link rel=\"stylesheet\" href=\"{p}/static/web.css\">\n"
            f'<link rel="icon" href="{p}/static/favicon.svg" type="image/svg+xml">{js}\n</head>\n'
            f'<body{data}>\n<header><a class="home" href="{p}/">stellardb</a></header>\n<main>\n{main}\n</main>\n'
            "</body></html>\n")


# -- the home page ----------------------------------------------------------------------------------
def home_html(served, root: str, prefix: str, limits) -> str:
    """``/``: no query runs here, everything comes from the manifest and the release's metadata."""
    from stellardb.service import vosi

    manifest = served.manifest
    model = manifest.get("model") or {}
    stars = (manifest.get("catalogues", {}).get("catalogue") or manifest.get("catalogues", {}).get("gaia") or {})
    scored = (manifest.get("catalogues", {}).get("predictions") or {}).get("rows")
    intro = (f"<p>Predicted effective temperature, surface gravity and metallicity ([Fe/H]) for "
             f"{_count(scored)} of {_count(stars.get('rows'))} Gaia DR3 stars"
             + (f", by model <code>{escape(str(model.get('name', '')))}</code>" if model else "")
             + ", next to the Gaia, SkyMapper, distance and spectroscopic-label rows they came from.</p>")
    catalogue = {c.name for c in served.columns.get("catalogue", ())}
    cone_columns = ",".join(c for c in CONE_COLUMNS if c in catalogue)
    data = (f' data-schema="{escape(served.schema)}" data-cone-columns="{escape(cone_columns)}"'
            f' data-tap-sync="{escape(prefix)}/tap/sync" data-star="{escape(prefix)}/star/"'
            f' data-maxrec-limit="{limits.maxrec_limit}" data-cone-max-arcmin="{CONE_MAX_RADIUS_ARCMIN:g}"')
    main = "\n".join([
        f"<h1>Release {escape(served.name)}</h1>", intro,
        _access_html(root),
        _cone_form_html(),
        _adql_form_html(vosi.examples(served.schema), served.schema),
        _results_html(),
        _skymap_html(served, prefix),
        _release_html(served),
        model_card_html(model),
    ])
    return _layout(f"stellardb: release {served.name}", main, prefix, script=True, data=data)


def _count(value) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def _access_html(root: str) -> str:
    tap = f"{root}/tap"
    return f"""<section id="access"><h2>From TOPCAT, pyvo or STILTS</h2>
<p><label for="tap-url">TAP URL</label> <input id="tap-url" class="url" readonly value="{escape(tap)}">
(TOPCAT: <i>VO &rarr; Table Access Protocol (TAP) Query</i>, paste it under <i>TAP URL</i>)</p>
<p>Cone search: <code>{escape(root)}/scs?RA=150&amp;DEC=-45&amp;SR=0.1</code> &mdash;
<a href="tap/examples">example queries</a>, <a href="tap/tables">tables</a>,
<a href="tap/capabilities">capabilities</a>, <a href="tap/availability">availability</a></p>
</section>"""


def _cone_form_html() -> str:
    return f"""<section id="cone"><h2>Cone search</h2>
<form id="cone-form" novalidate>
<label>RA <input id="cone-ra" name="ra" inputmode="decimal" value="150.0" size="16"> deg</label>
<label>Dec <input id="cone-dec" name="dec" inputmode="decimal" value="-45.0" size="16"> deg</label>
<label>radius <input id="cone-radius" name="radius" inputmode="decimal" value="30" size="6"> arcmin</label>
<button type="submit">Search</button>
<span class="hint">ICRS, epoch J2016.0 (Gaia DR3 positions); radius at most {CONE_MAX_RADIUS_ARCMIN:g} arcmin.
The form writes the ADQL below and runs it.</span>
<p id="cone-error" class="error" role="alert" hidden></p>
</form></section>"""


def _adql_form_html(examples, schema: str) -> str:
    options = "".join(f'<option value="{escape(key)}" data-query="{escape(query)}" title="{escape(about)}">'
                      f"{escape(title)}</option>" for key, title, about, query in examples)
    first = examples[0][3] if examples else f"SELECT TOP 10 * FROM {schema}.catalogue"
    pages = "".join(f'<option value="{n}">{n}</option>' for n in PAGE_ROWS)
    return f"""<section id="adql"><h2>ADQL query</h2>
<form id="adql-form">
<p><label for="examples">Examples</label> <select id="examples"><option value="">(choose one)</option>{options}</select>
<span class="hint">tables are <code>{escape(schema)}.gaia</code>, <code>.skymapper</code>, <code>.distances</code>,
<code>.labels</code>, <code>.xmatch</code>, <code>.predictions</code>, <code>.catalogue</code></span></p>
<textarea id="adql-query" name="query" rows="8" spellcheck="false"
 aria-describedby="adql-error">{escape(first)}</textarea>
<p id="adql-error" class="error" role="alert" hidden></p>
<p><button type="submit" id="adql-run">Run</button>
<label>rows per page <select id="page-rows">{pages}</select></label></p>
</form></section>"""


def _results_html() -> str:
    return """<section id="results" hidden><h2>Result</h2>
<p><span id="result-status" role="status"></span>
<button type="button" id="page-prev">&larr; previous</button>
<button type="button" id="page-next">next &rarr;</button>
<span id="downloads">download the whole result (all pages):
<a id="download-csv" download="result.csv">CSV</a>
<a id="download-votable" download="result.vot">VOTable</a>
<a id="download-parquet" download="result.parquet">Parquet</a></span></p>
<div class="table-wrap"><table id="result-table"><thead></thead><tbody></tbody></table></div>
<div id="kiel">
<h3>Kiel diagrams of the rows on this page</h3>
<p class="hint">Teff against log g (both axes reversed, dwarfs bottom left, giants upper right), coloured by [Fe/H]:
stellardb's predictions beside Gaia DR3 GSP-Phot for the same stars.</p>
<figure><canvas id="kiel-predictions" width="480" height="400"></canvas>
<figcaption id="kiel-predictions-note">stellardb (teff, logg, feh)</figcaption></figure>
<figure><canvas id="kiel-gspphot" width="480" height="400"></canvas>
<figcaption id="kiel-gspphot-note">GSP-Phot (teff_gspphot, logg_gspphot, mh_gspphot)</figcaption></figure>
</div></section>"""


def _skymap_html(served, prefix: str) -> str:
    width, height = SKYMAP_SIZE_PX
    order = skymap_order(served.manifest)
    return f"""<section id="sky"><h2>The sky of this release</h2>
<figure><img id="skymap" src="{escape(prefix)}/sky/{escape(served.name)}.png" width="{width}" height="{height}"
alt="Sky map: Gaia sources per square degree, HEALPix order {order}">
<figcaption>Gaia sources per square degree (log scale) in HEALPix order-{order} pixels, Mollweide projection in
equatorial coordinates (ICRS), RA increasing to the left from 0&deg; at the centre; grid every 60&deg; in RA and
30&deg; in Dec; grey: no stars.</figcaption></figure></section>"""


def _release_html(served) -> str:
    manifest = served.manifest
    tables = "".join(
        f"<tr><td><code>{escape(served.schema)}.{escape(name)}</code></td>"
        f"<td class=\"num\">{_count(info.get('rows'))}</td><td class=\"num\">{_count(info.get('partitions'))}</td>"
        f"<td>{escape(_TABLE_ABOUT.get(name, ''))}</td></tr>"
        for name, info in manifest.get("catalogues", {}).items())
    ingests = "".join(
        f"<tr><td>{escape(str(i.get('table', '')))}</td><td>{escape(_basename(i.get('file')))}</td>"
        f"<td class=\"num\">{_count(i.get('rows'))}</td><td>{escape(str(i.get('ingested_at_utc', ''))[:19])}</td></tr>"
        for i in manifest.get("ingests", ()))
    inputs = ('<h3>Inputs</h3><table class="list"><thead><tr><th>table</th><th>file</th><th>rows</th>'
              f"<th>ingested (UTC)</th></tr></thead><tbody>{ingests}</tbody></table>") if ingests else ""
    versions = ", ".join(f"{name} {escape(str(manifest[key]))}" for name, key in
                         (("stellardb", "stellardb_version"), ("hats", "hats_version"), ("DuckDB", "duckdb_version"))
                         if manifest.get(key))
    return f"""<section id="release"><h2>Release {escape(served.name)}</h2>
<p>Made {escape(str(manifest.get('created_utc', '?')))} ({versions}); immutable HATS catalogues (HEALPix-partitioned
Parquet). Query them by TAP as <code>{escape(served.schema)}.TABLE</code>.</p>
<table class="list"><thead><tr><th>table</th><th>rows</th><th>partitions</th><th>what</th></tr></thead>
<tbody>{tables}</tbody></table>
{inputs}
</section>"""


_TABLE_ABOUT = {
    "gaia": "Gaia DR3 sources: astrometry, photometry, GSP-Phot",
    "skymapper": "SkyMapper photometry (uvgriz PSF magnitudes)",
    "distances": "Bailer-Jones et al. (2021) distances",
    "labels": "spectroscopic reference labels with their Gaia source",
    "xmatch": "Gaia x SkyMapper crossmatch",
    "predictions": "stellardb's Teff, log g, [Fe/H] with errors and flags",
    "catalogue": "one row per Gaia source: the above joined",
}


def _basename(value) -> str:
    # a file name only: the folders of the machine that made the release never leave the server
    return re.split(r"[\\/]", str(value or ""))[-1]


def family_card_html(model: dict, card: dict) -> str:
    """A model family: one row per feature set, test-split MAD of stellardb and of GSP-Phot on the same stars."""
    rows = []
    for m in card.get("members") or []:
        cells = [f'<th><code>{escape(str(m.get("feature_set", "")))}</code></th>',
                 f'<td class="num">{_count(m.get("labelled_stars"))}</td>']
        for param, _label, _ in PARAMETERS:
            t = (m.get("test") or {}).get(param) or {}
            ml, gsp = t.get("mlp_mad"), t.get("gspphot_mad")
            ratio = f" ({ml / gsp:.2f})" if isinstance(ml, (int, float)) and isinstance(gsp, (int, float)) and gsp else ""
            cells.append(f'<td class="num">{_number(ml, param)} / {_number(gsp, param)}{escape(ratio)}</td>')
        rows.append(f'<tr data-feature-set="{escape(str(m.get("feature_set", "")))}">' + "".join(cells) + "</tr>")
    heads = "".join(f"<th>{escape(label)} MAD stellardb / GSP-Phot</th>" for _, label, _ in PARAMETERS)
    return f"""<section id="model"><h2>Model card</h2>
<p>Model <code>{escape(str(card.get('name', model.get('name', ''))))}</code>, trained {escape(str(card.get('trained_at', '?')))}:
one network per parameter for each feature set (Gaia with the photometric surveys named). Each star is predicted by the
feature set most accurate on the validation stars that have the same inputs; its page and the column
<code>feature_set</code> say which. Test stars: median absolute deviation of predicted &minus; reference, with GSP-Phot on
the same stars (ratio in brackets).</p>
<table class="card"><thead><tr><th>feature set</th><th>labelled stars</th>{heads}</tr></thead>
<tbody>{''.join(rows)}</tbody></table></section>"""


def model_card_html(model: dict) -> str:
    card = (model or {}).get("card") or {}
    if not card:
        return ('<section id="model"><h2>Model card</h2><p>This release\'s manifest has no model card '
                "(it was made without <code>--model</code>).</p></section>")
    if card.get("kind") == "family":
        return family_card_html(model, card)
    metrics = card.get("metrics") or {}
    units = card.get("units") or {}
    rows = []
    for param, label, _ in PARAMETERS:
        for who, name in (("mlp", "stellardb"), ("gspphot", "GSP-Phot")):
            m = (metrics.get(param) or {}).get(who)
            if not m:
                continue
            unit = escape(str(units.get(param, "")))
            rows.append(f'<tr data-parameter="{param}" data-model="{who}"><th>{escape(label)}</th><td>{name}</td>'
                        f'<td class="num">{_count(m.get("n"))}</td>'
                        + "".join(f'<td class="num">{_number(m.get(k), param)}</td>'
                                  for k in ("mean", "median", "sigma", "mad_scaled", "rmse"))
                        + f'<td class="num">{_percent(m.get("calibration_68"))}</td><td>{unit}</td></tr>')
    ranges = (card.get("training_ranges") or {}).get("labels") or {}
    spans = ", ".join(f"{escape(label)} {_number(ranges[p][0], p)} to {_number(ranges[p][1], p)} "
                      f"{escape(str(units.get(p, '')))}" for p, label, _ in PARAMETERS if p in ranges)
    arch = card.get("architecture") or {}
    split = card.get("split_counts") or {}
    facts = [f"Model <code>{escape(str(card.get('name', model.get('name', ''))))}</code>, trained "
             f"{escape(str(card.get('trained_at', '?')))}"]
    if arch.get("hidden_units"):
        facts.append(f"a multilayer perceptron with hidden layers of {escape(str(arch['hidden_units']))} units per "
                     "parameter, inputs " + f"{len(card.get('features', ()))} features "
                     f"and {len((card.get('scaling') or {}).get('colours', ()))} colours")
    if split:
        facts.append("stars: " + ", ".join(f"{_count(v)} {escape(k)}" for k, v in split.items()))
    return f"""<section id="model"><h2>Model card</h2>
<p>{'; '.join(facts)}.</p>
<p>Accuracy on the test stars, against the spectroscopic reference labels, for stellardb and for Gaia DR3 GSP-Phot on
the same stars (those GSP-Phot has). Residual r = predicted &minus; reference; bias = mean r; &sigma; = standard
deviation; 1.4826&nbsp;MAD = robust &sigma;; within error = share of stars with |r| below their stated error
(68&nbsp;% when the errors are right).</p>
<table class="list" id="metrics"><thead><tr><th>parameter</th><th>from</th><th>stars</th><th>bias</th><th>median</th>
<th>&sigma;</th><th>1.4826 MAD</th><th>RMSE</th><th>within error</th><th>unit</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table>
{f'<p>Training labels span {spans}: a prediction outside is flagged as an extrapolation.</p>' if spans else ''}
</section>"""


def _number(value, param: str = "") -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "&mdash;"
    return f"{value:.0f}" if param == "teff" else f"{value:.3f}"


def _percent(value) -> str:
    return f"{100 * value:.1f}&nbsp;%" if isinstance(value, (int, float)) and math.isfinite(value) else "&mdash;"


# -- the sky map ----------------------------------------------------------------------------------
def skymap_order(manifest: dict) -> int:
    """The HEALPix order of the sky map: about ten stars a pixel on an all-sky release, between
    SKYMAP_MIN_ORDER and SKYMAP_MAX_ORDER."""
    rows = (manifest.get("catalogues", {}).get("gaia") or {}).get("rows") or 0
    order = int(math.log(max(rows, 1) / 120, 4)) if rows > 120 else SKYMAP_MIN_ORDER
    return max(SKYMAP_MIN_ORDER, min(SKYMAP_MAX_ORDER, order))


class SkyMaps:
    """The sky map PNG of each release, drawn once (the first request waits; the others wait for it)
    and kept in memory; only the newest release's is kept."""

    def __init__(self, holder):
        self._holder = holder
        self._lock = threading.Lock()
        self._png: dict[str, bytes] = {}
        self._failed: dict[str, float] = {}

    def png(self, name: str) -> bytes | None:
        with self._lock:
            if name in self._png:
                return self._png[name]
            if time.monotonic() - self._failed.get(name, -math.inf) < SKYMAP_RETRY_S:
                return None
            with self._holder.lease() as served:
                if served.name != name:
                    return None
                try:
                    png = draw_skymap(served)
                except Exception:
                    import logging

                    logging.getLogger("stellardb.serve").exception("sky map of release %s", name)
                    self._failed[name] = time.monotonic()
                    return None
            self._png = {name: png}
            return png


def skymap_counts(served, order: int):
    """(pixel, n_stars) arrays of the Gaia sources per NESTED pixel of ``order``."""
    table = "gaia" if "gaia" in served.manifest.get("catalogues", {}) else "catalogue"
    shift = 2 * (29 - order)
    arrow = served.execute(f'select "_healpix_29" >> {shift} as pixel, count(*) as n_stars '
                           f'from "{served.schema}"."{table}" group by 1', SKYMAP_TIMEOUT_S)
    return arrow.column("pixel").to_numpy(), arrow.column("n_stars").to_numpy()


def draw_skymap(served) -> bytes:
    """The release's density of Gaia sources, Mollweide, as a PNG of SKYMAP_SIZE_PX."""
    order = skymap_order(served.manifest)
    pixels, counts = skymap_counts(served, order)
    return skymap_png(pixels, counts, order)


def skymap_png(pixels, counts, order: int) -> bytes:
    import io

    import healpy as hp
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    nside = 2**order
    density = np.full(hp.nside2npix(nside), np.nan)
    density[np.asarray(pixels, dtype=np.int64)] = np.asarray(counts, dtype=float) / hp.nside2pixarea(nside,
                                                                                                    degrees=True)
    width, height = SKYMAP_SIZE_PX
    # healpy's projector only (no pyplot: the figure belongs to this thread); flip='astro' puts
    # east (RA increasing) to the left, as on the sky
    proj = hp.projector.MollweideProj(xsize=width, flipconv="astro")
    image = proj.projmap(density, lambda x, y, z: hp.vec2pix(nside, x, y, z, nest=True))
    image = np.where(np.isfinite(image), image, np.nan)
    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.05, 0.2, 0.9, 0.78))
    ax.set_axis_off()
    # the whole sphere in grey first: a pixel without stars shows as grey, outside the ellipse is white
    edge = np.linspace(-90, 90, 181)
    left = proj.ang2xy(np.full_like(edge, 180.0 - 1e-9), edge, lonlat=True)
    right = proj.ang2xy(np.full_like(edge, 180.0 + 1e-9), edge, lonlat=True)
    ax.fill(np.concatenate([left[0], right[0][::-1]]), np.concatenate([left[1], right[1][::-1]]),
            color="0.88", zorder=0)
    finite = density[np.isfinite(density)]
    low, high = (finite.min(), finite.max()) if finite.size else (1.0, 10.0)
    shown = ax.imshow(image, extent=proj.get_extent(), origin="lower", interpolation="nearest", cmap="viridis",
                      norm=LogNorm(low, max(high, low * 1.01)), zorder=1)
    _graticule(ax, proj, np)
    ax.set_xlim(proj.get_extent()[:2])
    ax.set_ylim(proj.get_extent()[2:])
    bar_ax = fig.add_axes((0.3, 0.12, 0.4, 0.03))
    fig.colorbar(shown, cax=bar_ax, orientation="horizontal", label="Gaia sources per square degree")
    sink = io.BytesIO()
    fig.savefig(sink, format="png", dpi=100)
    return sink.getvalue()


def _graticule(ax, proj, np) -> None:
    from matplotlib import patheffects

    style = {"color": "0.45", "linewidth": 0.6, "zorder": 2}
    # labels stay readable over the stars: a white outline
    readable = [patheffects.withStroke(linewidth=2.5, foreground="white")]
    dec = np.linspace(-90, 90, 181)
    for ra in range(0, 360, 60):  # RA 0 is the centre line; RA 180 the edge, drawn below
        ax.plot(*proj.ang2xy(np.full_like(dec, float(ra)), dec, lonlat=True), **style)
    for side in (180.0 - 1e-6, 180.0 + 1e-6):
        ax.plot(*proj.ang2xy(np.full_like(dec, side), dec, lonlat=True), **style)
    ra_line = np.linspace(180.0 + 1e-6, 540.0 - 1e-6, 721)
    for d in (-60, -30, 0, 30, 60):
        ax.plot(*proj.ang2xy(ra_line, np.full_like(ra_line, float(d)), lonlat=True), **style)
        # Dec on the left edge (RA 180 from below: flip='astro' puts RA 0 to 180 on the left half)
        x, y = proj.ang2xy(180.0 - 1e-6, float(d), lonlat=True)
        ax.text(x, y, f"{d:+d}° " if d else "0° ", ha="right", va="center", fontsize=8, color="0.25")
    for ra in range(0, 360, 60):
        x, y = proj.ang2xy(float(ra) + 1e-6, 0.0, lonlat=True)
        ax.text(x, y, f" {ra}°", ha="left", va="bottom", fontsize=8, color="0.1", zorder=3, path_effects=readable)


# -- the star page ----------------------------------------------------------------------------------
class StarQueryError(Exception):
    """A star's queries failed for a reason the reader can do nothing about but wait (one line)."""


def parse_source_id(text: str) -> int | None:
    """The source_id of a URL, or None: ASCII digits only, within int64."""
    if not re.fullmatch(r"[0-9]{1,19}", text):
        return None
    value = int(text)
    return value if value <= _MAX_ID else None


def _select(served, adql_text: str, timeout_s: float) -> list[dict]:
    """Rows of an ADQL query (the translator prunes the spatial tests), as dicts with a ``_columns``
    list of (name, Column metadata or None) in order."""
    from stellardb.service import adql

    translation = adql.translate(adql_text, served.tables, default_schema=served.schema)
    arrow = served.execute(translation.sql, timeout_s)
    names = [c.name for c in translation.columns]
    return [dict(zip(names, row)) for row in zip(*(col.to_pylist() for col in arrow.columns))]


def _cone(ra_col: str, dec_col: str, ra_deg: float, dec_deg: float, radius_arcsec: float) -> str:
    return (f"1 = CONTAINS(POINT({ra_col}, {dec_col}), "
            f"CIRCLE({float(ra_deg)!r}, {float(dec_deg)!r}, {float(radius_arcsec) / 3600!r}))")


def star_rows(holder, source_id: int, timeout_s: float) -> dict | None:
    """Everything the release holds on ``source_id`` (None: not in it): its rows of each table
    and its neighbours.  Runs in a worker thread."""
    import duckdb

    from stellardb.service.served import QueryTimeout

    with holder.lease() as served:
        try:
            return _star_rows(served, source_id, timeout_s)
        except QueryTimeout:
            raise StarQueryError(f"Looking the star up took longer than {timeout_s:g} s; try again.") from None
        except duckdb.OutOfMemoryException:
            raise StarQueryError("The service is short of memory just now; try again in a minute.") from None


def _star_rows(served, source_id: int, timeout_s: float) -> dict | None:
    s = served.schema
    present = set(served.manifest.get("catalogues", {})) | {"gaia"}
    index = served.row_groups()

    def rows(table: str, where: str) -> list[dict]:
        if table not in present:
            return []
        return _select(served, f"SELECT * FROM {s}.{table} WHERE {where}", timeout_s)

    def by_id(table: str, key: str, span: tuple[int, int]) -> list[dict] | None:
        # the rows of one _healpix_29 span, read from the row groups that can hold it (pyarrow:
        # ~0.1 ms a column instead of DuckDB's view over every file), else by DuckDB from its files
        files = index.table(table, timeout_s)
        found = files.rows([span], (key,), rowgroups.equal_to(key, source_id)) if files is not None else None
        if found is None:
            found = _partition_rows(served, table, key, source_id, span, timeout_s)
        return found

    # A Gaia DR3 source_id holds its HEALPix level-12 pixel (source_id // 2**35, Gaia DR3 docs,
    # "source_id"): that pixel's _healpix_29 range lies in one partition file, and in one or two
    # of its row groups; an id that does not follow the rule is looked up by itself
    gaia = []
    if 0 <= source_id >> 35 < 12 * 4 ** 12:
        level12 = source_id >> 35
        gaia = by_id("gaia", "source_id", ((level12 << 34), ((level12 + 1) << 34) - 1)) or []
    if not gaia:
        gaia = rows("gaia", f"source_id = {source_id}")
    if not gaia:
        return None
    star = gaia[0]
    ra, dec = star["ra"], star["dec"]
    here = _cone("ra", "dec", ra, dec, SAME_POSITION_ARCSEC)

    def same_star(table: str, key: str) -> list[dict]:
        # Rows keyed by a Gaia source carry its _healpix_29 and sit in its gaia partition (the
        # release's co-partitioning): one file, one row group, no translation; a release that
        # breaks the rule is asked by cone
        if table not in present:
            return []
        healpix = star.get("_healpix_29")
        found_rows = by_id(table, key, (int(healpix), int(healpix))) if healpix is not None else None
        return found_rows if found_rows is not None else rows(table, f"{key} = {source_id} AND {here}")

    found = {"served": served, "source_id": source_id, "gaia": star,
             "predictions": same_star("predictions", "source_id"),
             "distances": same_star("distances", "source_id"),
             "labels": same_star("labels", "source_id"),
             "xmatch": same_star("xmatch", "gaia_source_id")}
    found["skymapper"] = _skymapper_rows(served, star, found["xmatch"], timeout_s) if "skymapper" in present else []
    found["neighbours"] = _neighbour_rows(served, star, source_id, timeout_s) if "catalogue" in present else []
    return found


def _cone_rows(served, table: str, position: tuple[str, str], ra: float, dec: float, radius_arcsec: float,
               timeout_s: float, keep=None, columns=None, also=()) -> list[dict] | None:
    """The rows of ``table`` that the translation of ``_cone(*position, ra, dec, radius_arcsec)``
    selects (and ``keep(candidates, chosen)`` keeps), read from the row groups of the same
    ``_healpix_29`` ranges with the same exact test (rowgroups.in_circle); None: ask DuckDB."""
    from stellardb.release.reader import cone_ranges
    from stellardb.service import adql

    files = served.row_groups().table(table, timeout_s)
    if files is None:
        return None
    # the constants as the translator reads them from the ADQL text (repr round-trips)
    ra, dec, radius_deg = float(ra), float(dec), float(radius_arcsec) / 3600
    if not (math.isfinite(ra) and math.isfinite(dec)):
        return None
    ranges = cone_ranges(ra, dec, radius_deg * 3600 + adql._PRUNE_MARGIN_ARCSEC)
    circle = rowgroups.in_circle(*position, adql._unit(ra, dec), radius_deg)
    test = circle if keep is None else (lambda candidates: keep(candidates, circle(candidates)))
    return files.rows(ranges, (*position, *also), test, columns)


#: the columns of a star's neighbours (and their sep_arcsec)
NEIGHBOUR_COLUMNS = ("source_id", "ra", "dec", "phot_g_mean_mag", "bp_rp", "teff", "logg", "feh")


def _neighbour_rows(served, star: dict, source_id: int, timeout_s: float) -> list[dict]:
    """Every other catalogue source within NEIGHBOUR_RADIUS_ARCSEC of ``star``, nearest first."""
    from stellardb.service import adql

    ra, dec = star["ra"], star["dec"]

    def others(candidates, chosen):
        ids = candidates.column("source_id").to_pylist()
        return [i for i in chosen if ids[i] is not None and ids[i] != source_id]

    found = _cone_rows(served, "catalogue", ("ra", "dec"), ra, dec, NEIGHBOUR_RADIUS_ARCSEC, timeout_s,
                       keep=others, columns=NEIGHBOUR_COLUMNS, also=("source_id",))
    if found is not None:
        # DISTANCE(POINT(ra, dec), POINT(ra0, dec0)) * 3600 as translated (see rowgroups.in_circle)
        centre = adql._unit(float(ra), float(dec))
        for row in found:
            row["sep_arcsec"] = rowgroups.vector_sep_arcsec(rowgroups.sky_unit(row["ra"], row["dec"]),
                                                            centre) / 3600.0 * 3600
        return sorted(found, key=lambda row: (row["sep_arcsec"], row["source_id"]))
    return _select(
        served, f"SELECT {', '.join(NEIGHBOUR_COLUMNS)}, "
        f"DISTANCE(POINT(ra, dec), POINT({float(ra)!r}, {float(dec)!r})) * 3600 AS sep_arcsec "
        f"FROM {served.schema}.catalogue WHERE {_cone('ra', 'dec', ra, dec, NEIGHBOUR_RADIUS_ARCSEC)} "
        f"AND source_id <> {source_id} ORDER BY sep_arcsec, source_id", timeout_s)


def _partition_rows(served, table: str, key: str, source_id: int, healpix, timeout_s: float) -> list[dict] | None:
    """``table``'s rows of ``source_id`` read from the partition files that hold ``healpix`` (the
    star's ``_healpix_29``, or a (first, last) range of it), by SQL of integers and the release's
    own file names; None when that cannot be done (no file list or index)."""
    from stellardb.catalog.db import quote_literal
    from stellardb.service.served import FILE_COLUMN

    spec = next((t for t in served.tables if t.schema == served.schema and t.name == table), None)
    if spec is None or healpix is None or not spec.partitions or not spec.healpix_column:
        return None
    low, high = (int(healpix), int(healpix)) if isinstance(healpix, (int, float)) else map(int, healpix)
    files = [name for first, last, name in spec.partitions if first <= high and low <= last]
    if not files:
        return None
    arrow = served.execute(
        f'SELECT * EXCLUDE ("{FILE_COLUMN}") FROM {spec.sql_name} WHERE "{FILE_COLUMN}" IN '
        f'({", ".join(quote_literal(f) for f in files)}) AND "{spec.healpix_column}" BETWEEN {low} AND {high} '
        f'AND "{key}" = {int(source_id)}', timeout_s)
    return [dict(zip(arrow.column_names, row)) for row in zip(*(col.to_pylist() for col in arrow.columns))]


def _skymapper_rows(served, star: dict, matches: list[dict], timeout_s: float) -> list[dict]:
    """The SkyMapper rows the crossmatch gives the star, each with its match's separation."""
    ids = sorted({int(m["skymapper_object_id"]) for m in matches if m.get("skymapper_object_id") is not None})
    if not ids:
        return []
    # SkyMapper positions are at their own epoch: the cone reaches as far as the star moved since
    pm_arcsec_yr = (star.get("pm") or 0.0) / 1000
    reach = max((m.get("sep_arcsec") or 0.0) + pm_arcsec_yr * abs(m.get("dt_yr") or 30.0) for m in matches)
    radius = max(SKYMAPPER_MIN_RADIUS_ARCSEC, 2 * reach + 1)
    wanted = set(ids)

    def matched(candidates, chosen):
        objects = candidates.column("object_id").to_pylist()
        return [i for i in chosen if objects[i] in wanted]

    found = _cone_rows(served, "skymapper", ("raj2000", "dej2000"), star["ra"], star["dec"], radius, timeout_s,
                       keep=matched, also=("object_id",))
    if found is None:
        found = _select(served, f"SELECT * FROM {served.schema}.skymapper WHERE object_id IN "
                        f"({', '.join(map(str, ids))}) AND "
                        f"{_cone('raj2000', 'dej2000', star['ra'], star['dec'], radius)}", timeout_s)
    by_id = {int(m["skymapper_object_id"]): m for m in matches}
    return [{"xmatch_sep_arcsec": by_id[r["object_id"]].get("sep_arcsec"),
             "xmatch_n_candidates": by_id[r["object_id"]].get("n_candidates"), **r} for r in found]


def star_html(found: dict, prefix: str) -> str:
    served, star, source_id = found["served"], found["gaia"], found["source_id"]
    prediction = found["predictions"][0] if found["predictions"] else {}
    card = ((served.manifest.get("model") or {}).get("card")) or {}
    position = (f"RA {_plain(star.get('ra'), 'deg')}&deg;, Dec {_plain(star.get('dec'), 'deg')}&deg; "
                f"(ICRS, J{_plain(star.get('ref_epoch'))})")
    parts = [
        f"<h1>Gaia DR3 {source_id}</h1>",
        f'<p class="lead">{position}; G = {_plain(star.get("phot_g_mean_mag"))} mag; release '
        f"{escape(served.name)}.</p>",
        _parameters_html(star, prediction, found["labels"], found["distances"]),
        _flags_html(prediction, card),
        _neighbours_html(found["neighbours"], prefix),
        _row_html("gaia", "Gaia DR3", [star], served, open_=False),
        _row_html("skymapper", "SkyMapper (through the crossmatch)", found["skymapper"], served,
                  extra=("xmatch_sep_arcsec", "xmatch_n_candidates")),
        _row_html("distances", "Distance (Bailer-Jones et al. 2021)", found["distances"], served),
        _row_html("labels", "Spectroscopic labels", found["labels"], served),
        _row_html("predictions", "Prediction row", found["predictions"], served),
        _adql_link_html(served.schema, source_id, prefix),
    ]
    return _layout(f"Gaia DR3 {source_id} ({served.name})", "\n".join(parts), prefix)


def _parameters_html(star: dict, prediction: dict, labels: list[dict], distances: list[dict]) -> str:
    rows = []
    for param, label, unit in PARAMETERS:
        # each number to the precision its error allows: two digits of the error
        ours = _with_error(prediction.get(param), prediction.get(param + "_err")) \
            if prediction.get(param) is not None else "not predicted"
        g = GSPPHOT[param]
        places = 0 if param == "teff" else 2
        gsp = _rounded(star.get(g), places)
        if star.get(g) is not None and star.get(g + "_lower") is not None:
            gsp += f" ({_rounded(star.get(g + '_lower'), places)} to {_rounded(star.get(g + '_upper'), places)})"
        refs = "; ".join(f"{_with_error(lab.get(param), lab.get('e_' + param))} ({escape(str(lab.get('survey', '')))})"
                         for lab in labels if lab.get(param) is not None)
        rows.append(f'<tr data-parameter="{param}"><th>{escape(label)}</th><td>{ours}</td><td>{gsp}</td>'
                    f"<td>{refs or _plain(None)}</td><td>{unit}</td></tr>")
    distance = ""
    if distances and distances[0].get("r_med_geo") is not None:
        d = distances[0]
        distance = (f"<p>Distance {_rounded(d.get('r_med_geo'), 0)} pc ({_rounded(d.get('r_lo_geo'), 0)} to "
                    f"{_rounded(d.get('r_hi_geo'), 0)} pc, Bailer-Jones geometric); parallax "
                    f"{_with_error(star.get('parallax'), star.get('parallax_error'))} mas.</p>")
    return f"""<section id="parameters"><h2>Parameters</h2>
<table class="list"><thead><tr><th></th><th>stellardb (&plusmn; 1&sigma;)</th><th>Gaia GSP-Phot (16th to 84th
percentile)</th><th>reference label (survey)</th><th>unit</th></tr></thead><tbody>{''.join(rows)}</tbody></table>
{distance}</section>"""


def _with_error(value, error) -> str:
    """``value ± error`` with two digits of the error (5970 ± 150, 4.53 ± 0.16)."""
    if not _finite(value):
        return _plain(value)
    if not _finite(error) or error <= 0:
        return _plain(value)
    places = max(0, 1 - math.floor(math.log10(error)))
    return f"{value:.{places}f} &plusmn; {error:.{places}f}"


def _rounded(value, places: int) -> str:
    return f"{value:.{places}f}" if _finite(value) else _plain(value)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _flags_html(prediction: dict, card: dict) -> str:
    if not prediction:
        return ('<section id="flags"><h2>Flags</h2><p>This star has no prediction in this release: every model needs '
                "Gaia G, BP and RP and a Bailer-Jones distance.</p></section>")
    if (card or {}).get("kind") == "family":  # the member that made this prediction
        fs = prediction.get("feature_set")
        card = ((card.get("member_cards") or {}).get(fs)) or {}
        lines = [f"Predicted from feature set <code>{escape(str(fs))}</code>."] + flag_sentences(prediction, card)
        return '<section id="flags"><h2>Flags</h2><ul>' + "".join(f"<li>{line}</li>" for line in lines) + "</ul></section>"
    return ('<section id="flags"><h2>Flags</h2><ul>'
            + "".join(f"<li>{line}</li>" for line in flag_sentences(prediction, card)) + "</ul></section>")


def flag_sentences(prediction: dict, card: dict) -> list[str]:
    """The prediction's flags in words (HTML-escaped sentences)."""
    ranges = ((card or {}).get("training_ranges") or {}).get("labels") or {}
    units = (card or {}).get("units") or {}
    lines = []
    for param, label, unit in PARAMETERS:
        flag = prediction.get(f"{param}_outside_training")
        span = ranges.get(param)
        span_text = (f" ({_plain(span[0])} to {_plain(span[1])} {escape(str(units.get(param, unit)))})"
                     if span and len(span) == 2 else "")
        if flag is None:
            lines.append(f"{escape(label)}: not compared with the training labels (scored before the flags existed, "
                         "or by a model whose card has no training ranges).")
        elif flag:
            lines.append(f"<strong>{escape(label)} lies outside the range of the training labels{span_text}</strong>: "
                         "an extrapolation, whose error is not calibrated.")
        else:
            lines.append(f"{escape(label)} lies within the range of the training labels{span_text}.")
    n_inputs = len((card or {}).get("features", ())) + len(((card or {}).get("scaling") or {}).get("colours", ()))
    of = f" of the {n_inputs}" if n_inputs else ""
    outside = prediction.get("inputs_outside_training")
    if outside is None:
        lines.append("Inputs: not compared with the training data (scored before the flags existed).")
    elif outside == 0:
        lines.append("Every input of the network (photometry, colours, distance, GSP-Phot) lies within the range of "
                     "the training stars.")
    else:
        lines.append(f"<strong>{int(outside)}{of} inputs lie outside the range of the training stars</strong>: the "
                     "star is unlike those the model learnt from, so the prediction may be off by more than its error.")
    return lines


def _neighbours_html(neighbours: list[dict], prefix: str) -> str:
    if not neighbours:
        return (f'<section id="neighbours"><h2>Neighbours</h2><p>No other Gaia source within '
                f"{NEIGHBOUR_RADIUS_ARCSEC:g} arcsec.</p></section>")
    head = ("source_id", "sep (arcsec)", "G (mag)", "BP-RP (mag)", "Teff (K)", "log g", "[Fe/H]")
    rows = "".join(
        f'<tr><td><a href="{escape(prefix)}/star/{int(n["source_id"])}">{int(n["source_id"])}</a></td>'
        + "".join(f'<td class="num">{_plain(n.get(k))}</td>'
                  for k in ("sep_arcsec", "phot_g_mean_mag", "bp_rp", "teff", "logg", "feh")) + "</tr>"
        for n in neighbours)
    return (f'<section id="neighbours"><h2>Neighbours within {NEIGHBOUR_RADIUS_ARCSEC:g} arcsec</h2>'
            f'<table class="list"><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead>'
            f"<tbody>{rows}</tbody></table></section>")


def _row_html(table: str, title: str, rows: list[dict], served, open_: bool = True, extra=()) -> str:
    """Each row of ``table`` as name / value / unit / description (the exact value in the title)."""
    if not rows:
        return f'<section id="{table}"><h2>{escape(title)}</h2><p>No row in <code>{escape(table)}</code>.</p></section>'
    blocks = []
    for row in rows:
        lines = []
        for name, value in row.items():
            meta = served.column(table, name) if name not in extra else served.column("catalogue", name)
            unit = escape(meta.unit or "") if meta else ""
            about = escape(meta.description or "") if meta else ""
            number = ' class="num"' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
            lines.append(f'<tr data-column="{escape(name)}"><th>{escape(name)}</th>'
                         f'<td{number} title="{escape(_exact(value))}">{_plain(value, meta.unit if meta else None)}'
                         f"</td><td>{unit}</td><td>{about}</td></tr>")
        blocks.append(f'<table class="row"><tbody>{"".join(lines)}</tbody></table>')
    return (f'<section id="{table}"><details{" open" if open_ else ""}><summary><h2>{escape(title)}</h2> '
            f'({len(rows[0])} columns)</summary>{"".join(blocks)}</details></section>')


def _adql_link_html(schema: str, source_id: int, prefix: str) -> str:
    from urllib.parse import quote

    query = f"SELECT *\nFROM {schema}.catalogue\nWHERE source_id = {source_id}"
    return (f'<section id="query"><p>The same star by TAP: <a href="{escape(prefix)}/?query={quote(query)}#adql">'
            f"<code>{escape(' '.join(query.split()))}</code></a></p></section>")


def _plain(value, unit: str | None = None) -> str:
    """A value for reading (HTML-escaped): positions to 0.4 mas, other floats to 6 digits."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return '<span class="null">&mdash;</span>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.7f}" if unit == "deg" else f"{value:.6g}"
    return escape(str(value))


def _exact(value) -> str:
    """A value as it is stored (floats round-trip)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)
