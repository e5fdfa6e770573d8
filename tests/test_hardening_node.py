"""Regression tests for the node/HTTP items of issue 8 (hardening).

Each test failed on the code before its fix: forgeable lease handles (item 2), ...
Real `spoolq node` subprocesses on loopback; the spool on disk is opened by this process to check
what changed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from spoolq import Spool
from spoolq.errors import InvalidArgument, LeaseLost
from spoolq.lease import Lease

from .nodes import NodeProc
from .test_api import Client, depth

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
