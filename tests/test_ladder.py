"""Ladder diagrams: the bounded per-packet log (PacketLog observer) and the text / SVG renderings.

Fixture captures show the classic scenarios; synthetic flows (tests/pcapbuild.py) pin down folding,
bounds, retransmissions and escaping.  The README pictures in docs/ are golden files: after an
intended change, ``pytest tests/test_ladder.py --update-golden`` rewrites them.
"""

from __future__ import annotations

import json
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pcapbuild as pb
import pytest
from conftest import PCAPS, REPO, fixture_pcaps, need_corpus, need_tshark

from analyzers.analysis import AnalysisOptions, analyze_records
from analyzers.ladder import (
    PacketLog,
    analyze_with_log,
    fold_text,
    human_bytes,
    ladder_rows,
    render_svg,
    render_text,
)

SVG_NS = "{http://www.w3.org/2000/svg}"
DOCS = REPO / "docs"
#: the README's pictures: docs file -> (fixture capture, stream)
PICTURES = {
    "ladder-tcp-echo.svg": ("tcp-echo-ipv4.pcap", 0),
    "ladder-refused.svg": ("refused-ipv4.pcap", 0),
    "ladder-rst-abort.svg": ("rst-abort-client-ipv4.pcap", 0),
}


def _conn(name: str, stream: int = 0, **kw: Any) -> dict[str, Any]:
    doc = analyze_with_log(PCAPS / name, **kw)
    return next(c for c in doc["tcp"] if c["stream"] == stream)


def _synthetic(packets: list[bytes], log: PacketLog) -> dict[str, Any]:
    res = analyze_records(pb.as_records(packets), AnalysisOptions(observers=[log]))
    return res.to_dict()


def _bulk_flow(segments: int, size: int = 1000) -> list[bytes]:
    f = pb.TcpFlow(cisn=4_294_967_000)  # the client's sequence numbers wrap around 2^32 on the way
    pkts = f.handshake()
    for i in range(segments):
        pkts.append(f.c("PA", bytes([65 + i % 26]) * size))
        pkts.append(f.s("A"))
    pkts += [f.c("FA"), f.s("A"), f.s("FA"), f.c("A")]
    return pkts


def _svg_tree(text: str) -> ET.Element:
    return ET.fromstring(text)


def _groups(root: ET.Element, cls: str) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG_NS}g") if cls in (g.get("class") or "").split()]


# ----------------------------------------------------------------------------------------- the log
def test_packet_log_keeps_every_packet_of_a_short_connection() -> None:
    c = _conn("tcp-echo-ipv4.pcap")
    lg = c["ladder"]
    assert (lg["packets"], lg["shown"], lg["folded"]) == (18, 18, 0)
    assert [r["frame"] for r in lg["rows"]] == list(range(1, 19))
    syn = lg["rows"][0]
    assert json.loads(json.dumps(lg)) == lg  # JSON-ready
    assert (syn["from"], syn["flags"], syn["relative_seq"], syn["relative_ack"], syn["phase"]) == (
        "client", "SYN", 0, None, "handshake")
    sa = lg["rows"][1]
    assert (sa["from"], sa["relative_seq"], sa["relative_ack"]) == ("server", 0, 1)
    assert [r["phase"] for r in lg["rows"]].count("teardown") == 4
    assert lg["rows"][3]["preview"] == "Welcome!" and lg["rows"][3]["len"] == 8


def test_relative_numbers_agree_with_the_summary() -> None:
    c = _conn("tcp-echo-ipv4.pcap")
    rows = {r["frame"]: r for r in c["ladder"]["rows"]}
    for p in c["teardown"]["packets"]:
        assert (rows[p["frame"]]["relative_seq"], rows[p["frame"]]["relative_ack"]) == (
            p["relative_seq"], p["relative_ack"])


def test_only_the_chosen_streams_are_logged() -> None:
    doc = analyze_with_log(PCAPS / "concurrent-ipv4.pcap", [1])
    assert ["ladder" in c for c in doc["tcp"]] == [False, True, False]


def test_the_number_of_logged_streams_is_bounded() -> None:
    log = PacketLog(max_streams=1)
    from analyzers.analysis import analyze_file

    doc = analyze_file(PCAPS / "concurrent-ipv4.pcap", AnalysisOptions(observers=[log])).to_dict()
    assert ["ladder" in c for c in doc["tcp"]] == [True, False, False]
    assert log.streams_not_logged == 2


