"""The HTML report as a person sees it: rendered by headless Chromium (Debian's ``chromium``, which
scripts/setup installs), checked from the DOM after the page's JavaScript ran, plus a screenshot.

The report is made from one capture holding the classic scenarios (the fixtures tcp-echo, rst-abort
and refused, and udp-echo), so one page shows a four-way close, an RST abort, a refused connection
and a UDP conversation.  The screenshot and the page are left in ``artifacts/report-browser/``
(git-ignored) for a look after the run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pcapbuild as pb
import pytest
from conftest import PCAPS, REPO

from analyzers.pcapfile import CaptureReader
from analyzers.report import build_report

ARTIFACTS = REPO / "artifacts" / "report-browser"
SCENARIOS = ["tcp-echo-ipv4.pcap", "rst-abort-client-ipv4.pcap", "refused-ipv4.pcap", "udp-echo-ipv4.pcap"]
#: flags from the machine notes: no sandbox as root, no GPU, and no background traffic to the network
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--mute-audio", "--hide-scrollbars"]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed: scripts/setup must install it (apt-get install chromium)")
    pytest.skip("chromium not installed (sudo apt-get install chromium chromium-driver, or bash scripts/setup)")


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    exe = chromium_path()
    with tempfile.TemporaryDirectory(prefix="loopcap-chromium-") as profile:
        proc = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                              timeout=180, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return proc


class Dom(HTMLParser):
    """What the rendered page holds: packets (arrows) with their labels, state labels, summary rows."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, dict[str, str]]] = []
        self.body: dict[str, str] = {}
        self.packets: list[dict[str, Any]] = []
        self.states: list[tuple[str, str, str | None, str]] = []
        self.rows: list[dict[str, str]] = []
        self.arrows = 0
        self.status = ""
        self.sections: dict[str, str] = {}

    def _section(self) -> str:
        for tag, a in reversed(self.stack):
            if tag == "section" and a.get("id", "").startswith(("tcp-", "udp-")):
                return a["id"]
        return ""

    def _enclosing(self, cls: str) -> dict[str, str] | None:
        for _tag, a in reversed(self.stack):
            if cls in a.get("class", "").split():
                return a
        return None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        if tag == "body":
            self.body = a
        elif tag == "g" and "lc-packet" in classes:
            self.packets.append({"section": self._section(), "frame": int(a["data-frame"]), "from": a["data-from"],
                                 "flags": a["data-flags"], "classes": classes, "label": "", "notes": []})
        elif tag == "g" and "lc-state" in classes:
            self.states.append((self._section(), a["data-side"], a.get("data-frame"), a["data-state"]))
        elif tag == "line" and "lc-arrow" in classes:
            self.arrows += 1
        elif tag == "tr" and a.get("data-target"):
            self.rows.append(a)
        elif tag == "section" and a.get("id"):
            self.sections[a["id"]] = a.get("class", "")
        if tag not in VOID:
            self.stack.append((tag, a))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            t, _ = self.stack.pop()
            if t == tag:
                break

    def handle_data(self, data: str) -> None:
        if not self.stack:
            return
        tag, a = self.stack[-1]
        if a.get("id") == "status":
            self.status += data
        if tag == "text" and self._enclosing("lc-packet") is not None:
            if "lc-label" in a.get("class", ""):
                self.packets[-1]["label"] += data
            elif "lc-note" in a.get("class", ""):
                self.packets[-1]["notes"].append(data)


