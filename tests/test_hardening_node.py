"""Regression tests for the node/HTTP items of issue 8 (hardening).

Each test failed on the code before its fix: forgeable lease handles (item 2), SSRF through ``to=``
and peer details on the unauthenticated /healthz (item 1), a long poll whose client left taking a
lease (item 4), idle and slow connections (item 5), JSON API limits of their own (item 7), clear
errors and quiet logs (item 10), forwarding that resumed late after a peer came back (item 9).
Real `spoolq node` subprocesses on loopback; the spool on disk is opened by this process to check
what changed.
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from spoolq import Spool
from spoolq.errors import InvalidArgument, LeaseLost
from spoolq.lease import Lease
from spoolq.node.config import ConfigError, load_config, url_matches

from .conftest import wait_for
from .nodes import NodeProc, free_port
from .test_api import OCTETS, Client, depth

# -- item 2: lease handles carry an HMAC under a per-spool secret -----------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    n = NodeProc(tmp_path_factory.mktemp("harden") / "spool")
    yield n
    assert n.stop() == 0, n.log()


@pytest.fixture(scope="module")
def api(node: NodeProc) -> Client:
    return Client(node.url)


@pytest.fixture(scope="module")
def disk(node: NodeProc) -> Iterator[Spool]:
    s = Spool(node.spool_dir)
    yield s
    s.close()


def test_neighbouring_handles_cannot_be_guessed(api: Client, disk: Spool) -> None:
    """Ids sent together are consecutive: a client must not ack a lease another consumer holds."""
    ch = "harden.forge"
    api.send(ch, {"messages": [{"body": f"m{i}"} for i in range(5)]})
    mine = api.lease(ch, visibility=60)[0]
    theirs = api.lease(ch, max=4, visibility=60)
    for other in theirs:
        key = other["lease"].rsplit(".", 1)[0]
        # forge from my handle's tag, from no tag, and from the old 4-part format
        for forged in (key + "." + mine["lease"].rsplit(".", 1)[1], key, key + "." + "A" * 22):
            for op in ("ack", "nack", "touch"):
                r = api.post(f"/v1/leases/{forged}/{op}")
                assert r.status in (400, 409), (forged, op, r)
            r = api.post("/v1/acks", json_body={"leases": [forged]})
            assert r.status in (400, 409), r
    assert depth(disk, ch).leased == 5  # nothing changed
    for other in [mine, *theirs]:  # the real holders still finish their leases
        assert api.post(f"/v1/leases/{other['lease']}/ack").status == 204


def test_altered_handle_changes_nothing(api: Client, disk: Spool) -> None:
    ch = "harden.alter"
    api.send(ch, {"body": "x"})
    [x] = api.lease(ch, visibility=60)
    ch_s, pri, idhex, att, tag = x["lease"].split(".")
    flipped = tag[:-1] + ("B" if tag[-1] != "B" else "C")
    for bad in (f"{ch_s}.{pri}.{idhex}.{int(att) + 1}.{tag}", f"{ch_s}.{int(pri) + 1}.{idhex}.{att}.{tag}",
                f"{ch_s}.{pri}.{idhex}.{att}.{flipped}"):
        r = api.post(f"/v1/leases/{bad}/ack")
        assert (r.status, r.error) == (409, "lease_lost"), (bad, r)
    assert depth(disk, ch).leased == 1
    assert api.post(f"/v1/leases/{x['lease']}/ack").status == 204


def test_handles_parse_strictly(tmp_path: Path) -> None:
    with Spool(tmp_path / "s") as s:
        s.send(b"x", "c")
        lease = s.lease("c")
        assert lease is not None
        good = lease.handle
        assert Lease.from_handle(s, good).key == lease.key
        ch_s, pri, idhex, att, tag = good.split(".")
        for odd in ("\u0661", "+1", " 1", "0_1", "1 ", "01", "1\n"):
            for bad in (f"{odd}.{pri}.{idhex}.{att}.{tag}", f"{ch_s}.{pri}.{idhex}.{odd}.{tag}"):
                with pytest.raises(InvalidArgument):
                    Lease.from_handle(s, bad)
        with pytest.raises(InvalidArgument):
            Lease.from_handle(s, f"{ch_s}.{pri}.{idhex.upper()}.{att}.{tag}")
        with pytest.raises(InvalidArgument):
            Lease.from_handle(s, good + "\n")
        with pytest.raises(LeaseLost):
            Lease.from_handle(s, f"{ch_s}.{pri}.{idhex}.{att}.{'A' * 22}")


def test_the_secret_is_private_shared_and_kept(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Spool(d) as a, Spool(d) as b:
        a.send(b"x", "c")
        lease = a.lease("c")
        assert lease is not None
        Lease.from_handle(b, lease.handle).ack()  # another process's Spool accepts the handle
    key = d / "lease.key"
    assert len(key.read_bytes()) == 32
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    before = key.read_bytes()
    with Spool(d) as c:
        assert c.lease_secret == before
    with Spool(tmp_path / "other") as other:
        assert other.lease_secret != before


# -- item 1: to= over HTTP names a configured peer or an allowed URL; /healthz tells little -----

ADMIN = "admin-token-0123456789abcdef"
SENDER = "send-token-0123456789abcdef"


def test_url_globs_match_within_their_parts() -> None:
    p = "https://dc*.example.com:7070/*"
    for url in ("https://dc1.example.com:7070", "https://dc1.example.com:7070/", "https://dc22.example.com:7070/x/y"):
        assert url_matches(p, url), url
    for url in ("https://dc1.evil.com/x.example.com:7070/", "https://dc1.example.com:7071",
                "http://dc1.example.com:7070", "https://u@dc1.example.com:7070", "https://dc1.example.com:7070/?x=",
                "https://dc1.example.com:7070/#x", "https://dc.a.example.com:7070", "https://dc1.example.com:7070/ x"):
        assert not url_matches(p, url), url


def test_allow_urls_is_validated_naming_the_key(tmp_path: Path) -> None:
    for bad, shown in (('"https://x:1/*"', "node.allow_urls"), ('["ftp://x:1/*"]', "node.allow_urls[0]"),
                       ('["https://x:1/*", "https://u@x:1/*"]', "node.allow_urls[1]"), ("[1]", "node.allow_urls[0]")):
        f = tmp_path / "c.toml"
        f.write_text(f"[node]\nallow_urls = {bad}\n")
        with pytest.raises(ConfigError) as e:
            load_config(f)
        assert shown in str(e.value), (bad, e.value)
    f.write_text('[node]\nallow_urls = ["https://dc*.example.com:7070/*"]\n')
    assert load_config(f).allow_urls == ("https://dc*.example.com:7070/*",)


def test_to_over_http_names_a_peer_or_an_allowed_url(tmp_path: Path) -> None:
    """A client with the send scope cannot make the node post to any URL it likes."""
    trap = NodeProc(tmp_path / "trap")  # a real server that would receive what the node forwards
    try:
        cfg = (f"[node]\nallow_urls = [\"http://127.0.0.1:{trap.port}\"]\n"
               f"[peers.known]\nurl = \"http://127.0.0.1:9\"\n"
               f"[tokens.s]\ntoken = \"{SENDER}\"\nscopes = [\"send\"]\n"
               f"[tokens.a]\ntoken = \"{ADMIN}\"\nscopes = [\"admin\"]\n")
        with NodeProc(tmp_path / "a", config=cfg) as a_node:
            c = Client(a_node.url, token=SENDER)
            for to in (f"http://127.0.0.2:{trap.port}", f"{trap.url}/x", f"{trap.url}/?x=", f"{trap.url}#x",
                       "http://169.254.169.254/latest", "unknown-peer", "known|http://127.0.0.1:1"):
                r = c.post("/v1/channels/ssrf/messages", json_body={"body": "x", "to": to})
                assert (r.status, r.error) == (400, "invalid_argument"), (to, r)
                assert "node.allow_urls" in r.json()["message"], r
                r = c.post("/v1/channels/ssrf/messages", json_body={"messages": [{"body": "x", "to": ["known", to]}]})
                assert r.status == 400, (to, r)
                r = c.post("/v1/channels/ssrf/messages?to=" + quote(to, safe=""), data=b"x", headers=OCTETS)
                assert r.status == 400 and "node.allow_urls" in r.json()["message"], (to, r)
            with Spool(a_node.spool_dir) as disk:
                assert disk.stats().peers == {} and disk.outbox_peers() == []  # nothing was stored
            # a configured peer (by name or URL) and an allowed URL are fine
            for to in ("known", "http://127.0.0.1:9", trap.url, f"known|{trap.url}/"):
                r = c.post("/v1/channels/ssrf/messages", json_body={"body": "ok", "to": to})
                assert r.status == 201, (to, r)
            wait_for(lambda: Client(trap.url).stats()["channels"].get("ssrf", {}).get("ready") == 2, timeout=15)
            # peers' URLs and last errors (quoting what they answered) need admin
            admin = Client(a_node.url, token=ADMIN)
            wait_for(lambda: admin.get("/v1/peers").json()["peers"].get("known", {}).get("last_error"), timeout=15)
            h = Client(a_node.url).get("/healthz")
            assert h.status == 200 and h.json()["status"] == "ok", h
            assert b"127.0.0.1" not in h.body and b"last_error" not in h.body and b"url" not in h.body, h
            assert h.json()["peers_down"] >= 1
            assert c.get("/v1/peers").status == 403
            assert Client(a_node.url).get("/v1/peers").status == 401
            peers = admin.get("/v1/peers").json()["peers"]
            assert peers["known"]["url"] == "http://127.0.0.1:9" and peers["known"]["up"] is False
    finally:
        trap.stop()


def test_a_library_caller_may_still_send_to_any_url(tmp_path: Path) -> None:
    with Spool(tmp_path / "s") as s:
        s.send(b"x", "c", to="http://10.0.0.2:7070")
        assert s.outbox_peers() == ["http://10.0.0.2:7070"]


# -- item 4: a long poll whose client left gives its lease back, uncounted --------------------


def test_release_gives_leases_back_uncounted(tmp_path: Path) -> None:
    with Spool(tmp_path / "s") as s:
        s.configure_channel("c", max_attempts=1)
        s.send(b"x", "c")
        for _ in range(3):  # releases do not spend the only attempt
            got = s.lease_many("c", 5, visibility=600)
            assert len(got) == 1 and got[0].attempts == 1
            assert s.release(got) == 1
            assert s.release(got) == 0  # no longer held: skipped
            assert s.stats().channels["c"].ready == 1
        x = s.lease("c")
        assert x is not None and x.attempts == 1
        x.ack()
        assert s.release([x]) == 0


def test_long_poll_of_a_client_that_left_takes_no_lease(api: Client, node: NodeProc, disk: Spool) -> None:
    ch = "harden.gone"
    host, port = node.url.removeprefix("http://").rsplit(":", 1)
    body = b'{"wait": 30, "visibility": 600, "max": 10}'
    socks = []
    for _ in range(5):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(b"POST /v1/channels/" + ch.encode() + b"/leases HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        socks.append(s)
    api.stats()  # the node has read the polls by now (one event loop)
    for s in socks:
        s.close()
    api.stats()
    [mid] = [api.send(ch, {"body": "for someone who is still here"})["id"]]

    def leased_by_me() -> list[dict[str, object]]:
        return api.lease(ch, visibility=60)

    got = wait_for(leased_by_me, timeout=10)
    assert isinstance(got, list)
    assert got[0]["id"] == mid and got[0]["attempts"] == 1, got
    assert api.post(f"/v1/leases/{got[0]['lease']}/ack").status == 204


# -- item 5: idle and slow connections are closed, capped, and do not lock anyone out ----------


def _limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))  # systemd's default


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def test_node_stays_reachable_under_1100_idle_and_slow_connections(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1300:  # this test process holds the 1,100 sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    with NodeProc(tmp_path / "s", preexec_fn=_limit_fds) as n:
        held: list[socket.socket] = []
        try:
            for i in range(1100):  # more than the 1,024 fds the node may open
                s = _connect(n.url)
                if i % 2:  # slowloris: half a request header, never finished
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                held.append(s)
            start = time.monotonic()
            r = Client(n.url).get("/healthz", timeout=15)
            assert r.status == 200 and r.json()["status"] == "ok", r
            assert time.monotonic() - start < 15
            # still serving, and one line about the cap, not a traceback per connection
            assert Client(n.url).get("/healthz", timeout=30).status == 200
        finally:
            for s in held:
                s.close()
        log = n.log()
        assert log.count("connection cap reached") == 1, log[-3000:]
        assert "Traceback" not in log and "out of system resource" not in log, log[-3000:]


def test_idle_and_half_sent_connections_are_closed(tmp_path: Path) -> None:
    with NodeProc(tmp_path / "s", config="[node]\nkeepalive_timeout = 0.5\nbody_timeout = 0.5\n") as n:
        idle = _connect(n.url)
        slow = _connect(n.url)
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        body = _connect(n.url)
        body.sendall(b"POST /v1/channels/slow/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        for s in (idle, slow):
            assert s.recv(1000) == b""  # closed by the node (the socket timeout is 10 s)
        reply = body.recv(10000)
        assert reply.startswith(b"HTTP/1.1 408"), reply
        for s in (idle, slow, body):
            s.close()
        with Spool(n.spool_dir) as disk:
            assert depth(disk, "slow").ready == 0


# -- item 7: the JSON API has its own limits; compressed bodies cannot inflate past them --------


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    cfg = "[node]\nmax_request_bytes = 65536\nmax_request_messages = 10\n"
    n = NodeProc(tmp_path_factory.mktemp("limited") / "spool", config=cfg)
    yield n
    assert n.stop() == 0, n.log()


def test_json_requests_have_their_own_limits(limited: NodeProc) -> None:
    c = Client(limited.url)
    r = c.post("/v1/channels/lim/messages", json_body={"messages": [{"body": "x"}] * 11})
    assert (r.status, r.error) == (413, "too_large") and "node.max_request_messages" in r.json()["hint"], r
    r = c.post("/v1/channels/lim/messages", json_body={"messages": [{"body": "x" * 7000}] * 10})
    assert (r.status, r.error) == (413, "too_large"), r
    r = c.post("/v1/acks", json_body={"leases": ["x"] * 11})
    assert (r.status, r.error) == (413, "too_large"), r
    assert c.post("/v1/channels/lim/messages", json_body={"messages": [{"body": "x"}] * 10}).status == 201
    with Spool(limited.spool_dir) as disk:
        assert depth(disk, "lim").ready == 10


def test_compressed_bodies_are_refused_before_inflating(limited: NodeProc) -> None:
    c = Client(limited.url)
    bomb = gzip.compress(json.dumps({"messages": [{"body": "x" * 1000}] * 50_000}).encode())  # 50 MB inflated
    assert len(bomb) < 1 << 20
    r = c.post("/v1/channels/bomb/messages", data=bomb,
               headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert (r.status, r.error) == (415, "unsupported_encoding"), r
    with Spool(limited.spool_dir) as disk:
        assert depth(disk, "bomb").ready == 0


def test_a_body_without_length_is_cut_at_the_limit(limited: NodeProc) -> None:
    host, port = limited.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v1/channels/chunked/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 16384
        try:
            for _ in range(64):  # 1 MiB, far over 64 KiB: the node answers 413 before the end
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # the node closed the connection after answering
        reply = s.recv(10000)
    assert reply.startswith(b"HTTP/1.1 413"), reply


# -- item 10: clear errors for odd bytes and deep JSON, quiet logs, aiohttp's errors as JSON ----


def _raw(url: str, request: bytes) -> bytes:
    with _connect(url) as s:
        s.sendall(request)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
            if b"\r\n\r\n" in out:
                head, _, rest = out.partition(b"\r\n\r\n")
                length = [int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length")]
                if length and len(rest) >= length[0]:
                    return out


def _status_and_json(reply: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def test_non_utf8_bytes_in_headers_are_401_and_400(tmp_path: Path) -> None:
    cfg = f"[tokens.a]\ntoken = \"{ADMIN}\"\nscopes = [\"admin\", \"send\"]\n"
    with NodeProc(tmp_path / "s", config=cfg) as n:
        status, body = _status_and_json(_raw(n.url, b"GET /v1/stats HTTP/1.1\r\nHost: x\r\n"
                                             b"Authorization: Bearer \xff\xfe\xc3(\r\nConnection: close\r\n\r\n"))
        assert (status, body["error"]) == (401, "unauthorized"), body
        req = (b"POST /v1/channels/odd/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + ADMIN.encode()
               + b"\r\nSpoolq-Header-Kind: \xff\xfe\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx")
        status, body = _status_and_json(_raw(n.url, req))
        assert (status, body["error"]) == (400, "invalid_argument"), body
        with Spool(n.spool_dir) as disk:
            assert depth(disk, "odd").ready == 0
        assert "Traceback" not in n.log()


def test_deeply_nested_json_is_400(api: Client, node: NodeProc) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    for path, body in (("/v1/channels/deep/messages", '{"messages": ' + deep + "}"), ("/v1/acks", deep),
                       ("/v1/channels/deep/messages", '{"body": "x", "headers": ' + deep + "}")):
        r = api.post(path, data=body.encode(), headers={"Content-Type": "application/json"})
        assert (r.status, r.error) == (400, "invalid_argument"), (path, r)
    assert "RecursionError" not in node.log()


def test_misbehaving_clients_get_json_errors_and_one_log_line(tmp_path: Path) -> None:
    with NodeProc(tmp_path / "s") as n:
        for _ in range(20):  # an 8 KB+ header
            reply = _raw(n.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
            status, body = _status_and_json(reply)
            assert status in (400, 413, 431) and set(body) == {"error", "message", "hint"}, reply[:300]
        for _ in range(20):  # a client that leaves mid-body
            with _connect(n.url) as s:
                s.sendall(b"POST /v1/channels/cut/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
        status, body = _status_and_json(_raw(n.url, b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
        assert (status, body["error"]) == (404, "not_found")
        req = b"DELETE /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        status, body = _status_and_json(_raw(n.url, req))
        assert (status, body["error"]) == (405, "method_not_allowed")
        assert Client(n.url).get("/healthz").status == 200
        log = n.log()
        assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]
        assert log.count("refused a malformed HTTP request") == 1, log[-3000:]
        assert log.count("left while sending") <= 1, log[-3000:]


def test_a_bad_tls_certificate_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    key.write_text("not a key\n")
    f = tmp_path / "c.toml"
    f.write_text(f"[node]\ntls_cert = {json.dumps(str(cert))}\ntls_key = {json.dumps(str(key))}\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert "node.tls_cert" in str(e.value) or "node.tls_key" in str(e.value), e.value


# -- item 9: forwarding resumes soon after an unreachable peer comes back -----------------------


def _wait_failures(a: Client, peer: str, n: int) -> None:
    def failed() -> bool:
        p = a.get("/v1/peers").json()["peers"].get(peer)
        return bool(p and p["failures"] >= n)

    wait_for(failed, timeout=15)


def test_forwarding_resumes_soon_after_an_unreachable_peer_is_back(tmp_path: Path) -> None:
    """A backoff of 10 to 20 s is not waited out: the node probes the peer about once a second."""
    port = free_port()
    cfg = f"[node]\nbackoff_base = 20\nbackoff_cap = 60\n[peers.b]\nurl = \"http://127.0.0.1:{port}\"\n"
    with NodeProc(tmp_path / "a", config=cfg) as a_node:
        a = Client(a_node.url)
        a.send("back", {"body": "x", "to": "b"})
        _wait_failures(a, "b", 1)
        assert a.get("/v1/peers").json()["peers"]["b"]["backoff_seconds"] > 5
        with NodeProc(tmp_path / "b", listen=f"127.0.0.1:{port}") as b_node:
            b = Client(b_node.url)
            start = time.monotonic()
            wait_for(lambda: b.stats()["channels"].get("back", {}).get("ready") == 1, timeout=8)
            assert time.monotonic() - start < 8


def test_a_starting_node_says_hello_to_its_peers(tmp_path: Path) -> None:
    """B forwards to A and backs off while A is down; A, starting, tells B, which resumes at once."""
    port = free_port()
    b_cfg = f"[node]\nbackoff_base = 20\nbackoff_cap = 60\n[peers.a]\nurl = \"http://127.0.0.1:{port}\"\n"
    with NodeProc(tmp_path / "b", config=b_cfg) as b_node:
        b = Client(b_node.url)
        b.send("hello", {"body": "x", "to": "a"})
        _wait_failures(b, "a", 1)
        a_cfg = f"[peers.b]\nurl = \"{b_node.url}\"\n"
        with NodeProc(tmp_path / "a", config=a_cfg, listen=f"127.0.0.1:{port}") as a_node:
            a = Client(a_node.url)
            wait_for(lambda: a.stats()["channels"].get("hello", {}).get("ready") == 1, timeout=8)
        assert b'route="/v1/hello",status="204"' in b.get("/metrics").body  # A said hello
