"""loopcap's Wireshark TCP analysis (analyzers.tcpanalysis) against tshark 4.0, frame by frame.

For every TCP frame of every capture, the set of ``tcp.analysis.*`` flags, the duplicate-ACK number
and ``tcp.completeness`` must be what tshark (one pass, ``-o tcp.analyze_sequence_numbers:TRUE``)
shows.  A single-pass tshark shows on each frame the completeness reached *before* that frame, so the
analyzer is asked to record that value too.

Captures: the shared corpus and pcaps/ (the acceptance set), Zeek's regression traces (extra
coverage, with two named exceptions), and seeded random conversations written byte by byte (every
flag, including the rare ones: zero-window probes and their ACKs, keep-alive ACKs, window full,
spurious and fast retransmissions, ACKed unseen segments, reused ports, sequence wrap-around).
Unit tests pin each flag on a minimal conversation without tshark.
"""

from __future__ import annotations

import random
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import REPO, corpus_dir, fixture_pcaps, need_corpus, need_tshark
from pcapbuild import M32, Frame, TcpFlow, as_records, opt_mss, opt_wscale, pcap_file

from analyzers.analysis import AnalysisOptions, analyze_file, analyze_records
from analyzers.tcpanalysis import ALL_FLAGS, TcpAnalysisObserver, completeness_label, names_of

LINKTYPE_RAW = 101
TSHARK_FIELDS = [f"tcp.analysis.{n}" for n in ALL_FLAGS] + [
    "tcp.analysis.duplicate_ack_num", "tcp.completeness", "tcp.stream"]

_CORPUS = sorted((corpus_dir() / "captures").glob("*.pcap*")) if (corpus_dir() / "captures").is_dir() else []
_FIXTURES = fixture_pcaps()
_ZEEK_DIR = REPO.parent / "shared" / "zeek-conformance" / "traces"
_ZEEK_TRACES = sorted(_ZEEK_DIR.glob("*.pcap*")) if _ZEEK_DIR.is_dir() else []

#: Zeek traces: (trace, what) -> (frames, reason).  Neither is about the analysis itself.
ZEEK_TRACE_EXCEPTIONS: dict[tuple[str, str], tuple[frozenset[int], str]] = {
    ("ftp__ipv4.pcap", "completeness"): (
        frozenset((23, 24, 28, 29, 30, 31, 34, 42, 43, 46, 47, 48, 50, 51)),
        "FTP data connections: Wireshark's FTP dissector creates their conversation when it reads the "
        "PORT/PASV reply, so the data connection's SYN does not find a new conversation and does not "
        "count (completeness 30 instead of 31); loopcap runs no FTP dissector"),
    ("ftp__ipv6.pcap", "completeness"): (
        frozenset((31, 32, 36, 37, 38, 39, 40, 43, 48, 49, 53, 54, 55, 56, 57, 60, 71, 72, 76, 77, 78, 79, 80, 84)),
        "FTP data connections (EPRT/EPSV): as for ftp__ipv4.pcap"),
}


# ---------------------------------------------------------------------------------------------
# running both sides


def tshark_analysis(path: Path) -> dict[int, tuple[list[str], int, int]]:
    """frame -> (tcp.analysis flags present, duplicate_ack_num, tcp.completeness) for TCP frames."""
    tshark = need_tshark()
    cmd = [tshark, "-n", "-r", str(path), "-o", "tcp.analyze_sequence_numbers:TRUE",
           "-o", "tcp.relative_sequence_numbers:TRUE", "-T", "fields", "-E", "occurrence=f", "-e", "frame.number"]
    for f in TSHARK_FIELDS:
        cmd += ["-e", f]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out: dict[int, tuple[list[str], int, int]] = {}
    n = len(ALL_FLAGS)
    for line in proc.stdout.splitlines():
        parts = line.split("\t")
        values = parts[1:]
        if len(values) < n + 3 or values[n + 2] == "":
            continue  # not TCP (or TCP only quoted inside ICMP)
        names = [name for name, v in zip(ALL_FLAGS, values[:n], strict=True) if v]
        out[int(parts[0])] = (names, int(values[n] or 0), int(values[n + 1] or 0))
    return out


def loopcap_analysis(path: Path) -> dict[int, tuple[list[str], int, int]]:
    ob = TcpAnalysisObserver(record_completeness=True)
    analyze_file(path, AnalysisOptions(observers=[ob], http=False))
    out: dict[int, tuple[list[str], int, int]] = {}
    for conv in ob.analyzer.conversations.values():
        for frame, before in conv.completeness_before.items():
            out[frame] = (names_of(conv.frame_flags.get(frame, 0)), conv.dupacks.get(frame, (0, 0))[0], before)
    return out


