"""Where an admin command acts: the spool directory (``spool.admin``) or a running node (its HTTP API).

Both sides answer in the JSON shapes of the HTTP admin API (team contract of issue 11), so a command's
``--json`` output is the same whichever it talks to:

- a message ``MSG``: ``id, place, channel, peer, state, priority, attempts, age, size, due, lease_until,
  preview`` (+ ``headers, body_b64, body_text, body_json`` when shown one by one);
- an action: ``(matched, changed)``;
- an audit entry: ``at, who, action, target, count, detail``.

The CLI acting on a spool directory is ``who = "cli"`` in the audit.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from ..admin import AdminMessage
from ..errors import NotFound, PeerError, SpoolqError
from ..spool import Spool
from ._http import NodeClient

WHO = "cli"
LONG_CALL = 600.0  # seconds a node may take over one admin call (holding 100k messages by filter)
Progress = Callable[[int, int], None]


class Backend(Protocol):
    def browse(self, filters: Mapping[str, Any], after: str | None, limit: int) -> tuple[list[dict[str, Any]],
                                                                                         str | None]: ...

    def find(self, message_id: str) -> list[dict[str, Any]]: ...

    def act(self, action: str, ids: Sequence[str] | None, filters: Mapping[str, Any] | None, dry_run: bool,
            progress: Progress | None) -> tuple[int, int]: ...

    def audit_log(self, limit: int) -> list[dict[str, Any]]: ...


def message_dict(m: AdminMessage) -> dict[str, Any]:
    """An ``AdminMessage`` in the HTTP API's shape (with the body when ``find`` read it)."""
    d: dict[str, Any] = m.as_dict()
    if m.body is not None:
        d["headers"] = m.headers or {}
        d.update(body_fields(m.body))
    return d


def body_fields(body: bytes) -> dict[str, Any]:
    """``body_b64`` always; ``body_text`` when it is UTF-8; ``body_json`` when that text is JSON."""
    text: str | None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    parsed: Any = None
    if text is not None:
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
    return {"body_b64": base64.b64encode(body).decode(), "body_text": text, "body_json": parsed}


class LocalBackend:
    """``spool.admin`` of a spool directory opened by the command."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    def browse(self, filters: Mapping[str, Any], after: str | None, limit: int) -> tuple[list[dict[str, Any]],
                                                                                         str | None]:
        rows, nxt = self.spool.admin.browse(dict(filters), after, limit)
        return [m.as_dict() for m in rows], nxt

    def find(self, message_id: str) -> list[dict[str, Any]]:
        return [message_dict(m) for m in self.spool.admin.find(message_id)]

    def act(self, action: str, ids: Sequence[str] | None, filters: Mapping[str, Any] | None, dry_run: bool,
            progress: Progress | None) -> tuple[int, int]:
        fn = getattr(self.spool.admin, action)
        matched, changed = fn(list(ids) if ids is not None else None,
                              filter=dict(filters) if filters is not None else None,
                              dry_run=dry_run, who=WHO, progress=progress)
        return int(matched), int(changed)

    def audit_log(self, limit: int) -> list[dict[str, Any]]:
        return [e.as_dict() for e in self.spool.admin.audit_log(limit)]


class NodeBackend:
    """The HTTP admin API of a running node."""

    def __init__(self, client: NodeClient) -> None:
        self.client = client

    def browse(self, filters: Mapping[str, Any], after: str | None, limit: int) -> tuple[list[dict[str, Any]],
                                                                                         str | None]:
        data = self.client.get("/v1/admin/messages", {**filters, "after": after, "limit": limit})
        msgs = data.get("messages") if isinstance(data, dict) else None
        if not isinstance(msgs, list):
            raise PeerError("the node's message list has no 'messages'", hint="is the node as new as this spoolq?")
        nxt = data.get("next")
        return [m for m in msgs if isinstance(m, dict)], nxt if isinstance(nxt, str) else None

    def find(self, message_id: str) -> list[dict[str, Any]]:
        from urllib.parse import quote

        data = self.client.get("/v1/admin/messages/" + quote(message_id, safe=""))
        msgs = data.get("messages") if isinstance(data, dict) else None
        if not msgs:
            raise NotFound(f"no message with id {message_id} on the node")
        return [m for m in msgs if isinstance(m, dict)]

    def act(self, action: str, ids: Sequence[str] | None, filters: Mapping[str, Any] | None, dry_run: bool,
            progress: Progress | None) -> tuple[int, int]:
        body: dict[str, Any] = {"dry_run": dry_run}
        if ids is not None:
            body["ids"] = list(ids)
        else:
            body["filter"] = dict(filters or {})
        data = self.client.post(f"/v1/admin/{action}", body)
        try:
            matched, changed = int(data["matched"]), int(data["changed"])
        except (KeyError, TypeError, ValueError) as e:
            raise PeerError(f"the node's answer to {action} has no matched/changed counts") from e
        if progress is not None:
            progress(matched, changed)
        return matched, changed

    def audit_log(self, limit: int) -> list[dict[str, Any]]:
        data = self.client.get("/v1/admin/audit", {"limit": limit})
        entries = data.get("entries") if isinstance(data, dict) else None
        return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def running_node(spool_path: Path) -> str | None:
    """The URL of the node running on this spool directory (from its ``node.json``), if any."""
    try:
        info = json.loads((spool_path / "node.json").read_text())
        url = info["url"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return url if isinstance(url, str) else None


def node_of_spool(spool_path: Path, token: str | None, what: str) -> NodeClient:
    """A client of the node running on a spool directory, for what only the running node can do."""
    url = running_node(spool_path)
    if url is None:
        raise SpoolqError(f"{what} needs the running node, and no node runs on {spool_path}",
                          hint="start `spoolq node` on this spool, or give --node URL --token T")
    return NodeClient(url, token)


@contextmanager
def open_backend(node_url: str | None, token: str | None, spool_dir: str | None, durability: str = "full",
                 read_only: bool = False) -> Iterator[Backend]:
    """The node's HTTP API when ``--node`` is given, else the spool directory."""
    if node_url:
        yield NodeBackend(NodeClient(node_url, token, timeout=LONG_CALL))
        return
    with Spool(spool_dir, durability=durability, read_only=read_only) as spool:  # type: ignore[arg-type]
        yield LocalBackend(spool)
