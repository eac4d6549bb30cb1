"""The Zeek view (analyzers.zeek) on conversations built byte by byte: each conn_state, the history
letter rules, flips, splits on inactivity and reuse, checksum policies, ICMP, the conn.log writer and
the observer's contribution to the JSON document."""

from __future__ import annotations

import io
import ipaddress
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, fixture_pcaps
from pcapbuild import (
    LINKTYPE_RAW,
    START_NS,
    TcpFlow,
    addr,
    as_records,
    icmp_error,
    ip_packet,
    ipv4_packet,
    tcp_packet,
    udp_datagram,
    udp_packet,
)

from analyzers.analysis import AnalysisOptions, analyze_file, analyze_records
from analyzers.checksum import ChecksumDecoder, internet_checksum
from analyzers.pcapfile import PacketRecord
from analyzers.zeek import (
    CONN_FIELDS,
    PACKET_PROTOCOL_PORTS,
    ZeekObserver,
    ZeekOptions,
    make_observers,
    read_conn_log,
    write_conn_log,
    zeek_analyze,
)

BARE = ZeekOptions(likely_server_ports=PACKET_PROTOCOL_PORTS, checksums="ignore")
SEC = 1_000_000_000


def rows(packets: list[bytes], options: ZeekOptions = BARE, step_ns: int = 1_000_000) -> list[dict[str, Any]]:
    return zeek_analyze(as_records(packets, LINKTYPE_RAW, step_ns=step_ns), options).rows


def timed(packets: list[tuple[int, bytes]]) -> list[PacketRecord]:
    return [PacketRecord(i + 1, START_NS + t, LINKTYPE_RAW, p, len(p)) for i, (t, p) in enumerate(packets)]


def states(rs: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(r["conn_state"], r["history"]) for r in rs]


# ---------------------------------------------------------------------------------------------
# conn_state and history


def test_normal_connection_is_sf_with_sizes_from_sequence_space() -> None:
    f = TcpFlow()
    pk = [*f.handshake(), f.c("PA", b"hello"), f.s("A"), f.s("PA", b"world!"), f.c("A"),
          f.c("FA"), f.s("FA"), f.c("A")]
    (r,) = rows(pk)
    assert (r["conn_state"], r["history"]) == ("SF", "ShADadFf")
    assert (r["id.orig_h"], r["id.orig_p"], r["id.resp_h"], r["id.resp_p"]) == ("10.0.0.1", 40000, "10.0.0.2", 8080)
    assert (r["orig_bytes"], r["resp_bytes"], r["missed_bytes"]) == (5, 6, 0)
    assert (r["orig_pkts"], r["resp_pkts"]) == (6, 4)
    assert r["orig_ip_bytes"] == sum(len(p) for i, p in enumerate(pk) if i in (0, 2, 3, 6, 7, 9))
    assert r["resp_ip_bytes"] == sum(len(p) for i, p in enumerate(pk) if i in (1, 4, 5, 8))
    assert r["duration"] == pytest.approx(0.008)
    assert r["proto"] == "tcp" and r["ip_proto"] == 6 and r["uid"].startswith("C")
    assert r["local_orig"] is True and r["service"] is None


def test_rejected_attempts_each_get_a_row() -> None:
    f = TcpFlow()
    g = TcpFlow(cisn=99_999)
    pk = [f.c("S"), f.s("RA", ack=f.next_seq[True]), g.c("S"), g.s("RA", ack=g.next_seq[True])]
    assert states(rows(pk)) == [("REJ", "Sr"), ("REJ", "Sr")]


@pytest.mark.parametrize(("script", "expected"), [
    ("S", ("S0", "S")),
    ("S R", ("RSTOS0", "SR")),
    ("3WHS R", ("RSTO", "ShAR")),
    ("3WHS r", ("RSTR", "ShAr")),
    ("3WHS D d", ("S1", "ShADd")),  # no pure ACK from the responder: no 'a'
    ("3WHS D d D", ("S1", "ShADd")),  # D at most once per direction
    ("3WHS F", ("S2", "ShAF")),
    ("3WHS f", ("S3", "ShAf")),
    ("S F", ("SH", "SF")),
    ("D", ("OTH", "D")),
    ("D d", ("OTH", "Dd")),
])
def test_conn_states(script: str, expected: tuple[str, str]) -> None:
    f = TcpFlow()
    pk: list[bytes] = []
    for step in script.split():
        if step == "3WHS":
            pk += f.handshake()
        elif step == "S":
            pk.append(f.c("S"))
        elif step in ("R", "r"):
            pk.append(f.seg(step == "R", "R" if step == "R" and len(pk) == 1 else "RA"))
        elif step in ("F", "f"):
            pk.append(f.seg(step == "F", "FA"))
        elif step in ("D", "d"):
            pk.append(f.seg(step == "D", "PA", b"data"))
    (r,) = rows(pk)
    assert (r["conn_state"], r["history"]) == expected