def dom_of(url: str) -> Dom:
    proc = chromium("--dump-dom", url)
    d = Dom()
    d.feed(proc.stdout)
    d.close()
    return d


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One capture with the classic scenarios one after the other, and its report."""
    frames: list[pb.Frame] = []
    t = 1_700_000_000 * 10**9
    for name in SCENARIOS:
        with CaptureReader.open(PCAPS / name) as reader:
            recs = list(reader)
        assert {r.linktype for r in recs} == {1}
        first = recs[0].ts_ns
        frames += [pb.Frame(t + r.ts_ns - first, r.data) for r in recs]
        t = frames[-1].ts_ns + 10**9
    d = tmp_path_factory.mktemp("report")
    cap = d / "classic-scenarios.pcap"
    cap.write_bytes(pb.pcap_file(frames))
    page = d / "report.html"
    page.write_text(build_report(cap, title="loopcap report: the classic scenarios"), encoding="utf-8")
    return page


def test_browser_shows_every_arrow_and_label(report: Path) -> None:
    dom = dom_of(report.as_uri())
    assert dom.body.get("data-ready") == "1", "the page's script did not run"
    # the page's script measured each arrow as drawn (non-empty bounding box)
    assert dom.body.get("data-arrows-drawn") == str(dom.arrows) == str(18 + 8 + 2)
    assert dom.status.strip() == "4 of 4 connections and conversations shown"
    assert [r["data-target"] for r in dom.rows] == ["tcp-0", "tcp-1", "tcp-2", "udp-0"]

    def labels(section: str) -> list[str]:
        return [p["label"] for p in dom.packets if p["section"] == section]

    echo = labels("tcp-0")
    assert len(echo) == 18
    assert echo[:3] == ["SYN seq=0", "SYN,ACK seq=0 ack=1", "ACK seq=1 ack=1"]
    assert echo[-4:] == ["FIN,ACK seq=22 ack=50", "ACK seq=50 ack=23", "FIN,ACK seq=50 ack=23", "ACK seq=23 ack=51"]
    assert [p["from"] for p in dom.packets if p["section"] == "tcp-0"][:3] == ["client", "server", "client"]

    rst = [p for p in dom.packets if p["section"] == "tcp-1" and "lc-rst" in p["classes"]]
    assert [(p["flags"], p["label"], p["notes"]) for p in rst] == [("RST,ACK", "RST,ACK seq=30 ack=18", ["[RESET]"])]

    refused = [p for p in dom.packets if p["section"] == "tcp-2"]
    assert [(p["flags"], p["label"]) for p in refused] == [("SYN", "SYN seq=0"), ("RST,ACK", "RST,ACK seq=1 ack=1")]
    assert refused[1]["notes"] == ["[connection refused]"]


def test_browser_shows_the_endpoint_states_beside_the_lines(report: Path) -> None:
    dom = dom_of(report.as_uri())
    echo = [(side, frame, state) for sec, side, frame, state in dom.states if sec == "tcp-0"]
    assert ("client", None, "CLOSED") in echo and ("server", None, "LISTEN") in echo
    assert [s for s in echo if s[1]] == [
        ("client", "1", "SYN_SENT"), ("server", "1", "SYN_RECEIVED"), ("client", "2", "ESTABLISHED"),
        ("server", "3", "ESTABLISHED"), ("client", "15", "FIN_WAIT_1"), ("server", "15", "CLOSE_WAIT"),
        ("client", "16", "FIN_WAIT_2"), ("client", "17", "TIME_WAIT"), ("server", "17", "LAST_ACK"),
        ("server", "18", "CLOSED")]
    rst = [(side, state) for sec, side, frame, state in dom.states if sec == "tcp-1" and frame]
    assert rst[-2:] == [("client", "CLOSED"), ("server", "CLOSED")]


def test_browser_filter_from_the_address_hides_other_connections(report: Path) -> None:
    dom = dom_of(report.as_uri() + "#filter=:9101")  # the rst-abort server
    assert dom.status.strip() == "1 of 4 connections and conversations shown"
    hidden = {r["data-target"]: "hidden" in r.get("class", "") for r in dom.rows}
    assert hidden == {"tcp-0": True, "tcp-1": False, "tcp-2": True, "udp-0": True}
    assert "hidden" in dom.sections["tcp-0"] and "hidden" not in dom.sections["tcp-1"]


def test_browser_screenshot_is_saved_as_an_artifact(report: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(report, ARTIFACTS / "report.html")
    shot = ARTIFACTS / "report.png"
    if shot.exists():
        shot.unlink()
    chromium(f"--screenshot={shot}", "--window-size=1280,2600", report.as_uri())
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 2600)
    # a blank or error page compresses to a few kB; the tables and ladders do not
    assert len(data) > 60_000, f"the screenshot looks empty ({len(data)} bytes): see {shot}"