@dataclass
class Comparison:
    """Per flag: frames where tshark or loopcap (or both) show it, and frames where both agree."""

    total: Counter[str] = field(default_factory=Counter)
    agree: Counter[str] = field(default_factory=Counter)
    diffs: list[tuple[str, int, str, object, object]] = field(default_factory=list)

    def add(self, other: Comparison) -> None:
        self.total.update(other.total)
        self.agree.update(other.agree)
        self.diffs.extend(other.diffs)

    def table(self) -> str:
        return "\n".join(f"  {k:<25} {self.agree[k]:>6} / {self.total[k]}" for k in sorted(self.total))


def compare(path: Path, skip: dict[str, frozenset[int]] | None = None) -> Comparison:
    """Compare frame by frame; ``skip``: what -> frames left out ("frames": everything)."""
    skip = skip or {}
    theirs = tshark_analysis(path)
    mine = loopcap_analysis(path)
    cmp = Comparison()
    for frame, (names, dup, compl) in theirs.items():
        if frame in skip.get("frames", frozenset()):
            continue
        m = mine.get(frame)
        mnames, mdup, mcompl = m if m is not None else ([], 0, -1)
        for n in ALL_FLAGS:
            if n in names or n in mnames:
                cmp.total[n] += 1
                if (n in names) == (n in mnames) and m is not None:
                    cmp.agree[n] += 1
                else:
                    cmp.diffs.append((path.name, frame, n, n in names, n in mnames))
        if dup:
            cmp.total["duplicate_ack_num"] += 1
            if dup == mdup:
                cmp.agree["duplicate_ack_num"] += 1
            else:
                cmp.diffs.append((path.name, frame, "duplicate_ack_num", dup, mdup))
        if frame not in skip.get("completeness", frozenset()):
            cmp.total["completeness"] += 1
            if compl == mcompl:
                cmp.agree["completeness"] += 1
            else:
                cmp.diffs.append((path.name, frame, "completeness", compl, mcompl))
    return cmp


# ---------------------------------------------------------------------------------------------
# the acceptance set: shared corpus and pcaps/


@pytest.mark.tshark
@pytest.mark.parametrize("capture", _CORPUS + _FIXTURES, ids=[p.name for p in _CORPUS + _FIXTURES])
def test_flags_match_tshark_frame_by_frame(capture: Path) -> None:
    if capture in _CORPUS:
        need_corpus()
    cmp = compare(capture)  # a frame tshark decodes as TCP and loopcap does not is a completeness diff
    assert not cmp.diffs, "\n".join(map(str, cmp.diffs[:50]))


@pytest.mark.tshark
def test_acceptance_set_agreement_table() -> None:
    """The per-flag table of the closing note (``pytest -s`` prints it)."""
    need_corpus()
    total = Comparison()
    for cap in _CORPUS + _FIXTURES:
        total.add(compare(cap))
    print("\n" + total.table())
    assert not total.diffs
    assert total.total["completeness"] >= 2900
    for flag in ("retransmission", "fast_retransmission", "duplicate_ack", "window_update", "out_of_order"):
        assert total.total[flag] > 0, flag


def tshark_initial_rtts(path: Path) -> dict[int, float]:
    """tcp.stream -> tcp.analysis.initial_rtt (seconds) where tshark shows one."""
    proc = subprocess.run([need_tshark(), "-n", "-r", str(path), "-T", "fields", "-e", "tcp.stream",
                           "-e", "tcp.analysis.initial_rtt"], capture_output=True, text=True, timeout=300)
    out: dict[int, float] = {}
    for line in proc.stdout.splitlines():
        stream, _, rtt = line.partition("\t")
        if stream and rtt:
            out[int(stream)] = float(rtt)
    return out


@pytest.mark.tshark
def test_initial_rtt_matches_tshark() -> None:
    need_corpus()
    checked = 0
    for cap in _CORPUS + _FIXTURES:
        ob = TcpAnalysisObserver()
        doc = analyze_file(cap, AnalysisOptions(observers=[ob], http=False)).to_dict()
        theirs = tshark_initial_rtts(cap)
        for item in doc["tcp"]:
            rtt = item["analysis"]["initial_rtt"]
            want = theirs.get(item["stream"])
            assert (rtt is None) == (want is None), (cap.name, item["stream"])
            if want is not None:
                assert rtt == pytest.approx(want, abs=1e-9), (cap.name, item["stream"])
                checked += 1
    assert checked > 20


# ---------------------------------------------------------------------------------------------
# Zeek's traces (extra coverage)


