"""loopcap agrees with tshark 4.0 on every capture of the shared corpus, field by field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import corpus_dir, need_corpus
from truthcompare import Agreement, compare

from analyzers.analysis import AnalysisOptions, analyze_file

_CAPTURES = sorted((corpus_dir() / "captures").glob("*.pcap*")) if (corpus_dir() / "captures").is_dir() else []


def _analyze(path: Path) -> tuple[dict[str, object], dict[str, object]]:
    corpus = need_corpus()
    truth = json.loads((corpus / "truth" / (path.name + ".json")).read_text())
    ports = frozenset(truth["made"]["server_ports"])
    doc = analyze_file(path, AnalysisOptions(server_ports=ports)).to_dict()
    return doc, truth


@pytest.mark.parametrize("capture", _CAPTURES, ids=[p.name for p in _CAPTURES])
def test_analysis_agrees_with_tshark_truth(capture: Path) -> None:
    doc, truth = _analyze(capture)
    ag = compare(doc, truth, capture.name)
    assert not ag.mismatches, "\n".join(ag.mismatches)
    assert doc["packets"] == truth["capture"]["packets"]  # type: ignore[index]


def test_corpus_is_present_and_covers_every_capture() -> None:
    corpus = need_corpus()
    names = {p.name for p in (corpus / "captures").iterdir()}
    assert len(names) >= 17
    assert {p.name[: -len(".json")] for p in (corpus / "truth").glob("*.json") if p.name != "INDEX.json"} >= names


def agreement_table() -> str:  # used by `python tests/test_corpus_truth.py` to print the figures
    total = Agreement()
    for cap in _CAPTURES:
        doc, truth = _analyze(cap)
        total.merge(compare(doc, truth, cap.name))
    return total.table() + "\n" + "\n".join(total.mismatches)


if __name__ == "__main__":
    print(agreement_table())
