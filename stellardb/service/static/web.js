// stellardb's page: the cone form and the ADQL box run queries on the service's own /tap/sync
// (RESPONSEFORMAT=json, MAXREC and OFFSET for paging), show the rows, and draw Kiel diagrams on
// <canvas>.  Every value goes into the page as text (textContent), never as HTML.
(function () {
  "use strict";
  const body = document.body;
  const cfg = body.dataset;
  if (!cfg.tapSync) return; // a page without the query forms (a star's page)
  const $ = (id) => document.getElementById(id);
  const coneColumns = (cfg.coneColumns || "").split(",").filter(Boolean);
  let shown = null; // {query, offset, rows} of the page on screen

  // -- reading the service's answers -------------------------------------------------------------
  // JSON numbers are doubles in JavaScript: ids such as Gaia's source_id (up to 2**63) would lose
  // their last digits, so integers beyond 2**53 are kept as their text
  const reviverSeesSource = (() => {
    try { return JSON.parse("1", (k, v, context) => context !== undefined && context.source === "1"); }
    catch (e) { return false; }
  })();

  function parseJson(text) {
    if (reviverSeesSource) {
      return JSON.parse(text, (key, value, context) =>
        typeof value === "number" && !Number.isSafeInteger(value) && Number.isInteger(value) ? context.source : value);
    }
    try { // older browsers: quote long integers that stand alone between commas and brackets
      return JSON.parse(text.replace(/([[,])(-?\d{16,})(?=[,\]])/g, '$1"$2"'));
    } catch (e) {
      return JSON.parse(text);
    }
  }

  async function readAnswer(response) {
    const type = response.headers.get("content-type") || "";
    const text = await response.text();
    if (response.ok && type.includes("json")) return { ok: true, body: parseJson(text) };
    // errors are DALI error documents: a VOTable whose INFO QUERY_STATUS=ERROR holds one line
    const doc = new DOMParser().parseFromString(text, "application/xml");
    const info = Array.from(doc.getElementsByTagName("INFO")).find(
      (i) => i.getAttribute("name") === "QUERY_STATUS" && i.getAttribute("value") === "ERROR");
    const message = info ? info.textContent.trim() : "";
    return { ok: false, message: message || "The service answered HTTP " + response.status + "; try again." };
  }

  // -- paging ----------------------------------------------------------------------------------------
  // the query without strings, quoted names and comments: only keywords are looked at
  function keywordsOf(query) {
    return query.replace(/'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|\/\*[\s\S]*?\*\//g, " ");
  }

  // a query without TOP or OFFSET pages with OFFSET (the service reads only that page); one with
  // them would change its meaning, so it is read up to the end of the page and cut here
  function pagesByOffset(query) {
    return !/\b(TOP|OFFSET)\b/i.test(keywordsOf(query));
  }

  async function run(query, offset) {
    query = query.replace(/[\s;]+$/, "");
    if (!query.trim()) { showError("Write an ADQL query first, or pick an example."); return; }
    const rows = Number($("page-rows").value) || 100;
    const byOffset = pagesByOffset(query);
    const form = new URLSearchParams({
      REQUEST: "doQuery", LANG: "ADQL", RESPONSEFORMAT: "json",
      MAXREC: String(byOffset ? rows : offset + rows),
      QUERY: byOffset && offset > 0 ? query + "\nOFFSET " + offset : query,
    });
    busy(true);
    showError(null);
    let answer;
    try {
      answer = await readAnswer(await fetch(cfg.tapSync, { method: "POST", body: form }));
    } catch (e) {
      answer = { ok: false, message: "The service could not be reached (" + e.message + "); try again." };
    } finally {
      busy(false);
    }
    if (!answer.ok) { showError(answer.message); return; }
    const result = answer.body;
    const data = byOffset ? result.data : result.data.slice(offset);
    shown = { query: query, offset: offset, rows: rows };
    render(result.metadata, data, offset, result.query_status === "OVERFLOW");
  }

  function busy(on) {
    for (const id of ["adql-run", "page-prev", "page-next"]) $(id).disabled = on;
    $("adql-run").textContent = on ? "Running…" : "Run";
  }

  function showError(message) {
    const box = $("adql-error");
    box.hidden = !message;
    box.textContent = message || "";
    $("adql-query").setAttribute("aria-invalid", message ? "true" : "false");
  }

  // -- the table ----------------------------------------------------------------------------------------
  function cellText(value, unit) {
    if (value === null || value === undefined) return "";
    if (typeof value === "number") {
      if (Number.isInteger(value)) return String(value);
      return String(Number(value.toPrecision(unit === "deg" ? 11 : 7)));
    }
    return String(value);
  }

  function render(metadata, data, offset, more) {
    $("results").hidden = false;
    const status = data.length === 0
      ? (offset ? "No more rows." : "No rows match.")
      : "Rows " + (offset + 1) + "–" + (offset + data.length)
        + (more ? " (more on the next page)" : " of " + (offset + data.length));
    $("result-status").textContent = status;
    $("page-prev").disabled = offset === 0;
    $("page-next").disabled = !more;
    for (const [fmt, id] of [["csv", "download-csv"], ["votable", "download-votable"], ["parquet", "download-parquet"]]) {
      $(id).href = cfg.tapSync + "?" + new URLSearchParams({
        REQUEST: "doQuery", LANG: "ADQL", RESPONSEFORMAT: fmt, MAXREC: cfg.maxrecLimit, QUERY: shown.query });
    }
    const table = $("result-table");
    const head = document.createElement("tr");
    for (const column of metadata) {
      const th = document.createElement("th");
      th.textContent = column.name;
      if (column.unit) {
        const unit = document.createElement("span");
        unit.className = "unit";
        unit.textContent = column.unit;
        th.appendChild(unit);
      }
      if (column.description) th.title = column.description;
      head.appendChild(th);
    }
    table.tHead.replaceChildren(head);
    const ids = metadata.map((c) => /^(source_id|gaia_source_id)$/i.test(c.name));
    const rows = data.map((values) => {
      const tr = document.createElement("tr");
      values.forEach((value, i) => {
        const td = document.createElement("td");
        const text = cellText(value, metadata[i].unit);
        if (typeof value === "number" || /^-?\d{16,}$/.test(String(value))) td.className = "num";
        if (ids[i] && value !== null && /^\d+$/.test(String(value))) {
          const link = document.createElement("a");
          link.href = cfg.star + String(value);
          link.textContent = text;
          td.appendChild(link);
        } else {
          td.textContent = text;
          if (typeof value === "number" && text !== String(value)) td.title = String(value);
        }
        tr.appendChild(td);
      });
      return tr;
    });
    table.tBodies[0].replaceChildren(...rows);
    drawKiels(metadata, data);
  }

  // -- Kiel diagrams ---------------------------------------------------------------------------------
  // viridis at eight stops, for [Fe/H] from -2.5 (dark) to +0.5 (yellow)
  const VIRIDIS = [[68, 1, 84], [70, 50, 126], [54, 92, 141], [39, 127, 142], [31, 161, 135], [74, 193, 109],
                   [160, 218, 57], [253, 231, 37]];
  const FEH_RANGE = [-2.5, 0.5];

  function colour(feh) {
    if (typeof feh !== "number" || !isFinite(feh)) return "rgb(150,150,150)";
    const t = Math.min(1, Math.max(0, (feh - FEH_RANGE[0]) / (FEH_RANGE[1] - FEH_RANGE[0]))) * (VIRIDIS.length - 1);
    const i = Math.min(VIRIDIS.length - 2, Math.floor(t));
    const f = t - i;
    const c = VIRIDIS[i].map((v, k) => Math.round(v + f * (VIRIDIS[i + 1][k] - v)));
    return "rgb(" + c.join(",") + ")";
  }

  function ticks(lo, hi, most) {
    const span = hi - lo;
    const base = Math.pow(10, Math.floor(Math.log10(span / most)));
    const step = [1, 2, 5, 10].map((m) => m * base).find((s) => span / s <= most) || span;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toFixed(10)));
    return out;
  }

  function columnIndex(metadata, name) {
    return metadata.findIndex((c) => c.name.toLowerCase() === name);
  }

  function pointsOf(metadata, data, names) {
    const idx = names.map((n) => columnIndex(metadata, n));
    if (idx[0] < 0 || idx[1] < 0) return null;
    return data.map((row) => [row[idx[0]], row[idx[1]], idx[2] >= 0 ? row[idx[2]] : null])
      .filter((p) => typeof p[0] === "number" && typeof p[1] === "number" && isFinite(p[0]) && isFinite(p[1]));
  }

  function padded(values, fallback) {
    if (!values.length) return fallback;
    let lo = Math.min(...values), hi = Math.max(...values);
    if (hi - lo < 1e-9) { lo -= Math.abs(lo) * 0.05 + 0.1; hi += Math.abs(hi) * 0.05 + 0.1; }
    const pad = (hi - lo) * 0.05;
    return [lo - pad, hi + pad];
  }

  function drawKiels(metadata, data) {
    const ours = pointsOf(metadata, data, ["teff", "logg", "feh"]);
    const gsp = pointsOf(metadata, data, ["teff_gspphot", "logg_gspphot", "mh_gspphot"]);
    $("kiel").hidden = !ours && !gsp;
    if (!ours && !gsp) return;
    const all = [...(ours || []), ...(gsp || [])];
    // the same axes on both: the two sets are compared by eye
    const teff = padded(all.map((p) => p[0]), [3000, 8000]);
    const logg = padded(all.map((p) => p[1]), [0, 5]);
    drawKiel($("kiel-predictions"), ours, teff, logg, "stellardb", "kiel-predictions-note",
             "stellardb (teff, logg, feh)");
    drawKiel($("kiel-gspphot"), gsp, teff, logg, "Gaia GSP-Phot", "kiel-gspphot-note",
             "GSP-Phot (teff_gspphot, logg_gspphot, mh_gspphot)");
  }

  function drawKiel(canvas, points, teff, logg, title, noteId, columns) {
    const ctx = canvas.getContext("2d");
    const W = canvas.width, H = canvas.height;
    const L = 58, R = 74, T = 30, B = 46;
    const w = W - L - R, h = H - T - B;
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, W, H);
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillStyle = "#1b1f24";
    ctx.textBaseline = "alphabetic";
    ctx.textAlign = "left";
    ctx.font = "bold 13px system-ui, sans-serif";
    ctx.fillText(title, L, 18);
    ctx.font = "12px system-ui, sans-serif";
    // reversed axes: hot stars left, low gravity (giants) at the top
    const x = (t) => L + (teff[1] - t) / (teff[1] - teff[0]) * w;
    const y = (g) => T + (g - logg[0]) / (logg[1] - logg[0]) * h;
    ctx.strokeStyle = "#c9ced4";
    ctx.lineWidth = 1;
    ctx.textAlign = "center";
    for (const t of ticks(teff[0], teff[1], 6)) {
      ctx.beginPath(); ctx.moveTo(x(t), T); ctx.lineTo(x(t), T + h); ctx.stroke();
      ctx.fillText(String(t), x(t), T + h + 16);
    }
    ctx.textAlign = "right";
    for (const g of ticks(logg[0], logg[1], 6)) {
      ctx.beginPath(); ctx.moveTo(L, y(g)); ctx.lineTo(L + w, y(g)); ctx.stroke();
      ctx.fillText(String(g), L - 6, y(g) + 4);
    }
    ctx.strokeStyle = "#1b1f24";
    ctx.strokeRect(L, T, w, h);
    ctx.textAlign = "center";
    ctx.fillText("Teff (K)", L + w / 2, H - 8);
    ctx.save();
    ctx.translate(14, T + h / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.fillText("log g (dex)", 0, 0);
    ctx.restore();
    colourBar(ctx, L + w + 18, T, 14, h);
    const note = $(noteId);
    if (!points || !points.length) {
      ctx.fillStyle = "#5b6470";
      ctx.fillText(points ? "no values on this page" : "not in this result", L + w / 2, T + h / 2);
      note.textContent = columns + (points ? ": no values on this page" : ": columns not in this result");
      return;
    }
    const radius = points.length > 2000 ? 1.5 : points.length > 300 ? 2.2 : 3;
    for (const p of points) {
      ctx.fillStyle = colour(p[2]);
      ctx.beginPath();
      ctx.arc(x(p[0]), y(p[1]), radius, 0, 2 * Math.PI);
      ctx.fill();
    }
    note.textContent = columns + ": " + points.length + " stars";
  }

  function colourBar(ctx, left, top, width, height) {
    for (let i = 0; i < height; i++) {
      ctx.fillStyle = colour(FEH_RANGE[1] - (i / (height - 1)) * (FEH_RANGE[1] - FEH_RANGE[0]));
      ctx.fillRect(left, top + i, width, 1);
    }
    ctx.strokeStyle = "#1b1f24";
    ctx.strokeRect(left, top, width, height);
    ctx.fillStyle = "#1b1f24";
    ctx.textAlign = "left";
    for (const v of [0.5, 0, -0.5, -1, -1.5, -2, -2.5]) {
      const yy = top + (FEH_RANGE[1] - v) / (FEH_RANGE[1] - FEH_RANGE[0]) * height;
      ctx.fillText((v > 0 ? "+" : "") + v, left + width + 4, yy + 4);
    }
    ctx.textAlign = "center";
    ctx.fillText("[Fe/H]", left + width / 2 + 8, top - 8);
  }

  // -- the forms ------------------------------------------------------------------------------------------
  function degrees(id) {
    const text = $(id).value.trim();
    return text === "" ? NaN : Number(text);
  }

  function coneQuery(ra, dec, radiusArcmin) {
    return "SELECT " + coneColumns.join(", ") + ",\n"
      + "  DISTANCE(POINT(ra, dec), POINT(" + ra + ", " + dec + ")) * 3600 AS sep_arcsec\n"
      + "FROM " + cfg.schema + ".catalogue\n"
      + "WHERE 1 = CONTAINS(POINT(ra, dec), CIRCLE(" + ra + ", " + dec + ", " + radiusArcmin + " / 60.0))\n"
      + "ORDER BY sep_arcsec, source_id";
  }

  $("cone-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const ra = degrees("cone-ra"), dec = degrees("cone-dec"), radius = degrees("cone-radius");
    const most = Number(cfg.coneMaxArcmin);
    let problem = null;
    if (!(ra >= 0 && ra <= 360)) problem = "RA must be a number of degrees from 0 to 360 (ICRS).";
    else if (!(dec >= -90 && dec <= 90)) problem = "Dec must be a number of degrees from -90 to 90 (ICRS).";
    else if (!(radius > 0 && radius <= most)) problem = "The radius must be a number of arcmin above 0 and at most " + most + ".";
    const box = $("cone-error");
    box.hidden = !problem;
    box.textContent = problem || "";
    if (problem) return;
    const query = coneQuery(ra, dec, radius);
    $("adql-query").value = query;
    run(query, 0);
  });

  $("adql-form").addEventListener("submit", (event) => {
    event.preventDefault();
    run($("adql-query").value, 0);
  });
  $("adql-query").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); run($("adql-query").value, 0); }
  });
  $("examples").addEventListener("change", (event) => {
    const option = event.target.selectedOptions[0];
    if (option && option.dataset.query) { $("adql-query").value = option.dataset.query; showError(null); }
  });
  $("page-prev").addEventListener("click", () => { if (shown) run(shown.query, Math.max(0, shown.offset - shown.rows)); });
  $("page-next").addEventListener("click", () => { if (shown) run(shown.query, shown.offset + shown.rows); });
  $("page-rows").addEventListener("change", () => { if (shown) run(shown.query, 0); });
  $("tap-url").addEventListener("focus", (event) => event.target.select());

  // /?query=... (a star's page links here): fill the box and run it
  const asked = new URLSearchParams(window.location.search).get("query");
  if (asked) { $("adql-query").value = asked; run(asked, 0); }
})();