@pytest.mark.tshark
@pytest.mark.parametrize("trace", _ZEEK_TRACES, ids=[p.name for p in _ZEEK_TRACES])
def test_flags_match_tshark_on_zeek_traces(trace: Path) -> None:
    skip = {what: frames for (name, what), (frames, _) in ZEEK_TRACE_EXCEPTIONS.items() if name == trace.name}
    cmp = compare(trace, skip)
    assert not cmp.diffs, "\n".join(map(str, cmp.diffs[:50]))
    if skip:  # the exceptions are real: without them the comparison does differ
        assert compare(trace).diffs


# ---------------------------------------------------------------------------------------------
# generated conversations


def _conversation(rng: random.Random, t0: int, cport: int, sport: int) -> list[tuple[int, bytes]]:
    """A random but plausible exchange: handshake (or a SYN-ACK first, or mid-stream), then data, ACKs,
    duplicate ACKs, retransmissions, losses, reordering, zero windows and probes, keep-alives, window
    updates, window-filling segments, bogus ACKs; then a FIN exchange, a RST or nothing."""
    def isn() -> int:
        return rng.choice([rng.randrange(1 << 32), (1 << 32) - rng.randrange(1, 3000)])

    f = TcpFlow("10.0.0.1", cport, "10.0.0.2", sport, cisn=isn(), sisn=isn())
    out: list[tuple[int, bytes]] = []
    now = [t0]

    def emit(p: bytes, gap: int | None = None) -> None:
        now[0] += gap if gap is not None else rng.choice(
            [1_000, 5_000, 50_000, 2_000_000, 30_000_000, 300_000_000])
        out.append((now[0], p))

    sent: dict[bool, list[tuple[int, bytes]]] = {True: [], False: []}
    win = {True: 65535, False: 65535}
    mode = rng.random()
    if mode < 0.8:
        copt = opt_mss(1460) + (opt_wscale(rng.randrange(0, 9)) if rng.random() < 0.7 else b"")
        sopt = opt_mss(1460) + (opt_wscale(rng.randrange(0, 9)) if rng.random() < 0.7 else b"")
        emit(f.c("S", options=copt))
        if rng.random() < 0.2:
            emit(f.c("S", options=copt, seq=f.next_seq[True] - 1, advance=False), gap=rng.choice([1000, 10**9]))
        emit(f.s("SA", options=sopt))
        if rng.random() < 0.1:
            emit(f.s("SA", options=sopt, seq=f.next_seq[False] - 1, advance=False))
        emit(f.c("A"))
    elif mode < 0.9:
        emit(f.s("SA"))
        emit(f.c("A"))
    events = ["data", "ack", "dupack", "retrans", "drop", "reorder", "zwin", "zwp", "keepalive", "winupd",
              "fill", "badack"]
    weights = [30, 15, 8, 8, 3, 3, 3, 3, 3, 3, 3, 2]
    for _ in range(rng.randrange(5, 60)):
        side = rng.random() < 0.5
        ev = rng.choices(events, weights)[0]
        if ev in ("data", "fill"):
            pl = bytes(rng.choice([1, 2, 10, 100, 536, 1000, 1460] if ev == "data" else [64, 200, 1000]))
            seq = f.next_seq[side]
            emit(f.seg(side, "PA", pl, window=win[side]))
            sent[side].append((seq, pl))
        elif ev == "ack":
            win[side] = rng.choice([65535, 65535, 30000, 1000, 200, 64])
            emit(f.seg(side, "A", window=win[side]))
        elif ev == "dupack":
            for _ in range(rng.randrange(1, 5)):
                emit(f.seg(side, "A", window=win[side]), gap=rng.choice([1000, 100_000]))
        elif ev == "retrans" and sent[side]:
            seq, pl = rng.choice(sent[side][-5:])
            emit(f.seg(side, "PA", pl, seq=seq, advance=False, window=win[side]),
                 gap=rng.choice([500, 2000, 10_000_000, 500_000_000]))
        elif ev == "drop":
            pl = bytes(rng.choice([10, 100, 1460]))
            sent[side].append((f.next_seq[side], pl))
            f.seg(side, "PA", pl)  # sent, never captured
        elif ev == "reorder":
            s1 = f.seg(side, "PA", bytes(100), window=win[side])
            s2 = f.seg(side, "PA", bytes(rng.choice([50, 100])), window=win[side])
            emit(s2)
            emit(s1, gap=rng.choice([100, 1000, 5_000_000]))
        elif ev == "zwin":
            win[side] = 0
            emit(f.seg(side, "A", window=0))
        elif ev == "zwp":
            emit(f.seg(side, "PA", b"\x00", advance=False, window=win[side]))
        elif ev == "keepalive":
            emit(f.seg(side, "A", rng.choice([b"", b"\x00"]), seq=f.next_seq[side] - 1, advance=False,
                       window=win[side]))
            if rng.random() < 0.7:
                emit(f.seg(not side, "A", window=win[not side]))
        elif ev == "winupd":
            w = rng.choice([65535, 40000, 8192])
            win[side] = w - 1 if w == win[side] else w
            emit(f.seg(side, "A", window=win[side]))
        elif ev == "badack":
            emit(f.seg(side, "A", ack=(f.next_seq[not side] + rng.choice([-50, 1000, 5000])) & M32,
                       window=win[side]))
    end = rng.random()
    if end < 0.5:
        emit(f.c("FA"))
        emit(f.s("FA"))
        emit(f.c("A"))
    elif end < 0.7:
        emit(f.seg(rng.random() < 0.5, "RA"))
    elif end < 0.8:
        emit(f.c("FA"))
        emit(f.c("FA", seq=f.next_seq[True] - 1, advance=False))
        emit(f.s("A"))
    return out


