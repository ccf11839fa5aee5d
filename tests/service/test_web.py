"""The service's pages for people (``/``, ``/star/{source_id}``, the sky map), judged by plain HTTP
and by a real browser: Debian's chromium driven by playwright against the live server.

What a page shows is compared with the release read independently (DuckDB on the release's files,
astropy's separations for cones); the browser must find rows, errors, paging and non-blank plots,
load nothing from another host and log no error (a Content-Security-Policy violation is one).
Screenshots go to the test's tmp_path and, when STELLARDB_ARTEFACTS is set, to that folder.
"""

from __future__ import annotations

import io
import math
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from stellardb.service import vosi, web

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


# -- helpers ---------------------------------------------------------------------------------------
class _Rows(HTMLParser):
    """The row tables of a star page: {section id: [{column: exact value (the cell's title)}]}."""

    def __init__(self):
        super().__init__()
        self.sections: dict[str, list[dict]] = {}
        self._section = self._column = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self._section = attrs.get("id")
        elif tag == "table" and attrs.get("class") == "row":
            self.sections.setdefault(self._section, []).append({})
        elif tag == "tr":
            self._column = attrs.get("data-column")
        elif tag == "td" and self._column is not None and "title" in attrs:
            self.sections[self._section][-1][self._column] = attrs["title"]
            self._column = None


def _star_tables(text: str) -> dict[str, list[dict]]:
    parser = _Rows()
    parser.feed(text)
    return parser.sections


def _same(shown: str, value) -> bool:
    """A page's exact value (its title) against DuckDB's."""
    if value is None:
        return shown == ""
    if isinstance(value, float):
        return (math.isnan(value) and shown == "nan") or float(shown) == value
    return shown == str(value)


def _message(text: str) -> str:
    found = re.search(r'<p class="message">(.*?)</p>', text, re.S)
    assert found, text[:500]
    return found.group(1)


