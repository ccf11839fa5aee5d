"""The service's pages for people (``/``): what the release holds and how to reach it.

The pages are built on the server from the release's manifest and queries; the little script and
style they use are the service's own files (nothing is loaded from another host).
"""

from __future__ import annotations

from html import escape

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route


def routes(holder, limits, root_url) -> list[Route]:
    """The pages' routes, for the app of ``holder``'s release (stellardb.service.served.Holder);
    ``root_url(request)`` is the service's public address."""

    async def home(request: Request) -> Response:
        served = holder.get()
        return HTMLResponse(_home_html(root_url(request), served), headers={"X-Stellardb-Release": served.name})

    return [Route("/", home)]


def _home_html(root: str, served) -> str:
    model = (served.manifest.get("model") or {}).get("name", "")
    rows = "".join(f"<tr><td><code>{escape(served.schema)}.{escape(name)}</code></td><td>{info.get('rows', 0):,}"
                   "</td></tr>" for name, info in served.manifest.get("catalogues", {}).items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>stellardb: {escape(served.name)}</title>
<style>body{{font-family:sans-serif;max-width:50em;margin:2em auto;padding:0 1em}}code{{background:#f3f3f3}}
td{{padding:0 1em 0 0}}</style></head>
<body><h1>stellardb release {escape(served.name)}</h1>
<p>Teff, log g and [Fe/H] for every star{f" (model <code>{escape(model)}</code>)" if model else ""}, next to the
Gaia DR3, SkyMapper, distance and label rows they came from.</p>
<ul>
<li>TAP (TOPCAT, pyvo, STILTS): <code>{escape(root)}/tap</code> &mdash;
<a href="{escape(root)}/tap/examples">example queries</a>, <a href="{escape(root)}/tap/tables">tables</a>,
<a href="{escape(root)}/tap/capabilities">capabilities</a></li>
<li>Simple Cone Search: <code>{escape(root)}/scs?RA=150&amp;DEC=-45&amp;SR=0.1</code>
(also <code>/scs/gaia</code>, <code>/scs/skymapper</code>, ...)</li>
</ul>
<h2>Tables</h2><table><tr><th>table</th><th>rows</th></tr>{rows}</table>
</body></html>
"""
