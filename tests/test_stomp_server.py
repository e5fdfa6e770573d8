"""STOMP server over raw sockets: frames, errors, limits, heart-beats, transactions."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from spoolq import Spool
from spoolq.stomp.server import amq_to_priority, message_id_to_spool, priority_to_amq
from spoolq.stomp.wire import Frame

from .stomp_helpers import Raw, StompProc, stomp_server


@pytest.fixture(scope="module", params=["default", "asyncio"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StompProc]:
    """One server per event loop: the default (uvloop when installed) and asyncio's own (SPOOLQ_LOOP=asyncio)."""
    with stomp_server(tmp_path_factory.mktemp("stomp") / "spool", loop=request.param) as s:
        if request.param == "asyncio":
            assert not s.uses_uvloop()
        else:
            assert s.uses_uvloop() == (importlib.util.find_spec("uvloop") is not None)
        yield s


def F(cmd: str, body: bytes = b"", **h: str) -> Frame:
    return Frame(cmd, tuple((k.replace("_", "-") if k != "AMQ_SCHEDULED_DELAY" else k, v) for k, v in h.items()),
                 body)


def test_priority_and_id_mapping() -> None:
    assert amq_to_priority(9) < amq_to_priority(4) == 1024 < amq_to_priority(0)
    assert all(priority_to_amq(amq_to_priority(p)) == p for p in range(10))
    assert message_id_to_spool("abc") == message_id_to_spool("abc") != message_id_to_spool("abd")


def test_versions(server: StompProc) -> None:
    for offer, want in [("1.0,1.1", "1.1"), ("1.2", "1.2"), ("1.0", "1.0")]:
        c = Raw(server.port)
        f = c.connect(**{"accept-version": offer})
        assert f.get("version") == want and f.get("session") and f.get("server", "").startswith("spoolq/")
        c.close()
    c = Raw(server.port)
    c.send(b"CONNECT\n\n\0")  # no accept-version: 1.0
    assert c.frame().get("version") == "1.0"
    c = Raw(server.port)
    c.send(F("CONNECT", accept_version="2.0", host="x"))
    e = c.frame()
    assert e.command == "ERROR" and "versions" in (e.get("message") or "")
    assert c.closed()


@pytest.mark.parametrize(("frame", "word"), [
    (F("SEND", b"x", receipt="r9"), "CONNECT"),
])
def test_frame_before_connect(server: StompProc, frame: Frame, word: str) -> None:
    c = Raw(server.port)
    c.send(frame)
    e = c.frame()
    assert e.command == "ERROR" and word in (e.get("message") or "") and e.get("receipt-id") == "r9"
    assert c.closed()


@pytest.mark.parametrize("frame", [
    F("SEND", b"x", receipt="r"),
    F("SEND", b"x", destination="/nope/a", receipt="r"),
    F("SEND", b"x", destination="/queue/bad name", receipt="r"),
    F("SEND", b"x", destination="/queue/a", priority="high", receipt="r"),
    F("SUBSCRIBE", destination="/queue/a", receipt="r"),
    F("SUBSCRIBE", destination="/queue/a", id="1", ack="maybe", receipt="r"),
    F("UNSUBSCRIBE", id="nope", receipt="r"),
    F("ACK", id="nope", receipt="r"),
    F("NACK", receipt="r"),
    F("COMMIT", transaction="none", receipt="r"),
    F("ABORT", receipt="r"),
    F("SEND", b"x", destination="/queue/a", transaction="none", receipt="r"),
])
def test_error_paths(server: StompProc, frame: Frame) -> None:
    c = Raw(server.port)
    c.connect()
    c.send(frame)
    e = c.frame()
    assert e.command == "ERROR" and e.get("message") and e.get("receipt-id") == "r"
    assert c.closed()


def test_garbage_and_limits(server: StompProc) -> None:
    c = Raw(server.port)
    c.connect()
    c.send(b"HELLO\n\n\0")
    assert c.frame().command == "ERROR" and c.closed()
    c = Raw(server.port)
    c.connect()
    c.send(b"SEND\ndestination:/queue/g\nreceipt:ok\n\n\0HELLO\n\n\0")  # good frame, then garbage
    assert c.frame().get("receipt-id") == "ok"
    assert c.frame().command == "ERROR" and c.closed()
    c = Raw(server.port)
    c.connect()
    c.send(b"SEND\ndestination:/queue/big\ncontent-length:99999999\n\n")
    e = c.frame()
    assert e.command == "ERROR" and "limit" in (e.get("message") or "") and c.closed()
    c = Raw(server.port)
    c.connect()
    c.send(b"SEND\n" + b"h:v\n" * 200 + b"\n\0")
    assert c.frame().command == "ERROR" and c.closed()


