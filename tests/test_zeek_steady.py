"""The Zeek view's steady path (in-order ACK / PSH+ACK segments on an established connection skip
the general steps of TCPSessionAdapter::Process) gives exactly the rows of the general path: on
every capture, on random interleaved traffic with losses, retransmissions, probes and reordering,
and around sequence and acknowledgement numbers that wrap."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from pcapbuild import Frame, pcap_file
from test_fast_path import real_captures
from test_loops_mixed import _connection, traffic

from analyzers import zeek
from analyzers.errors import LoopcapError


def rows_both_ways(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], list[Any], int]:
    """Zeek's rows with the steady path, without it, and how many segments took it."""
    taken = 0
    real = zeek._TcpConn._steady

    def counting(self: Any, *a: Any) -> bool:
        nonlocal taken
        ok = real(self, *a)
        taken += ok
        return ok

    monkeypatch.setattr(zeek._TcpConn, "_steady", counting)
    fast = zeek.zeek_analyze(path).rows
    monkeypatch.setattr(zeek, "STEADY_PATH", False)
    slow = zeek.zeek_analyze(path).rows
    monkeypatch.setattr(zeek, "STEADY_PATH", True)
    return fast, slow, taken


#: a steady path's oracle: (result with it, result without it, segments it took) for a capture
BothWays = Callable[[Path, pytest.MonkeyPatch], tuple[Any, Any, int]]


def same_both_ways(both_ways: BothWays, paths: Iterable[Path], monkeypatch: pytest.MonkeyPatch, *,
                   skip_unreadable: bool = False) -> tuple[int, int]:
    """Every capture of ``paths`` analyzed both ways, asserting the same result; returns (captures
    compared, segments the steady path took).  ``skip_unreadable``: a capture the analysis refuses is
    left out (else its error is raised)."""
    checked = taken = 0
    for p in paths:
        try:
            fast, slow, n = both_ways(p, monkeypatch)
        except LoopcapError:
            if skip_unreadable:
                continue
            raise
        assert fast == slow, p
        checked += 1
        taken += n
    return checked, taken


def test_the_steady_path_gives_the_same_rows_on_every_real_capture(monkeypatch: pytest.MonkeyPatch) -> None:
    checked, taken = same_both_ways(rows_both_ways, real_captures(), monkeypatch, skip_unreadable=True)
    assert checked >= 80 and taken > 2_000  # (a fresh clone: about 3,000; with bench/out's cuts many more)


class _NearWrap(random.Random):
    """Initial sequence numbers a few hundred bytes below 2**32: the numbers wrap mid-connection."""

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        if start == 2**32 and stop is None:
            return 2**32 - super().randrange(1, 4000)
        return super().randrange(start, stop, step) if stop is not None else super().randrange(start)


def random_and_wrapping(seed: int, tmp_path: Path) -> tuple[Path, Path]:
    """Two captures for a steady path's oracle tests: random interleaved traffic, and eight
    connections whose sequence numbers wrap mid-connection."""
    mixed = tmp_path / "mixed.pcap"
    mixed.write_bytes(traffic(seed))
    rng = _NearWrap(seed)
    frames, t = [], 10**18
    for c in range(8):
        for pause, pkt in _connection(rng, "127.0.0.1", 41000 + c, 80):
            t += pause
            frames.append(Frame(t, pkt))
    wrapping = tmp_path / "wrapping.pcap"
    wrapping.write_bytes(pcap_file(frames))
    return mixed, wrapping


@pytest.mark.parametrize("seed", range(16))
def test_the_steady_path_gives_the_same_rows_on_random_traffic_and_wrapping_numbers(
        seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, taken = same_both_ways(rows_both_ways, random_and_wrapping(seed, tmp_path), monkeypatch)
    assert taken > 0