def test_synack_then_fin_from_a_likely_server_port_is_shr() -> None:
    f = TcpFlow(sport=80)
    opts = ZeekOptions(likely_server_ports=frozenset({(80, "tcp")}), checksums="ignore")
    (r,) = rows([f.s("SA"), f.s("FA")], opts)
    assert (r["conn_state"], r["history"], r["id.resp_p"]) == ("SHR", "^hf", 80)


def test_synack_first_flips_at_the_first_ack() -> None:
    f = TcpFlow()
    (r,) = rows([f.s("SA"), f.c("A"), f.c("PA", b"req"), f.s("PA", b"resp"), f.c("FA"), f.s("FA")])
    assert r["history"] == "^hADdFf" and r["conn_state"] == "SF"
    assert (r["id.orig_h"], r["id.orig_p"]) == ("10.0.0.1", 40000)
    assert (r["orig_pkts"], r["resp_pkts"]) == (3, 3)


def test_syn_after_its_synack_is_a_reversal() -> None:
    f = TcpFlow()
    syn = f.c("S")
    synack = f.s("SA")
    (r,) = rows([synack, syn, f.c("A"), f.c("FA"), f.s("FA")])
    assert r["history"].startswith("Hs^")
    assert (r["id.orig_h"], r["conn_state"]) == ("10.0.0.1", "SF")


def test_history_letters_repeat_only_as_zeek_says() -> None:
    f = TcpFlow()
    pk = [*f.handshake(), f.c("PA", b"a"), f.c("PA", b"b"), f.s("A"), f.s("A", window=0), f.s("A", window=0)]
    seq = f.next_seq[True]
    pk += [f.c("PA", b"x" * 10)] + [f.c("PA", b"x" * 10, seq=seq, advance=False) for _ in range(10)]
    pk += [f.c("FA"), f.c("FA", seq=f.next_seq[True] - 1, advance=False)]
    (r,) = rows(pk)
    # D once; w (zero window) on the log scale: once for 2; T on the log scale: the 1st and the 10th
    # retransmission; F once for two FINs with the same sequence number
    assert r["history"] == "ShADawTTF"


def test_zeek_flips_midstream_traffic_from_a_likely_server_port() -> None:
    f = TcpFlow(sport=80)
    opts = ZeekOptions(likely_server_ports=frozenset({(80, "tcp")}), checksums="ignore")
    (r,) = rows([f.s("PA", b"HTTP/1.1 200 OK\r\n"), f.c("A")], opts)
    assert (r["id.resp_p"], r["history"]) == (80, "^dA")


def test_tcp_splits_after_five_minutes_of_inactivity() -> None:
    f = TcpFlow()
    recs = timed([(0, f.c("PA", b"a" * 18)), (10_000, f.s("A")), (10_000 + 300 * SEC + 10_000, f.c("PA", b"b"))])
    rs = zeek_analyze(recs, BARE).rows
    assert states(rs) == [("OTH", "Da"), ("OTH", "D")]


def test_one_sided_attempt_is_removed_five_seconds_after_the_syn() -> None:
    f = TcpFlow()
    recs = timed([(0, f.c("S")), (SEC, f.c("A")), (2 * SEC, f.c("PA", b"x")), (7 * SEC, f.c("PA", b"y")),
                  (8 * SEC, f.c("FA"))])
    assert states(zeek_analyze(recs, BARE).rows) == [("S0", "SAD"), ("SH", "DF")]


