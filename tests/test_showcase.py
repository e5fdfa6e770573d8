"""The showcase, for real: PostgreSQL stopped (pg_ctl stop -m immediate) mid-run, memcached, one and two hosts."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import PYTHON, python_env

pytest.importorskip("psycopg")
pytest.importorskip("pymemcache")

LAST = "showcase: {w} writes accepted ({d} while PostgreSQL was down), {w} in PostgreSQL exactly once"


@pytest.mark.parametrize("extra", [[], ["--two-hosts"]], ids=["one-host", "two-hosts"])
def test_showcase(extra: list[str]) -> None:
    env = python_env()
    env.pop("DATABASE_URL", None)
    r = subprocess.run([PYTHON, "-m", "spoolq", "showcase", "--writes", "300", "--writers", "12", *extra],
                       env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == LAST.format(w=300, d=100)
    assert "pg_ctl stop -m immediate" in r.stdout
    if extra:
        assert "kill -9 the DB node's daemon" in r.stdout