def generated_capture(seed: int) -> bytes:
    rng = random.Random(seed)
    t0 = 1_700_000_000_000_000_000
    packets = _conversation(rng, t0, 40000 + seed % 1000, 8080)
    if rng.random() < 0.3:  # the same ports again, with a new ISN: reused ports
        packets += _conversation(rng, packets[-1][0] + 1_000_000, 40000 + seed % 1000, 8080)
    if rng.random() < 0.3:  # an interleaved second connection
        packets = sorted(packets + _conversation(rng, t0 + 500, 50000 + seed % 1000, 9090), key=lambda x: x[0])
    return pcap_file([Frame(ts, p) for ts, p in packets], LINKTYPE_RAW)


@pytest.mark.tshark
def test_flags_match_tshark_on_generated_conversations(tmp_path: Path) -> None:
    total = Comparison()
    for seed in range(60):
        path = tmp_path / f"generated-{seed}.pcap"
        path.write_bytes(generated_capture(seed))
        total.add(compare(path))
    print("\n" + total.table())
    assert not total.diffs, "\n".join(map(str, total.diffs[:50]))
    for flag in ALL_FLAGS:  # every flag was exercised
        assert total.total[flag] > 0, flag


# ---------------------------------------------------------------------------------------------
# unit tests (no tshark): one flag each, as tshark 4.0 marks them


def _flags(packets: list[bytes], step_ns: int = 1_000_000) -> tuple[dict[int, list[str]], TcpAnalysisObserver]:
    ob = TcpAnalysisObserver(record_completeness=True)
    analyze_records(as_records(packets, LINKTYPE_RAW, step_ns=step_ns), AnalysisOptions(observers=[ob], http=False))
    return ob.frame_flags(), ob


def test_clean_conversation_has_no_flags_and_is_complete() -> None:
    f = TcpFlow()
    pk = [*f.handshake(), f.c("PA", b"hello"), f.s("A"), f.s("PA", b"hi"), f.c("A"),
          f.c("FA"), f.s("FA"), f.c("A")]
    flags, ob = _flags(pk)
    assert flags == {}
    conv = ob.analyzer.conversations[0]
    assert conv.completeness == 31
    assert conv.to_dict()["completeness_flags"] == ["SYN", "SYN-ACK", "ACK", "DATA", "FIN"]
    assert completeness_label(31) == "Complete, WITH_DATA"
    # a single-pass tshark shows the value before each frame
    assert [conv.completeness_before[i] for i in range(1, 10)] == [0, 1, 3, 7, 15, 15, 15, 15, 31]
    assert conv.to_dict()["initial_rtt"] == pytest.approx(0.002)


def test_retransmission_after_the_out_of_order_window() -> None:
    f = TcpFlow()
    pk = [*f.handshake(), f.c("PA", b"x" * 100), f.c("PA", b"x" * 100, seq=f.next_seq[True] - 100, advance=False)]
    flags, _ = _flags(pk, step_ns=50_000_000)
    assert flags == {5: ["retransmission"]}


def test_out_of_order_within_the_initial_rtt() -> None:
    f = TcpFlow()
    hs = f.handshake()
    a = f.c("PA", b"a" * 100)
    b = f.c("PA", b"b" * 100)
    flags, _ = _flags([*hs, b, a], step_ns=100_000)
    assert flags == {4: ["lost_segment"], 5: ["out_of_order"]}


