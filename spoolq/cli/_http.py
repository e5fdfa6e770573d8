"""A small synchronous client of a running node's HTTP API, for the commands given ``--node URL``.

Errors come back as the node's JSON error (``{"error": code, "message", "hint"}``, or the same under an
``"error"`` object) and are raised as spoolq errors, so a command prints them the way it prints a local
one: 400 is the caller's mistake (exit 2), 404 a missing object, the rest the node's or the network's.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from ..errors import InvalidArgument, NotFound, PeerError

F = TypeVar("F", bound=Callable[..., Any])

MAX_REPLY = 256 * 1024 * 1024  # a shown message body is at most the spool's message size limit


def node_options(f: F) -> F:
    """``--node URL`` and ``--token T``: act on a running node instead of a spool directory."""
    f = click.option("--token", envvar="SPOOLQ_TOKEN", default=None,
                     help="A token of the node with the admin scope [env: SPOOLQ_TOKEN].")(f)
    f = click.option("--node", "node_url", envvar="SPOOLQ_NODE", default=None, metavar="URL",
                     help="Act on the running node at URL (its HTTP API) instead of a spool directory "
                          "[env: SPOOLQ_NODE].")(f)
    return f


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A node never redirects; following one would hand the bearer token to another address."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class NodeClient:
    """GET and POST JSON to one node, with a bearer token."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidArgument(f"--node {url!r} is not an http:// or https:// URL",
                                  hint="e.g. --node http://127.0.0.1:7070")
        self.base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        self.token = token
        self.timeout = timeout

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        query = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        url = self.base + path + ("?" + urllib.parse.urlencode(query) if query else "")
        return self._call(urllib.request.Request(url, method="GET"))

    def post(self, path: str, body: Any) -> Any:
        data = json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
        return self._call(req)

    def _call(self, req: urllib.request.Request) -> Any:
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        where = f"{req.get_method()} {req.full_url}"
        try:
            with _OPENER.open(req, timeout=self.timeout) as resp:
                raw = resp.read(MAX_REPLY + 1)
        except urllib.error.HTTPError as e:
            raise _http_error(e, where) from None
        except (OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise PeerError(f"cannot reach the node ({where}): {reason}",
                            hint="is `spoolq node` running there? check --node (host and port)") from e
        if len(raw) > MAX_REPLY:
            raise PeerError(f"the node's reply to {where} is over {MAX_REPLY} bytes", permanent=True)
        try:
            return json.loads(raw)
        except ValueError as e:
            raise PeerError(f"the node's reply to {where} is not JSON", hint="is --node a spoolq node?",
                            permanent=True) from e


def _param(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _http_error(e: urllib.error.HTTPError, where: str) -> Exception:
    try:
        data = json.loads(e.read(1024 * 1024) or b"null")
    except (OSError, ValueError):
        data = None
    code, message, hint = "", f"{e.code} {e.reason}", None
    if isinstance(data, dict):
        inner = data.get("error")
        src = inner if isinstance(inner, dict) else data
        code = str(src.get("code", inner if isinstance(inner, str) else ""))
        message = str(src.get("message") or message)
        hint = src.get("hint") if isinstance(src.get("hint"), str) else None
    text = f"the node refused {where}: {message}" + (f" ({code})" if code else "")
    if e.code in (401, 403):
        return PeerError(text, status=e.code, permanent=True,
                         hint=hint or "pass a token with the admin scope: --token T (or $SPOOLQ_TOKEN)")
    if e.code == 404:
        return NotFound(message, hint=hint)
    if e.code == 400 or e.code == 413:
        return InvalidArgument(message, hint=hint)
    return PeerError(text, status=e.code, hint=hint)
