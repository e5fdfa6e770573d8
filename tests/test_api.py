"""The HTTP API of real `spoolq node` daemons, spoken with a plain HTTP client.

Every request goes through ``urllib.request`` (or ``http.client`` where a
chunked upload is needed), the way a program in another language would talk
to a node; spoolq's own classes are only used to build and read peer batches
(``spoolq.codec``) and to look at the spool on disk (``spoolq.Spool``).

Sections: the JSON API end to end, bad input, auth, peer batches over raw
HTTP, /metrics and /healthz, TLS (serving HTTPS and forwarding to an HTTPS
peer).
"""

from __future__ import annotations

import base64
import http.client
import importlib.util
import json
import os
import re
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from spoolq import ChannelStats, InvalidArgument, Spool, new_id
from spoolq.codec import ACCEPTED, DUPLICATE, REJECTED, WireMessage, decode_reply, encode_batch

from .conftest import wait_for
from .nodes import NodeProc

MIB = 1 << 20
_NO_JSON = object()
OCTETS = {"Content-Type": "application/octet-stream"}
MSGPACK = {"Content-Type": "application/x-msgpack"}


# -- a plain HTTP client ---------------------------------------------------------------------


@dataclass
class Resp:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str | None:
        """The machine-readable error code of an error response (``None`` if it is not JSON)."""
        try:
            data = json.loads(self.body)
        except ValueError:
            return None
        return data.get("error") if isinstance(data, dict) else None

    def __repr__(self) -> str:
        return f"<Resp {self.status} {self.body[:300]!r}>"


