"""Differential test: tshark 4.x (through the corpus truth builder) and loopcap agree on every
fixture in pcaps/.  Runs tshark for real; in CI tshark is installed by scripts/setup."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import corpus_dir, fixture_pcaps, need_corpus, need_tshark
from truthcompare import compare

from analyzers.analysis import AnalysisOptions, analyze_file

_FIXTURES = fixture_pcaps()


@pytest.fixture(scope="module")
def truths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    need_tshark()
    need_corpus()
    out = tmp_path_factory.mktemp("truth")
    raw = tmp_path_factory.mktemp("raw")
    builder = corpus_dir() / "tools" / "build_truth.py"
    manifest = out / "manifest.json"
    manifest.write_text("{}")
    proc = subprocess.run([sys.executable, str(builder), "--out", str(out), "--raw", str(raw),
                           "--manifest", str(manifest), *map(str, _FIXTURES)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return {p.name: json.loads((out / (p.name + ".json")).read_text()) for p in _FIXTURES}


@pytest.mark.tshark
@pytest.mark.parametrize("capture", _FIXTURES, ids=[p.name for p in _FIXTURES])
def test_fixture_analysis_agrees_with_tshark(capture: Path, truths: dict[str, dict[str, object]]) -> None:
    doc = analyze_file(capture, AnalysisOptions()).to_dict()
    ag = compare(doc, truths[capture.name], capture.name)
    assert not ag.mismatches, "\n".join(ag.mismatches)