def test_long_data_phase_is_folded_with_its_counts() -> None:
    doc = _synthetic(_bulk_flow(100), PacketLog(head=3, tail=2))
    lg = doc["tcp"][0]["ladder"]
    kinds = [r["type"] for r in lg["rows"]]
    # handshake (3 control) + 3 head + one fold + 2 tail + 4 teardown packets
    assert kinds == ["packet"] * 6 + ["fold"] + ["packet"] * 6
    fold = lg["rows"][6]
    assert fold["packets"] == lg["folded"] == 200 - 5
    shown_client_data = sum(r["len"] for r in lg["rows"] if r["type"] == "packet")
    assert fold["bytes"]["client"] + shown_client_data == 100 * 1000
    assert fold["segments"]["client"] + fold["acks"] == fold["packets"]
    text = fold_text(fold)
    # shown: 2 data + 1 ACK at the start, 1 data + 1 ACK at the end (the ACK of the FIN is a control packet)
    assert re.fullmatch(r"\.\.\. 97 segments, 97\.0 kB, 98 ACKs \(frames 7-201\) \.\.\.", text), text
    assert text in render_text(doc["tcp"][0])
    # the handshake and the teardown stay whole
    assert [r["flags"] for r in lg["rows"][:3]] == ["SYN", "ACK,SYN", "ACK"]
    assert [r["flags"] for r in lg["rows"][-4:]] == ["ACK,FIN", "ACK", "ACK,FIN", "ACK"]


def test_packet_log_memory_stays_bounded_on_a_long_connection() -> None:
    log = PacketLog(head=5, tail=5)
    _synthetic(_bulk_flow(3000, size=10), log)
    kept = log.logs[0].rows()
    assert log.logs[0].total == 6007
    assert len(kept) <= 3 + 5 + 1 + 5 + 4


def test_retransmission_is_marked_and_kept_even_inside_a_fold() -> None:
    f = pb.TcpFlow()
    pkts = f.handshake()
    for _ in range(20):
        pkts += [f.c("PA", b"x" * 100), f.s("A")]
    again = f.c("PA", b"y" * 100, seq=f.next_seq[True] - 100, advance=False)
    pkts += [again, f.s("A")]
    for _ in range(20):
        pkts += [f.c("PA", b"x" * 100), f.s("A")]
    pkts += [f.c("FA"), f.s("FA"), f.c("A")]
    doc = _synthetic(pkts, PacketLog(head=2, tail=2))
    c = doc["tcp"][0]
    rtx = [r for r in c["ladder"]["rows"] if r["type"] == "packet" and "retransmission" in r["analysis"]]
    assert [r["frame"] for r in rtx] == [3 + 40 + 1]
    folds = [r for r in c["ladder"]["rows"] if r["type"] == "fold"]
    assert len(folds) == 2  # the retransmission splits the folded data phase in two
    text = render_text(c)
    line = next(ln for ln in text.splitlines() if ln.startswith(f"#{rtx[0]['frame']} "))
    assert "~" in line and "retransmission" in line
    root = _svg_tree(render_svg(c))
    (g,) = _groups(root, "lc-retransmission")
    assert g.get("data-frame") == str(rtx[0]["frame"])
    arrow = next(e for e in g.iter(f"{SVG_NS}line") if "lc-arrow" in (e.get("class") or ""))
    assert arrow.get("stroke-dasharray")


def test_out_of_order_segment_is_not_called_a_retransmission() -> None:
    f = pb.TcpFlow()
    pkts = f.handshake()
    first = f.c("PA", b"a" * 10)
    second = f.c("PA", b"b" * 10)
    pkts += [second, first, f.s("A"), f.c("FA"), f.s("FA"), f.c("A")]
    doc = _synthetic(pkts, PacketLog())
    rows = [r for r in doc["tcp"][0]["ladder"]["rows"] if r["type"] == "packet" and r["len"]]
    assert [r["analysis"] for r in rows] == [[], ["out-of-order"]]


def test_syn_retransmission_is_marked() -> None:
    f = pb.TcpFlow()
    syn = f.c("S")
    pkts = [syn, syn, f.s("SA"), f.c("A")]
    doc = _synthetic(pkts, PacketLog())
    rows = doc["tcp"][0]["ladder"]["rows"]
    assert [r["analysis"] for r in rows] == [[], ["retransmission"], [], []]
    assert all(r["phase"] == "handshake" for r in rows)


