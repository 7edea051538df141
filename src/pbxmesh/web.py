"""The live lamp page served at ``/`` by the control listener: one self-contained HTML page.

No external assets (works offline). It follows ``/api/v1/events`` (Server-Sent Events): a
``snapshot`` event first (status, members, channels, devices, MWI — in the stream, so no change
can fall between a fetch and the subscription), then ``device``/``mwi``/``members`` changes as
they happen and a ``tick`` every second (event rate, links, quorum). A stream silent for 5 s, or
one the browser gave up on (HTTP 401/5xx), is reopened with backoff; while not live the page
says so and dims the lamps. Lamps are coloured by state *and* carry the state's name (colour is
never the only signal); a click or Enter on a lamp shows its per-origin states, read on demand
from ``/devices`` and refreshed each tick. The grid renders only the rows in view (virtual
scrolling, rendering coalesced to one animation frame), so 10,000 devices do not freeze the tab;
arrow keys, Page Up/Down, Home/End move between lamps. The token may be given as ``/#token=``
(kept out of server logs) or ``/?token=``.

The page is kept as real files, shipped as package data in ``pbxmesh/static/``: ``lamps.html``
(which opens in a browser from the source tree as it is), ``lamps.css`` and ``lamps.js``. They
are read once and the stylesheet and script inlined into the HTML, so the page is still served
as one response with no external assets.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Final

__all__ = ["lamp_page"]

_CSS_TAG: Final = '<link rel="stylesheet" href="lamps.css">'
_JS_TAG: Final = '<script src="lamps.js"></script>'


@functools.cache
def lamp_page() -> str:
    """The page's HTML, with its stylesheet and script inlined."""
    static = resources.files("pbxmesh") / "static"
    html = (static / "lamps.html").read_text(encoding="utf-8")
    css = (static / "lamps.css").read_text(encoding="utf-8")
    js = (static / "lamps.js").read_text(encoding="utf-8")
    if html.count(_CSS_TAG) != 1 or html.count(_JS_TAG) != 1:
        raise RuntimeError("pbxmesh/static/lamps.html must link lamps.css and lamps.js once each")
    return html.replace(_CSS_TAG, f"<style>\n{css}</style>").replace(
        _JS_TAG, f"<script>\n{js}</script>"
    )