def test_gaps_become_missed_bytes_and_g() -> None:
    f = TcpFlow()
    hs = f.handshake()
    f.c("PA", b"m" * 100)  # never captured
    pk = [*hs, f.c("PA", b"seen"), f.s("A"), f.c("FA"), f.s("FA"), f.c("A")]
    (r,) = rows(pk)
    # the responder's ACK reveals the originator's gap: 'G' (the side whose data is missing)
    assert r["missed_bytes"] == 100 and r["history"] == "ShADaGFf"
    assert r["orig_bytes"] == 104


# ---------------------------------------------------------------------------------------------
# UDP and ICMP


def test_udp_request_response_and_inactivity_split() -> None:
    q = udp_packet("10.0.0.1", 5000, "10.0.0.2", 53, b"query")
    a = udp_packet("10.0.0.2", 53, "10.0.0.1", 5000, b"answer!")
    rs = zeek_analyze(timed([(0, q), (1000, a), (61 * SEC, q)]), BARE).rows
    assert [(r["conn_state"], r["history"], r["orig_bytes"], r["resp_bytes"]) for r in rs] == [
        ("SF", "Dd", 5, 7), ("S0", "D", None, None)]
    assert rs[0]["orig_ip_bytes"] == len(q) and rs[0]["proto"] == "udp"


def test_udp_flip_by_likely_port_but_never_towards_broadcast() -> None:
    opts = ZeekOptions(likely_server_ports=frozenset({(67, "udp")}), checksums="ignore")
    reply = udp_packet("10.0.0.2", 67, "10.0.0.9", 68, b"offer")
    bcast = udp_packet("10.0.0.2", 67, "255.255.255.255", 68, b"offer")
    assert states(rows([reply], opts)) == [("SHR", "^d")]
    (r,) = rows([bcast], opts)
    assert (r["conn_state"], r["history"], r["id.orig_p"]) == ("S0", "D", 67)


def test_icmp_echo_is_one_oth_row_with_type_ports() -> None:
    def echo(src: str, dst: str, itype: int) -> bytes:
        body = bytes((itype, 0, 0, 0, 0, 1, 0, 1)) + b"ping" * 8
        csum = internet_checksum(body)
        return ipv4_packet(src, dst, 1, body[:2] + csum.to_bytes(2, "big") + body[4:])
    (r,) = rows([echo("10.0.0.1", "10.0.0.2", 8), echo("10.0.0.2", "10.0.0.1", 0)],
                ZeekOptions(checksums="verify"))
    assert (r["proto"], r["id.orig_p"], r["id.resp_p"], r["conn_state"], r["history"]) == ("icmp", 8, 0, "OTH", None)
    assert (r["orig_bytes"], r["resp_bytes"], r["orig_pkts"], r["resp_pkts"], r["ip_proto"]) == (32, 32, 1, 1, 1)


def test_icmp_error_is_its_own_connection() -> None:
    f = TcpFlow()
    quoted = ip_packet("10.0.0.1", "10.0.0.2", 17, udp_datagram(5000, 9, b"x"))
    err = ipv4_packet("10.0.0.2", "10.0.0.1", 1, icmp_error(3, 3, quoted))
    rs = rows([udp_packet("10.0.0.1", 5000, "10.0.0.2", 9, b"x"), err, f.c("S")])
    assert sorted((r["proto"], r["id.orig_p"], r["id.resp_p"]) for r in rs) == [
        ("icmp", 3, 3), ("tcp", 40000, 8080), ("udp", 5000, 9)]


# ---------------------------------------------------------------------------------------------
# checksums


def _partial(packet: bytes) -> bytes:
    """The same IPv4 TCP packet with the checksum Linux leaves on loopback (pseudo-header sum only)."""
    from analyzers.checksum import pseudo_header_sum

    ihl = (packet[0] & 0x0F) * 4
    seg = packet[ihl:]
    field = pseudo_header_sum(packet[12:16], packet[16:20], 6, len(seg))
    return packet[:ihl + 16] + field.to_bytes(2, "big") + packet[ihl + 18:]


