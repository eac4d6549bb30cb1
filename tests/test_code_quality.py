"""The code base stays ruff- and mypy-clean: part of the test suite, so the README's one test command
checks everything CI checks."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_ruff_reports_no_problems() -> None:
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_reports_no_problems() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
