"""Multi-core analysis (analyzers.parallel): every document equals the single-process one.

Many files go to a process pool; one large file is sharded by flow (each shard reads the whole file
and tracks only its share of 4-tuples), then merged and renumbered by creation frame.  The shard
boundary cases: stream numbering across shards, port reuse, IP fragments, ICMP quotes, damaged
headers, VLAN/odd link types (full decode), and the raw pre-check agreeing with the decoder."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import corpus_dir, fixture_pcaps
from hypothesis import given, settings
from hypothesis import strategies as st
from pcapbuild import (
    LINKTYPE_ETHERNET,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    LINKTYPE_SLL,
    LINKTYPE_SLL2,
    PROTO_UDP,
    Frame,
    TcpFlow,
    addr,
    ethernet,
    icmp_error,
    ipv4_fragments,
    ipv4_packet,
    link_frame,
    pcap_file,
    tcp_packet,
    udp_datagram,
    udp_packet,
)

from analyzers.analysis import AnalysisOptions, analyze_file
from analyzers.decode import Decoder, TcpSegment, UdpDatagram
from analyzers.errors import CaptureFormatError
from analyzers.parallel import (
    Task,
    _raw_shard,
    analyze_many,
    analyze_paths,
    can_cross_processes,
    capture_files,
    flow_shard,
    iter_analyze_many,
    merge_results,
    plan_tasks,
    run_task,
)

CORPUS = sorted((corpus_dir() / "captures").glob("*.pcap*")) if (corpus_dir() / "captures").is_dir() else []
FIXTURES = fixture_pcaps()
T0 = 1_700_000_000 * 10**9


def sharded(path: str | Path, shards: int, options: AnalysisOptions | None = None) -> dict[str, Any]:
    return merge_results([run_task(Task(os.fspath(path), k, shards), options) for k in range(shards)])


def write(tmp_path: Path, name: str, packets: list[bytes], linktype: int = LINKTYPE_ETHERNET) -> Path:
    frames = [Frame(T0 + i * 1000, link_frame(linktype, p) if linktype != LINKTYPE_RAW else p)
              for i, p in enumerate(packets)]
    path = tmp_path / name
    path.write_bytes(pcap_file(frames, linktype))
    return path


def assert_identical(path: Path, shard_counts: tuple[int, ...] = (2, 3, 5)) -> None:
    ref = analyze_file(path).to_dict()
    for n in shard_counts:
        assert sharded(path, n) == ref, f"{path.name}: {n} shards differ from the single-process document"


# ---------------------------------------------------------------------------------------------
# identical on real captures


@pytest.mark.parametrize("capture", CORPUS + FIXTURES, ids=[p.name for p in CORPUS + FIXTURES])
def test_flow_shards_merge_into_the_single_process_document(capture: Path) -> None:
    assert_identical(capture)


def test_sharding_keeps_server_ports_and_http_options() -> None:
    path = next(p for p in FIXTURES if p.name.startswith("http-get"))
    opts = AnalysisOptions(server_ports=frozenset({8000}), http=False, keep_payload=True)
    assert sharded(path, 2, opts) == analyze_file(path, opts).to_dict()


def test_process_pool_returns_every_file_in_the_given_order() -> None:
    files = FIXTURES[:6] + CORPUS[:4]
    want = [analyze_file(p).to_dict() for p in files]
    assert analyze_many(files, None, jobs=2) == want
    # and with the largest file sharded across the pool at the same time
    assert analyze_many(files, None, jobs=2, split_bytes=max(p.stat().st_size for p in files)) == want


def test_one_job_runs_in_this_process_with_the_same_result() -> None:
    files = FIXTURES[:3]
    assert analyze_many(files, None, jobs=1) == [analyze_file(p).to_dict() for p in files]


def test_observers_cannot_cross_processes_and_fall_back_to_one_process() -> None:
    seen: list[int] = []

    class Count:
        def on_tcp(self, conn: object, seg: TcpSegment) -> None:
            seen.append(seg.frame)

        def on_udp(self, conv: object, dg: UdpDatagram) -> None:
            pass

        def on_other(self, frame: int, ts_ns: int, result: object) -> None:
            pass

        def contribute(self, analysis: object, doc: dict[str, Any]) -> None:
            doc["counted"] = len(seen)

    opts = AnalysisOptions(observers=[Count()])
    assert not can_cross_processes(opts)
    assert not can_cross_processes(AnalysisOptions(keep_payload=lambda s: s == 0))
    assert can_cross_processes(AnalysisOptions(server_ports=frozenset({80}), keep_payload=True))
    docs = analyze_many(FIXTURES[:2], opts, jobs=2)
    assert all("counted" in d for d in docs) and seen


def test_unreadable_file_raises_its_typed_error_after_the_files_before_it(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-capture.pcap"
    bad.write_bytes(b"hello, this is not a capture file at all")
    files = [FIXTURES[0], FIXTURES[1], bad, FIXTURES[2]]
    got: list[str] = []
    with pytest.raises(CaptureFormatError) as err:
        for path, _doc in iter_analyze_many(files, None, jobs=2):
            got.append(path)
    assert got == [str(FIXTURES[0]), str(FIXTURES[1])]
    assert err.value.path == str(bad) and err.value.offset == 0 and err.value.hint


def test_sharded_unreadable_file_raises_the_typed_error(tmp_path: Path) -> None:
    bad = tmp_path / "short.pcap"
    bad.write_bytes(b"\xd4\xc3\xb2\xa1\x02\x00")
    with pytest.raises(CaptureFormatError):
        sharded(bad, 2)


def test_large_files_become_one_task_per_shard_largest_first(tmp_path: Path) -> None:
    small = min(FIXTURES, key=lambda p: p.stat().st_size)
    big = max(FIXTURES, key=lambda p: p.stat().st_size)
    tasks = plan_tasks([small, big], 3, split_bytes=big.stat().st_size)
    assert [(t.index, t.shard, t.shards) for t in tasks][:3] == [(1, 0, 3), (1, 1, 3), (1, 2, 3)]
    assert (tasks[-1].index, tasks[-1].shards) == (0, 1)


# ---------------------------------------------------------------------------------------------
# the shard boundary cases, on crafted captures


def test_stream_numbers_follow_first_packets_interleaved_across_shards(tmp_path: Path) -> None:
    flows = [TcpFlow("127.0.0.1", 40000 + 2 * i, "127.0.0.1", 9999, cisn=1000 * i + 7, sisn=99 + i) for i in range(24)]
    packets: list[bytes] = []
    for f in flows:  # 24 handshakes first (streams numbered by these), then data and closes interleaved
        packets += f.handshake()
    rnd = random.Random(5)
    order = list(range(24))
    rnd.shuffle(order)
    for i in order:
        packets += [flows[i].c("PA", b"x" * i), flows[i].s("A"), flows[i].c("FA"), flows[i].s("FA"), flows[i].c("A")]
    path = write(tmp_path, "interleaved.pcap", packets)
    shards = {flow_shard(addr("127.0.0.1"), 40000 + 2 * i, addr("127.0.0.1"), 9999, 2) for i in range(24)}
    assert shards == {0, 1}  # the flows really are spread
    assert_identical(path)
    doc = sharded(path, 3)
    assert [c["client"]["port"] for c in doc["tcp"]] == [40000 + 2 * i for i in range(24)]


def test_a_reused_4_tuple_with_a_new_isn_is_a_new_connection_in_the_same_shard(tmp_path: Path) -> None:
    packets: list[bytes] = []
    for k in range(3):
        f = TcpFlow("127.0.0.1", 50000, "127.0.0.1", 8080, cisn=1000 + 777 * k, sisn=4000 + 999 * k)
        other = TcpFlow("127.0.0.1", 50001 + k, "127.0.0.1", 8080, cisn=5, sisn=6)
        packets += f.handshake() + other.handshake() + [f.c("PA", b"hi"), f.s("A"), f.c("RA")] + [other.c("RA")]
    path = write(tmp_path, "reuse.pcap", packets)
    doc = analyze_file(path).to_dict()
    assert [c["client"]["port"] for c in doc["tcp"]] == [50000, 50001, 50000, 50002, 50000, 50003]
    assert_identical(path)


def test_ip_fragments_are_reassembled_by_every_shard_and_tracked_by_the_owner(tmp_path: Path) -> None:
    packets: list[bytes] = []
    for i in range(8):
        src, dst = "10.0.0.1", "10.0.0.2"
        payload = udp_datagram(3000 + i, 53, bytes(range(i, i + 60)), src=addr(src), dst=addr(dst))
        frags = ipv4_fragments(src, dst, PROTO_UDP, payload, ident=100 + i, chunk=16)
        packets += frags[::-1] if i % 2 else frags  # out of order too
        packets.append(udp_packet(dst, 53, src, 3000 + i, b"answer"))
    # one datagram that never completes: pending fragments are counted once
    lost = ipv4_fragments("10.0.0.1", "10.0.0.2", PROTO_UDP, udp_datagram(4444, 53, b"y" * 40), ident=999, chunk=16)
    packets += lost[:2]
    path = write(tmp_path, "fragments.pcap", packets)
    doc = analyze_file(path).to_dict()
    assert len(doc["udp"]) == 8 and any("never completed" in w for w in doc["warnings"])
    assert_identical(path)


def test_icmp_errors_number_quoted_conversations_in_their_owner_shard(tmp_path: Path) -> None:
    packets: list[bytes] = []
    for i in range(6):
        quoted_tcp = tcp_packet("10.0.0.1", 41000 + i, "10.0.0.9", 7000 + i, 1234, 0, "S")
        packets.append(ipv4_packet("10.0.0.9", "10.0.0.1", 1, icmp_error(3, 3, quoted_tcp[:48])))
        quoted_udp = udp_packet("10.0.0.1", 42000 + i, "10.0.0.9", 53, b"q")
        packets.append(ipv4_packet("10.0.0.9", "10.0.0.1", 1, icmp_error(3, 3, quoted_udp[:28])))
    for i in range(6):  # later, real packets on some of the quoted pairs and on new ones
        if i % 2 == 0:
            packets.append(tcp_packet("10.0.0.1", 41000 + i, "10.0.0.9", 7000 + i, 1234, 0, "S"))
        packets.append(tcp_packet("10.0.0.1", 43000 + i, "10.0.0.9", 7000, 55, 0, "S"))
        packets.append(udp_packet("10.0.0.1", 42000 + 2 * i, "10.0.0.9", 53, b"q"))
    path = write(tmp_path, "icmp.pcap", packets)
    doc = analyze_file(path).to_dict()
    assert doc["icmp_errors"] and doc["tcp"][0]["stream"] == 0
    assert [c["stream"] for c in doc["tcp"]] != list(range(len(doc["tcp"])))  # quote-only numbers are skipped
    assert_identical(path, (2, 3, 4, 7))


def test_damaged_and_vlan_frames_are_decoded_by_every_shard_and_counted_once(tmp_path: Path) -> None:
    frames: list[Frame] = []
    flows = [TcpFlow("10.1.0.1", 30000 + i, "10.1.0.2", 80, cisn=i * 1000) for i in range(6)]
    t = T0
    for i, f in enumerate(flows):
        for p in [*f.handshake(), f.c("PA", b"GET / HTTP/1.1\r\n\r\n"), f.s("PA", b"HTTP/1.1 200 OK\r\n\r\n")]:
            frame = ethernet(p, vlans=[(0x8100, 10)]) if i % 2 else ethernet(p)
            frames.append(Frame(t, frame))
            t += 1000
        bad = bytearray(ethernet(f.c("A")))
        bad[14 + 20 + 12] = 0x30  # data offset 12 bytes: a damaged TCP header (still numbered)
        frames.append(Frame(t, bytes(bad)))
        frames.append(Frame(t + 1, ethernet(b"\x00" * 28, 0x0806)))  # ARP: another frame
        frames.append(Frame(t + 2, ethernet(ipv4_packet("10.1.0.1", "10.1.0.2", 6, b"\x00" * 8))))  # TCP too short
        t += 10_000
    path = tmp_path / "vlan-damaged.pcap"
    path.write_bytes(pcap_file(frames))
    doc = analyze_file(path).to_dict()
    assert doc["malformed"]["count"] == 12 and len(doc["tcp"]) == 6
    assert_identical(path)


@pytest.mark.parametrize("linktype", [LINKTYPE_NULL, LINKTYPE_SLL, LINKTYPE_SLL2, LINKTYPE_RAW, LINKTYPE_ETHERNET])
def test_every_link_type_and_ipv6_shards_identically(tmp_path: Path, linktype: int) -> None:
    packets: list[bytes] = []
    for i in range(10):
        host = "::1" if i % 3 == 0 else "127.0.0.1"
        f = TcpFlow(host, 33000 + i, host, 9000, cisn=i, sisn=10 * i)
        packets += [*f.handshake(), f.c("PA", b"abc" * i), f.s("PA", b"ok"), f.c("FA"), f.s("FA"), f.c("A")]
        packets.append(udp_packet(host, 34000 + i, host, 1060, b"Michael"))
    assert_identical(write(tmp_path, f"lt{linktype}.pcap", packets, linktype))


# ---------------------------------------------------------------------------------------------
# the raw pre-check never disagrees with the decoder


def _decoded_shard(linktype: int, data: bytes, shards: int) -> int | None:
    x = Decoder().decode(1, 0, linktype, data, len(data))
    if isinstance(x, TcpSegment | UdpDatagram):
        return flow_shard(x.src, x.sport, x.dst, x.dport, shards)
    return None


def test_raw_precheck_agrees_with_the_decoder_on_every_fixture_packet() -> None:
    from analyzers.pcapfile import CaptureReader

    checked = 0
    for path in FIXTURES + CORPUS:
        with CaptureReader.open(path) as reader:
            for rec in reader:
                for shards in (2, 3):
                    raw = _raw_shard(rec.linktype, rec.data, shards)
                    if raw >= 0:
                        assert _decoded_shard(rec.linktype, rec.data, shards) == raw, (path.name, rec.frame)
                        checked += 1
    assert checked > 1000


@settings(max_examples=400, deadline=None)
@given(linktype=st.sampled_from([0, 1, 113, 276]), head=st.binary(min_size=0, max_size=80),
       flip=st.lists(st.tuples(st.integers(0, 79), st.integers(0, 255)), max_size=4))
def test_raw_precheck_never_claims_a_packet_the_decoder_would_not_produce(
        linktype: int, head: bytes, flip: list[tuple[int, int]]) -> None:
    # start from a valid frame half of the time, then corrupt a few bytes
    base = bytearray(link_frame(linktype, tcp_packet("127.0.0.1", 40000, "127.0.0.1", 9999, 1, 2, "PA",
                                                     payload=b"hello")) if head[:1] < b"\x80" else head)
    for pos, val in flip:
        if pos < len(base):
            base[pos] = val
    data = bytes(base)
    raw = _raw_shard(linktype, data, 3)
    if raw >= 0:
        assert _decoded_shard(linktype, data, 3) == raw


def test_flow_shard_is_symmetric_and_stable() -> None:
    a, b = addr("::1"), addr("127.0.0.1")
    for sport, dport in [(1, 2), (40000, 9999), (65535, 0)]:
        for n in (2, 3, 8):
            assert flow_shard(a, sport, b, dport, n) == flow_shard(b, dport, a, sport, n)
    assert flow_shard(addr("127.0.0.1"), 40000, addr("127.0.0.1"), 9999, 4) == 2  # fixed across runs/machines


# ---------------------------------------------------------------------------------------------
# the CLI's entry points


def test_directories_expand_to_their_capture_files_sorted(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/b.pcap", "d/a.PCAPNG", "d/sub/c.cap", "d/notes.txt", "d/sub/x.json"):
        (tmp_path / name).write_bytes(b"")
    got = capture_files([tmp_path / "one.pcap", tmp_path / "d"])
    assert got == [str(tmp_path / "one.pcap")] + [str(tmp_path / p) for p in ("d/a.PCAPNG", "d/b.pcap", "d/sub/c.cap")]
    assert capture_files([tmp_path / "d"], recursive=False) == [str(tmp_path / p) for p in ("d/a.PCAPNG", "d/b.pcap")]


@pytest.mark.parametrize("jobs", [1, 2])
def test_analyze_paths_yields_the_single_process_documents_and_advances_the_bar(jobs: int) -> None:
    files = [str(p) for p in FIXTURES[:4]]
    seen: list[tuple[int, int]] = []

    class Bar:
        def start_file(self, name: str, size: int) -> None:
            pass

        def update(self, file_bytes: int, packets: int) -> None:
            pass

        def advance_file(self, size: int, packets: int = 0) -> None:
            seen.append((size, packets))

        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    got = list(analyze_paths(files, None, jobs=jobs, progress=Bar()))
    assert got == [(f, analyze_file(f).to_dict()) for f in files]
    assert seen == [(os.stat(f).st_size, d["packets"]) for f, d in got]


def test_analyze_paths_rejects_an_unknown_engine_or_a_missing_scheduler() -> None:
    from analyzers.errors import UsageError

    with pytest.raises(UsageError):
        list(analyze_paths(FIXTURES[:1], engine="spark"))
    with pytest.raises(UsageError):
        list(analyze_paths(FIXTURES[:1], engine="dask"))