def test_checksum_policies_on_offloaded_checksums() -> None:
    f = TcpFlow()
    pk = [_partial(p) for p in [*f.handshake(), f.c("FA"), f.s("FA")]]
    auto = zeek_analyze(as_records(pk, LINKTYPE_RAW), ZeekOptions())
    assert states(auto.rows) == [("SF", "ShAFf")] and auto.checksums.accepted_partial == 5
    verify = zeek_analyze(as_records(pk, LINKTYPE_RAW),
                          ZeekOptions(likely_server_ports=PACKET_PROTOCOL_PORTS, checksums="verify"))
    assert verify.checksums.discarded_partial == 5
    # the SYN-ACK reuses the tuple of the connection the dead SYN opened: two rows, as Zeek logs them
    assert [r["history"] for r in verify.rows] == ["C", "Cc"]
    assert [r["orig_pkts"] for r in verify.rows] == [0, 0]
    ignore = zeek_analyze(as_records(pk, LINKTYPE_RAW), ZeekOptions(checksums="ignore"))
    assert states(ignore.rows) == states(auto.rows) and not ignore.checksums.verified
    nets = ZeekOptions(checksums="verify", ignore_checksums_nets=(ipaddress.ip_network("10.0.0.0/8"),))
    assert states(zeek_analyze(as_records(pk, LINKTYPE_RAW), nets).rows) == [("SF", "ShAFf")]


def test_bad_checksums_are_c_and_a_bad_ip_header_drops_the_packet() -> None:
    f = TcpFlow()
    good = [*f.handshake()]
    bad_tcp = bytearray(f.c("PA", b"corrupt"))
    bad_tcp[-1] ^= 0xFF
    bad_ip = bytearray(f.c("PA", b"zz"))
    bad_ip[10] ^= 0xFF  # IPv4 header checksum
    res = zeek_analyze(as_records([*good, bytes(bad_tcp), bytes(bad_ip)], LINKTYPE_RAW), ZeekOptions())
    (r,) = res.rows
    assert r["history"] == "ShAC" and r["orig_pkts"] == 2
    assert (res.checksums.discarded_bad, res.checksums.discarded_bad_ip) == (1, 1)
    with pytest.raises(ValueError, match="checksums"):
        ZeekOptions(checksums="maybe")


def test_loopback_fixtures_are_right_by_default() -> None:
    for path in fixture_pcaps():
        auto = zeek_analyze(path)
        assert auto.checksums.discarded == 0, path.name
        assert all("C" not in (r["history"] or "") and "c" not in (r["history"] or "") for r in auto.rows)
        assert [r["conn_state"] for r in auto.rows] == [r["conn_state"] for r in zeek_analyze(
            path, ZeekOptions(checksums="ignore")).rows]


def test_fixture_scenarios_get_the_expected_conn_states() -> None:
    expect = {"refused-ipv4.pcap": ("REJ", "Sr"), "rst-abort-client-ipv4.pcap": ("RSTO", "ShADadR"),
              "rst-abort-server-ipv4.pcap": ("RSTR", "ShADadr"), "tcp-echo-ipv4.pcap": ("SF", "ShAdDaFf"),
              "udp-echo-ipv4.pcap": ("SF", "Dd"), "tcp-welcome-ipv4.pcap": ("SF", "ShAdfFa")}
    for name, want in expect.items():
        (r,) = zeek_analyze(REPO / "pcaps" / name).rows
        assert (r["conn_state"], r["history"]) == want, name


# ---------------------------------------------------------------------------------------------
# conn.log and the JSON document


def test_conn_log_has_zeeks_header_and_round_trips() -> None:
    f = TcpFlow()
    rs = rows([*f.handshake(), f.c("PA", b"tab\there"), f.c("FA"), f.s("FA"), f.c("A")])
    rs += rows([f.c("S")])
    out = io.StringIO()
    write_conn_log(rs, out)
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0] == "#separator \\x09"
    assert [ln.split("\t")[0] for ln in lines[1:8]] == [
        "#set_separator", "#empty_field", "#unset_field", "#path", "#open", "#fields", "#types"]
    assert lines[4] == "#path\tconn" and lines[-1].startswith("#close\t")
    assert lines[6].split("\t")[1:] == [n for n, _ in CONN_FIELDS]
    assert lines[7].split("\t")[1:] == [t for _, t in CONN_FIELDS]
    data = [ln for ln in lines if not ln.startswith("#")]
    assert all(len(ln.split("\t")) == len(CONN_FIELDS) for ln in data)
    back = read_conn_log(text)
    assert [(r["uid"], r["conn_state"], r["history"], r["orig_pkts"]) for r in back] == [
        (r["uid"], r["conn_state"], r["history"], r["orig_pkts"]) for r in rs]
    s0 = next(r for r in back if r["conn_state"] == "S0")
    assert s0["duration"] is None and s0["service"] is None and s0["local_orig"] is True


