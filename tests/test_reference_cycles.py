"""The analysis leaves no reference cycles that grow with the capture.

The cyclic garbage collector is paused while a capture is analyzed (``analysis.gc_paused``): every
connection lives until it is handed out, and the collector would only re-walk a growing heap.  That
is safe only while reference counting frees everything the analysis drops.  A cycle made per block,
per packet or per connection is then memory that nothing frees until the analysis ends.  It happened
in the compiled build: mypyc compiles a nested function into an object that shares its parent's
locals, so every call of the parent left a cycle, and the numpy column readers nested in
``blockloop._columns`` kept every block's arrays: 456 MB instead of 73 MB on the 1M-packet benchmark
file.  ``tests/test_compiled_build.py`` runs this file against the compiled modules too.

The test counts what ``gc.collect()`` finds after an analysis run with the collector off, while the
caller still holds the options and the result: a small capture and one four times larger (more
blocks, packets and connections) must leave the same number of cycles behind.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
from pcapbuild import Frame, TcpFlow, ethernet, pcap_file, udp_packet

from analyzers.analysis import analyze_file
from analyzers.streaming import analyze_file_streamed
from loopcap.cli import _options

START_NS = 1_700_000_000_000_000_000


def capture(path: Path, connections: int) -> Path:
    """``connections`` TCP connections (handshake, six 1400-byte segments and their ACKs, FIN close)
    and as many one-datagram UDP conversations: about 9.5 KB per connection, so 400 of them fill
    several of the readers' blocks."""
    frames = []
    t = START_NS
    for i in range(connections):
        flow = TcpFlow(cport=20000 + i)
        packets = flow.handshake()
        for _ in range(6):
            packets += [flow.c("PA", bytes(1400)), flow.s("A")]
        packets += [flow.c("FA"), flow.s("FA"), flow.c("A"), udp_packet("10.0.0.1", 30000 + i, "10.0.0.2", 53, b"q" * 40)]
        for p in packets:
            t += 1000
            frames.append(Frame(t, ethernet(p)))
    path.write_bytes(pcap_file(frames))
    return path


def cycles_left(path: Path, peers: bool, streamed: bool) -> int:
    """How many unreachable objects the collector finds after one analysis of ``path``."""
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        opts = _options((), peers=peers)  # the CLI's: with the peers' views by default
        docs: list[dict[str, Any]] = []
        if streamed:
            res = analyze_file_streamed(path, docs.append, opts)
        else:
            res = analyze_file(path, opts)
        found = gc.collect()
        assert res.packets > 0
        del opts, res, docs
    finally:
        if was:
            gc.enable()
    return found


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("cycles")
    return capture(d / "small.pcap", 100), capture(d / "large.pcap", 400)


@pytest.mark.parametrize("peers", [False, True], ids=["no-peers", "peers"])
@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "in-memory"])
def test_analysis_leaves_no_cycles_that_grow_with_blocks_packets_or_connections(
        captures: tuple[Path, Path], peers: bool, streamed: bool) -> None:
    small, large = captures
    assert large.stat().st_size > 3 * 1024 * 1024  # several of the readers' blocks (1 MiB, 256 KiB)
    left_small = cycles_left(small, peers, streamed)
    left_large = cycles_left(large, peers, streamed)
    assert left_large == left_small, (
        f"{left_small} objects in cycles after 100 connections, {left_large} after 400: something the "
        "analysis makes per block, packet or connection is freed only by the paused cyclic collector")
    assert left_small < 200  # a few per file (the compiled build's closures), never per packet