def _sep_deg(ra1, dec1, ra2, dec2):
    """Angular separation by astropy (independent of the service's unit-vector SQL)."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    return SkyCoord(ra1 * u.deg, dec1 * u.deg).separation(SkyCoord(ra2 * u.deg, dec2 * u.deg)).deg


@pytest.fixture(scope="module")
def stars(release_con):
    """Every catalogue row (source_id, position, predictions), the independent side of cones."""
    return release_con.execute("select source_id, ra, dec, teff from catalogue").df()


@pytest.fixture(scope="module")
def star_id(release_con, stars):
    """A star with every kind of row (a prediction, a label, a SkyMapper match, a distance), the
    one with the nearest neighbour among them (so its page lists neighbours if the sky has any)."""
    from scipy.spatial import cKDTree

    ids = [row[0] for row in release_con.execute(
        "select p.source_id from predictions as p join labels as l using (source_id) "
        "join xmatch as x on x.gaia_source_id = p.source_id join distances as d using (source_id) "
        "order by p.source_id").fetchall()]
    assert ids, "the test sky has no star with every kind of row"

    def unit(frame):
        ra, dec = np.radians(frame.ra.to_numpy()), np.radians(frame.dec.to_numpy())
        return np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])

    chosen = stars[stars.source_id.isin(ids)]
    distance, _ = cKDTree(unit(stars)).query(unit(chosen), k=2)
    return int(chosen.source_id.iloc[int(np.argmin(distance[:, 1]))])


# -- plain HTTP ----------------------------------------------------------------------------------
def test_home_page_has_the_forms_examples_release_and_tap_url(client, holder):
    served = holder.current
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["X-Stellardb-Release"] == served.name
    text = response.text
    for part in ('id="cone-form"', 'id="cone-ra"', 'id="cone-dec"', 'id="cone-radius"', 'id="adql-query"',
                 'id="adql-error"', 'id="result-table"', 'id="kiel-predictions"', 'id="kiel-gspphot"',
                 f'src="/sky/{served.name}.png"', 'src="/static/web.js"', 'href="/static/web.css"'):
        assert part in text, part
    # the TAP URL to paste into TOPCAT, and the service's own examples (not a second list)
    assert 'value="http://testserver/tap"' in text
    for key, title, _, query in vosi.examples(served.schema):
        assert f'value="{key}"' in text and title.replace("'", "&#x27;") in text
        assert web.escape(query) in text
    # the release and its tables, with the row counts of the manifest
    for name, info in served.manifest["catalogues"].items():
        assert f"<code>{served.schema}.{name}</code>" in text
        assert f"{info['rows']:,}" in text
    # the cone form asks for GSP-Phot next to the predictions (the Kiel diagrams need both)
    columns = re.search(r'data-cone-columns="([^"]*)"', text).group(1).split(",")
    wanted = {"source_id", "ra", "dec", "teff", "logg", "feh", "teff_gspphot", "logg_gspphot", "mh_gspphot"}
    assert wanted <= set(columns)
    assert set(columns) <= {c.name for c in served.columns["catalogue"]}


def test_every_page_and_file_has_the_security_headers_and_only_this_host(client, star_id):
    paths = ["/", f"/star/{star_id}", "/star/abc", "/static/web.js", "/static/web.css", "/static/favicon.svg"]
    for path in paths:
        response = client.get(path)
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy, path
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy and "*" not in policy, path
        assert response.headers["x-content-type-options"] == "nosniff"
        text = response.text
        hosts = {urlsplit(url).hostname for url in re.findall(r"https?://[^\s\"'<>)]+", text)}
        # the XML namespaces of the SVG icon are names, not requests; everything else is this host
        assert hosts <= {"testserver", "www.w3.org"}, (path, hosts)
        assert not re.search(r"(src|href|action)\s*=\s*[\"']?//", text), path
        if path.endswith(".css"):
            assert "@import" not in text and "url(" not in text
        if response.headers["content-type"].startswith("text/html"):
            # nothing the policy would block: no inline script or style, no event attributes
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), path
            assert not re.search(r"\sstyle\s*=|\son[a-z]+\s*=|<style", text, re.I), path
    js = client.get("/static/web.js").text
    assert "http://" not in js and "https://" not in js and "eval(" not in js and "innerHTML" not in js


def test_static_files_are_a_whitelist(client):
    for path in ("/static/web.py", "/static/..%2Fweb.py", "/static/__init__.py", "/static/"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "web.py" not in response.text.replace("web.js", "") or path.endswith("web.py")
        assert "/work" not in response.text and "Traceback" not in response.text


def test_star_page_shows_the_release_rows(client, release_con, stars, star_id):
    text = _check_star_page(client, release_con, stars, star_id, every_kind=True)
    # the summary: prediction ± error, GSP-Phot, flags in words
    prediction = release_con.execute("select * from predictions where source_id = ?", [star_id]).df().iloc[0]
    teff_row = re.search(r'<tr data-parameter="teff">(.*?)</tr>', text).group(1)
    assert f"{prediction['teff']:.0f} &plusmn; {prediction['teff_err']:.0f}" in teff_row
    flags = re.search(r'<section id="flags">(.*?)</section>', text, re.S).group(1)
    for label in ("Teff", "log g", "[Fe/H]"):
        assert label in flags
    inside = "outside the range of the training labels" if prediction["teff_outside_training"] else \
        "within the range of the training labels"
    assert f"Teff lies {inside}" in flags.replace("<strong>", "")


def _special_stars(release_con) -> dict[str, int]:
    """Stars at the edges of the sky and of the tables: the most southern (nearest the pole), those
    nearest RA 0 from either side, one without a SkyMapper match, one without a prediction, and
    the one with most labels."""
    def one(sql: str) -> int:
        return int(release_con.execute(sql).fetchone()[0])

    return {
        "pole": one("select source_id from gaia order by dec, source_id limit 1"),
        "ra 0+": one("select source_id from gaia order by ra, source_id limit 1"),
        "ra 360-": one("select source_id from gaia order by ra desc, source_id limit 1"),
        "no skymapper": one("select source_id from gaia where source_id not in (select gaia_source_id from xmatch "
                            "where gaia_source_id is not null) order by source_id limit 1"),
        "no prediction": one("select source_id from gaia anti join predictions using (source_id) "
                             "order by source_id limit 1"),
        "labels": one("select source_id from labels group by source_id order by count(*) desc, source_id limit 1"),
    }


@pytest.mark.parametrize("kind", ["pole", "ra 0+", "ra 360-", "no skymapper", "no prediction", "labels"])
def test_star_page_of_stars_at_the_edges_shows_the_release_rows(client, release_con, stars, kind):
    star_id = _special_stars(release_con)[kind]
    text = _check_star_page(client, release_con, stars, star_id)
    if kind == "no skymapper":
        assert "No row in <code>skymapper</code>" in text
    if kind == "no prediction":
        assert "has no prediction in this release" in text
    if kind == "pole":
        assert release_con.execute("select dec from gaia where source_id = ?", [star_id]).fetchone()[0] < -80


def _check_star_page(client, release_con, stars, star_id: int, every_kind: bool = False) -> str:
    """The star page of ``star_id`` against DuckDB's rows of the release and astropy's neighbours;
    its text."""
    response = client.get(f"/star/{star_id}")
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-security-policy"]
    text = response.text
    tables = _star_tables(text)

    def duck(sql):
        cursor = release_con.execute(sql, [star_id])
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    expected = {
        "gaia": duck("select * from gaia where source_id = ?"),
        "predictions": duck("select * from predictions where source_id = ?"),
        "distances": duck("select * from distances where source_id = ?"),
        "labels": duck("select * from labels where source_id = ? order by survey"),
        "skymapper": duck("select s.* from xmatch as x join skymapper as s on s.object_id = x.skymapper_object_id "
                          "where x.gaia_source_id = ? order by s.object_id"),
    }
    for section, rows in expected.items():
        assert rows or not every_kind, section
        shown = tables.get(section, [])
        key = "object_id" if section == "skymapper" else "survey" if section == "labels" else None
        if key:
            shown = sorted(shown, key=lambda r: r[key])
            rows = sorted(rows, key=lambda r: str(r[key]))
        assert len(shown) == len(rows), section
        for page_row, duck_row in zip(shown, rows):
            assert set(duck_row) <= set(page_row), (section, set(duck_row) - set(page_row))
            wrong = {c: (page_row[c], v) for c, v in duck_row.items() if not _same(page_row[c], v)}
            assert not wrong, (section, wrong)
    # neighbours: every other catalogue star within 10 arcsec (astropy), nearest first
    star = expected["gaia"][0]
    sep = _sep_deg(star["ra"], star["dec"], stars.ra.to_numpy(), stars.dec.to_numpy()) * 3600
    near = stars[(sep <= web.NEIGHBOUR_RADIUS_ARCSEC) & (stars.source_id != star_id)]
    section = re.search(r'<section id="neighbours">(.*?)</section>', text, re.S).group(1)
    linked = [int(i) for i in re.findall(r'href="/star/(\d+)"', section)]
    assert linked == [int(i) for i in near.source_id.iloc[np.lexsort((near.source_id, sep[near.index]))]], \
        (linked, list(near.source_id))
    return text


def test_star_page_refuses_what_is_not_a_source_id(client):
    for raw in ("abc", "-1", "1.5", "1e9", "99999999999999999999", "9223372036854775808", "%3Cscript%3Ealert(1)",
                "%EF%BC%91%EF%BC%92"):  # the last: full-width digits, which Python's int() would take
        response = client.get(f"/star/{raw}")
        assert response.status_code == 404, raw
        assert response.headers["content-type"].startswith("text/html")
        message = _message(response.text)
        assert "\n" not in message and len(message) < 300 and "source_id" in message, message
        assert "<script>" not in response.text
    response = client.get("/star/1")
    assert response.status_code == 404
    assert "has no Gaia DR3 source 1" in _message(response.text)


def test_sky_map_is_a_png_of_the_release_density(client, holder, release_con):
    import matplotlib.image

    served = holder.current
    response = client.get(f"/sky/{served.name}.png")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(io.BytesIO(response.content), format="png")
    width, height = web.SKYMAP_SIZE_PX
    assert image.shape[:2] == (height, width)
    assert image[..., :3].std() > 0.05
    assert len(np.unique(image[..., :3].reshape(-1, 3), axis=0)) > 50
    # kept in memory: the second answer is the same image; another release's map is not served
    assert client.get(f"/sky/{served.name}.png").content == response.content
    assert client.get("/sky/another-release.png").status_code == 404
    # the counts it is drawn from are every Gaia row of the release
    order = web.skymap_order(served.manifest)
    with holder.lease() as leased:
        pixels, counts = web.skymap_counts(leased, order)
    assert counts.sum() == release_con.execute("select count(*) from gaia").fetchone()[0]
    assert pixels.max() < 12 * 4**order


def test_model_card_shows_metrics_against_gspphot():
    model = {"name": "m<1>", "card": {
        "name": "m<1>", "trained_at": "2026-12-06T09:21:03Z", "units": {"teff": "K", "logg": "dex", "feh": "dex"},
        "training_ranges": {"labels": {"teff": [3616.5, 7823.3], "logg": [0.343, 5.081], "feh": [-2.51, 0.62]}},
        "metrics": {p: {"mlp": {"n": 879, "mean": 4.45, "median": 5.1, "sigma": s, "mad_scaled": s * 0.8,
                                "rmse": s * 1.01, "calibration_68": 0.67},
                        "gspphot": {"n": 879, "mean": 36.4, "median": 31.8, "sigma": 2 * s, "mad_scaled": 1.6 * s,
                                    "rmse": 2.1 * s, "calibration_68": 0.35}}
                    for p, s in (("teff", 131.37), ("logg", 0.1798), ("feh", 0.1164))}}}
    text = web.model_card_html(model)
    assert "m&lt;1&gt;" in text and "m<1>" not in text
    assert re.search(r'data-parameter="teff" data-model="mlp">.*?>879<.*?>4<.*?>5<.*?>131<', text)
    assert re.search(r'data-parameter="teff" data-model="gspphot">.*?>263<', text)
    assert ">0.180<" in text and "67.0&nbsp;%" in text and "35.0&nbsp;%" in text
    assert "3616 to 7823 K" in text or "3616.5" in text or "3617 to 7823 K" in text
    assert "no model card" in web.model_card_html({})


def test_a_hostile_release_name_and_text_are_escaped():
    """Values in HTML are escaped, wherever they come from (here the flags' card ranges and a label)."""
    lines = web.flag_sentences({"teff_outside_training": True, "logg_outside_training": None,
                                "feh_outside_training": False, "inputs_outside_training": 3},
                               {"units": {"teff": "<b>K</b>"}, "training_ranges": {"labels": {"teff": [1.0, 2.0]}}})
    assert "&lt;b&gt;K&lt;/b&gt;" in lines[0] and "<b>K</b>" not in lines[0]
    assert "outside the range" in lines[0] and "not compared" in lines[1] and "within" in lines[2]
    assert lines[3].startswith("<strong>3 ")


# -- a real browser -------------------------------------------------------------------------------
def _missing(reason: str):
    reason += ": the page is NOT checked in a browser"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by playwright (CI installs both; never `playwright install`)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -c requirements.lock -e '.[dev]')")
    if not Path(CHROMIUM).exists():
        _missing(f"chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser, live_url, tmp_path):
    """A fresh page that records every request and every console error; the test's screenshots
    are kept in tmp_path (and STELLARDB_ARTEFACTS)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    tab.requests, tab.errors, tab.expected_failures = [], [], []
    tab.on("request", lambda request: tab.requests.append(request.url))

    def console(message):
        # an HTTP error the test asked for (an ADQL error is a 400 from /tap/sync) is logged by chromium
        # as "Failed to load resource"; any other console error fails the test
        url = urlsplit((message.location or {}).get("url", "")).path
        if message.type == "error" and not (message.text.startswith("Failed to load resource")
                                            and url in tab.expected_failures):
            tab.errors.append(f"{message.text} ({url})")

    tab.on("console", console)
    tab.on("pageerror", lambda error: tab.errors.append(str(error)))

    def shoot(name: str) -> Path:
        path = tmp_path / f"{name}.png"
        tab.screenshot(path=str(path), full_page=True)
        if os.environ.get("STELLARDB_ARTEFACTS"):
            folder = Path(os.environ["STELLARDB_ARTEFACTS"])
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, folder / path.name)
        return path

    tab.shoot = shoot
    yield tab
    # nothing left the host, and nothing went wrong in the page (a CSP violation is a console error)
    hosts = {urlsplit(url).hostname for url in tab.requests}
    context.close()
    assert hosts == {"127.0.0.1"}, hosts
    assert not tab.errors, tab.errors


_PIXELS_JS = """(id) => {
  const canvas = document.getElementById(id);
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let inked = 0, coloured = 0;
  const colours = new Set();
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
    if (r < 240 || g < 240 || b < 240) inked++;
    if (Math.max(r, g, b) - Math.min(r, g, b) > 40) coloured++;
    colours.add((r << 16) | (g << 8) | b);
  }
  return {width: canvas.width, height: canvas.height, inked, coloured, colours: colours.size};
}"""

_SKYMAP_JS = """() => {
  const img = document.getElementById('skymap');
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  const colours = new Set();
  for (let i = 0; i < data.length; i += 16) colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
  return {width: img.naturalWidth, height: img.naturalHeight, colours: colours.size};
}"""


def _cone_with_rows(stars, least: int, most: int):
    """(ra, dec, radius_arcmin, ids) of a cone holding between least and most catalogue stars
    (astropy's separations), around the star with most neighbours within 2 degrees."""
    rng = np.random.default_rng(11)
    picks = stars.sample(200, random_state=rng.integers(1 << 31))
    best = None
    for ra, dec in zip(picks.ra, picks.dec):
        sep = _sep_deg(ra, dec, stars.ra.to_numpy(), stars.dec.to_numpy()) * 60
        for radius in (30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 240.0):
            inside = stars.source_id[sep <= radius]
            # no star within a hair of the edge: the service and astropy agree on every row
            if least <= len(inside) <= most and not np.any(np.abs(sep - radius) < 1e-6):
                return float(ra), float(dec), radius, {int(i) for i in inside}
        best = best or (ra, dec)
    raise AssertionError(f"no cone of {least} to {most} stars in the test sky")


def _result_ids(page) -> list[int]:
    """The source_id column of the result table (as shown: the text of its links)."""
    names = [th.split("\n")[0] for th in page.locator("#result-table thead th").all_inner_texts()]
    column = names.index("source_id") + 1
    return [int(t) for t in page.locator(f"#result-table tbody tr td:nth-child({column})").all_inner_texts()]


def test_browser_cone_search_pages_and_plots(page, live_url, stars, holder):
    from playwright.sync_api import expect

    page.goto(f"{live_url}/")
    page.wait_for_load_state("load")  # images included (no wait_for_function: the page's CSP forbids eval)
    ra, dec, radius, expected = _cone_with_rows(stars, 40, 240)
    page.select_option("#page-rows", "25")
    page.fill("#cone-ra", repr(ra))
    page.fill("#cone-dec", repr(dec))
    page.fill("#cone-radius", repr(radius))
    page.click("#cone-form button[type=submit]")
    expect(page.locator("#result-status")).to_have_text("Rows 1–25 (more on the next page)")
    assert "CONTAINS(POINT(ra, dec), CIRCLE(" in page.input_value("#adql-query")
    first = _result_ids(page)
    assert len(first) == 25
    # the downloads are the same query in other formats, on this host
    for fmt in ("csv", "votable", "parquet"):
        href = page.get_attribute(f"#download-{fmt}", "href")
        assert href.startswith("/tap/sync?") and f"RESPONSEFORMAT={fmt}" in href and "CONTAINS" in href
    # the Kiel diagrams of the page: both drawn, with coloured points, at their size
    for canvas in ("kiel-predictions", "kiel-gspphot"):
        pixels = page.evaluate(_PIXELS_JS, canvas)
        assert (pixels["width"], pixels["height"]) == (480, 400), pixels
        assert pixels["inked"] > 5000 and pixels["coloured"] > 1000 and pixels["colours"] > 20, (canvas, pixels)
    assert page.locator("#kiel-predictions-note").inner_text().endswith(" stars")
    sky = page.evaluate(_SKYMAP_JS)
    assert (sky["width"], sky["height"]) == web.SKYMAP_SIZE_PX and sky["colours"] > 50, sky
    page.shoot("home-cone")
    # paging: every page until the last; together they are the cone, each row once
    seen, pages = list(first), 1
    while page.locator("#page-next").is_enabled():
        page.click("#page-next")
        expect(page.locator("#result-status")).to_have_text(re.compile(f"^Rows {len(seen) + 1}–"))
        pages += 1
        ids = _result_ids(page)
        assert page.locator("#result-status").inner_text().startswith(f"Rows {len(seen) + 1}–{len(seen) + len(ids)}")
        seen += ids
    assert len(seen) == len(set(seen)) and set(seen) == expected
    assert pages == math.ceil(len(expected) / 25)
    assert page.locator("#result-status").inner_text().endswith(f"of {len(expected)}")
    page.click("#page-prev")
    expect(page.locator("#result-status")).to_have_text(f"Rows {(pages - 2) * 25 + 1}–{(pages - 1) * 25} "
                                                        "(more on the next page)")
    # a row's source_id leads to its star's page
    page.click("#result-table tbody tr:first-child td:first-child a")  # the cone's first column is source_id
    page.wait_for_selector("#parameters")
    assert page.locator("h1").inner_text().startswith("Gaia DR3 ")
    page.shoot("star")


def test_browser_adql_error_is_shown_at_the_query(page, live_url, holder):
    from playwright.sync_api import expect

    page.expected_failures.append("/tap/sync")
    page.goto(f"{live_url}/")
    page.fill("#adql-query", f"SELECT ra, dec FROM {holder.current.schema}.gaia WHERE")
    page.click("#adql-run")
    expect(page.locator("#adql-error")).to_be_visible()
    message = page.locator("#adql-error").inner_text()
    assert message and "\n" not in message and "Traceback" not in message
    # right under the box, which is marked invalid; no result table for a failed query
    assert page.evaluate("document.getElementById('adql-query').nextElementSibling.id") == "adql-error"
    assert page.get_attribute("#adql-query", "aria-invalid") == "true"
    assert page.locator("#results").is_hidden()
    page.shoot("adql-error")
    # an example runs, and the error goes away
    page.select_option("#examples", "kiel")
    page.click("#adql-run")
    expect(page.locator("#result-status")).to_have_text(re.compile("^Rows 1–"))
    assert page.locator("#adql-error").is_hidden()
    assert page.get_attribute("#adql-query", "aria-invalid") == "false"


def test_browser_query_link_of_a_star_page_runs_it(page, live_url, holder, star_id):
    from playwright.sync_api import expect

    page.goto(f"{live_url}/star/{star_id}")
    page.click("#gaia summary")  # the Gaia row opens
    page.shoot("star-with-everything")
    page.click("#query a")
    expect(page.locator("#result-status")).to_have_text(re.compile("^Rows 1–"))
    assert _result_ids(page) == [star_id]
    # the Kiel diagrams of one star: drawn, and the point is there
    pixels = page.evaluate(_PIXELS_JS, "kiel-predictions")
    assert pixels["coloured"] > 0