def test_send_subscribe_ack_modes_pipelined(server: StompProc) -> None:
    c = Raw(server.port)
    c.connect()
    raw = b"".join(F("SEND", f"m{i}".encode(), destination="/queue/modes", priority="4").__class__ and
                   __import__("spoolq.stomp.wire", fromlist=["encode"]).encode(
                       F("SEND", f"m{i}".encode(), destination="/queue/modes")) for i in range(6))
    c.send(raw + b"\n\n")  # pipelined sends and heart-beats in one write
    c.send(F("SEND", b"", destination="/queue/modes-done", receipt="sent"))
    assert c.frame().get("receipt-id") == "sent"
    c.send(F("SUBSCRIBE", destination="/queue/modes", id="s", ack="client", **{"activemq.prefetchSize": "3"}))
    msgs = [c.frame() for _ in range(3)]
    assert [m.body for m in msgs] == [b"m0", b"m1", b"m2"]
    c.send(F("ACK", id=msgs[2].get("ack") or "", receipt="a"))  # cumulative: all three
    assert c.frame().get("receipt-id") == "a"
    msgs = [c.frame() for _ in range(3)]
    assert [m.body for m in msgs] == [b"m3", b"m4", b"m5"]
    c.send(F("NACK", id=msgs[0].get("ack") or "", receipt="n"))  # client mode: cumulative too
    assert c.frame().get("receipt-id") == "n"
    # m3 was nacked with spoolq's backoff (0.5-1 s): on a busy machine it may be ready again
    # before the UNSUBSCRIBE (s has room for it) or during the next subscription. Either way it
    # comes at most once more; m4 and m5 must come, once each.
    c.send(F("UNSUBSCRIBE", id="s", receipt="u"))  # m4, m5 (and m3 if s had it again) given back
    f = c.frame()
    if f.command == "MESSAGE":
        assert f.body == b"m3" and f.get("subscription") == "s"
        f = c.frame()
    assert f.get("receipt-id") == "u"
    c.send(F("SUBSCRIBE", destination="/queue/modes", id="t", ack="auto"))
    got: list[bytes] = []
    while not {b"m4", b"m5"} <= set(got):
        got.append(c.frame().body)
        assert len(got) <= 3
    c.send(F("DISCONNECT", receipt="bye"))
    f = c.frame()
    if f.command == "MESSAGE":
        got.append(f.body)
        f = c.frame()
    assert sorted(got) in ([b"m4", b"m5"], [b"m3", b"m4", b"m5"])
    assert f.get("receipt-id") == "bye" and c.closed()


def test_disconnect_gives_back_and_headers(server: StompProc) -> None:
    p = Raw(server.port)
    p.connect()
    p.send(F("SEND", b"a\0b", destination="/queue/hdr", priority="9", correlation_id="c1", reply_to="/queue/r",
             message_id="my-id", receipt="1"))
    assert p.frame().get("receipt-id") == "1"
    p.send(F("SEND", b"dup", destination="/queue/hdr", message_id="my-id", receipt="2"))  # duplicate
    assert p.frame().get("receipt-id") == "2"
    c = Raw(server.port)
    c.connect()
    c.send(F("SUBSCRIBE", destination="/queue/hdr", id="1", ack="client-individual"))
    m = c.frame()
    assert m.body == b"a\0b" and m.get("priority") == "9" and m.get("correlation-id") == "c1"
    assert m.get("reply-to") == "/queue/r" and m.get("message-id") == message_id_to_spool("my-id")
    c.close()  # unacked: given back at once
    c = Raw(server.port)
    c.connect()
    c.send(F("SUBSCRIBE", destination="/queue/hdr", id="1", ack="client-individual"))
    m = c.frame()
    assert m.body == b"a\0b" and m.get("redelivered") == "true"
    c.send(F("ACK", id=m.get("ack") or "", receipt="a"))
    assert c.frame().get("receipt-id") == "a"
    c.send(F("SEND", b"", destination="/queue/hdr-end", receipt="e"))
    assert c.frame().get("receipt-id") == "e"
    with Spool(server.spool_dir) as s:
        assert s.peek("hdr") == []


