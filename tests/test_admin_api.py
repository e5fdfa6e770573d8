"""The HTTP admin API (issue 11) of real `spoolq node` daemons, spoken with a plain HTTP client."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spoolq import Spool

from .conftest import wait_for
from .nodes import NodeProc, free_port
from .test_api import Client

ADMIN = "admin-token-0123456789abcd"
SEND = "send-token-0123456789abcdef"
SECURED = (f'[tokens.ops]\ntoken = "{ADMIN}"\nscopes = ["admin"]\n\n'
           f'[tokens.app]\ntoken = "{SEND}"\nscopes = ["send", "consume"]\n')


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    n = NodeProc(tmp_path_factory.mktemp("admin") / "spool", config="[node]\nsweep_interval = 0.2\n")
    yield n
    assert n.stop() == 0, n.log()


@pytest.fixture(scope="module")
def api(node: NodeProc) -> Client:
    return Client(node.url)


def send(api: Client, channel: str, body: str, **opts: Any) -> str:
    r = api.post(f"/v1/channels/{channel}/messages", json_body={"body": body, **opts})
    assert r.status == 201, r
    return str(r.json()["id"])


def lease_bodies(api: Client, channel: str) -> list[str]:
    r = api.post(f"/v1/channels/{channel}/leases", json_body={"max": 100, "visibility": 60})
    assert r.status == 200, r
    return [x["body"] for x in r.json()["leases"]]


def test_browse_pages_with_filters_and_shows_one_message(api: Client) -> None:
    ids = [send(api, "browse", f"m{i}") for i in range(5)]
    doc = send(api, "browse", '{"order": 7}', headers={"tenant": "acme"}, priority=3)
    send(api, "browse", "later", delay=600)
    seen: list[dict[str, Any]] = []
    r = api.get("/v1/admin/messages?channel=browse&limit=2")
    for _ in range(10):
        assert r.status == 200, r
        page = r.json()
        assert len(page["messages"]) <= 2
        seen += page["messages"]
        if page["next"] is None:
            break
        r = api.get(f"/v1/admin/messages?channel=browse&limit=2&after={page['next']}")
    assert [m["id"] for m in seen] == [doc, *ids, seen[-1]["id"]] and seen[-1]["state"] == "delayed"
    first = seen[1]
    assert set(first) == {"id", "place", "channel", "peer", "state", "priority", "attempts", "age", "size", "due",
                          "lease_until", "preview"}
    assert (first["place"], first["state"], first["preview"], first["size"]) == ("inbox", "ready", "m0", 2)
    r = api.get("/v1/admin/messages?channel=browse&header=tenant=acme&max_priority=10")
    assert [m["id"] for m in r.json()["messages"]] == [doc]
    r = api.get("/v1/admin/messages?channel=browse&state=delayed")
    assert [m["preview"] for m in r.json()["messages"]] == ["later"]
    assert lease_bodies(api, "browse")[0] == '{"order": 7}'  # browsing leased nothing
    r = api.get(f"/v1/admin/messages/{doc}")
    assert r.status == 200, r
    [m] = r.json()["messages"]
    assert m["body_json"] == {"order": 7} and m["body_text"] == '{"order": 7}' and m["state"] == "leased"
    assert base64.b64decode(m["body_b64"]) == b'{"order": 7}' and m["headers"] == {"tenant": "acme"}
    r = api.get("/v1/admin/messages/00000000-0000-0000-0000-000000000000")
    assert (r.status, r.error) == (404, "not_found"), r


def test_hold_release_requeue_delete_and_the_audit(api: Client) -> None:
    a, b = send(api, "acts", "a"), send(api, "acts", "b")
    r = api.post("/v1/admin/hold", json_body={"ids": [a], "dry_run": True})
    assert r.json() == {"matched": 1, "changed": 1, "dry_run": True}
    r = api.post("/v1/admin/hold", json_body={"ids": [a]})
    assert r.json() == {"matched": 1, "changed": 1, "dry_run": False}
    assert lease_bodies(api, "acts") == ["b"]
    assert api.get("/v1/stats").json()["channels"]["acts"]["held"] == 1
    assert 'spoolq_channel_messages{channel="acts",state="held"} 1.0' in api.get("/metrics").body.decode()
    r = api.post("/v1/admin/release", json_body={"filter": {"channel": "acts"}})
    assert r.json() == {"matched": 1, "changed": 1, "dry_run": False}
    assert lease_bodies(api, "acts") == ["a"]
    later = send(api, "acts", "later", delay=3600)
    r = api.post("/v1/admin/requeue", json_body={"filter": {"channel": "acts", "state": "delayed"}})
    assert r.json()["changed"] == 1
    assert lease_bodies(api, "acts") == ["later"]
    gone = send(api, "acts", "gone")
    r = api.post("/v1/admin/delete", json_body={"ids": [later, b]})
    assert r.json() == {"matched": 2, "changed": 0, "dry_run": False}  # later and b are leased: skipped
    r = api.post("/v1/admin/delete", json_body={"ids": [gone]})
    assert r.json() == {"matched": 1, "changed": 1, "dry_run": False}
    entries = api.get("/v1/admin/audit?limit=5").json()["entries"]
    assert [(e["who"], e["action"], e["count"]) for e in entries[:2]] == [("local", "delete", 1),
                                                                          ("local", "delete", 0)]
    assert entries[0]["target"].startswith("ids " + gone)
    assert set(entries[0]) == {"at", "who", "action", "target", "count", "detail"}


@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("GET", "/v1/admin/messages?state=lost", None, "state"),
    ("GET", "/v1/admin/messages?limit=0", None, "limit"),
    ("GET", "/v1/admin/messages?limit=many", None, "limit"),
    ("GET", "/v1/admin/messages?after=not-a-cursor", None, "after"),
    ("GET", "/v1/admin/messages?older_than=-5", None, "older_than"),
    ("GET", "/v1/admin/messages?min_priority=x", None, "min_priority"),
    ("GET", "/v1/admin/messages?chanel=typo", None, "chanel"),
    ("GET", "/v1/admin/messages?state=ready&state=held", None, "state"),
    ("GET", "/v1/admin/messages?header=nothing", None, "header"),
    ("GET", "/v1/admin/messages/not-an-id", None, "id:"),
    ("GET", "/v1/admin/audit?limit=100000", None, "limit"),
    ("POST", "/v1/admin/hold", {}, "ids or a filter"),
    ("POST", "/v1/admin/hold", {"ids": "abc"}, "ids"),
    ("POST", "/v1/admin/hold", {"ids": ["nope"]}, "ids[0]"),
    ("POST", "/v1/admin/hold", {"ids": [], "filter": {}}, "ids or a filter"),
    ("POST", "/v1/admin/delete", {"filter": {"state": "x"}}, "state"),
    ("POST", "/v1/admin/delete", {"filter": []}, "filter"),
    ("POST", "/v1/admin/delete", {"filter": {}, "dry_run": "yes"}, "dry_run"),
    ("POST", "/v1/admin/delete", {"filter": {}, "force": True}, "force"),
    ("POST", "/v1/admin/release", [1, 2], "object"),
    ("POST", "/v1/admin/flush", {"peer": 5}, "peer"),
    ("POST", "/v1/admin/flush", {"peer": "nobody"}, "peer"),
])
def test_bad_input_is_refused_naming_the_field_and_changes_nothing(
        api: Client, method: str, path: str, body: Any, field: str) -> None:
    keep = send(api, "untouched", "x")
    r = api.request(method, path, json_body=body) if body is not None else api.request(method, path)
    assert r.status in (400, 404), r
    assert r.error in ("invalid_argument", "not_found"), r
    assert field in r.json()["message"], r
    r = api.get("/v1/admin/messages?channel=untouched&limit=1000")
    assert keep in [m["id"] for m in r.json()["messages"] if m["state"] == "ready"]


def test_admin_routes_need_the_admin_scope_and_the_audit_names_the_token(tmp_path: Path) -> None:
    with NodeProc(tmp_path / "s", config=SECURED) as n:
        app, ops = Client(n.url, token=SEND), Client(n.url, token=ADMIN)
        mid = send(app, "sec", "x")
        for method, path, body in (("GET", "/v1/admin/messages", None), ("POST", "/v1/admin/hold", {"ids": [mid]}),
                                   ("GET", "/v1/admin/outbox", None), ("POST", "/v1/admin/flush", {}),
                                   ("GET", "/v1/admin/audit", None), ("GET", f"/v1/admin/messages/{mid}", None)):
            r = app.request(method, path, json_body=body) if body is not None else app.request(method, path)
            assert (r.status, r.error) == (403, "forbidden"), (path, r)
            r = app.request(method, path, token=None)
            assert (r.status, r.error) == (401, "unauthorized"), (path, r)
        assert ops.post("/v1/admin/hold", json_body={"ids": [mid]}).json()["changed"] == 1
        # the existing dead-letter routes are audited too
        ops.post("/v1/admin/release", json_body={"ids": [mid]})
        [x] = app.lease("sec")
        assert app.post(f"/v1/leases/{x['lease']}/nack", json_body={"delay": 0}).status == 204
        with Spool(n.spool_dir) as s:
            got = s.lease("sec")
            assert got is not None
            got.dead("no")
        r = ops.post("/v1/dead/retry", json_body={"ids": [mid]})
        assert r.json()["retried"] == [mid]
        r = ops.post("/v1/dead/purge", json_body={"channel": "none", "dry_run": True})
        entries = ops.get("/v1/admin/audit").json()["entries"]
        assert [(e["who"], e["action"]) for e in entries] == [("ops", "dead-retry"), ("ops", "release"),
                                                              ("ops", "hold")]


def test_a_message_held_on_a_is_not_forwarded_to_b_until_released(tmp_path: Path) -> None:
    port = free_port()
    a = NodeProc(tmp_path / "a", config=f'[node]\nbackoff_cap = 0.5\n\n[peers.b]\nurl = "http://127.0.0.1:{port}"\n')
    b: NodeProc | None = None
    try:
        on_a = Client(a.url)
        held = send(on_a, "hop", "held one", to="b")

        def outbox() -> dict[str, Any]:
            r = on_a.get("/v1/admin/outbox")
            assert r.status == 200, r
            return {p["peer"]: p for p in r.json()["peers"]}["b"]

        wait_for(lambda: outbox()["last_error"] is not None)  # B is down: A tried and failed
        peer = outbox()
        assert peer["state"] in ("unreachable", "backing_off") and peer["waiting"] == 1, peer
        assert "cannot reach b" in peer["last_error"]
        r = on_a.post("/v1/admin/hold", json_body={"filter": {"peer": "b"}})
        assert r.json() == {"matched": 1, "changed": 1, "dry_run": False}
        listed = on_a.get("/v1/admin/messages?peer=b").json()["messages"]
        assert [(m["id"], m["state"], m["place"], m["peer"]) for m in listed] == [(held, "held", "outbox", "b")]
        assert (outbox()["held"], outbox()["waiting"]) == (1, 0)

        b = NodeProc(tmp_path / "b", listen=f"127.0.0.1:{port}")
        on_b = Client(b.url)
        assert on_a.post("/v1/admin/flush", json_body={"peer": "b"}).json() == {"flushed": ["b"]}
        send(on_a, "hop", "after", to="b")  # sent after the held one: its arrival shows A forwarded again
        wait_for(lambda: on_b.get("/v1/stats").json()["channels"].get("hop", {}).get("ready") == 1, timeout=30)
        assert lease_bodies(on_b, "hop") == ["after"]
        wait_for(lambda: outbox()["last_success"] is not None and outbox()["state"] == "idle")
        assert outbox()["held"] == 1

        assert on_a.post("/v1/admin/release", json_body={"ids": [held]}).json()["changed"] == 1
        wait_for(lambda: on_b.get("/v1/stats").json()["channels"]["hop"]["ready"] == 1, timeout=30)
        assert lease_bodies(on_b, "hop") == ["held one"]
        # B has it before A settles the batch (A removes the row once B's reply is read): wait for that
        wait_for(lambda: (outbox()["held"], outbox()["waiting"]) == (0, 0))
    finally:
        if b is not None:
            assert b.stop() == 0, b.log()
        assert a.stop() == 0, a.log()


def test_flush_ends_every_targets_backoff_and_starts_again_from_the_front(spool: Spool) -> None:
    from spoolq.errors import PeerError
    from spoolq.node.forwarder import PeerLink, Target
    from spoolq.testing import FakeClock

    clock = FakeClock(start=100.0)
    targets = [Target("a", "http://127.0.0.1:9"), Target("b", "http://127.0.0.1:10")]
    link = PeerLink("a|b", targets, spool, None, node_id=spool.node_id, clock=clock)  # type: ignore[arg-type]
    for t in targets:
        for _ in range(5):
            link._failed(t, PeerError("refused"))
    link.cursor = (1024, b"\xff" * 16)
    assert link.pick(clock()) is None and all(t.failures == 5 for t in targets)
    link.flush()
    assert link.pick(clock()) is targets[0] and link.cursor is None and link.wake.is_set()
    assert all(t.failures == 0 and t.last_error == "refused" for t in targets)  # the error stays shown
    assert link.rate() == 0.0