def test_fast_retransmission_after_two_duplicate_acks() -> None:
    f = TcpFlow()
    hs = f.handshake()
    d1 = f.c("PA", b"a" * 100)
    d2 = f.c("PA", b"b" * 100)
    acks = [f.s("A", ack=f.next_seq[True] - 100) for _ in range(3)]
    rtx = f.c("PA", b"b" * 100, seq=f.next_seq[True] - 100, advance=False)
    flags, ob = _flags([*hs, d1, d2, *acks, rtx], step_ns=1_000_000)
    assert flags == {7: ["duplicate_ack"], 8: ["duplicate_ack"], 9: ["retransmission", "fast_retransmission"]}
    assert ob.analyzer.conversations[0].dupacks == {7: (1, 6), 8: (2, 6)}


def test_spurious_retransmission_of_acknowledged_data() -> None:
    f = TcpFlow()
    pk = [*f.handshake(), f.c("PA", b"x" * 10), f.s("A"), f.c("PA", b"x" * 10, seq=f.next_seq[True] - 10,
                                                               advance=False)]
    flags, _ = _flags(pk)
    assert flags == {6: ["retransmission", "spurious_retransmission"]}


def test_lost_segment_and_acked_unseen_segment() -> None:
    f = TcpFlow()
    hs = f.handshake()
    f.c("PA", b"lost" * 10)  # never captured
    after = f.c("PA", b"seen")
    flags, _ = _flags([*hs, after, f.s("A")])
    assert flags == {4: ["lost_segment"], 5: ["ack_lost_segment"]}


def test_zero_window_probe_and_its_ack() -> None:
    f = TcpFlow()
    hs = f.handshake()
    pk = [*hs, f.c("PA", b"x" * 10), f.s("A", window=0), f.c("PA", b"y", advance=False),
          f.s("A", window=0)]
    flags, _ = _flags(pk)
    assert flags == {5: ["zero_window"], 6: ["zero_window_probe"], 7: ["zero_window", "zero_window_probe_ack"]}


def test_keep_alive_and_keep_alive_ack() -> None:
    f = TcpFlow()
    hs = f.handshake()
    pk = [*hs, f.c("A", seq=f.next_seq[True] - 1, advance=False), f.s("A")]
    flags, _ = _flags(pk)
    assert flags == {4: ["keep_alive"], 5: ["keep_alive_ack"]}


def test_window_update_and_window_full() -> None:
    f = TcpFlow()
    hs = f.handshake(client_options=opt_wscale(0), server_options=opt_wscale(0))
    pk = [*hs, f.s("A", window=100), f.c("PA", b"z" * 100), f.s("A", window=100), f.s("A", window=4000)]
    flags, _ = _flags(pk)
    assert flags == {4: ["window_update"], 5: ["window_full"], 7: ["window_update"]}


def test_window_full_needs_the_window_scale_known() -> None:
    f = TcpFlow()
    pk = [f.c("A"), f.s("A", window=100), f.c("PA", b"z" * 100)]  # no handshake: scale unknown
    flags, _ = _flags(pk)
    assert "window_full" not in flags.get(3, [])


def test_reused_ports_new_conversation_and_syn_retransmission() -> None:
    f = TcpFlow()
    first = [*f.handshake(), f.c("RA")]
    g = TcpFlow(cisn=777_000, sisn=888_000)
    again = [g.c("S"), g.c("S", seq=g.next_seq[True] - 1, advance=False)]
    flags, ob = _flags([*first, *again])
    assert flags == {5: ["reused_ports"], 6: ["retransmission"]}
    assert ob.analyzer.conversations[1].completeness == 1
    assert ob.analyzer.conversations[0].completeness == 1 | 2 | 4 | 32


def test_completeness_ignores_a_first_packet_that_is_not_a_syn() -> None:
    f = TcpFlow()
    f.handshake()
    _, ob = _flags([f.c("PA", b"mid"), f.s("A"), f.c("FA"), f.s("FA")])
    assert ob.analyzer.conversations[0].completeness == 4 | 16  # the first data segment does not count
    assert completeness_label(20) == "Incomplete"


def test_contribution_to_the_document() -> None:
    capture = REPO / "pcaps" / "tcp-echo-ipv4.pcap"
    doc = analyze_file(capture, AnalysisOptions(observers=[TcpAnalysisObserver()])).to_dict()
    for item in doc["tcp"]:
        a = item["analysis"]
        assert set(a) == {"flags", "counts", "duplicate_acks", "completeness", "completeness_flags",
                          "completeness_label", "initial_rtt"}
        assert set(a["counts"]) == set(ALL_FLAGS)
        assert a["completeness"] == 31 and a["completeness_label"] == "Complete, WITH_DATA"
        assert all(isinstance(k, str) for k in a["flags"])