def test_transactions(server: StompProc) -> None:
    c = Raw(server.port)
    c.connect()
    c.send(F("SEND", b"old", destination="/queue/tx-in", receipt="0"))
    assert c.frame().get("receipt-id") == "0"
    c.send(F("SUBSCRIBE", destination="/queue/tx-in", id="s", ack="client-individual"))
    m = c.frame()
    c.send(F("BEGIN", transaction="t1"))
    c.send(F("SEND", b"new", destination="/queue/tx-out", transaction="t1"))
    c.send(F("ACK", id=m.get("ack") or "", transaction="t1", receipt="1"))
    assert c.frame().get("receipt-id") == "1"
    with Spool(server.spool_dir) as s:
        assert s.peek("tx-out") == []
    c.send(F("COMMIT", transaction="t1", receipt="2"))
    assert c.frame().get("receipt-id") == "2"
    c.send(F("BEGIN", transaction="t2"))
    c.send(F("SEND", b"dropped", destination="/queue/tx-out", transaction="t2"))
    c.send(F("ABORT", transaction="t2", receipt="3"))
    assert c.frame().get("receipt-id") == "3"
    with Spool(server.spool_dir) as s:
        assert [m.body for m in s.peek("tx-out")] == [b"new"]
        assert s.peek("tx-in") == []


def test_topic_fanout(server: StompProc) -> None:
    subs = [Raw(server.port) for _ in range(2)]
    for i, s in enumerate(subs):
        s.connect()
        s.send(F("SUBSCRIBE", destination="/topic/news", id=str(i), receipt="r"))
        assert s.frame().get("receipt-id") == "r"
    p = Raw(server.port)
    p.connect()
    p.send(F("SEND", b"hello", destination="/topic/news", receipt="x"))
    assert p.frame().get("receipt-id") == "x"
    for s in subs:
        m = s.frame()
        assert m.command == "MESSAGE" and m.body == b"hello" and m.get("destination") == "/topic/news"


def test_heartbeats_both_ways(tmp_path: Path) -> None:
    with stomp_server(tmp_path / "spool", "--heart-beat", "100,100") as s:
        c = Raw(s.port)
        f = c.connect(**{"heart-beat": "100,100"})
        assert f.get("heart-beat") == "100,100"
        beats = 0
        while c.next() is not None:  # the server beats (EOLs) on its own ...
            beats += 1
        assert beats >= 1  # ... and, as we never beat, gives up on us after 2 x 100 ms
        c = Raw(s.port)
        assert c.connect(**{"heart-beat": "0,0"}).get("heart-beat") == "100,100"
        c.send(F("SEND", b"", destination="/queue/hb", receipt="r"))
        assert c.frame().get("receipt-id") == "r"
        c.close()


@pytest.mark.parametrize("loop", ["default", "asyncio"])
def test_sigterm_gives_held_messages_back(tmp_path: Path, loop: str) -> None:
    """Also: stopping with connections open logs nothing (on asyncio's loop in Python 3.11, a
    connection's task cancelled at shutdown logged a CancelledError traceback)."""
    import signal

    s = StompProc(tmp_path / "spool", loop=loop)
    try:
        c = Raw(s.port)
        c.connect()
        c.send(F("SEND", b"held", destination="/queue/term", receipt="r"))
        assert c.frame().get("receipt-id") == "r"
        c.send(F("SUBSCRIBE", destination="/queue/term", id="1", ack="client"))
        assert c.frame().body == b"held"
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(30) == 0
        assert s.proc.stderr is not None
        err = s.proc.stderr.read().decode(errors="replace")
        assert "Traceback" not in err, err
    finally:
        s.stop()
    with Spool(tmp_path / "spool") as sp:
        lease = sp.lease("term")  # ready at once, not after the lease's visibility
        assert lease is not None and lease.body == b"held"


def test_tls(tmp_path: Path) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    with stomp_server(tmp_path / "spool", "--tls-cert", str(tmp_path / "server.pem"),
                      "--tls-key", str(tmp_path / "server.pem")) as s:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        c = Raw(s.port)
        c.sock = ctx.wrap_socket(c.sock, server_hostname="127.0.0.1")
        c.connect()
        c.send(F("SEND", b"secret", destination="/queue/tls", receipt="r"))
        assert c.frame().get("receipt-id") == "r"
        c.close()
