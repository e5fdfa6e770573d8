"""``spoolq check``: look at a spool without changing it (SQLite's integrity check and spoolq's invariants)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..errors import SpoolqError
from . import sql
from .db import DB_NAME, Database

__all__ = ["check_spool"]


def check_spool(path: Path) -> tuple[list[str], list[str]]:
    """Check the spool at ``path`` read-only. Returns (facts, problems); no problems means healthy."""
    db_path = path / DB_NAME
    facts: list[str] = []
    problems: list[str] = []
    if not db_path.exists():
        return facts, [f"{db_path} does not exist"]
    try:
        Database.refuse_damaged(path)
    except SpoolqError as e:
        return facts, [e.message]
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as e:
        return facts, [f"cannot open {db_path} read-only: {e}"]
    try:
        version = conn.execute(sql.USER_VERSION).fetchone()[0]
        facts.append(f"schema version {version} (this spoolq: {sql.SCHEMA_VERSION})")
        if version > sql.SCHEMA_VERSION:
            problems.append(f"schema version {version} is newer than this spoolq understands")
            return facts, problems
        if version == 0:
            problems.append("the database holds no spool (schema version 0)")
            return facts, problems
        for (line,) in conn.execute(sql.CHECK_INTEGRITY).fetchall():
            if line != "ok":
                problems.append(f"integrity: {line}")
        meta = dict(conn.execute(sql.CHECK_META).fetchall())
        if "node_id" not in meta or "next_job" not in meta:
            problems.append("meta lacks node_id or next_job")
        else:
            facts.append(f"node id {meta['node_id']}")
        for what, statement in sql.CHECK_ORPHANS:
            n = conn.execute(statement).fetchone()[0]
            if n:
                problems.append(f"{n} {what}")
        top = conn.execute(sql.CHECK_MAX_JOB).fetchone()[0]
        if top is not None and "next_job" in meta and int(top) >= int(meta["next_job"]):
            problems.append(f"job number {top} is not below next_job {meta['next_job']}")
    except sqlite3.Error as e:
        problems.append(f"cannot read {db_path}: {e}")
    finally:
        conn.close()
    return facts, problems
