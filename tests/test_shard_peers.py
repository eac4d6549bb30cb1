"""The peers' views on flow shards: one large capture on every core, with Wireshark's tcp.analysis
and Zeek's view, writes byte for byte the document of one process.

Zeek's view is the hard part: its timers run on every packet, whoever's flow it is, and its
conn.log lists rows in the order connections were removed, across all flows.  Each shard therefore
advances Zeek's clock on every packet, timers due at the same instant fire in an order each shard
can tell alone (their connection's first frame), and the parent merges the shards' rows by where
they were removed."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from pcapbuild import Frame, ethernet, pcap_file, tcp_packet, udp_packet
from test_fast_path import real_captures
from test_streaming import in_memory, many_connections, peers, sharded, streamed

from analyzers.analysis import AnalysisOptions
from analyzers.errors import LoopcapError
from analyzers.zeek import FINISHED, zeek_analyze


def test_sharded_peers_views_write_the_single_process_document_on_every_real_capture() -> None:
    checked = 0
    for i, p in enumerate(real_captures()):
        try:
            want = in_memory(p, peers())
        except LoopcapError:
            continue
        assert sharded(p, 2 + i % 2, peers()) == want, p
        checked += 1
    assert checked >= 80


def simultaneous(tmp_path: Path, groups: int = 12, seed: int = 7) -> Path:
    """Groups of connections whose packets carry the very same timestamps (one microsecond apart at
    most), so that Zeek's timers of different flows (and shards) fall due at the same instant: some
    complete and close, some reset, some only SYN (attempt timers), some stay open (inactivity), UDP
    too; the gaps between groups (seconds to many minutes) let different timers fire between them."""
    rng = random.Random(seed)
    frames: list[Frame] = []
    t = 1_600_000_000_000_000_000
    for g in range(groups):
        t += rng.choice((1, 3, 30, 90, 301, 3700)) * 1_000_000_000
        conns = [(("127.0.0.1", 20000 + 97 * g + j), ("127.0.0.2", 80 + j % 3)) for j in range(8)]
        fates = ["close"] + [rng.choice(("close", "rst", "syn", "open", "half")) for _ in conns[1:]]
        steps: list[list[bytes]] = [[] for _ in range(8)]
        for (c, s), fate in zip(conns, fates, strict=True):
            def pk(fwd: bool, seq: int, ack: int, flags: str, data: bytes = b"", c: tuple[str, int] = c,
                   s: tuple[str, int] = s) -> bytes:
                a, b = (c, s) if fwd else (s, c)
                return ethernet(tcp_packet(a[0], a[1], b[0], b[1], seq, ack, flags, payload=data))
            steps[0].append(pk(True, 100, 0, "S"))
            if fate == "syn":
                continue
            steps[1].append(pk(False, 500, 101, "SA"))
            steps[2].append(pk(True, 101, 501, "A"))
            steps[3].append(pk(True, 101, 501, "PA", b"hello"))
            if fate == "rst":
                steps[4].append(pk(False, 501, 106, "R"))
            elif fate == "close":
                steps[4].append(pk(True, 106, 501, "FA"))
                steps[5].append(pk(False, 501, 107, "FA"))
                steps[6].append(pk(True, 107, 502, "A"))
                if c == conns[0][0]:  # its 4-tuple at once again: a new connection (a new ISN)
                    steps[7].append(pk(True, 90000, 0, "S"))
            elif fate == "half":
                steps[4].append(pk(True, 106, 501, "FA"))
        udp = [ethernet(udp_packet("127.0.0.1", 40000 + 11 * g + j, "127.0.0.3", 53, b"q")) for j in range(4)]
        steps[2].extend(udp)
        for k, packets in enumerate(steps):
            for data in packets:
                frames.append(Frame(t + k * 1000, data))  # one timestamp for the whole step
    path = tmp_path / "simultaneous.pcap"
    path.write_bytes(pcap_file(frames))
    return path


@pytest.mark.parametrize("checksums", ["auto", "ignore"])
def test_zeek_timers_due_at_the_same_instant_in_different_shards_merge_in_one_process_order(
        tmp_path: Path, checksums: str) -> None:
    path = simultaneous(tmp_path)
    want = in_memory(path, peers(checksums))
    assert want.count('"uid"') > 150
    for jobs in (2, 3, 5):
        assert sharded(path, jobs, peers(checksums)) == want, jobs


def test_one_process_logs_zeek_rows_in_the_order_of_where_they_were_removed(tmp_path: Path) -> None:
    """What the parent's merge relies on: every connection knows where it was removed (frame, then
    timers before the packet, by time and first frame), and one process logs them in that order."""
    phases: set[int] = set()
    for path in (simultaneous(tmp_path), many_connections(tmp_path, 400, gap_s=20.0)):
        log = zeek_analyze(path)
        keys = [c.removed_at for c in log.connections]
        assert None not in keys and len(keys) > 100
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        assert any(k[0] == FINISHED for k in keys)
        phases.update(k[1] for k in keys)
    assert phases == {0, 1, 2}  # by timers, by a packet (a reused 4-tuple), at the end


@pytest.mark.parametrize("checksums", ["auto", "verify", "ignore"])
def test_sharded_peers_views_hold_streams_for_zeek_and_number_reused_four_tuples(tmp_path: Path,
                                                                                 checksums: str) -> None:
    path = many_connections(tmp_path, 400, gap_s=20.0)  # every Zeek timer fires; 4-tuples are reused
    want = in_memory(path, peers(checksums))
    for jobs in (2, 4):
        assert sharded(path, jobs, peers(checksums)) == want


def test_a_sharded_analysis_refuses_kept_payloads_and_observers_that_cannot_follow_a_shard(tmp_path: Path) -> None:
    from analyzers.shardstream import analyze_file_to_json_sharded, shards_with

    path = many_connections(tmp_path, 20, gap_s=1.0)

    class Counter:  # sees every packet: it cannot follow one shard's flows
        def on_tcp(self, *a: object) -> None: ...

        def on_udp(self, *a: object) -> None: ...

        def on_other(self, *a: object) -> None: ...

        def contribute(self, *a: object) -> None: ...

        def start_streaming(self, *a: object) -> None: ...

    assert shards_with(peers()) and shards_with(AnalysisOptions())
    for opts in (AnalysisOptions(keep_payload=True), AnalysisOptions(observers=[Counter()])):
        assert not shards_with(opts)
        with pytest.raises(ValueError, match="flow shard"):
            analyze_file_to_json_sharded(path, io.StringIO(), opts, jobs=2)


def test_analyze_with_the_peers_views_shards_a_large_file_and_runs_files_in_parallel(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default command (the peers' views) uses every core: a large file by flow shards, several
    files a worker each; the output is the one process's."""
    from click.testing import CliRunner

    import analyzers.parallel
    import analyzers.shardstream
    from analyzers.jsonout import json_line
    from loopcap import cli

    one = many_connections(tmp_path, 300, gap_s=2.0)
    two = simultaneous(tmp_path)
    runner = CliRunner()
    calls: list[int] = []
    real = analyzers.shardstream.analyze_file_sharded

    def spy(*a: object, jobs: int = 2, **k: object) -> object:
        calls.append(jobs)
        return real(*a, jobs=jobs, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(analyzers.shardstream, "analyze_file_sharded", spy)
    monkeypatch.setattr(analyzers.parallel, "DEFAULT_SPLIT_BYTES", 1)  # every file counts as large
    got = runner.invoke(cli.cli, ["analyze", "--json", "-q", "-j", "3", str(one)])
    assert got.exit_code == 0 and calls == [3]
    assert got.stdout == in_memory(one, peers())
    both = runner.invoke(cli.cli, ["analyze", "--json", "-q", "-j", "2", str(one), str(two)])
    assert both.exit_code == 0
    import json
    assert both.stdout == "".join(json_line(json.loads(in_memory(p, peers()))) for p in (one, two))
    assert streamed(two, peers()) == in_memory(two, peers())


def test_the_record_loop_shards_the_peers_views_like_the_block_loop(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference loop (a record at a time, used where the block reader is not) gives the same
    sharded document as the block loop, which gives the single-process one."""
    from analyzers import blockloop

    paths = [simultaneous(tmp_path), many_connections(tmp_path, 200, gap_s=20.0)]
    paths += [p for p in real_captures() if p.suffix == ".pcapng"][:4]
    want = [in_memory(p, peers()) for p in paths]
    monkeypatch.setattr(blockloop, "available", lambda reader: False)  # the workers are forked: they see it
    for p, w in zip(paths, want, strict=True):
        assert sharded(p, 3, peers()) == w, p


def test_a_sharded_run_shows_the_progress_of_its_slowest_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every shard reads the whole file: the bar follows the one furthest behind, while the workers
    run (not only at the end), up to the whole file and every packet."""
    import analyzers.blockloop
    import analyzers.shardstream as shardstream
    from analyzers.shardstream import analyze_file_sharded

    path = many_connections(tmp_path, 3000, gap_s=0.05)
    monkeypatch.setattr(analyzers.blockloop, "OBSERVED_BLOCK_BYTES", 4096)  # many blocks: many updates
    monkeypatch.setattr(shardstream, "PROGRESS_EVERY_S", 0.01)
    seen: list[tuple[str, int, int]] = []

    class Recorder:
        def start_file(self, name: str, size: int) -> None:
            seen.append(("start", size, 0))

        def update(self, file_bytes: int, packets: int) -> None:
            seen.append(("update", file_bytes, packets))

        def advance_file(self, size: int, packets: int = 0) -> None:
            seen.append(("advance", size, packets))

    docs: list[object] = []
    res = analyze_file_sharded(path, docs.append, peers(), jobs=2, progress=Recorder())  # type: ignore[arg-type]
    size = path.stat().st_size
    assert seen[0] == ("start", size, 0)
    updates = [(b, n) for what, b, n in seen if what == "update"]
    assert updates == sorted(updates) and len(set(updates)) >= 3
    assert any(0 < b < size for b, _ in updates) and updates[-1] == (size, res.packets)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 20])
def test_a_shards_zeek_rows_are_read_back_line_by_line_across_chunk_boundaries(
        chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows sit after the connections in a shard's spool; they are read a chunk at a time
    (locally or from a Dask worker) and cut into lines, a line split across chunks included."""
    import analyzers.shardstream as shardstream

    rows = [b"1 0 5 %d {\"uid\":\"C%s\"}" % (i, b"x" * (i % 13)) for i in range(40)]
    head = b"connections' lines before the rows"
    data = head + b"\n".join(rows) + b"\n"
    closed: list[bool] = []

    class Reader:
        def read(self, offset: int, length: int) -> bytes:
            return data[offset:offset + length]

        def close(self) -> None:
            closed.append(True)

    monkeypatch.setattr(shardstream, "LINES_CHUNK", chunk)
    assert list(shardstream._lines(Reader(), len(head), len(data) - len(head))) == rows
    assert list(shardstream._lines(Reader(), len(head), len(data) - len(head) - 1)) == rows  # no last newline
    assert closed == [True, True]
