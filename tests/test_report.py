"""The HTML report (analyzers/report.py): self-contained, complete, escaped.  What a browser shows
is checked in tests/test_report_browser.py."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pcapbuild as pb
from conftest import PCAPS

from analyzers.analysis import AnalysisOptions, analyze_file, analyze_records
from analyzers.report import build_report, render_report, report_observers


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Tags:
    t = Tags()
    t.feed(html)
    t.close()
    return t


def _doc(path: Path) -> dict[str, Any]:
    return analyze_file(path, AnalysisOptions(observers=list(report_observers()))).to_dict()


def test_report_needs_no_network() -> None:
    html = build_report(PCAPS / "http-get-ipv4.pcap")
    t = parse(html)
    # nothing is loaded from anywhere: no external scripts, styles, images, fonts or frames
    for tag, attrs in t.tags:
        assert tag not in ("link", "iframe", "img", "object", "embed"), tag
        assert "src" not in attrs, (tag, attrs)
        assert (attrs.get("href") or "#").startswith("#"), (tag, attrs)
    assert not re.search(r"url\((?!#)", html), "CSS/SVG url() may only point inside the page"
    assert "@import" not in html
    urls = set(re.findall(r"https?://[^\s\"'<>]+", html))
    assert urls == {"http://www.w3.org/2000/svg"}  # the SVG namespace name, never fetched
    csp = next(a for tag, a in t.tags if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in (csp.get("content") or "")


def test_report_lists_every_connection_and_conversation() -> None:
    html = build_report(PCAPS / "concurrent-ipv4.pcap")
    t = parse(html)
    rows = [a for tag, a in t.tags if tag == "tr" and a.get("data-target")]
    assert [r["data-target"] for r in rows] == ["tcp-0", "tcp-1", "tcp-2"]
    sections = [a["id"] for tag, a in t.tags if tag == "section" and a.get("class") == "conn"]
    assert sections == ["tcp-0", "tcp-1", "tcp-2"]
    assert html.count("<svg ") == 3
    # each ladder's markers have their own ids: three inline SVGs must not collide
    ids = [a["id"] for tag, a in t.tags if a.get("id")]
    assert len(ids) == len(set(ids))
    udp = build_report(PCAPS / "udp-echo-lossy-ipv4.pcap")
    tu = parse(udp)
    assert [a["data-target"] for tag, a in tu.tags if tag == "tr" and a.get("data-target")] == ["udp-0"]
    assert "Your data was 7 bytes" in udp


def test_report_shows_payload_previews_and_http_messages() -> None:
    html = build_report(PCAPS / "http-get-ipv4.pcap")
    assert "GET / HTTP/1.1" in html
    assert "HTTP response #6: <code>200 OK</code>" in html
    assert '<div class="payload" data-side="client">' in html


def test_report_escapes_everything_from_the_capture() -> None:
    f = pb.TcpFlow()
    evil = b"<script>alert(1)</script><img src=x onerror=alert(2)>"
    pkts = [*f.handshake(), f.c("PA", evil), f.s("PA", b"</pre><h1>owned</h1>"), f.c("FA"), f.s("FA"), f.c("A")]
    res = analyze_records(pb.as_records(pkts), AnalysisOptions(observers=list(report_observers())),
                          file="<b>evil</b>.pcap")
    html = render_report(res.to_dict())
    assert "<script>alert" not in html and "<img" not in html and "<h1>owned" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<script>") == 1  # the report's own
    assert "&lt;b&gt;evil&lt;/b&gt;.pcap" in html


def test_report_shows_warnings(tmp_path: Path) -> None:
    data = (PCAPS / "tcp-echo-ipv4.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) - 30])  # a damaged tail
    html = build_report(cut)
    t = parse(html)
    assert any(a.get("id") == "warnings" for _, a in t.tags)
    assert re.search(r'<ul class="warnings"><li>the capture is damaged at', html)


def test_report_renders_peer_summaries_when_present() -> None:
    doc = _doc(PCAPS / "tcp-echo-ipv4.pcap")
    doc["tcp"][0]["zeek"] = {"conn_state": "SF", "history": "ShADadFf", "orig_bytes": 21}
    doc["tcp"][0]["analysis"] = {"flags": {"retransmission": [], "duplicate_ack": [7]}, "completeness": 31}
    html = render_report(doc)
    t = parse(html)
    peers = [a["data-peer"] for tag, a in t.tags if tag == "div" and a.get("data-peer")]
    assert peers == ["zeek", "analysis"]
    assert "Zeek conn.log" in html and "ShADadFf" in html and ">SF<" in html
    assert "duplicate_ack" in html and ">31<" in html
    assert 'data-peer="zeek"' not in render_report(_doc(PCAPS / "tcp-echo-ipv4.pcap"))
    doc["tcp"][0]["analysis"] = {"flags": {str(f): ["window_update"] for f in range(1000)}}
    assert "... 960 more" in render_report(doc)  # a long peer table is cut


def test_report_draws_ladders_for_the_first_connections_only() -> None:
    doc = _doc(PCAPS / "concurrent-ipv4.pcap")
    html = render_report(doc, max_ladders=1)
    assert html.count("<svg ") == 1
    assert "Ladders are drawn for the first 1 connections only." in html
    assert html.count('<section class="conn"') == 3


def test_report_of_an_empty_capture(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(pb.pcap_file([]))
    html = build_report(empty)
    assert "No TCP connections or UDP conversations in this capture." in html
    assert 'data-tcp="0" data-udp="0"' in html