@pytest.mark.tshark
def test_marked_segments_are_the_ones_tshark_flags() -> None:
    """Every segment the ladder marks (retransmission or out-of-order) is one tshark flags with
    tcp.analysis.retransmission / fast_retransmission / spurious_retransmission / out_of_order, and
    the other way round, on the corpus (14_loss_retrans has 52) and the fixtures.  The words may
    differ: tshark calls a resent segment that follows the highest one closely "out-of-order"."""
    tshark = need_tshark()
    captures = [p for p in sorted((need_corpus() / "captures").iterdir()) if p.suffix in (".pcap", ".pcapng")]
    flagged_total = 0
    for path in [*captures, *fixture_pcaps()]:
        doc = analyze_with_log(path, head=None, tail=None)
        mine = {r["frame"] for c in doc["tcp"] for r in c["ladder"]["rows"] if r["type"] == "packet" and r["analysis"]}
        out = subprocess.run([tshark, "-r", str(path), "-Y", "tcp.analysis.retransmission || "
                              "tcp.analysis.fast_retransmission || tcp.analysis.spurious_retransmission || "
                              "tcp.analysis.out_of_order", "-T", "fields", "-e", "frame.number"],
                             capture_output=True, text=True, timeout=120, check=True).stdout
        theirs = {int(x) for x in out.split()}
        assert mine == theirs, f"{path.name}: only loopcap {sorted(mine - theirs)}, only tshark {sorted(theirs - mine)}"
        flagged_total += len(mine)
    assert flagged_total >= 52


# ------------------------------------------------------------------------------------------ text
def test_text_ladder_shows_handshake_states_and_four_way_close() -> None:
    text = render_text(_conn("tcp-echo-ipv4.pcap"))
    lines = text.splitlines()
    assert "client 127.0.0.1:46114" in lines[1] and "server 127.0.0.1:9999" in lines[1]
    assert re.search(r"CLOSED \|\s+\| LISTEN$", lines[2])
    assert "-- handshake" in text and "-- data" in text and "-- teardown" in text

    def row(frame: int) -> str:
        return next(ln for ln in lines if ln.startswith(f"#{frame} "))

    assert re.search(r"SYN_SENT \|-+ SYN seq=0 -+>\| SYN_RECEIVED$", row(1))
    assert re.search(r"ESTABLISHED \|<-+ SYN,ACK seq=0 ack=1 -+\|$", row(2))
    assert re.search(r"\|-+ ACK seq=1 ack=1 -+>\| ESTABLISHED$", row(3))
    assert re.search(r'\|<-+ PSH,ACK seq=1 ack=1 len=8 -+\|\s+"Welcome!"$', row(4))
    assert re.search(r"FIN_WAIT_1 \|-+ FIN,ACK seq=22 ack=50 -+>\| CLOSE_WAIT$", row(15))
    assert re.search(r"FIN_WAIT_2 \|<-+ ACK seq=50 ack=23 -+\|\s+ACK of the client's FIN$", row(16))
    assert re.search(r"TIME_WAIT \|<-+ FIN,ACK seq=50 ack=23 -+\| LAST_ACK$", row(17))
    assert re.search(r"\|-+ ACK seq=23 ack=51 -+>\| CLOSED\s+ACK of the server's FIN$", row(18))
    assert re.search(r"TIME_WAIT \|\s+\| CLOSED$", lines[-1])
    # every arrow line has the two lifelines at the same columns
    bars = {tuple(m.start() for m in re.finditer(r"\|", ln)) for ln in lines if ln.startswith("#")}
    assert len(bars) == 1


def test_text_ladder_of_a_refused_connection_shows_the_rst_as_refusal() -> None:
    text = render_text(_conn("refused-ipv4.pcap"))
    rst = next(ln for ln in text.splitlines() if ln.startswith("#2 "))
    assert re.search(r"CLOSED \|<=+ RST,ACK seq=1 ack=1 =+\|\s+connection refused$", rst)
    assert "-- teardown" not in text  # the RST/ACK answers the SYN: it belongs to the handshake


def test_text_ladder_of_an_rst_abort_makes_the_reset_stand_out() -> None:
    c = _conn("rst-abort-client-ipv4.pcap")
    plain = render_text(c)
    rst = next(ln for ln in plain.splitlines() if ln.startswith("#8 "))
    assert re.search(r"CLOSED \|=+ RST,ACK seq=30 ack=18 =+>\| CLOSED\s+RESET$", rst)
    import click

    coloured = render_text(c, click.style)
    rst_c = next(ln for ln in coloured.splitlines() if ln.startswith("#8 "))
    assert "\x1b[31m" in rst_c  # red
    assert click.unstyle(coloured) == plain


def test_text_ladder_is_plain_ascii() -> None:
    for name in ("tcp-echo-ipv4.pcap", "bulk-ipv4.pcap", "half-close-ipv4.pcap", "tcp-echo-ipv6.pcap"):
        assert render_text(_conn(name)).isascii()


