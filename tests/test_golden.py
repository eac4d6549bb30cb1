"""Every fixture capture in pcaps/ has golden outputs (JSON and walkthrough text) that the current
code must reproduce exactly.  After an intended change: ``pytest tests/test_golden.py --update-golden``
and review the diff."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import PCAPS, fixture_pcaps

from analyzers.analysis import analyze_file
from analyzers.walkthrough import render

GOLDEN = PCAPS / "golden"
_FIXTURES = fixture_pcaps()


def _doc(path: Path) -> dict[str, object]:
    doc = analyze_file(path).to_dict()
    doc["file"] = path.name  # golden files must not depend on where the checkout lives
    return doc


@pytest.mark.parametrize("capture", _FIXTURES, ids=[p.name for p in _FIXTURES])
def test_analysis_matches_golden_json_and_text(capture: Path, update_golden: bool) -> None:
    doc = _doc(capture)
    text = render(doc)
    jpath = GOLDEN / (capture.name + ".json")
    tpath = GOLDEN / (capture.name + ".txt")
    new_json = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    if update_golden:
        GOLDEN.mkdir(exist_ok=True)
        jpath.write_text(new_json)
        tpath.write_text(text)
        return
    assert jpath.exists(), f"no golden file for {capture.name}: run pytest --update-golden and review it"
    assert new_json == jpath.read_text(), f"JSON differs from {jpath} (pytest --update-golden to accept)"
    assert text == tpath.read_text(), f"walkthrough differs from {tpath} (pytest --update-golden to accept)"


def test_every_golden_file_has_its_fixture() -> None:
    names = {p.name for p in _FIXTURES}
    for g in GOLDEN.glob("*"):
        stem = g.name.rsplit(".", 1)[0]
        assert stem in names, f"{g} has no fixture capture in pcaps/"


def test_pcaps_holds_a_fixture_per_scenario() -> None:
    assert len(_FIXTURES) >= 10, "pcaps/ should hold one fixture per generator scenario"
    assert (PCAPS / "README.md").exists()
