"""The package's shape: arrows point down (no import cycles, type-only imports included), no module
over 1,000 lines, and SQL on the spool only under ``spoolq/store/``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from .conftest import ROOT

PKG = ROOT / "spoolq"
MAX_LINES = 1000
# A user's own database (the transactional outbox, the showcase app) is not the spool.
SQL_ALLOWED = ("spoolq/store/", "spoolq/outbox/", "spoolq/showcase/")
SQL_RE = re.compile(
    r"\b(SELECT\s.+\sFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX)|PRAGMA\s)",
    re.IGNORECASE | re.DOTALL,
)


def modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text())
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                sub = f"{mod}.{a.name}"
                if sub in known:
                    found.add(sub)
                elif mod in known:
                    found.add(mod)
    found.discard(name)
    return found


def test_no_import_cycles() -> None:
    known = modules()
    graph = {m: imports_of(m, p, known) for m, p in known.items()}
    # the package's lazy __init__ re-exports names; importing `spoolq` for __version__ is not an arrow up
    graph["spoolq"] = set()
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append([*stack[stack.index(n):], n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_modules_stay_small() -> None:
    big = {str(p.relative_to(ROOT)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines (split them by concern): {big}"


def test_sql_only_in_store() -> None:
    offenders = []
    for path in PKG.rglob("*.py"):
        rel = str(path.relative_to(ROOT))
        if rel.startswith(SQL_ALLOWED):
            continue
        tree = ast.parse(path.read_text())
        docs = {id(n.body[0].value) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(n.split(".")[0] == "sqlite3" for n in names):
                    offenders.append(f"{rel}:{node.lineno} imports sqlite3")
            elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
                  and SQL_RE.search(node.value)):
                offenders.append(f"{rel}:{node.lineno} holds SQL: {node.value[:60]!r}")
    assert not offenders, "SQL outside spoolq/store/:\n" + "\n".join(offenders)


def test_the_layout_check_can_fail(tmp_path: Path) -> None:
    a = tmp_path / "a.py"
    a.write_text("from . import b\n")
    b = tmp_path / "b.py"
    b.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    known = {"p.a": a, "p.b": b}
    assert imports_of("p.a", a, known) == {"p.b"} and imports_of("p.b", b, known) == {"p.a"}
    assert SQL_RE.search("DELETE FROM inbox WHERE id=?") and not SQL_RE.search("delete the lease from the inbox")
