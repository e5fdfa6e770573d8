"""The code stays ruff- and mypy-clean (skipped where the tools are not installed)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from .conftest import ROOT


def test_ruff() -> None:
    if shutil.which("ruff") is None:
        pytest.skip("ruff not installed")
    r = subprocess.run(["ruff", "check", "spoolq", "tests", "bench"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy() -> None:
    pytest.importorskip("mypy")
    r = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
