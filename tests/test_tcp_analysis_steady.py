"""tcp.analysis' steady path (in-order ACK / ACK+PSH segments that no check can flag skip the
general checks of tcp_analyze_sequence_number) leaves exactly the state of the general path: the
flags, duplicate ACKs, completeness (and what each frame shows of it) and initial RTT of every
conversation, and every field of both directions' bookkeeping, on every capture, on random interleaved traffic with losses,
retransmissions, probes and reordering, and around sequence numbers that wrap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_fast_path import real_captures
from test_zeek_steady import random_and_wrapping, same_both_ways

from analyzers import tcpanalysis
from analyzers.analysis import AnalysisOptions, analyze_file
from analyzers.tcpanalysis import TcpAnalysisObserver, TcpAnalyzer


def _state(path: Path) -> dict[int, Any]:
    ob = TcpAnalysisObserver(record_completeness=True)
    analyze_file(path, AnalysisOptions(observers=[ob]))
    return {stream: (conv.to_dict(), conv.completeness_before,
                     [{k: getattr(f, k) for k in f.__slots__} for f in conv.flows])
            for stream, conv in ob.analyzer.conversations.items()}


def state_both_ways(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[int, Any], dict[int, Any], int]:
    """The analysis with the steady path, without it, and how many segments took it."""
    taken = 0
    real = TcpAnalyzer._steady

    def counting(*a: Any) -> bool:
        nonlocal taken
        ok = real(*a)
        taken += ok
        return ok

    monkeypatch.setattr(TcpAnalyzer, "_steady", staticmethod(counting))
    fast = _state(path)
    monkeypatch.setattr(tcpanalysis, "STEADY_PATH", False)
    slow = _state(path)
    monkeypatch.setattr(tcpanalysis, "STEADY_PATH", True)
    return fast, slow, taken


def test_the_steady_path_leaves_the_general_paths_state_on_every_real_capture(
        monkeypatch: pytest.MonkeyPatch) -> None:
    checked, taken = same_both_ways(state_both_ways, real_captures(), monkeypatch, skip_unreadable=True)
    assert checked >= 80 and taken > 2_000


@pytest.mark.parametrize("seed", range(16))
def test_the_steady_path_leaves_the_general_paths_state_on_random_traffic_and_wrapping_numbers(
        seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, taken = same_both_ways(state_both_ways, random_and_wrapping(seed, tmp_path), monkeypatch)
    assert taken > 0