def test_observer_contributes_rows_and_per_stream_summaries() -> None:
    (ob,) = make_observers(ZeekOptions())
    doc = analyze_file(REPO / "pcaps" / "tcp-echo-ipv4.pcap", AnalysisOptions(observers=[ob])).to_dict()
    (row,) = doc["zeek"]
    assert row["conn_state"] == "SF"
    z = doc["tcp"][0]["zeek"]
    assert (z["uid"], z["conn_state"], z["history"]) == (row["uid"], "SF", row["history"])
    assert z["orig"] == {"ip": "127.0.0.1", "port": doc["tcp"][0]["client"]["port"]}
    assert doc["zeek_checksums"]["mode"] == "auto" and doc["zeek_checksums"]["verified"] is False


def test_observer_names_every_row_of_a_split_stream() -> None:
    f = TcpFlow()
    recs = timed([(0, f.c("PA", b"a")), (1000, f.s("A")), (400 * SEC, f.c("PA", b"b"))])
    ob = ZeekObserver(BARE)
    doc = analyze_records(recs, AnalysisOptions(observers=[ob])).to_dict()
    z = doc["tcp"][0]["zeek"]
    assert len(z["uids"]) == 2 and z["conn_states"] == ["OTH", "OTH"] and "2 connections" in z["note"]


def test_observer_reports_discarded_packets_in_the_warnings() -> None:
    f = TcpFlow()
    ob = ZeekObserver(ZeekOptions(checksums="verify"))
    dec = ob.make_decoder()
    assert isinstance(dec, ChecksumDecoder)
    pk = [_partial(p) for p in f.handshake()]
    for rec in as_records(pk, LINKTYPE_RAW):
        seg = dec.decode(rec.frame, rec.ts_ns, rec.linktype, rec.data, rec.wirelen)
        ob.on_tcp(_FakeConn(0), seg)  # type: ignore[arg-type]
    doc: dict[str, Any] = {"tcp": [{"stream": 0}], "udp": [], "warnings": []}
    ob.contribute(None, doc)  # type: ignore[arg-type]
    assert doc["zeek_checksums"]["discarded"] == 3 and doc["zeek_checksums"]["verified"] is True
    assert "3 packet(s) discarded" in doc["warnings"][0]
    assert doc["tcp"][0]["zeek"]["uids"]  # the SYN's row and the SYN-ACK's row


class _FakeConn:
    def __init__(self, stream: int) -> None:
        self.stream = stream


def test_addresses_helper_is_consistent() -> None:
    assert addr("10.0.0.1") == bytes((10, 0, 0, 1))
    assert tcp_packet("10.0.0.1", 1, "10.0.0.2", 2, 0)[9] == 6


def test_capture_file_and_records_give_the_same_rows(tmp_path: Path) -> None:
    path = REPO / "pcaps" / "udp-echo-ipv4.pcap"
    from analyzers.pcapfile import CaptureReader

    with CaptureReader.open(path) as reader:
        recs = list(reader)
    assert zeek_analyze(recs).rows == zeek_analyze(path).rows


def test_local_orig_and_resp_answers_are_the_networks_answers_and_their_memo_stays_bounded() -> None:
    """Site::local_nets, memoized per address: the same answer as the networks give for IPv4 and
    IPv6 addresses inside and outside them (asked twice), and no more than 4,096 addresses remembered."""
    from analyzers.zeek import PRIVATE_ADDRESS_SPACE, _in_nets, _LocalNets

    nets = (ipaddress.ip_network("192.0.2.0/24"), *PRIVATE_ADDRESS_SPACE)
    local = _LocalNets(nets)
    addrs = [ipaddress.ip_address(a).packed for a in (
        "192.0.2.7", "192.0.3.7", "10.1.2.3", "127.0.0.1", "8.8.8.8", "::1", "fe80::1", "2001:db8::1", "fd00::5")]
    for _ in range(2):
        assert [local(a) for a in addrs] == [_in_nets(a, nets) for a in addrs]
    assert [local(a) for a in addrs[:5]] == [True, False, True, True, False]
    for i in range(5000):
        local(i.to_bytes(4, "big"))
    assert len(local._memo) <= 4096
    assert bool(local) and not _LocalNets(())