class Client:
    """urllib against one node; ``token`` is sent as a bearer token unless a request overrides it."""

    def __init__(self, base: str, *, token: str | None = None, context: ssl.SSLContext | None = None) -> None:
        self.base = base
        self.token = token
        handlers: list[Any] = [urllib.request.ProxyHandler({})]
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)

    def request(self, method: str, path: str, *, json_body: Any = _NO_JSON, data: bytes | None = None,
                headers: dict[str, str] | None = None, token: str | object | None = _NO_JSON,
                timeout: float = 15.0) -> Resp:
        hdrs = dict(headers or {})
        if json_body is not _NO_JSON:
            data = json.dumps(json_body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        tok = self.token if token is _NO_JSON else token
        if tok is not None:
            hdrs["Authorization"] = f"Bearer {tok}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=hdrs)
        try:
            with self._opener.open(req, timeout=timeout) as r:
                return Resp(r.status, r.headers, r.read())
        except urllib.error.HTTPError as e:
            with e:
                return Resp(e.code, e.headers, e.read())

    def get(self, path: str, **kw: Any) -> Resp:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Resp:
        return self.request("POST", path, **kw)

    # shortcuts that assert success

    def send(self, channel: str, payload: Any) -> Any:
        r = self.post(f"/v1/channels/{channel}/messages", json_body=payload)
        assert r.status == 201, r
        return r.json()

    def lease(self, channel: str, **params: Any) -> list[dict[str, Any]]:
        r = self.post(f"/v1/channels/{channel}/leases", json_body=params)
        assert r.status == 200, r
        leases: list[dict[str, Any]] = r.json()["leases"]
        return leases

    def stats(self) -> dict[str, Any]:
        r = self.get("/v1/stats")
        assert r.status == 200, r
        data: dict[str, Any] = r.json()
        return data


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def depth(spool: Spool, channel: str) -> ChannelStats:
    """What the spool on disk holds for ``channel`` (all zero when it does not exist)."""
    return spool.stats().channels.get(channel, ChannelStats())


def stored(spool: Spool) -> int:
    """Every message the spool holds anywhere: inboxes, delayed, leased, dead letters, outboxes."""
    st = spool.stats()
    return (sum(c.ready + c.delayed + c.leased + c.dead for c in st.channels.values())
            + sum(p.outbox + p.dead for p in st.peers.values()))


def stored_in(spool: Spool, channel: str) -> int:
    """Messages of ``channel`` anywhere in the spool's inbox (ready, delayed, leased, dead)."""
    d = depth(spool, channel)
    return d.ready + d.delayed + d.leased + d.dead


def toml_str(path: Path | str) -> str:
    return json.dumps(str(path))  # a JSON string is a valid TOML basic string for plain paths


@pytest.fixture(scope="module", params=["default", "asyncio"])
def node(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    """A node without tokens on loopback; sweeps often so TTLs turn into dead letters quickly. Once on the
    default event loop (uvloop when installed), once on asyncio's own (SPOOLQ_LOOP=asyncio)."""
    loop = request.param
    n = NodeProc(tmp_path_factory.mktemp("plain") / "spool", config="[node]\nsweep_interval = 0.2\n",
                 env={"SPOOLQ_LOOP": "asyncio" if loop == "asyncio" else ""})
    uv = loop != "asyncio" and importlib.util.find_spec("uvloop") is not None
    wait_for(lambda: "event loop:" in n.log())  # logged just after the node starts answering
    assert f"event loop: {'uvloop' if uv else 'asyncio'}" in n.log(), n.log()
    yield n
    assert n.stop() == 0, n.log()


@pytest.fixture(scope="module")
def api(node: NodeProc) -> Client:
    return Client(node.url)


@pytest.fixture(scope="module")
def disk(node: NodeProc) -> Iterator[Spool]:
    """The node's spool, opened by this (another) process to check what is stored."""
    s = Spool(node.spool_dir)
    yield s
    s.close()


# == 1. the JSON API end to end ===============================================================


def test_send_raw_body_with_query_options_and_headers(api: Client, disk: Spool) -> None:
    ch = "raw.send"
    mid = new_id()
    body = b"\x00\x01 raw \xff\xfe bytes"
    r = api.post(f"/v1/channels/{ch}/messages?priority=7&ttl=60&id={mid}", data=body,
                 headers={**OCTETS, "Spoolq-Header-Trace-Id": "abc-123", "Spoolq-Header-Tenant": "acme",
                          "X-Other": "not a message header"})
    assert r.status == 201, r
    assert r.json() == {"id": mid}
    [m] = disk.peek(ch)
    assert (m.id, m.body, m.priority) == (mid, body, 7)
    assert m.headers == {"trace-id": "abc-123", "tenant": "acme"}
    assert m.expires_at == pytest.approx(time.time() + 60, abs=10)

    # the same id again is a no-op that answers the same id
    r = api.post(f"/v1/channels/{ch}/messages?id={mid}", data=b"other", headers=OCTETS)
    assert (r.status, r.json()) == (201, {"id": mid})
    assert [x.body for x in disk.peek(ch)] == [body]

    # delay in the query string: stored, not ready yet
    r = api.post(f"/v1/channels/{ch}/messages?delay=30", data=b"later", headers=OCTETS)
    assert r.status == 201, r
    # curl --data-binary without -H sends application/x-www-form-urlencoded: still a raw body
    r = api.post(f"/v1/channels/{ch}/messages?priority=9", data=b"a=1&b=2",
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 201, r
    d = depth(disk, ch)
    assert (d.ready, d.delayed, d.leased) == (2, 1, 0)

    # a binary body comes back as body_base64; text as body
    [x, y] = api.lease(ch, max=10)
    assert "body" not in x
    assert base64.b64decode(x["body_base64"]) == body
    assert (x["id"], x["priority"], x["channel"], x["attempts"]) == (mid, 7, ch, 1)
    assert x["headers"] == {"trace-id": "abc-123", "tenant": "acme"}
    assert y["body"] == "a=1&b=2" and "body_base64" not in y
    assert y["priority"] == 9 and y["headers"] == {}


def test_send_json_one_and_many(api: Client, disk: Spool) -> None:
    ch = "json.send"
    one = api.send(ch, {"body": "héllo wörld"})
    binary = bytes(range(256))
    two = api.send(ch, {"body_base64": b64(binary), "headers": {"kind": "blob"}})
    assert set(one) == {"id"} and set(two) == {"id"}
    mid = new_id()
    many = api.send(ch, {"messages": [
        {"body": "urgent", "priority": 1, "headers": {"k": "v"}},
        {"body": "later", "delay": 30},
        {"body_base64": b64(b"\xff\xfe"), "ttl": 60, "id": mid},
        {"body": "plain"},
    ]})
    assert set(many) == {"ids"} and len(many["ids"]) == 4 and many["ids"][2] == mid
    d = depth(disk, ch)
    assert (d.ready, d.delayed) == (5, 1)
    expiring = [m for m in disk.peek(ch) if m.id == mid]
    assert expiring and expiring[0].expires_at == pytest.approx(time.time() + 60, abs=10)

    got = api.lease(ch, max=10)
    # priority first, then id order (``mid`` was made by this process: its place among same-millisecond ids
    # is not defined)
    assert got[0]["id"] == many["ids"][0]
    assert sorted(x["id"] for x in got[1:]) == sorted([one["id"], two["id"], mid, many["ids"][3]])
    by_id = {x["id"]: x for x in got}
    assert got[0]["body"] == "urgent" and got[0]["priority"] == 1 and got[0]["headers"] == {"k": "v"}
    assert by_id[one["id"]]["body"] == "héllo wörld" and by_id[one["id"]]["priority"] == 1024
    assert base64.b64decode(by_id[two["id"]]["body_base64"]) == binary
    assert by_id[two["id"]]["headers"] == {"kind": "blob"}
    assert base64.b64decode(by_id[mid]["body_base64"]) == b"\xff\xfe"
    assert by_id[many["ids"][3]]["body"] == "plain"
    # encoding=base64 asks for base64 even for text
    api.send(ch, {"body": "text"})
    [t] = api.lease(ch, encoding="base64")
    assert "body" not in t and base64.b64decode(t["body_base64"]) == b"text"


def test_lease_max_visibility_touch_ack_nack(api: Client, disk: Spool) -> None:
    ch = "lease.ops"
    ids = api.send(ch, {"messages": [{"body": f"m{i}"} for i in range(3)]})["ids"]
    a, b = api.lease(ch, max=2, visibility=60)
    assert [a["id"], b["id"]] == ids[:2] and a["attempts"] == 1
    assert a["deadline"] == pytest.approx(time.time() + 60, abs=10)
    assert (depth(disk, ch).ready, depth(disk, ch).leased) == (1, 2)

    # parameters in the query string work too
    r = api.post(f"/v1/channels/{ch}/leases?max=5&visibility=10")
    assert r.status == 200, r
    [c] = r.json()["leases"]
    assert c["id"] == ids[2] and c["deadline"] == pytest.approx(time.time() + 10, abs=5)
    assert api.lease(ch) == []  # all three are leased

    # touch extends the lease
    r = api.post(f"/v1/leases/{c['lease']}/touch", json_body={"visibility": 300})
    assert r.status == 200, r
    assert r.json()["deadline"] == pytest.approx(time.time() + 300, abs=10)

    # ack, then everything else on that lease is refused
    r = api.post(f"/v1/leases/{a['lease']}/ack")
    assert r.status == 204, r
    for op in ("ack", "nack", "touch"):
        r = api.post(f"/v1/leases/{a['lease']}/{op}")
        assert (r.status, r.error) == (409, "lease_lost"), (op, r)
    assert [m.body for m in disk.peek(ch)] == []

    # nack with a delay: back to delayed, not ready
    r = api.post(f"/v1/leases/{b['lease']}/nack", json_body={"delay": 30})
    assert r.status == 204, r
    d = depth(disk, ch)
    assert (d.ready, d.delayed, d.leased) == (0, 1, 1)

    # nack with delay 0 (query string): ready at once, delivered again as attempt 2
    r = api.post(f"/v1/leases/{c['lease']}/nack?delay=0")
    assert r.status == 204, r
    [again] = api.lease(ch)
    assert again["id"] == ids[2] and again["attempts"] == 2 and again["lease"] != c["lease"]
    assert api.post(f"/v1/leases/{again['lease']}/ack").status == 204
    d = depth(disk, ch)
    assert (d.ready, d.delayed, d.leased) == (0, 1, 0)


def test_lease_expiry_and_batch_acks_all_or_nothing(api: Client, disk: Spool) -> None:
    ch = "lease.acks"
    api.send(ch, {"messages": [{"body": f"m{i}"} for i in range(4)]})
    held = api.lease(ch, max=3, visibility=60)
    [short] = api.lease(ch, visibility=0.3)
    assert len(held) == 3
    wait_for(lambda: depth(disk, ch).ready == 1, timeout=10)  # the short lease ran out

    handles = [held[0]["lease"], short["lease"], held[1]["lease"], held[2]["lease"]]
    r = api.post("/v1/acks", json_body={"leases": handles})
    assert (r.status, r.error) == (409, "lease_expired"), r
    d = depth(disk, ch)
    assert (d.ready, d.leased) == (1, 3), "a failed batch ack must ack nothing"

    r = api.post(f"/v1/leases/{short['lease']}/ack")
    assert (r.status, r.error) == (409, "lease_expired"), r
    # once the message is leased again, the old handle is lost rather than expired
    [again] = api.lease(ch, visibility=60)
    assert again["id"] == short["id"] and again["attempts"] == 2
    r = api.post(f"/v1/leases/{short['lease']}/touch")
    assert (r.status, r.error) == (409, "lease_lost"), r

    r = api.post("/v1/acks", json_body={"leases": [h["lease"] for h in held] + [again["lease"]]})
    assert r.status == 204, r
    d = depth(disk, ch)
    assert (d.ready, d.leased, d.delayed, d.dead) == (0, 0, 0, 0)
    r = api.post("/v1/acks", json_body={"leases": [again["lease"]]})
    assert (r.status, r.error) == (409, "lease_lost"), r

    for bad in ({"leases": "1.2.3.4"}, {"leases": [1]}, {"leases": ["garbage"]}, {}, ["x"]):
        r = api.post("/v1/acks", json_body=bad)
        assert (r.status, r.error) == (400, "invalid_argument"), (bad, r)


_TAG = "." + "A" * 22  # a well-formed (but wrong) HMAC tag


@pytest.mark.parametrize("handle", [
    "garbage", "1.2.3", "1.2.3.4.5", "x.1024.00000000000000000000000000000000.1" + _TAG,
    "1.1024.abcd.1" + _TAG, "1.1024.0000000000000000000000000000000g.1" + _TAG,
    "1.-1.00000000000000000000000000000000.1" + _TAG,
    "1.1024.00000000000000000000000000000000.0" + _TAG, "0.1024.00000000000000000000000000000000.1" + _TAG,
    "1.4294967296.00000000000000000000000000000000.1" + _TAG,
    "1.1024.00000000000000000000000000000000.1",  # the old format, without a tag
    # numbers too large for SQLite
    f"{2**64}.1024.00000000000000000000000000000000.1" + _TAG,
    f"1.1024.00000000000000000000000000000000.{2**64}" + _TAG,
])
def test_malformed_lease_handle_is_400(api: Client, handle: str) -> None:
    for op in ("ack", "nack", "touch"):
        r = api.post(f"/v1/leases/{handle}/{op}")
        assert (r.status, r.error) == (400, "invalid_argument"), (op, r)
    r = api.post("/v1/acks", json_body={"leases": [handle]})
    assert (r.status, r.error) == (400, "invalid_argument"), r


def test_unknown_but_well_formed_lease_handle_is_lost(api: Client) -> None:
    handle = f"999999.1024.{uuid.UUID(new_id()).hex}.1" + _TAG
    for op in ("ack", "nack", "touch"):
        r = api.post(f"/v1/leases/{handle}/{op}")
        assert (r.status, r.error) == (409, "lease_lost"), (op, r)


def _long_poll(api: Client, channel: str, out: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        out["resp"] = api.post(f"/v1/channels/{channel}/leases", json_body={"wait": 5, "max": 10})
        out["at"] = time.monotonic()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    # give the request time to park in the server; if it has not yet, it finds the message at once
    # and the assertions below still hold
    time.sleep(0.3)
    return t


@pytest.mark.parametrize("sender", ["http-thread", "spool-in-another-process"])
def test_long_poll_returns_soon_after_a_send(api: Client, disk: Spool, sender: str) -> None:
    ch = f"poll.{sender}"  # a channel that does not exist yet while the lease waits
    out: dict[str, Any] = {}
    started = time.monotonic()
    t = _long_poll(api, ch, out)
    assert "resp" not in out, "the long poll returned before anything was sent"
    if sender == "http-thread":
        sent: list[float] = []
        s = threading.Thread(target=lambda: (api.send(ch, {"body": "wake up"}), sent.append(time.monotonic())))
        s.start()
        s.join(10)
        sent_at = sent[0]
    else:
        disk.send(b"wake up", ch)  # this test process is not the daemon: the bell crosses processes
        sent_at = time.monotonic()
    t.join(10)
    assert not t.is_alive()
    r = out["resp"]
    assert r.status == 200, r
    assert [x["body"] for x in r.json()["leases"]] == ["wake up"]
    assert out["at"] - sent_at < 0.3, f"lease returned {out['at'] - sent_at:.3f}s after the message was stored"
    assert out["at"] - started < 4.0


def test_long_poll_returns_empty_after_wait(api: Client) -> None:
    t0 = time.monotonic()
    r = api.post("/v1/channels/poll.nothing/leases", json_body={"wait": 1.5})
    elapsed = time.monotonic() - t0
    assert r.status == 200, r
    assert r.json() == {"leases": []}
    assert 1.4 <= elapsed < 4.0, elapsed


def test_stats(api: Client, disk: Spool) -> None:
    ch = "stats.ch"
    api.send(ch, {"messages": [{"body": "a"}, {"body": "b"}, {"body": "c", "delay": 60}]})
    api.lease(ch, visibility=60)
    st = api.stats()
    assert st["node_id"] == disk.node_id
    assert st["channels"][ch] == {"ready": 1, "delayed": 1, "leased": 1, "dead": 0, "urgent": 0, "held": 0,
                                  "oldest_age": pytest.approx(0, abs=10)}
    assert st["peers"] == {}
    assert set(st["channels"]) == set(disk.stats().channels)


def test_dead_letters_list_show_retry_purge(api: Client, disk: Spool) -> None:
    ch = "dead.api"
    ids = api.send(ch, {"messages": [
        {"body": "t1", "ttl": 0.2},
        {"body_base64": b64(b"\x80bin"), "ttl": 0.2, "headers": {"h": "1"}},
        {"body": "t3", "ttl": 0.2},
    ]})["ids"]
    wait_for(lambda: depth(disk, ch).dead == 3, timeout=10)  # the daemon's sweep dead-letters them

    r = api.get(f"/v1/dead?channel={ch}")
    assert r.status == 200, r
    dead = r.json()["dead"]
    assert [d["id"] for d in dead] == ids
    assert {d["reason"] for d in dead} == {"expired"} and {d["channel"] for d in dead} == {ch}
    assert [d["size"] for d in dead] == [2, 4, 2] and dead[0]["peer"] is None
    assert [d["id"] for d in api.get(f"/v1/dead?channel={ch}&limit=2").json()["dead"]] == ids[:2]
    assert api.get(f"/v1/dead?channel={ch}&reason=max_attempts").json() == {"dead": []}

    r = api.get(f"/v1/dead/{ids[1]}")
    assert r.status == 200, r
    one = r.json()
    assert base64.b64decode(one["body_base64"]) == b"\x80bin" and one["headers"] == {"h": "1"}
    assert (one["id"], one["channel"], one["reason"]) == (ids[1], ch, "expired")
    r = api.get(f"/v1/dead/{new_id()}")
    assert (r.status, r.error) == (404, "not_found"), r
    r = api.get("/v1/dead/not-an-id")
    assert (r.status, r.error) == (400, "invalid_argument"), r
    for query in ("limit=many", "limit=-1", "limit=100000000000000000000000", "older_than=-1", "older_than=1e300",
                  "newer_than=soon", "channel=bad%20name"):
        r = api.get(f"/v1/dead?{query}")
        assert (r.status, r.error) == (400, "invalid_argument"), (query, r)

    # a dry run reports and moves nothing
    r = api.post("/v1/dead/retry", json_body={"ids": ids[:2], "dry_run": True})
    assert r.status == 200, r
    assert r.json() == {"retried": ids[:2], "dry_run": True}
    assert (depth(disk, ch).dead, depth(disk, ch).ready) == (3, 0)
    r = api.post("/v1/dead/retry", json_body={"ids": ids[:2]})
    assert r.json() == {"retried": ids[:2], "dry_run": False}
    assert (depth(disk, ch).dead, depth(disk, ch).ready) == (1, 2)
    got = api.lease(ch, max=10)
    assert [x["id"] for x in got] == ids[:2]
    assert got[0]["body"] == "t1" and base64.b64decode(got[1]["body_base64"]) == b"\x80bin"
    assert got[1]["headers"] == {"h": "1"}
    r = api.post("/v1/acks", json_body={"leases": [x["lease"] for x in got]})
    assert r.status == 204, r

    # purge needs a selection; dry_run counts
    for bad in ({}, {"dry_run": True}, {"ids": "x"}):
        r = api.post("/v1/dead/purge", json_body=bad)
        assert (r.status, r.error) == (400, "invalid_argument"), (bad, r)
    r = api.post("/v1/dead/purge", json_body={"channel": ch, "dry_run": True})
    assert r.json() == {"purged": 1, "dry_run": True}
    assert depth(disk, ch).dead == 1
    r = api.post("/v1/dead/purge", json_body={"channel": ch})
    assert r.json() == {"purged": 1, "dry_run": False}
    assert depth(disk, ch).dead == 0
    assert api.get(f"/v1/dead?channel={ch}").json() == {"dead": []}
    assert stored_in(disk, ch) == 0


# == 2. bad input ==================================================================================

_J = "application/json"
BAD_SENDS: list[tuple[str, str, dict[str, Any], int, str]] = [
    # (case, channel in the URL (+ query), request, status, error code)
    ("invalid-json", "bad.1", {"data": b'{"body": ', "headers": {"Content-Type": _J}}, 400, "invalid_argument"),
    ("json-not-utf8", "bad.2", {"data": b'{"body": "\xff"}', "headers": {"Content-Type": _J}}, 400,
     "invalid_argument"),
    ("json-bad-charset", "bad.3", {"data": b'{"body": "x"}', "headers": {"Content-Type": _J + "; charset=nope"}},
     400, "invalid_argument"),
    ("json-array", "bad.4", {"json_body": ["x"]}, 400, "invalid_argument"),
    ("unknown-field", "bad.5", {"json_body": {"body": "x", "colour": "red"}}, 400, "invalid_argument"),
    ("unknown-field-in-list", "bad.6", {"json_body": {"messages": [{"body": "x"}, {"body": "y", "prio": 1}]}},
     400, "invalid_argument"),
    ("unknown-field-beside-messages", "bad.7", {"json_body": {"messages": [{"body": "x"}], "priority": 1}},
     400, "invalid_argument"),
    ("empty-messages", "bad.8", {"json_body": {"messages": []}}, 400, "invalid_argument"),
    ("messages-not-list", "bad.9", {"json_body": {"messages": {"body": "x"}}}, 400, "invalid_argument"),
    ("item-not-object", "bad.10", {"json_body": {"messages": ["x"]}}, 400, "invalid_argument"),
    ("no-body", "bad.11", {"json_body": {"priority": 1}}, 400, "invalid_argument"),
    ("body-not-text", "bad.12", {"json_body": {"body": 5}}, 400, "invalid_argument"),
    ("both-bodies", "bad.13", {"json_body": {"body": "x", "body_base64": "eA=="}}, 400, "invalid_argument"),
    ("bad-base64", "bad.14", {"json_body": {"body_base64": "not base64!"}}, 400, "invalid_argument"),
    ("bad-channel-space", "bad%20name", {"data": b"x", "headers": OCTETS}, 400, "invalid_argument"),
    ("bad-channel-long", "c" * 201, {"data": b"x", "headers": OCTETS}, 400, "invalid_argument"),
    ("bad-channel-json", "sp%C3%A4m", {"json_body": {"body": "x"}}, 400, "invalid_argument"),
    ("too-large-raw", "bad.15", {"data": b"x" * (MIB + 1), "headers": OCTETS}, 413, "too_large"),
    ("too-large-json", "bad.16", {"json_body": {"body": "x" * (MIB + 1)}}, 413, "too_large"),
    ("too-large-base64", "bad.17", {"json_body": {"body_base64": b64(b"x" * (MIB + 1))}}, 413, "too_large"),
    ("too-large-with-headers", "bad.18", {"json_body": {"body": "x" * (MIB - 4), "headers": {"k": "vvvvvvvv"}}},
     413, "too_large"),
    ("negative-delay-query", "bad.19?delay=-1", {"data": b"x", "headers": OCTETS}, 400, "invalid_argument"),
    ("negative-delay-json", "bad.20", {"json_body": {"body": "x", "delay": -1}}, 400, "invalid_argument"),
    ("delay-word-query", "bad.21?delay=soon", {"data": b"x", "headers": OCTETS}, 400, "invalid_argument"),
    ("delay-nan-query", "bad.22?delay=nan", {"data": b"x", "headers": OCTETS}, 400, "invalid_argument"),
    ("delay-string-json", "bad.23", {"json_body": {"body": "x", "delay": "5"}}, 400, "invalid_argument"),
    ("ttl-zero-query", "bad.24?ttl=0", {"data": b"x", "headers": OCTETS}, 400, "invalid_argument"),
    ("ttl-negative-json", "bad.25", {"json_body": {"body": "x", "ttl": -5}}, 400, "invalid_argument"),
    ("priority-word-query", "bad.26?priority=high", {"data": b"x", "headers": OCTETS}, 400, "invalid_argument"),
    ("priority-negative-query", "bad.27?priority=-1", {"data": b"x", "headers": OCTETS}, 400, "invalid_argument"),
    ("priority-too-big-query", "bad.28?priority=4294967296", {"data": b"x", "headers": OCTETS}, 400,
     "invalid_argument"),
    ("priority-too-big-json", "bad.29", {"json_body": {"body": "x", "priority": 2**32}}, 400, "invalid_argument"),
    ("priority-string-json", "bad.30", {"json_body": {"body": "x", "priority": "1"}}, 400, "invalid_argument"),
    ("priority-float-json", "bad.31", {"json_body": {"body": "x", "priority": 1.5}}, 400, "invalid_argument"),
    ("priority-bool-json", "bad.32", {"json_body": {"body": "x", "priority": True}}, 400, "invalid_argument"),
    ("headers-not-object", "bad.33", {"json_body": {"body": "x", "headers": ["a"]}}, 400, "invalid_argument"),
    ("header-value-not-text", "bad.34", {"json_body": {"body": "x", "headers": {"a": 1}}}, 400,
     "invalid_argument"),
    ("bad-id-json", "bad.35", {"json_body": {"body": "x", "id": "nope"}}, 400, "invalid_argument"),
    ("bad-id-query", "bad.36?id=nope", {"data": b"x", "headers": OCTETS}, 400, "invalid_argument"),
    ("bad-to-json", "bad.37", {"json_body": {"body": "x", "to": 5}}, 400, "invalid_argument"),
    ("delay-huge-query", "bad.39?delay=1e300", {"data": b"x", "headers": OCTETS}, 400, "invalid_argument"),
    ("ttl-huge-query", "bad.40?ttl=1e20", {"data": b"x", "headers": OCTETS}, 400, "invalid_argument"),
    ("delay-huge-json", "bad.41", {"json_body": {"body": "x", "delay": 10**17}}, 400, "invalid_argument"),
    ("ttl-huge-json", "bad.42", {"json_body": {"messages": [{"body": "x", "ttl": 1e300}]}}, 400,
     "invalid_argument"),
    ("one-bad-item-fails-all", "bad.38", {"json_body": {"messages": [{"body": "ok"}, {"body": "x", "delay": -1}]}},
     400, "invalid_argument"),
]


@pytest.mark.parametrize(("case", "target", "req", "status", "code"), BAD_SENDS, ids=[c[0] for c in BAD_SENDS])
def test_bad_send_is_refused_and_stores_nothing(api: Client, disk: Spool, case: str, target: str,
                                               req: dict[str, Any], status: int, code: str) -> None:
    before = stored(disk)
    channel, _, query = target.partition("?")
    r = api.post(f"/v1/channels/{channel}/messages" + (f"?{query}" if query else ""), **req)
    assert (r.status, r.error) == (status, code), r
    body = r.json()
    assert isinstance(body["message"], str) and body["message"]
    assert stored(disk) == before
    if channel.startswith("bad."):
        assert stored_in(disk, channel) == 0


JSON_BODIES = [
    b'{"body": ', b'{"body": "\xff"}', b"[1]", b'{"body": 5}', b'{"body": "x", "colour": "red"}', b"",
    b"[" * 30_000 + b"]" * 30_000, b'{"body": "ok"}', b'{"body": "\\u00e9t\\u00e9"}', b'{"messages": [{"body": "a"}]}',
]


@pytest.mark.parametrize("data", JSON_BODIES, ids=[f"body{i}" for i in range(len(JSON_BODIES))])
def test_small_json_sends_answer_as_the_general_path_does(api: Client, disk: Spool, data: bytes) -> None:
    """A small ``application/json`` send whose body came with its headers is read without the general
    body read (issue 9); it answers like the general path (taken here with a charset parameter), and a
    refused one stores nothing on either."""
    answers: list[tuple[Any, ...]] = []
    for ctype in ("application/json", "application/json; charset=utf-8"):
        before = stored_in(disk, "fastjson")
        r = api.post("/v1/channels/fastjson/messages", data=data, headers={"Content-Type": ctype})
        body = r.json()
        if r.status == 201:
            assert stored_in(disk, "fastjson") == before + 1
            answers.append((r.status, sorted(body)))
        else:
            assert stored_in(disk, "fastjson") == before
            answers.append((r.status, body["error"], body["message"]))
    assert answers[0] == answers[1]


def test_a_compressed_or_large_json_send_takes_the_general_path(api: Client, disk: Spool) -> None:
    gz = api.post("/v1/channels/fastjson2/messages", data=b'{"body": "x"}',
                  headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert (gz.status, gz.error) == (415, "unsupported_encoding"), gz
    big = "y" * (70 << 10)  # over the size decoded on the event loop
    r = api.post("/v1/channels/fastjson2/messages", json_body={"body": big})
    assert r.status == 201, r
    leased = api.lease("fastjson2")
    assert [x["body"] for x in leased] == [big]


def test_a_duration_too_long_gets_the_spools_one_limit_and_message(api: Client, disk: Spool) -> None:
    with pytest.raises(InvalidArgument) as ei:
        disk.send(b"x", "durations", delay=2e9)
    assert ei.value.message == "delay of 2000000000.0 seconds is too long"
    for req in ({"json_body": {"body": "x", "delay": 2e9}}, {"json_body": {"messages": [{"body": "x", "delay": 2e9}]}}):
        r = api.post("/v1/channels/durations/messages", **req)
        assert r.status == 400
        assert r.json()["message"].endswith("delay of 2000000000.0 seconds is too long"), r.json()
        assert r.json()["hint"] == ei.value.hint
    r = api.post("/v1/channels/durations/messages?delay=2e9", data=b"x", headers=OCTETS)
    assert r.status == 400 and r.json()["message"] == "delay of 2000000000.0 seconds is too long"
    assert stored_in(disk, "durations") == 0


BAD_LEASES: list[tuple[str, dict[str, Any]]] = [
    ("max-zero", {"json_body": {"max": 0}}),
    ("max-too-big", {"json_body": {"max": 1001}}),
    ("max-word", {"json_body": {"max": "many"}}),
    ("max-query-word", {"query": "?max=many"}),
    ("visibility-zero", {"json_body": {"visibility": 0}}),
    ("visibility-negative-query", {"query": "?visibility=-1"}),
    ("wait-negative", {"json_body": {"wait": -1}}),
    ("wait-word-query", {"query": "?wait=forever"}),
    ("max-infinite", {"data": b'{"max": 1e999}', "headers": {"Content-Type": _J}}),
    ("visibility-huge", {"json_body": {"visibility": 1e300}}),
    ("visibility-huge-query", {"query": "?visibility=1e17"}),
    ("encoding-unknown", {"json_body": {"encoding": "hex"}}),
    ("body-not-object", {"json_body": [1]}),
    ("invalid-json", {"data": b"{", "headers": {"Content-Type": _J}}),
]


@pytest.mark.parametrize(("case", "req"), BAD_LEASES, ids=[c[0] for c in BAD_LEASES])
def test_bad_lease_is_refused_and_leases_nothing(api: Client, disk: Spool, case: str, req: dict[str, Any]) -> None:
    ch = "bad.lease"
    if depth(disk, ch).ready == 0:
        api.send(ch, {"body": "stay"})
    req = dict(req)
    query = req.pop("query", "")
    r = api.post(f"/v1/channels/{ch}/leases{query}", **req)
    assert (r.status, r.error) == (400, "invalid_argument"), r
    d = depth(disk, ch)
    assert (d.ready, d.leased) == (1, 0)


@pytest.mark.parametrize("wait", [0, 0.2])
def test_a_lease_of_a_bad_channel_name_is_400_and_makes_no_bell(node: NodeProc, api: Client, wait: float) -> None:
    """The name is checked before the long poll's bell, whose file is named after the channel: a NUL was
    a 500 (no file name can hold it), an overlong name turned the node's bells to directory-wide watching."""
    bells = node.spool_dir / "bells"
    before = set(os.listdir(bells)) if bells.exists() else set()
    for name in ("c%00", "x" * 201, "bad%20name", "a%2Fb"):
        r = api.post(f"/v1/channels/{name}/leases", json_body={"wait": wait})
        assert (r.status, r.error) == (400, "invalid_argument"), (name, r)
        assert "bad channel name" in r.json()["message"]
    for i in range(20):  # good names of channels nobody sent to: no file is made for their bells either
        r = api.post(f"/v1/channels/nobody.sent.{wait}.{i}/leases", json_body={"wait": wait})
        assert r.status == 200 and r.json() == {"leases": []}, r
    after = set(os.listdir(bells)) if bells.exists() else set()
    assert after <= before, after - before
    assert "failed unexpectedly" not in node.log()


def test_bad_nack_and_touch_change_nothing(api: Client, disk: Spool) -> None:
    ch = "bad.nack"
    api.send(ch, {"body": "x"})
    [x] = api.lease(ch, visibility=60)
    for op, req in (("nack", {"json_body": {"delay": -1}}), ("nack", {"json_body": {"delay": "soon"}}),
                    ("nack", {"data": b"{", "headers": {"Content-Type": _J}}),
                    ("nack", {"json_body": {"delay": 1e300}}), ("touch", {"json_body": {"visibility": 1e300}}),
                    ("touch", {"json_body": {"visibility": 0}}), ("touch", {"json_body": {"visibility": "long"}})):
        r = api.post(f"/v1/leases/{x['lease']}/{op}", **req)
        assert (r.status, r.error) == (400, "invalid_argument"), (op, req, r)
    d = depth(disk, ch)
    assert (d.ready, d.delayed, d.leased) == (0, 0, 1)
    assert api.post(f"/v1/leases/{x['lease']}/ack").status == 204


def test_unknown_route_and_method(api: Client) -> None:
    r = api.get("/v1/nothing/here")
    assert (r.status, r.error) == (404, "not_found"), r
    r = api.get("/v1/batches")
    assert (r.status, r.error) == (405, "method_not_allowed"), r


# == 3. auth ==========================================================================================

TOKENS = {
    "peer": "peer-token-0123456789abcdef",
    "send": "send-token-0123456789abcdef",
    "consume": "consume-token-0123456789ab",
    "admin": "admin-token-0123456789abcd",
}
AUTH_CONFIG = "[node]\nsweep_interval = 0.2\n" + "".join(
    f'\n[tokens.{name}]\ntoken = "{tok}"\nscopes = ["{name}"]\n' for name, tok in TOKENS.items())


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    """A node with four tokens, one scope each."""
    n = NodeProc(tmp_path_factory.mktemp("secured") / "spool", config=AUTH_CONFIG)
    yield n
    assert n.stop() == 0, n.log()


@pytest.fixture(scope="module")
def secured_disk(secured: NodeProc) -> Iterator[Spool]:
    s = Spool(secured.spool_dir)
    yield s
    s.close()


def refused(client: Client, method: str, path: str, scope: str, **req: Any) -> None:
    """Every way of asking without the ``scope`` token is refused with 401/403 and a JSON error."""
    headers = req.pop("headers", {})

    def call(token: str | None, extra: dict[str, str] | None = None) -> Resp:
        return client.request(method, path, token=token, headers={**headers, **(extra or {})}, **req)

    r = call(None)
    assert (r.status, r.error) == (401, "unauthorized"), ("no token", r)
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = call("wrong-token-0123456789abcdef")
    assert (r.status, r.error) == (401, "unauthorized"), ("wrong token", r)
    r = call(None, {"Authorization": f"Basic {b64(TOKENS[scope].encode())}"})
    assert (r.status, r.error) == (401, "unauthorized"), ("basic auth", r)
    r = call(None, {"Authorization": "Bearer "})
    assert (r.status, r.error) == (401, "unauthorized"), ("empty bearer", r)
    for other, tok in TOKENS.items():
        if other != scope:
            r = call(tok)
            assert (r.status, r.error) == (403, "forbidden"), (other, r)
            assert scope in r.json()["message"]


def test_auth_send(secured: NodeProc, secured_disk: Spool) -> None:
    c = Client(secured.url)
    ch = "auth.send"
    refused(c, "POST", f"/v1/channels/{ch}/messages", "send", data=b"raw", headers=OCTETS)
    refused(c, "POST", f"/v1/channels/{ch}/messages", "send", json_body={"messages": [{"body": "a"}]})
    assert stored(secured_disk) == 0
    r = c.post(f"/v1/channels/{ch}/messages", data=b"raw", headers=OCTETS, token=TOKENS["send"])
    assert r.status == 201, r
    r = c.post(f"/v1/channels/{ch}/messages", json_body={"body": "json"},
               headers={"Authorization": f"bearer {TOKENS['send']}"})  # the scheme is case-insensitive
    assert r.status == 201, r
    assert [m.body for m in secured_disk.peek(ch)] == [b"raw", b"json"]


def test_auth_consume(secured: NodeProc, secured_disk: Spool) -> None:
    c = Client(secured.url)
    ch = "auth.consume"
    secured_disk.send_many([b"one", b"two"], ch)
    refused(c, "POST", f"/v1/channels/{ch}/leases", "consume", json_body={"max": 2})
    assert (depth(secured_disk, ch).ready, depth(secured_disk, ch).leased) == (2, 0)
    consumer = Client(secured.url, token=TOKENS["consume"])
    a, b = consumer.lease(ch, max=2, visibility=60)
    for op in ("ack", "nack", "touch"):
        refused(c, "POST", f"/v1/leases/{a['lease']}/{op}", "consume")
    refused(c, "POST", "/v1/acks", "consume", json_body={"leases": [b["lease"]]})
    assert depth(secured_disk, ch).leased == 2
    assert consumer.post(f"/v1/leases/{a['lease']}/touch").status == 200
    assert consumer.post(f"/v1/leases/{a['lease']}/ack").status == 204
    assert consumer.post("/v1/acks", json_body={"leases": [b["lease"]]}).status == 204
    assert stored_in(secured_disk, ch) == 0


def test_auth_admin_routes(secured: NodeProc, secured_disk: Spool) -> None:
    c = Client(secured.url)
    ch = "auth.dead"
    mid = secured_disk.send(b"doomed", ch, ttl=0.1)
    wait_for(lambda: depth(secured_disk, ch).dead == 1, timeout=10)
    refused(c, "GET", "/v1/dead", "admin")
    refused(c, "GET", f"/v1/dead/{mid}", "admin")
    refused(c, "POST", "/v1/dead/retry", "admin", json_body={"ids": [mid]})
    refused(c, "POST", "/v1/dead/purge", "admin", json_body={"ids": [mid]})
    refused(c, "GET", "/metrics", "admin")
    assert depth(secured_disk, ch).dead == 1 and depth(secured_disk, ch).ready == 0
    admin = Client(secured.url, token=TOKENS["admin"])
    assert [d["id"] for d in admin.get("/v1/dead").json()["dead"]] == [mid]
    assert admin.get(f"/v1/dead/{mid}").status == 200
    assert admin.post("/v1/dead/retry", json_body={"ids": [mid], "dry_run": True}).json()["retried"] == [mid]
    assert admin.post("/v1/dead/purge", json_body={"ids": [mid]}).json() == {"purged": 1, "dry_run": False}
    assert stored_in(secured_disk, ch) == 0
    r = admin.get("/metrics")
    assert r.status == 200 and b"spoolq_http_requests_total" in r.body


def test_every_route_asks_for_its_scope(secured: NodeProc, tmp_path: Path) -> None:
    """Walks the application's whole route table (so that a route added later is covered too): every
    route with a scope refuses a request without a token (401), and one with another scope's token (403),
    before it looks at the request; routes without a scope are the few that are meant to be open."""
    from spoolq.node import api
    from spoolq.node.config import load_config
    from spoolq.node.daemon import Node

    n = Node(load_config(None, spool=str(tmp_path / "spool")))
    try:
        routes = [(r.method, r.resource.canonical, r.name) for r in api.build_app(n).router.routes()
                  if r.resource is not None and r.method != "HEAD"]
    finally:
        n.spool.close()
    assert len(routes) > 20
    open_routes = sorted(path for _m, path, name in routes if api.SCOPE.get(name or "") is None)
    # liveness, STOMP over WebSocket (its CONNECT carries the token) and the dashboard's static files
    assert open_routes == ["/healthz", "/stomp", "/ui", "/ui/", "/ui/{file}"], open_routes
    c = Client(secured.url)
    checked = 0
    for method, path, name in routes:
        scope = api.SCOPE.get(name or "")
        if scope is None:
            continue
        concrete = re.sub(r"\{[^}]*\}", "x1", path)
        r = c.request(method, concrete)
        assert (r.status, r.error) == (401, "unauthorized"), (method, path, r)
        other = next(t for k, t in TOKENS.items() if k != scope)
        r = c.request(method, concrete, token=other)
        if scope == "any":  # any valid token passes; what follows is the route's own answer
            assert r.status not in (401, 403), (method, path, r)
        else:
            assert (r.status, r.error) == (403, "forbidden"), (method, path, scope, r)
        checked += 1
    assert checked == len(routes) - len(open_routes)


def test_auth_stats_takes_any_token_and_healthz_none(secured: NodeProc, secured_disk: Spool) -> None:
    c = Client(secured.url)
    r = c.get("/v1/stats")
    assert (r.status, r.error) == (401, "unauthorized"), r
    r = c.get("/v1/stats", token="wrong-token-0123456789abcdef")
    assert (r.status, r.error) == (401, "unauthorized"), r
    for tok in TOKENS.values():
        r = c.get("/v1/stats", token=tok)
        assert r.status == 200 and r.json()["node_id"] == secured_disk.node_id, r
    r = c.get("/healthz")
    assert r.status == 200 and r.json()["status"] == "ok", r
    r = c.get("/healthz", token="wrong-token-0123456789abcdef")
    assert r.status == 200, r


def test_node_without_tokens_on_loopback_needs_no_auth(node: NodeProc, disk: Spool) -> None:
    c = Client(node.url)
    ch = "noauth"
    assert c.post(f"/v1/channels/{ch}/messages", data=b"x", headers=OCTETS).status == 201
    assert c.post(f"/v1/channels/{ch}/messages", data=b"y", headers=OCTETS,
                  token="whatever-0123456789abcdef").status == 201
    leases = c.lease(ch, max=2)
    assert [x["body"] for x in leases] == ["x", "y"]
    assert c.post("/v1/acks", json_body={"leases": [x["lease"] for x in leases]}).status == 204
    for path in ("/v1/stats", "/v1/dead", "/metrics", "/healthz"):
        assert c.get(path).status == 200, path
    batch = encode_batch("some-peer", [wire(ch, b"z")])
    assert c.post("/v1/batches", data=batch, headers=MSGPACK).status == 200
    assert [m.body for m in disk.peek(ch)] == [b"z"]


# == 4. peer batches over raw HTTP ================================================================


def wire(channel: str, body: bytes, **kw: Any) -> WireMessage:
    return WireMessage(uuid.UUID(new_id()).bytes, channel, body, **kw)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    """A node with small limits: 4 KiB batches, 6 messages a batch, 1 KiB messages."""
    cfg = "[node]\nmax_batch_bytes = 4096\nmax_batch_messages = 6\nmax_message_size = 1024\n"
    n = NodeProc(tmp_path_factory.mktemp("small") / "spool", config=cfg)
    yield n
    assert n.stop() == 0, n.log()


@pytest.fixture(scope="module")
def small_disk(small: NodeProc) -> Iterator[Spool]:
    s = Spool(small.spool_dir)
    yield s
    s.close()


def post_chunked(url: str, path: str, body: bytes, chunk: int = 1024) -> Resp:
    """POST without Content-Length (Transfer-Encoding: chunked)."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=15)
    try:
        chunks = (body[i:i + chunk] for i in range(0, len(body), chunk))
        conn.request("POST", path, body=chunks, headers=MSGPACK, encode_chunked=True)
        resp = conn.getresponse()
        return Resp(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def _valid_batch() -> bytes:
    return encode_batch("peer-x", [wire("batch.bad", b"a" * 100), wire("batch.bad", b"b" * 100)])


BAD_BATCHES: list[tuple[str, bytes, int, str]] = [
    ("garbage", b"\xc1\xc1\xc1 not msgpack", 400, "malformed"),
    ("empty", b"", 400, "malformed"),
    ("a-map", msgspec.msgpack.encode({"v": 1, "sender": "x", "messages": []}), 400, "malformed"),
    ("wrong-message-shape", msgspec.msgpack.encode([1, "peer-x", [[b"0" * 16, "batch.bad"]]]), 400, "malformed"),
    ("wrong-field-type", msgspec.msgpack.encode([1, "peer-x", [[b"0" * 16, 5, b"x", 1, None, None, None, None]]]),
     400, "malformed"),
    ("truncated-half", _valid_batch()[: len(_valid_batch()) // 2], 400, "malformed"),
    ("truncated-by-one", _valid_batch()[:-1], 400, "malformed"),
    ("version-2", msgspec.msgpack.encode([2, "peer-x", [wire("batch.bad", b"x")]]), 400, "unsupported_version"),
    ("version-0", msgspec.msgpack.encode([0, "peer-x", []]), 400, "unsupported_version"),
    ("too-large", encode_batch("peer-x", [wire("batch.bad", b"x" * 1000) for _ in range(5)]), 413, "too_large"),
    ("too-many-messages", encode_batch("peer-x", [wire("batch.bad", b"x") for _ in range(7)]), 400,
     "too_many_messages"),
]


@pytest.mark.parametrize(("case", "body", "status", "code"), BAD_BATCHES, ids=[c[0] for c in BAD_BATCHES])
def test_bad_batch_is_refused_and_stores_nothing(small: NodeProc, small_disk: Spool, case: str, body: bytes,
                                                status: int, code: str) -> None:
    before = stored(small_disk)
    c = Client(small.url)
    counted = batches_refused(c, code)
    r = c.post("/v1/batches", data=body, headers=MSGPACK)
    assert (r.status, r.error) == (status, code), r
    assert batches_refused(c, code) == counted + 1
    assert stored(small_disk) == before
    assert stored_in(small_disk, "batch.bad") == 0


@pytest.mark.parametrize("size", [4500, 64 * 1024])
def test_oversized_chunked_batch_is_413(small: NodeProc, small_disk: Spool, size: int) -> None:
    """Without Content-Length the node finds out while reading (its own check, or aiohttp's body limit)."""
    body = encode_batch("peer-x", [wire("batch.bad", b"x" * 900) for _ in range(size // 900)])
    assert len(body) > 4096
    before = stored(small_disk)
    counted = batches_refused(Client(small.url), "too_large")
    r = post_chunked(small.url, "/v1/batches", body)
    assert (r.status, r.error) == (413, "too_large"), r
    assert stored(small_disk) == before
    assert batches_refused(Client(small.url), "too_large") == counted + 1


def batches_refused(client: Client, outcome: str) -> float:
    return scrape(client).get(("spoolq_receive_batches_total", frozenset({("outcome", outcome)})), 0.0)


def test_batch_with_invalid_messages_accepts_the_rest(small: NodeProc, small_disk: Spool) -> None:
    future = int((time.time() + 600) * 1000)
    msgs = [
        wire("batch.ok", b"first", priority=3, headers={"h": "v"}),
        wire("bad channel!", b"x"),
        wire("batch.ok", b"later", deliver_at=future),
        WireMessage(b"short-id", "batch.ok", b"x"),
        wire("batch.ok", b"x", priority=2**32),
        wire("batch.ok", b"x" * 1025),
    ]
    r = Client(small.url).post("/v1/batches", data=encode_batch("node-peer-x", msgs), headers=MSGPACK)
    assert r.status == 200, r
    assert r.headers["Content-Type"].startswith("application/x-msgpack")
    reply = decode_reply(r.body, expected=len(msgs))
    assert [x.status for x in reply.results] == [ACCEPTED, REJECTED, ACCEPTED, REJECTED, REJECTED, REJECTED]
    for x in reply.results:
        if x.status == REJECTED:
            assert x.permanent and x.reason
    reasons = [x.reason or "" for x in reply.results]
    assert "channel" in reasons[1] and "16 bytes" in reasons[3] and "priority" in reasons[4]
    assert "max_message_size" in reasons[5]

    d = depth(small_disk, "batch.ok")
    assert (d.ready, d.delayed) == (1, 1)
    [m] = small_disk.peek("batch.ok")
    assert (m.body, m.priority, m.headers, m.origin) == (b"first", 3, {"h": "v"}, "node-peer-x")
    assert m.id == str(uuid.UUID(bytes=msgs[0].id))
    assert "bad channel!" not in small_disk.stats().channels


def test_same_batch_twice_is_duplicate(small: NodeProc, small_disk: Spool) -> None:
    c = Client(small.url)
    ch = "batch.dup"
    msgs = [wire(ch, f"m{i}".encode()) for i in range(3)]
    batch = encode_batch("peer-y", msgs)
    first = decode_reply(c.post("/v1/batches", data=batch, headers=MSGPACK).body, expected=3)
    assert [x.status for x in first.results] == [ACCEPTED] * 3
    second = decode_reply(c.post("/v1/batches", data=batch, headers=MSGPACK).body, expected=3)
    assert [x.status for x in second.results] == [DUPLICATE] * 3
    # the same id twice within one batch
    extra = wire(ch, b"extra")
    inner = decode_reply(c.post("/v1/batches", data=encode_batch("peer-y", [extra, extra, msgs[0]]),
                                headers=MSGPACK).body, expected=3)
    assert [x.status for x in inner.results] == [ACCEPTED, DUPLICATE, DUPLICATE]
    assert sorted(m.body for m in small_disk.peek(ch)) == [b"extra", b"m0", b"m1", b"m2"]
    # still a duplicate after it was consumed
    [x] = c.lease(ch)
    assert c.post(f"/v1/leases/{x['lease']}/ack").status == 204
    third = decode_reply(c.post("/v1/batches", data=batch, headers=MSGPACK).body, expected=3)
    assert [x.status for x in third.results] == [DUPLICATE] * 3
    assert depth(small_disk, ch).ready == 3


def test_batch_needs_the_peer_token(secured: NodeProc, secured_disk: Spool) -> None:
    c = Client(secured.url)
    ch = "auth.batch"
    batch = encode_batch("peer-z", [wire(ch, b"one"), wire(ch, b"two")])
    refused(c, "POST", "/v1/batches", "peer", data=batch, headers=MSGPACK)
    assert stored_in(secured_disk, ch) == 0
    r = c.post("/v1/batches", data=batch, headers=MSGPACK, token=TOKENS["peer"])
    assert r.status == 200, r
    assert [x.status for x in decode_reply(r.body, expected=2).results] == [ACCEPTED, ACCEPTED]
    assert [m.body for m in secured_disk.peek(ch)] == [b"one", b"two"]


# == 5. /metrics and /healthz ======================================================================


def scrape(client: Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = client.get("/metrics")
    assert r.status == 200, r
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out = {}
    for fam in text_string_to_metric_families(r.body.decode()):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def families(client: Client) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(client.get("/metrics").body.decode())}


def test_metrics_after_traffic(tmp_path: Path) -> None:
    with NodeProc(tmp_path / "spool") as n:
        c = Client(n.url)
        c.send("m.ch", {"messages": [{"body": "a"}, {"body": "b"}, {"body": "c"}]})
        c.send("m.ch", {"body": "d", "delay": 60})
        c.lease("m.ch")
        good = wire("m.in", b"in")
        batch = encode_batch("peer-m", [good, wire("m.in", b"in2"), good, wire("bad name", b"x")])
        r = c.post("/v1/batches", data=batch, headers=MSGPACK)
        assert r.status == 200, r
        for path in ("/nope/1", "/nope/2"):
            assert c.get(path).status == 404
        assert c.post("/v1/channels/m.ch/messages", json_body={"body": "x", "delay": -1}).status == 400
        for method in ("PROPFIND", "PURGE", "MKCOL"):  # methods of other protocols: not a label value each
            assert c.request(method, "/v1/stats").status in (404, 405)

        m = scrape(c)

        def v(name: str, **labels: str) -> float | None:
            return m.get((name, frozenset(labels.items())))

        assert v("spoolq_channel_messages", channel="m.ch", state="ready") == 2
        assert v("spoolq_channel_messages", channel="m.ch", state="leased") == 1
        assert v("spoolq_channel_messages", channel="m.ch", state="delayed") == 1
        assert v("spoolq_channel_messages", channel="m.ch", state="dead") == 0
        assert v("spoolq_channel_messages", channel="m.in", state="ready") == 2
        assert v("spoolq_received_messages_total", result="accepted") == 2
        assert v("spoolq_received_messages_total", result="duplicate") == 1
        assert v("spoolq_received_messages_total", result="rejected") == 1
        assert v("spoolq_receive_batches_total", outcome="ok") == 1
        send_route = "/v1/channels/{channel}/messages"
        assert v("spoolq_http_requests_total", route=send_route, method="POST", status="201") == 2
        assert v("spoolq_http_requests_total", route=send_route, method="POST", status="400") == 1
        assert v("spoolq_http_requests_total", route="/v1/channels/{channel}/leases", method="POST",
                 status="200") == 1
        assert v("spoolq_http_requests_total", route="/v1/batches", method="POST", status="200") == 1
        assert v("spoolq_http_requests_total", route="unmatched", method="GET", status="404") == 2
        methods = {dict(labels).get("method") for (name, labels) in m if name == "spoolq_http_requests_total"}
        assert methods == {"GET", "POST", "other"}, methods
        assert sum(n for (name, labels), n in m.items()
                   if name == "spoolq_http_requests_total" and dict(labels)["method"] == "other") == 3
        routes = {dict(labels).get("route") for (name, labels) in m if name == "spoolq_http_requests_total"}
        assert not any("nope" in (r or "") or "m.ch" in (r or "") for r in routes), routes

        fams = families(c)
        hist = fams["spoolq_http_request_seconds"]
        assert hist.type == "histogram"
        buckets = [(float(s.labels["le"]), s.value) for s in hist.samples
                   if s.name == "spoolq_http_request_seconds_bucket" and s.labels["route"] == send_route]
        assert len(buckets) > 5 and buckets[-1] == (float("inf"), 3)
        assert [b[1] for b in buckets] == sorted(b[1] for b in buckets)
        count = [s.value for s in hist.samples
                 if s.name == "spoolq_http_request_seconds_count" and s.labels["route"] == send_route]
        total = [s.value for s in hist.samples
                 if s.name == "spoolq_http_request_seconds_sum" and s.labels["route"] == send_route]
        assert count == [3] and total[0] > 0
        # the first scrape is counted by the second
        assert scrape(c)[("spoolq_http_requests_total",
                          frozenset({"route": "/metrics", "method": "GET", "status": "200"}.items()))] >= 1


def test_healthz(node: NodeProc, disk: Spool) -> None:
    r = Client(node.url).get("/healthz")
    assert r.status == 200, r
    h = r.json()
    info = json.loads((node.spool_dir / "node.json").read_text())
    assert h["status"] == "ok"
    assert h["node_id"] == disk.node_id == info["node_id"]
    assert h["url"] == node.url
    assert h["peers"] == {} and h["uptime_seconds"] >= 0


# == 6. TLS =====================================================================================


@dataclass
class Tls:
    ca: trustme.CA
    ca_pem: Path
    node: NodeProc

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    """Node B serving HTTPS with a certificate for 127.0.0.1 and localhost from a private CA."""
    d = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_pem, cert_pem, key_pem = d / "ca.pem", d / "cert.pem", d / "key.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    cert_pem.write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key_pem))
    n = NodeProc(d / "b", config=f"[node]\ntls_cert = {toml_str(cert_pem)}\ntls_key = {toml_str(key_pem)}\n")
    yield Tls(ca, ca_pem, n)
    assert n.stop() == 0, n.log()


def test_https_with_the_ca_trusted(tls: Tls) -> None:
    assert tls.node.url.startswith("https://127.0.0.1:")
    c = Client(tls.node.url, context=tls.context())
    r = c.get("/healthz")
    assert r.status == 200 and r.json()["url"] == tls.node.url, r
    c.send("tls.direct", {"body": "over https"})
    assert [x["body"] for x in c.lease("tls.direct")] == ["over https"]
    r = Client(f"https://localhost:{tls.node.port}", context=tls.context()).get("/healthz")
    assert r.status == 200, r


def test_https_without_the_ca_fails_verification(tls: Tls) -> None:
    with pytest.raises(urllib.error.URLError) as e:
        Client(tls.node.url, context=ssl.create_default_context()).get("/healthz")
    assert isinstance(e.value.reason, ssl.SSLCertVerificationError), e.value
    # plain HTTP to the HTTPS port gets no answer either
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
        Client(tls.node.url.replace("https://", "http://")).get("/healthz", timeout=5)


@pytest.mark.parametrize("where", ["peer", "node"])
def test_forward_to_a_tls_peer_with_ca_file(tls: Tls, tmp_path: Path, where: str) -> None:
    ca = f"ca_file = {toml_str(tls.ca_pem)}\n"
    cfg = ("[node]\nbackoff_base = 0.05\nbackoff_cap = 0.5\n" + (ca if where == "node" else "")
           + f"\n[peers.b]\nurl = {toml_str(tls.node.url)}\n" + (ca if where == "peer" else ""))
    ch = f"tls.fwd.{where}"
    b = Client(tls.node.url, context=tls.context())
    with NodeProc(tmp_path / "a", config=cfg) as a_node:
        a = Client(a_node.url)
        r = a.post(f"/v1/channels/{ch}/messages?to=b", data=b"hop 1", headers=OCTETS)
        assert r.status == 201, r
        a.send(ch, {"messages": [{"body": "hop 2", "to": "b"}, {"body": "hop 3", "to": "b"}]})
        wait_for(lambda: b.stats()["channels"].get(ch, {}).get("ready") == 3, timeout=15)
        assert [x["body"] for x in b.lease(ch, max=10)] == ["hop 1", "hop 2", "hop 3"]
        wait_for(lambda: a.stats()["peers"].get("b", {}).get("outbox", 0) == 0, timeout=10)
        peer = a.get("/healthz").json()["peers"]["b"]
        assert peer["up"] is True and peer["forwarded"] == 3 and peer["url"] == tls.node.url


def test_forward_to_a_tls_peer_without_ca_file_stays_in_outbox(tls: Tls, tmp_path: Path) -> None:
    cfg = f"[node]\nbackoff_base = 0.05\nbackoff_cap = 0.5\n\n[peers.b]\nurl = {toml_str(tls.node.url)}\n"
    ch = "tls.untrusted"
    with NodeProc(tmp_path / "a", config=cfg) as a_node:
        a = Client(a_node.url)
        r = a.post(f"/v1/channels/{ch}/messages?to=b", data=b"stuck", headers=OCTETS)
        assert r.status == 201, r

        def failing() -> dict[str, Any] | None:
            peer: dict[str, Any] | None = a.get("/healthz").json()["peers"].get("b")
            return peer if peer and peer["failures"] >= 2 else None

        peer = wait_for(failing, timeout=15)
        assert isinstance(peer, dict)
        assert peer["up"] is False and peer["forwarded"] == 0
        assert "CERTIFICATE_VERIFY_FAILED" in peer["last_error"] or "certificate" in peer["last_error"].lower()
        assert a.stats()["peers"]["b"]["outbox"] == 1
        m = scrape(a)
        assert m[("spoolq_peer_up", frozenset({("peer", "b")}))] == 0
        assert m[("spoolq_peer_outbox_messages", frozenset({("peer", "b")}))] == 1
    b = Client(tls.node.url, context=tls.context())
    assert ch not in b.stats()["channels"]
