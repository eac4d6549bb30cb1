"""A streamed analysis (connections handed out, summarized and spooled as soon as they are over)
writes exactly the document of the in-memory analysis, in bounded memory."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest
from pcapbuild import Frame, ethernet, pcap_file, tcp_packet, udp_packet
from test_fast_path import real_captures

from analyzers.analysis import AnalysisOptions, analyze_file
from analyzers.errors import LoopcapError
from analyzers.jsonout import document_text
from analyzers.streaming import OrderedSpool, analyze_file_to_json
from analyzers.tcp import CLOSED_LINGER_NS


def streamed(path: Path, options: AnalysisOptions | None = None) -> str:
    out = io.StringIO()
    analyze_file_to_json(path, out, options)
    return out.getvalue()


def in_memory(path: Path, options: AnalysisOptions | None = None) -> str:
    return document_text(analyze_file(path, options).to_dict())


def test_streamed_and_in_memory_documents_are_identical_on_every_real_capture() -> None:
    checked = 0
    for p in real_captures():
        try:
            want = in_memory(p)
        except LoopcapError:
            with pytest.raises(LoopcapError):
                streamed(p)
            continue
        assert streamed(p) == want, p
        checked += 1
    assert checked >= 34


def test_streamed_documents_keep_options_like_server_ports_and_no_http() -> None:
    p = next(p for p in real_captures() if p.name == "http-get-ipv4.pcap")
    opts = AnalysisOptions(server_ports=frozenset({8080}), http=False)
    assert streamed(p, opts) == in_memory(p, opts)


def test_a_streamed_analysis_refuses_observers_that_cannot_stream_and_kept_payloads(tmp_path: Path) -> None:
    from analyzers.ladder import PacketLog

    p = next(iter(real_captures()))
    with pytest.raises(ValueError, match="observers"):
        analyze_file_to_json(p, io.StringIO(), AnalysisOptions(keep_payload=True))
    with pytest.raises(ValueError, match="observers"):
        analyze_file_to_json(p, io.StringIO(), AnalysisOptions(observers=[PacketLog()]))


def peers(checksums: str = "auto") -> AnalysisOptions:
    """The peers' views as ``loopcap analyze`` runs them (a fresh set per analysis)."""
    from loopcap.cli import _options

    return _options((), peers=True, checksums=checksums)


def test_streamed_peers_views_give_the_in_memory_document_on_every_real_capture() -> None:
    """Zeek's rows written as Zeek removes its connections, each stream's tcp.analysis and Zeek links
    added when the stream is done: byte for byte the in-memory document, on every capture."""
    checked = 0
    for p in real_captures():
        try:
            want = in_memory(p, peers())
        except LoopcapError:
            continue
        assert streamed(p, peers()) == want, p
        checked += 1
    assert checked >= 80


@pytest.mark.parametrize("checksums", ["auto", "verify", "ignore"])
def test_streamed_peers_views_hold_a_stream_until_zeek_has_removed_its_connection(tmp_path: Path,
                                                                                   checksums: str) -> None:
    """Connections that Zeek removes before loopcap hands them out, after (the long one, open to the
    end), reused 4-tuples (one Zeek connection for two loopcap streams or the other way round),
    UDP: the same document in every checksum mode."""
    path = many_connections(tmp_path, 400, gap_s=20.0)  # 2 hours: every Zeek timer fires
    assert streamed(path, peers(checksums)) == in_memory(path, peers(checksums))
    quick = many_connections(tmp_path, 300, gap_s=0.01)  # 3 s: nothing times out before the end
    assert streamed(quick, peers(checksums)) == in_memory(quick, peers(checksums))


