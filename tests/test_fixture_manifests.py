"""Analysing each fixture capture reproduces the manifest of the generator run that made it: the
end-to-end self-check (every connection, handshake, teardown kind and initiator, exact bytes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import fixture_pcaps

from analyzers.analysis import analyze_file
from capture.check import check_manifest

_FIXTURES = fixture_pcaps()


@pytest.mark.parametrize("capture", _FIXTURES, ids=[p.name for p in _FIXTURES])
def test_fixture_analysis_reproduces_its_generator_manifest(capture: Path) -> None:
    manifest = json.loads(capture.with_name(capture.name + ".manifest.json").read_text())
    report = check_manifest(analyze_file(capture).to_dict(), manifest)
    assert report.ok, report.text()
    assert report.checks >= 2


def test_self_check_fails_when_a_payload_differs() -> None:
    capture = next(p for p in _FIXTURES if p.name == "tcp-echo-ipv4.pcap")
    manifest = json.loads(capture.with_name(capture.name + ".manifest.json").read_text())
    manifest["tcp"][0]["client_sent"]["sha256"] = "0" * 64
    manifest["tcp"][0]["expected_teardown"] = ["three-way"]
    report = check_manifest(analyze_file(capture).to_dict(), manifest)
    assert not report.ok
    assert any("SHA-256" in f for f in report.failures)
    assert any("teardown 'four-way'" in f for f in report.failures)
