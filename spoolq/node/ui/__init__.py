"""The dashboard at ``/ui/``: three static files shipped in the package, served by the node.

No build step and nothing from the internet: ``index.html``, ``app.js`` (plain JavaScript, hand-drawn
SVG charts) and ``app.css``. The files are public (they hold no data); every data call they make
needs a token with the ``admin`` scope, sent in an ``Authorization`` header. The page reads a token
given as ``/ui/#token=...`` (a fragment, which browsers never send, so it reaches no log) and keeps
it in the tab's ``sessionStorage``.

Every answer carries a strict Content-Security-Policy (scripts, styles and connections only from the
node itself; no inline script or style, no frames, no forms posting elsewhere), so an injected
message body shown on a page can do nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web

__all__ = ["install", "FILES", "CSP"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Add = Callable[[str, str, Handler, str, "str | None"], None]

FILES = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _load() -> dict[str, bytes]:
    base = resources.files(__name__)
    return {name: base.joinpath(name).read_bytes() for name in FILES}


def install(add: Add) -> None:
    """Add ``GET /ui`` (a redirect), ``/ui/`` and ``/ui/{file}`` (no scope: the files are public)."""
    files = _load()  # a few KB, read once: no disk access per request

    async def get_redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPMovedPermanently("/ui/", headers=HEADERS)

    async def get_file(request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("file") or "index.html"
        body = files.get(name)
        if body is None:
            return web.json_response({"error": "not_found", "message": f"no file {name[:80]!r} in the dashboard",
                                      "hint": "open /ui/"}, status=404, headers=HEADERS)
        return web.Response(body=body, content_type=FILES[name], charset="utf-8", headers=HEADERS)

    add("GET", "/ui", get_redirect, "ui_redirect", None)
    add("GET", "/ui/", get_file, "ui_index", None)
    add("GET", "/ui/{file}", get_file, "ui_file", None)