def test_streamed_peers_views_forget_zeek_connections_once_they_are_written(tmp_path: Path) -> None:
    """Zeek's connection objects point at their endpoints and back: with the cyclic collector paused
    they would all live to the end.  Once logged and linked they are released."""
    import gc

    from analyzers import zeek

    path = many_connections(tmp_path, 2000, gap_s=10.0)
    opts = peers()
    live: list[int] = []
    tracker = opts.observers[0].tracker  # type: ignore[attr-defined]
    real_tcp = tracker.tcp

    def tcp(seg: object, *a: object, **k: object) -> object:
        if seg.frame % 5000 == 0:  # type: ignore[attr-defined]
            live.append(sum(isinstance(o, zeek._TcpConn) and o.tracker is tracker for o in gc.get_objects()))
        return real_tcp(seg, *a, **k)

    tracker.tcp = tcp
    analyze_file_to_json(path, io.StringIO(), opts)
    assert len(live) >= 3
    assert max(live) <= 51, live  # the long one, and one per 4-tuple until loopcap hands its stream out


def test_the_spool_gives_items_back_in_stream_order_and_skips_missing_numbers() -> None:
    spool = OrderedSpool()
    order = list(range(0, 200, 2))
    random.Random(1).shuffle(order)
    for s in order:
        spool.put(s, json.dumps({"stream": s, "pad": "x" * s}).encode())
    assert [json.loads(t)["stream"] for t in spool] == list(range(0, 200, 2))
    assert len(spool.items()) == 100
    spool.close()


