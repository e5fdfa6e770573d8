"""The node's history (GET /v1/admin/history) and the dashboard's static files: unit tests of the
sampler with readings of our own, and a real node."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from spoolq.errors import InvalidArgument
from spoolq.node.history import CHANNEL_FIELDS, DUTY, MAX_SERIES, SECONDS, History, pause

from .conftest import wait_for
from .nodes import NodeProc

ADMIN = "admin-token-for-history-tests"
SENDER = "send-only-token-for-history-tests"
CONFIG = f"""
[node]
history_interval = 0.2
[tokens.ops]
token = "{ADMIN}"
scopes = ["admin", "send", "consume"]
[tokens.app]
token = "{SENDER}"
scopes = ["send"]
"""


# -- the sampler, fed by hand ---------------------------------------------------------------------


@dataclass
class Ch:
    ready: int = 0
    delayed: int = 0
    leased: int = 0
    dead: int = 0
    oldest_age: float | None = None
    held: int = 0


@dataclass
class Peer:
    outbox: int = 0


@dataclass
class Stats:
    channels: dict[str, Ch] = field(default_factory=dict)
    peers: dict[str, Peer] = field(default_factory=dict)


def test_rates_from_counted_flows_and_depth_changes() -> None:
    h = History(2.0)
    first = h.step(Stats({"a": Ch(ready=5)}), {}, 1000.0)
    assert first.as_dict()["channels"]["a"]["in_rate"] == 0.0  # no interval yet
    # 10 sent through the node, 4 acked through it: depth 5 -> 11
    h.came("a", 10)
    h.left("a", 4)
    s = h.step(Stats({"a": Ch(ready=9, leased=2)}), {}, 1002.0).as_dict()["channels"]["a"]
    assert (s["depth"], s["in_rate"], s["out_rate"]) == (11, 5.0, 2.0)
    # nothing counted, but the depth grew by 6 (a producer in another process): 6 came in
    s = h.step(Stats({"a": Ch(ready=17)}), {}, 1004.0).as_dict()["channels"]["a"]
    assert (s["in_rate"], s["out_rate"]) == (3.0, 0.0)
    # nothing counted, depth fell by 8 (a consumer elsewhere, or expiry): 8 left
    s = h.step(Stats({"a": Ch(ready=9, dead=1)}), {}, 1006.0).as_dict()["channels"]["a"]
    assert (s["in_rate"], s["out_rate"], s["dead"]) == (0.0, 4.0, 1)
    # counted 4 in but depth fell by 2: at least 6 went out
    h.came("a", 4)
    s = h.step(Stats({"a": Ch(ready=7)}), {}, 1008.0).as_dict()["channels"]["a"]
    assert (s["in_rate"], s["out_rate"]) == (2.0, 3.0)


def test_a_new_channel_starts_from_zero_and_held_counts_in_depth() -> None:
    h = History(1.0)
    h.step(Stats(), {}, 10.0)
    h.came("b", 3)
    s = h.step(Stats({"b": Ch(ready=1, held=2)}), {}, 11.0).as_dict()["channels"]["b"]
    assert (s["depth"], s["held"], s["in_rate"], s["out_rate"]) == (3, 2, 3.0, 0.0)
    assert set(s) == set(CHANNEL_FIELDS)


def test_peer_rates_from_the_forwarders_totals() -> None:
    h = History(2.0)
    h.step(Stats(peers={"dc2": Peer(100)}), {"dc2": 50}, 0.0)
    p = h.step(Stats(peers={"dc2": Peer(80)}), {"dc2": 70, "dc3": 4}, 2.0).as_dict()["peers"]
    assert p["dc2"] == {"waiting": 80, "rate": 10.0}
    assert p["dc3"] == {"waiting": 0, "rate": 0.0}  # first seen now: no rate yet


def test_memory_is_bounded() -> None:
    h = History(60.0)
    assert h.samples.maxlen == SECONDS / 60
    many = Stats({f"c{i:03d}": Ch(ready=i) for i in range(3 * MAX_SERIES)})
    for i in range(200):
        h.step(many, {}, float(i))
    assert len(h.samples) == SECONDS / 60
    last = h.samples[-1]
    assert len(last.channels) == MAX_SERIES
    assert min(v[0] for v in last.channels.values()) == 3 * MAX_SERIES - MAX_SERIES  # the deepest kept
    for i in range(10 * MAX_SERIES):  # flow counters of unknown channels do not grow without bound
        h.came(f"x{i}")
    assert len(h._came) <= 4 * MAX_SERIES
    with pytest.raises(InvalidArgument):
        History(0)


def test_a_slow_reading_stretches_the_interval() -> None:
    assert pause(2.0, 0.1) == 1.9  # the next reading 2 s after the last one started
    assert pause(2.0, 0.0) == 2.0
    assert pause(2.0, 1.0) == (DUTY - 1) * 1.0  # a deep spool: reading takes at most 1/DUTY of the time
    assert pause(2.0, 3.0) == (DUTY - 1) * 3.0
    assert pause(0.5, 0.4) == (DUTY - 1) * 0.4


def test_since_returns_the_window_oldest_first() -> None:
    h = History(1.0)
    for t in range(100):
        h.step(Stats(), {}, float(t))
    assert [s.t for s in h.since(5, None, 99.0)] == [95.0, 96.0, 97.0, 98.0, 99.0]
    assert [s.t for s in h.since(3600, 97.0, 99.0)] == [98.0, 99.0]
    assert h.since(3600, 99.0, 99.0) == []


# -- a real node ------------------------------------------------------------------------------------


def call(url: str, token: str | None = ADMIN, method: str = "GET", body: Any = None,
         raw: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture
def node(tmp_path: Path) -> Any:
    with NodeProc(tmp_path / "spool", config=CONFIG) as n:
        yield n


def history(url: str, query: str = "") -> dict[str, Any]:
    status, _, body = call(f"{url}/v1/admin/history{query}")
    assert status == 200, body
    out: dict[str, Any] = json.loads(body)
    return out


def test_history_api_shows_depths_and_rates(node: NodeProc) -> None:
    for i in range(6):
        assert call(f"{node.url}/v1/channels/jobs/messages", method="POST", raw=f"m{i}".encode())[0] == 201

    def latest_jobs() -> dict[str, Any] | None:
        samples = history(node.url)["samples"]
        return samples[-1]["channels"].get("jobs") if samples else None

    wait_for(lambda: (latest_jobs() or {}).get("depth") == 6)
    data = history(node.url)
    assert data["interval"] == 0.2
    ts = [s["t"] for s in data["samples"]]
    assert ts == sorted(ts) and len(ts) >= 2
    # the 6 arrivals show as an in-rate in some sample
    assert any(s["channels"].get("jobs", {}).get("in_rate", 0) > 0 for s in data["samples"])
    # polling with since= returns only newer samples
    newest = ts[-1]
    newer = wait_for(lambda: history(node.url, f"?since={newest}")["samples"])
    assert all(s["t"] > newest for s in newer)  # type: ignore[union-attr]
    # lease and ack 6 over HTTP: the depth goes to 0 and an out-rate shows
    status, _, body = call(f"{node.url}/v1/channels/jobs/leases", method="POST", body={"max": 10})
    assert status == 200, body
    leases = json.loads(body)["leases"]
    assert len(leases) == 6
    assert call(f"{node.url}/v1/acks", method="POST", body={"leases": [x["lease"] for x in leases]})[0] == 204
    wait_for(lambda: (latest_jobs() or {}).get("depth") == 0)
    assert any(s["channels"].get("jobs", {}).get("out_rate", 0) > 0 for s in history(node.url)["samples"])


def test_history_api_needs_admin_and_checks_its_query(node: NodeProc) -> None:
    status, _, body = call(f"{node.url}/v1/admin/history", token=None)
    assert status == 401 and json.loads(body)["error"] == "unauthorized"
    status, _, body = call(f"{node.url}/v1/admin/history", token=SENDER)
    assert status == 403 and "admin" in json.loads(body)["message"]
    status, _, body = call(f"{node.url}/v1/admin/history", token="wrong")
    assert status == 401
    for bad in ("seconds=abc", "seconds=-1", "seconds=99999", "since=nan", "since=-5", "seconds=inf"):
        status, _, body = call(f"{node.url}/v1/admin/history?{bad}")
        err = json.loads(body)
        assert status == 400 and err["error"] == "invalid_argument", (bad, err)
        assert bad.split("=")[0] in err["message"]
    assert history(node.url, "?seconds=0")["samples"] == []


def test_dashboard_files_are_public_with_a_strict_csp(node: NodeProc) -> None:
    status, headers, body = call(f"{node.url}/ui/", token=None)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'<script src="app.js"' in body and b"http" not in body.replace(b"http-equiv", b"")  # nothing external
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Referrer-Policy"] == "no-referrer"
    for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        status, headers, body = call(f"{node.url}/ui/{name}", token=None)
        assert status == 200 and headers["Content-Type"].startswith(kind) and body
        assert b"http://" not in body.replace(b"http://www.w3.org/2000/svg", b"") and b"https://" not in body
    for bad in ("/ui/nope.js", "/ui/..%2fapi.py", "/ui/%2e%2e/__init__.py", "/ui/__init__.py"):
        status, headers, body = call(f"{node.url}{bad}", token=None)
        assert status == 404 and json.loads(body)["error"] == "not_found", bad
    status, headers, _ = call(f"{node.url}/ui/app.js", token=None, method="POST", raw=b"x")
    assert status == 405


def test_the_token_never_reaches_a_url() -> None:
    js = (Path(__file__).resolve().parent.parent / "spoolq/node/ui/app.js").read_text()
    assert "Authorization" in js and "sessionStorage" in js and "replaceState" in js
    assert ".innerHTML" not in js and "insertAdjacentHTML" not in js and "document.write" not in js
    assert "localStorage" not in js and "?token" not in js