# ------------------------------------------------------------------------------------------- SVG
def test_svg_has_one_arrow_per_packet_with_its_label() -> None:
    c = _conn("tcp-echo-ipv4.pcap")
    root = _svg_tree(render_svg(c))
    packets = _groups(root, "lc-packet")
    assert [g.get("data-frame") for g in packets] == [str(i) for i in range(1, 19)]
    labels = [t.text for t in root.iter(f"{SVG_NS}text") if t.get("class") == "lc-label"]
    assert labels[:3] == ["SYN seq=0", "SYN,ACK seq=0 ack=1", "ACK seq=1 ack=1"]
    assert labels[14:] == ["FIN,ACK seq=22 ack=50", "ACK seq=50 ack=23", "FIN,ACK seq=50 ack=23",
                           "ACK seq=23 ack=51"]
    endpoints = [t.text for t in root.iter(f"{SVG_NS}text") if t.get("class") == "lc-endpoint-label"]
    assert endpoints == ["127.0.0.1:46114", "127.0.0.1:9999"]
    phases = [g.get("data-phase") for g in _groups(root, "lc-phase")]
    assert phases == ["handshake", "teardown"]
    # arrows go the right way: client line on the left
    xs = {}
    for g in packets:
        line = next(e for e in g.iter(f"{SVG_NS}line"))
        xs[g.get("data-from")] = float(line.get("x1") or 0) < float(line.get("x2") or 0)
    assert xs == {"client": True, "server": False}


def test_svg_writes_each_state_beside_its_line_where_it_changes() -> None:
    root = _svg_tree(render_svg(_conn("tcp-echo-ipv4.pcap")))
    states = [(g.get("data-side"), g.get("data-frame"), g.get("data-state")) for g in _groups(root, "lc-state")]
    assert ("client", None, "CLOSED") in states and ("server", None, "LISTEN") in states
    changes = [s for s in states if s[1] is not None]
    assert changes == [("client", "1", "SYN_SENT"), ("server", "1", "SYN_RECEIVED"), ("client", "2", "ESTABLISHED"),
                       ("server", "3", "ESTABLISHED"), ("client", "15", "FIN_WAIT_1"), ("server", "15", "CLOSE_WAIT"),
                       ("client", "16", "FIN_WAIT_2"), ("client", "17", "TIME_WAIT"), ("server", "17", "LAST_ACK"),
                       ("server", "18", "CLOSED")]


def test_svg_rst_arrow_is_red_and_marked() -> None:
    root = _svg_tree(render_svg(_conn("rst-abort-client-ipv4.pcap")))
    (g,) = _groups(root, "lc-rst")
    assert g.get("data-flags") == "RST,ACK"
    line = next(e for e in g.iter(f"{SVG_NS}line"))
    assert line.get("stroke") == "#dc2626"
    assert "[RESET]" in [t.text for t in g.iter(f"{SVG_NS}text")]


def test_svg_escapes_payload_text() -> None:
    f = pb.TcpFlow()
    pkts = [*f.handshake(), f.c("PA", b'<b>"&amp;</b>'), f.s("A"), f.c("FA"), f.s("FA"), f.c("A")]
    c = _synthetic(pkts, PacketLog())["tcp"][0]
    out = render_svg(c)
    assert "<b>" not in out
    root = _svg_tree(out)  # well-formed
    notes = [t.text for t in root.iter(f"{SVG_NS}text") if t.get("class") == "lc-note"]
    assert notes == ['"<b>"&amp;</b>"']


def test_ladder_without_a_packet_log_draws_handshake_fold_and_teardown() -> None:
    from analyzers.analysis import analyze_file

    c = analyze_file(PCAPS / "tcp-echo-ipv4.pcap").to_dict()["tcp"][0]
    assert "ladder" not in c
    rows = ladder_rows(c)
    assert [r.get("frame") for r in rows] == [1, 2, 3, None, 15, 16, 17, 18]
    assert "8 segments, 70 B" in fold_text(rows[3])
    root = _svg_tree(render_svg(c))
    assert len(_groups(root, "lc-packet")) == 7 and len(_groups(root, "lc-fold")) == 1
    assert "data phase, packets not logged" in render_text(c)


def test_human_bytes_uses_si_units() -> None:
    assert [human_bytes(n) for n in (0, 999, 1000, 1_500, 2_000_000, 3_200_000_000)] == [
        "0 B", "999 B", "1.0 kB", "1.5 kB", "2.0 MB", "3.2 GB"]


# ------------------------------------------------------------------------------ README pictures
@pytest.mark.parametrize("name", sorted(PICTURES))
def test_readme_pictures_are_current(name: str, update_golden: bool) -> None:
    capture, stream = PICTURES[name]
    svg = render_svg(_conn(capture, stream))
    path: Path = DOCS / name
    if update_golden:
        DOCS.mkdir(exist_ok=True)
        path.write_text(svg, encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing: run pytest tests/test_ladder.py --update-golden"
    assert path.read_text(encoding="utf-8") == svg, f"{path} is out of date (pytest --update-golden)"
