"""Golden expectations (analyzers/expect.py): only the fields an expectation holds count, and every
difference is one readable line naming where it is."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import PCAPS, fixture_pcaps

from analyzers.analysis import analyze_file
from analyzers.expect import MAX_DIFFERENCES, compare_expectation, make_expectation


def _doc(name: str) -> dict[str, Any]:
    return analyze_file(PCAPS / name).to_dict()


@pytest.fixture(scope="module")
def echo() -> dict[str, Any]:
    return _doc("tcp-echo-ipv4.pcap")


def test_a_capture_matches_its_own_expectation(echo: dict[str, Any]) -> None:
    assert compare_expectation(echo, make_expectation(echo)) == []


@pytest.mark.parametrize("capture", fixture_pcaps(), ids=lambda p: p.name)
def test_every_fixture_matches_its_expectation_after_a_json_round_trip(capture: Path) -> None:
    doc = analyze_file(capture).to_dict()
    exp = json.loads(json.dumps(make_expectation(doc)))
    assert compare_expectation(doc, exp) == []


def test_only_the_fields_in_the_expectation_count(echo: dict[str, Any]) -> None:
    assert compare_expectation(echo, {"tcp": [{"stream": 0, "teardown": {"kind": "four-way"}}]}) == []
    assert compare_expectation(echo, {}) == []


def test_a_different_value_is_one_line_with_its_path(echo: dict[str, Any]) -> None:
    exp = {"tcp": [{"stream": 0, "teardown": {"kind": "reset", "initiator": "client"},
                    "payload": {"server": {"bytes": 50}}}]}
    assert compare_expectation(echo, exp) == [
        'tcp[stream 0].teardown.kind: expected "reset", got "four-way"',
        "tcp[stream 0].payload.server.bytes: expected 50, got 49",
    ]


def test_a_field_missing_from_the_analysis_is_a_difference(echo: dict[str, Any]) -> None:
    exp = {"tcp": [{"stream": 0, "handshake": {"zeek_state": "SF"}}]}
    assert compare_expectation(echo, exp) == [
        'tcp[stream 0].handshake.zeek_state: missing from the analysis (expected "SF")']


def test_connections_are_matched_by_stream_and_extra_ones_reported() -> None:
    doc = _doc("concurrent-ipv4.pcap")
    exp = make_expectation(doc)
    exp["tcp"] = [exp["tcp"][2], exp["tcp"][0]]  # order does not matter, stream numbers do
    out = compare_expectation(doc, exp)
    assert len(out) == 1
    assert out[0].startswith("tcp[stream 1]: unexpected (127.0.0.1:")
    assert out[0].endswith("-> 127.0.0.1:9999) (the expectation lists streams [0, 2])")
    exp["tcp"].append({"stream": 7, "client": {"ip": "127.0.0.1", "port": 1}, "server": {"ip": "127.0.0.1", "port": 2}})
    out = compare_expectation(doc, exp)
    assert "tcp[stream 7]: not in the analysis (127.0.0.1:1 -> 127.0.0.1:2); it has streams [0, 1, 2]" in out


def test_other_lists_compare_element_by_element_and_by_length() -> None:
    doc = _doc("udp-echo-ipv4.pcap")
    exp = make_expectation(doc)
    dg = exp["udp"][0]["datagrams"]
    dg[1]["len"] += 1
    del dg[-1]
    out = compare_expectation(doc, exp)
    assert out[0] == f"udp[stream 0].datagrams: expected {len(dg)} items, got {len(dg) + 1}"
    assert out[1] == f"udp[stream 0].datagrams[1].len: expected {dg[1]['len']}, got {dg[1]['len'] - 1}"


def test_lists_of_plain_values_are_shown_whole(echo: dict[str, Any]) -> None:
    out = compare_expectation(echo, {"tcp": [{"stream": 0, "teardown": {"time_wait": ["server"]}}],
                                     "warnings": []})
    assert out == ['tcp[stream 0].teardown.time_wait: expected ["server"], got ["client"]']


def test_an_empty_list_expects_nothing_there(echo: dict[str, Any]) -> None:
    assert compare_expectation(echo, {"udp": []}) == []
    assert compare_expectation(echo, {"tcp": []}) == ["tcp: expected 0 items, got 1"]


def test_types_are_compared_strictly_but_numbers_by_value(echo: dict[str, Any]) -> None:
    assert compare_expectation({"a": 1, "b": 0.1 + 0.2}, {"a": 1.0, "b": 0.3}) == []
    assert compare_expectation({"a": True}, {"a": 1}) == ["a: expected 1, got true"]
    assert compare_expectation({"a": 1}, {"a": "1"}) == ['a: expected "1", got 1']
    assert compare_expectation({"a": [1]}, {"a": {"x": 1}}) == ["a: expected an object, got a list [1]"]
    assert compare_expectation({"a": None}, {"a": []}) == ["a: expected a list, got null"]


def test_the_number_of_differences_is_bounded() -> None:
    doc = {"x": list(range(1000))}
    out = compare_expectation(doc, {"x": [{"v": i} for i in range(1000)]})
    assert len(out) == MAX_DIFFERENCES + 1 and out[-1].startswith("... (stopped after")


def test_expectation_leaves_out_ephemeral_client_ports_and_times(echo: dict[str, Any]) -> None:
    exp = make_expectation(echo)
    c = exp["tcp"][0]
    assert c["client"] == {"ip": "127.0.0.1"}
    assert c["server"] == {"ip": "127.0.0.1", "port": 9999}
    assert c["teardown"] == {"kind": "four-way", "initiator": "client", "reset_by": None, "time_wait": ["client"]}
    assert c["handshake"] == {"complete": True, "valid": True, "refused": False}
    assert c["payload"]["client"]["bytes"] == 21
    assert "time" not in json.dumps(exp).replace("time_wait", "")
    # a fresh capture of the same scenario (new ephemeral port, new ISNs, new times) still matches
    other = copy.deepcopy(echo)
    other["tcp"][0]["client"]["port"] += 1
    other["tcp"][0]["handshake"]["syn"]["seq"] += 12345
    other["tcp"][0]["time"]["first"] += 60
    assert compare_expectation(other, exp) == []