def many_connections(tmp_path: Path, conns: int, gap_s: float) -> Path:
    """``conns`` short TCP connections (handshake, a request and reply, four-way close), each
    starting ``gap_s`` after the previous one, the same four-tuple every 50 connections (with a new
    ISN, as port reuse), one long connection open from the first to the last packet, and UDP."""
    frames: list[Frame] = []
    t = 1_000_000_000_000_000_000
    step = int(gap_s * 1e9)
    # UDP every tenth connection from one of 3 ports (a port's datagrams at most 60 s apart for gaps up
    # to 2 s); with longer gaps more often, from 2 ports, so that they are 45 to 90 s apart (gaps up to
    # 45 s): within the streamed trackers' two minutes (loopcap's conversation goes on, as in memory)
    # and, at the gaps of 10 and 20 s used here, 80 s: past Zeek's one-minute UDP timeout (its
    # connections split)
    udp_every, udp_ports = (10, 3) if gap_s <= 2 else (max(1, int(45 / gap_s)), 2)
    long_a, long_b = ("127.0.0.9", 5000), ("127.0.0.1", 22)
    frames.append(Frame(t, ethernet(tcp_packet(long_a[0], long_a[1], long_b[0], long_b[1], 1, 0, "S"))))
    frames.append(Frame(t + 1, ethernet(tcp_packet(long_b[0], long_b[1], long_a[0], long_a[1], 7, 2, "SA"))))
    frames.append(Frame(t + 2, ethernet(tcp_packet(long_a[0], long_a[1], long_b[0], long_b[1], 2, 8, "A"))))
    for i in range(conns):
        t += step
        port = 30000 + i % 50
        isn = 1000 * i
        c, s = ("127.0.0.1", port), ("127.0.0.1", 80)

        def seg(fwd: bool, seq: int, ack: int, flags: str, data: bytes = b"", k: int = 0,
                c: tuple[str, int] = c, s: tuple[str, int] = s, t: int = t) -> Frame:
            a, b = (c, s) if fwd else (s, c)
            return Frame(t + k * 1000, ethernet(tcp_packet(a[0], a[1], b[0], b[1], seq, ack, flags, payload=data)))
        frames += [seg(True, isn, 0, "S", k=0), seg(False, 77, isn + 1, "SA", k=1), seg(True, isn + 1, 78, "A", k=2),
                   seg(True, isn + 1, 78, "PA", b"ping %d" % i, k=3), seg(False, 78, isn + 7 + len(str(i)), "PA",
                                                                         b"pong", k=4),
                   seg(True, isn + 7 + len(str(i)), 82, "FA", k=5), seg(False, 82, isn + 8 + len(str(i)), "A", k=6),
                   seg(False, 82, isn + 8 + len(str(i)), "FA", k=7), seg(True, isn + 8 + len(str(i)), 83, "A", k=8)]
        if i % udp_every == 0:
            frames.append(Frame(t + 9000, ethernet(udp_packet("127.0.0.1", 40000 + (i // udp_every) % udp_ports,
                                                              "127.0.0.1", 53, b"q"))))
        if i % 25 == 0:  # the long connection trickles on
            frames.append(Frame(t + 9500, ethernet(tcp_packet(long_a[0], long_a[1], long_b[0], long_b[1],
                                                              2 + i, 8, "PA", payload=b"k"))))
    path = tmp_path / "many.pcap"
    path.write_bytes(pcap_file(frames))
    return path


def test_closed_connections_are_handed_out_while_reading_not_at_the_end(tmp_path: Path) -> None:
    path = many_connections(tmp_path, 3000, gap_s=1.0)  # 3000 s of capture: far past the linger
    handed: list[tuple[int, int]] = []
    from analyzers.analysis import analyze_records
    from analyzers.pcapfile import CaptureReader

    def done(conn: object) -> None:
        handed.append((conn.stream, conn.last_ts))  # type: ignore[attr-defined]

    with CaptureReader.open(path) as reader:
        res = analyze_records(reader, AnalysisOptions(on_tcp_done=done, on_udp_done=lambda c: None))
    assert res.tcp == [] and len(handed) == 3001
    # the long connection (stream 0) stays to the end; the others went out while reading, at most
    # linger + one expiry step (4096 packets, ~400 s here) after their close: ~520 are left at the end
    streams = [s for s, _ in handed]
    assert streams.index(0) > 2400
    assert streams[:2400] == list(range(1, 2401))
    assert sorted(streams) == list(range(3001))
    text = streamed(path)
    assert text == in_memory(path)
    doc = json.loads(text)
    assert [c["stream"] for c in doc["tcp"]] == list(range(3001))
    assert CLOSED_LINGER_NS == 60 * 10**9


def test_reused_four_tuples_hand_the_old_connection_out_at_once(tmp_path: Path) -> None:
    path = many_connections(tmp_path, 200, gap_s=0.001)  # all within the linger: only reuse frees
    order: list[int] = []
    from analyzers.analysis import analyze_records
    from analyzers.pcapfile import CaptureReader

    with CaptureReader.open(path) as reader:
        analyze_records(reader, AnalysisOptions(on_tcp_done=lambda c: order.append(c.stream),
                                                on_udp_done=lambda c: None))
    # connection i (stream i + 1) shares its 4-tuple with connection i + 50: out when that one starts
    assert order[:150] == list(range(1, 151))
    assert streamed(path) == in_memory(path)


def test_a_packet_for_a_connection_already_handed_out_is_a_new_stream_and_a_warning(tmp_path: Path) -> None:
    """The one place where streaming differs from Wireshark: a 4-tuple that comes back after the
    tracker let it go (UDP silent for two minutes; TCP closed a minute ago) -- said in a warning,
    and decided by the packets' times alone, not by when the tracker last looked at its clock."""
    t = 1_700_000_000 * 10**9
    c, s = ("127.0.0.1", 41000), ("127.0.0.1", 7)
    frames = [Frame(t, ethernet(udp_packet(c[0], c[1], s[0], s[1], b"a"))),
              Frame(t + 601 * 10**9, ethernet(udp_packet(c[0], c[1], s[0], s[1], b"b"))),
              Frame(t + 602 * 10**9, ethernet(tcp_packet(c[0], 5555, s[0], 80, 10, 0, "R")))]
    frames += [Frame(t + 610 * 10**9 + k, ethernet(udp_packet("127.0.0.2", 9, "127.0.0.2", 9, b"x")))
               for k in range(4096)]
    frames.append(Frame(t + 663 * 10**9, ethernet(tcp_packet(c[0], 5555, s[0], 80, 10, 0, "R"))))
    path = tmp_path / "late.pcap"
    path.write_bytes(pcap_file(frames))
    doc = json.loads(streamed(path))
    ref = json.loads(in_memory(path))
    assert [u["packets"]["client"] for u in ref["udp"]] == [2, 4096]
    assert [t["stream"] for t in ref["tcp"]] == [0]
    assert len(doc["tcp"]) == 2 and len(doc["udp"]) == 3
    assert any(w.startswith("1 TCP stream(s) began with a packet of a 4-tuple") and "1 (was 0)" in w
               for w in doc["warnings"]), doc["warnings"]
    assert any(w.startswith("1 UDP stream(s)") and "1 (was 0)" in w for w in doc["warnings"]), doc["warnings"]
    assert sharded(path, 2) == sharded(path, 3) == streamed(path)


def test_a_udp_conversation_is_let_go_after_two_minutes_of_silence_and_not_before(tmp_path: Path) -> None:
    """UDP has no close, so silence ends a conversation in a streamed analysis: two minutes of it
    (twice Zeek's udp_inactivity_timeout).  That bound is what keeps a long capture's memory to the
    conversations still talking; 119 s of silence keeps the conversation, 121 s starts a new one."""
    t = 1_700_000_000 * 10**9
    c, s = ("127.0.0.1", 41002), ("127.0.0.1", 53)
    frames = [Frame(t, ethernet(udp_packet(c[0], c[1], s[0], s[1], b"q1"))),
              Frame(t + 119 * 10**9, ethernet(udp_packet(s[0], s[1], c[0], c[1], b"r1"))),
              Frame(t + 240 * 10**9, ethernet(udp_packet(c[0], c[1], s[0], s[1], b"q2")))]
    path = tmp_path / "udp-idle.pcap"
    path.write_bytes(pcap_file(frames))
    ref = json.loads(in_memory(path))
    assert [(u["packets"]["client"], u["packets"]["server"]) for u in ref["udp"]] == [(2, 1)]
    doc = json.loads(streamed(path))
    assert [(u["stream"], u["packets"]["client"], u["packets"]["server"]) for u in doc["udp"]] == [
        (0, 1, 1), (1, 1, 0)]
    assert any(w.startswith("1 UDP stream(s)") and "1 (was 0)" in w for w in doc["warnings"]), doc["warnings"]
    assert sharded(path, 2) == streamed(path)


def test_an_open_connection_silent_past_the_idle_limit_is_ended_even_on_the_fast_path(tmp_path: Path) -> None:
    t = 1_700_000_000 * 10**9
    c, s = ("127.0.0.1", 41001), ("127.0.0.1", 22)

    def seg(fwd: bool, seq: int, ack: int, flags: str, at_s: float, data: bytes = b"") -> Frame:
        a, b = (c, s) if fwd else (s, c)
        return Frame(t + int(at_s * 1e9), ethernet(tcp_packet(a[0], a[1], b[0], b[1], seq, ack, flags, payload=data)))

    frames = [seg(True, 100, 0, "S", 0), seg(False, 500, 101, "SA", 0.001), seg(True, 101, 501, "A", 0.002),
              seg(True, 101, 501, "PA", 1, b"ls\n"), seg(False, 501, 104, "PA", 1.01, b"a b c\n"),
              seg(True, 104, 507, "A", 1.02),
              seg(True, 104, 507, "PA", 700, b"exit\n")]  # 11 minutes later: same connection for tshark
    path = tmp_path / "idle.pcap"
    path.write_bytes(pcap_file(frames))
    ref = json.loads(in_memory(path))
    doc = json.loads(streamed(path))
    assert len(ref["tcp"]) == 1 and ref["tcp"][0]["payload"]["client"]["bytes"] == 8
    assert [c["payload"]["client"]["bytes"] for c in doc["tcp"]] == [3, 5]
    assert any(w.startswith("1 TCP stream(s) began") for w in doc["warnings"])
    assert sharded(path, 2) == streamed(path)


def test_past_the_lingering_cap_the_oldest_closed_connections_go_early(tmp_path: Path) -> None:
    """A capture closing thousands of connections a second must not keep them all for the linger:
    past MAX_LINGERING the oldest closed ones are handed out at the next look at the clock."""
    from analyzers.pcapfile import CaptureReader
    from analyzers.tcp import TcpTracker

    path = many_connections(tmp_path, 400, gap_s=0.001)  # 400 closes within half a second
    from analyzers.decode import Decoder, TcpSegment

    out: list[int] = []
    tracker = TcpTracker(on_done=lambda c: out.append(c.stream))
    tracker.max_lingering = 16
    dec = Decoder()
    peak = 0
    with CaptureReader.open(path) as reader:
        for i, rec in enumerate(reader):
            x = dec.decode(rec.frame, rec.ts_ns, rec.linktype, rec.data, rec.wirelen)
            if isinstance(x, TcpSegment):
                tracker.feed(x)
            if i % 100 == 99:
                tracker.expire(rec.ts_ns)
                peak = max(peak, len(tracker._live))
    tracker.finish()
    assert sorted(out) == list(range(401))
    assert peak <= 16 + 2 + 100 // 9 + 1  # the cap, the long connection, what closed since the last look
    assert tracker.late_count == 0  # nothing came back for them


def test_analyze_json_streams_one_file_and_prints_the_in_memory_document(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = many_connections(tmp_path, 300, gap_s=1.0)
    done = subprocess.run([sys.executable, "-m", "loopcap", "analyze", "--json", "--no-peers", "-q", str(path)],
                          capture_output=True, text=True, check=True)
    assert done.stdout == in_memory(path)


def sharded(path: Path, jobs: int, options: AnalysisOptions | None = None) -> str:
    from analyzers.shardstream import analyze_file_to_json_sharded

    out = io.StringIO()
    analyze_file_to_json_sharded(path, out, options, jobs=jobs)
    return out.getvalue()


def test_sharded_streaming_writes_the_single_process_document_on_every_real_capture() -> None:
    checked = 0
    for i, p in enumerate(real_captures()):
        try:
            want = in_memory(p)
        except LoopcapError:
            with pytest.raises(LoopcapError):
                sharded(p, 2)
            continue
        assert sharded(p, 2 + i % 2) == want, p
        checked += 1
    assert checked >= 34


def test_sharded_streaming_numbers_reused_and_late_four_tuples_like_one_process(tmp_path: Path) -> None:
    path = many_connections(tmp_path, 600, gap_s=0.5)
    want = streamed(path)
    for jobs in (2, 3, 5):
        assert sharded(path, jobs) == want


def test_sharded_runs_forget_handed_out_flows_as_one_process_does(tmp_path: Path) -> None:
    """A streamed run remembers the most recent handed-out flows of each set of the flow-shard hash
    (two per set): a flow forgotten in one process is forgotten in every shard count, so the late
    warnings are the same."""
    from analyzers.tombstones import TOMBSTONE_WAYS, flow_set

    t = 1_700_000_000 * 10**9
    lo = "127.0.0.1"
    # three sets, modulo 6 0, 1 and 2 (in both shards of 2, in the three of 3); the hash reads an
    # address's last byte only, so the flows from 127.0.m.1 for six m share their port pair's set
    def set_of(p: int) -> int:
        return flow_set(((b"\x7f\0\0\x01", p), (b"\x7f\0\0\x01", 53)))
    ports = [next(p for p in range(20000, 21000) if set_of(p) % 6 == r) for r in range(3)]
    flows = [(f"127.0.{m}.1", p) for p in ports for m in range(1, 7)]
    frames = [Frame(t + k, ethernet(udp_packet(a, p, lo, 53, b"hi"))) for k, (a, p) in enumerate(flows)]
    # 200 s later a busy flow: the trackers look at their clock and hand every silent flow out
    frames += [Frame(t + 200 * 10**9 + k, ethernet(udp_packet("127.0.0.2", 9, "127.0.0.2", 9, b"x")))
               for k in range(4096)]
    # then every flow comes back: only the two of each set handed out last are remembered
    frames += [Frame(t + 210 * 10**9 + k, ethernet(udp_packet(a, p, lo, 53, b"again")))
               for k, (a, p) in enumerate(flows)]
    path = tmp_path / "forgotten.pcap"
    path.write_bytes(pcap_file(frames))
    one = streamed(path)
    warned = [w for w in json.loads(one)["warnings"] if " UDP stream(s)" in w]
    assert TOMBSTONE_WAYS == 2 and len(warned) == 1 and warned[0].startswith("6 UDP stream(s)"), warned
    for jobs in (2, 3):
        assert sharded(path, jobs) == one


@pytest.mark.parametrize("rows", [1, 3, 1 << 13])
def test_the_shards_index_sections_are_merged_a_chunk_at_a_time(tmp_path: Path, rows: int,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent numbers every connection by merging the shards' index sections (read ``rows``
    rows at a time) against their creation frames: a chunk boundary anywhere changes nothing."""
    import analyzers.shardstream as shardstream

    path = many_connections(tmp_path, 300, gap_s=0.5)
    want = streamed(path)
    monkeypatch.setattr(shardstream, "ROWS_CHUNK", rows)
    assert sharded(path, 3) == want


def test_a_worker_hands_back_the_same_few_integers_however_many_connections_it_spooled(tmp_path: Path) -> None:
    """Its index and creation frames follow the lines in its spool: what crosses to the parent (and
    what the worker keeps of them) does not grow with the connections."""
    import pickle

    from analyzers.shardstream import _stream_shard

    sizes = []
    for conns in (50, 800):
        path = many_connections(tmp_path, conns, gap_s=0.5)
        spool = _stream_shard(str(path), 1, 2, AnalysisOptions(), str(tmp_path / f"spool-{conns}"))
        assert spool.error is None and spool.lines("tcp") > conns // 4
        sizes.append(len(pickle.dumps(spool)))
    assert sizes[1] - sizes[0] < 64, sizes  # (a few integers may take a byte more)


def test_a_shard_workers_tcp_analysis_remembers_four_tuples_in_its_own_sets_only(tmp_path: Path) -> None:
    """tcp.analysis' memory of 4-tuples (for "reused ports") is per set of the flow-shard hash, like the
    trackers' tombstones: a worker allocates only its shard's sets, and still flags what one process
    flags (the sharded documents equal the single one: the peers' tests above)."""
    from analyzers.shardstream import _stream_shard
    from analyzers.tcpanalysis import REMEMBERED_TUPLE_WAYS, TcpAnalysisObserver
    from analyzers.tombstones import SETS, FlowMemory

    path = many_connections(tmp_path, 60, gap_s=0.5)
    sizes = {}
    for shards in (1, 2, 4):
        opts = peers()
        spool = _stream_shard(str(path), shards - 1, shards, opts, str(tmp_path / f"peers-{shards}"))
        assert spool.error is None
        ob = next(o for o in opts.observers if isinstance(o, TcpAnalysisObserver))
        assert ob.shard == (shards - 1, shards)
        assert isinstance(ob._seen, FlowMemory)
        sizes[shards] = len(ob._seen._keys)  # its slots
    assert sizes == {n: (SETS // n + 1) * REMEMBERED_TUPLE_WAYS for n in (1, 2, 4)}


def test_a_spool_cut_short_is_a_clear_error(tmp_path: Path) -> None:
    from analyzers.shardstream import _LocalSpool, _stream_shard, document_from_spools

    path = many_connections(tmp_path, 100, gap_s=0.5)
    spools = [_stream_shard(str(path), k, 2, AnalysisOptions(), str(tmp_path / f"shard-{k}")) for k in range(2)]
    with open(spools[1].path, "r+b") as f:
        f.truncate(spools[1].created["tcp"][0] + 8)  # part of the creation frames are gone
    with pytest.raises(LoopcapError, match="spool ends early"):  # (numbering the late ones reads them first)
        _, doc = document_from_spools(spools, _LocalSpool)
        list(doc["tcp"])


def test_a_file_that_breaks_in_a_worker_is_the_same_clear_error_with_its_hint(tmp_path: Path) -> None:
    from analyzers.errors import CaptureFormatError
    from analyzers.parallel import carry, raise_carried

    err = CaptureFormatError("no such file", path="x.pcap", hint="Check the path.")
    with pytest.raises(CaptureFormatError) as got:
        raise_carried(carry(err))
    assert str(got.value) == str(err) and got.value.hint == "Check the path."
    bad = tmp_path / "not.pcap"
    bad.write_bytes(b"hello, this is not a capture at all")
    with pytest.raises(CaptureFormatError) as direct:
        streamed(bad)
    with pytest.raises(CaptureFormatError) as via_shards:
        sharded(bad, 2)
    assert str(via_shards.value) == str(direct.value)


def test_several_files_are_json_lines_streamed_by_workers_in_the_order_given(tmp_path: Path) -> None:
    import subprocess
    import sys

    from conftest import fixture_pcaps

    from analyzers.jsonout import json_line

    paths = [str(p) for p in fixture_pcaps()[:5]] + [str(many_connections(tmp_path, 300, gap_s=1.0))]
    want = "".join(json_line(analyze_file(p).to_dict()) for p in paths)
    for jobs in ("1", "2", "3"):
        done = subprocess.run([sys.executable, "-m", "loopcap", "analyze", "--json", "--no-peers", "-q", "-j", jobs,
                               *paths], capture_output=True, text=True, check=True)
        assert done.stdout == want, jobs
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture, not at all")
    done = subprocess.run([sys.executable, "-m", "loopcap", "analyze", "--json", "--no-peers", "-q", "-j", "2",
                           paths[0], str(bad), paths[1]], capture_output=True, text=True)
    assert done.returncode == 2 and "not a pcap or pcapng capture" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == json_line(analyze_file(paths[0]).to_dict())


def test_a_large_capture_with_the_peers_views_says_that_no_peers_is_faster(monkeypatch: pytest.MonkeyPatch,
                                                                           tmp_path: Path) -> None:
    from click.testing import CliRunner
    from conftest import fixture_pcaps

    from loopcap import cli

    p = str(fixture_pcaps()[0])
    monkeypatch.setattr(cli, "BIG_CAPTURE_BYTES", 1000)
    runner = CliRunner()
    noisy = runner.invoke(cli.cli, ["analyze", "--json", p])
    assert noisy.exit_code == 0 and "--no-peers gives the same analysis" in noisy.stderr
    assert "keeps every connection in memory" not in noisy.stderr  # one file, JSON: streamed
    several = runner.invoke(cli.cli, ["analyze", "--json", p, p])
    assert "--no-peers gives" in several.stderr and "keeps every connection" not in several.stderr  # streamed
    tables = runner.invoke(cli.cli, ["analyze", "--format", "parquet", "-w", str(tmp_path), p])
    assert "--no-peers gives" in tables.stderr and "keeps every connection" not in tables.stderr  # streamed
    for args in (["--json", "--no-peers"], ["--json", "-q"]):
        quiet = runner.invoke(cli.cli, ["analyze", *args, p])
        assert quiet.exit_code == 0 and "--no-peers" not in quiet.stderr
    monkeypatch.setattr(cli, "BIG_CAPTURE_BYTES", 1 << 40)
    small = runner.invoke(cli.cli, ["analyze", "--json", p])
    assert "--no-peers" not in small.stderr


@pytest.mark.parametrize("args", [[], ["--no-peers"], ["--no-peers", "-j", "2"]])
def test_the_text_walkthrough_is_streamed_and_equals_the_in_memory_one(args: list[str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``loopcap analyze FILE`` (the walkthrough, with or without the peers' views, sharded when the
    file is large) renders a connection at a time from a streamed analysis: the same text as the
    in-memory document rendered whole, warnings included."""
    from click.testing import CliRunner
    from conftest import corpus_dir, fixture_pcaps

    import analyzers.parallel
    from analyzers.walkthrough import render
    from loopcap import cli

    monkeypatch.setattr(analyzers.parallel, "DEFAULT_SPLIT_BYTES", 1)  # every file counts as large
    paths = [str(p) for p in fixture_pcaps()] + [str(p) for p in sorted(corpus_dir().rglob("*.pcap*"))[:6]]
    runner = CliRunner()
    for p in paths:
        opts = peers() if not args else AnalysisOptions()
        doc = analyze_file(p, opts).to_dict()
        got = runner.invoke(cli.cli, ["analyze", "-q", *args, p])
        assert got.exit_code == 0, got.output
        assert got.stdout == render(doc), p
        assert got.stderr == "".join(f"loopcap: warning: {p}: {w}\n" for w in doc["warnings"])
