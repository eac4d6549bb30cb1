"""The ladder, report and check commands (loopcap/viscli.py), run through click's test runner on a
group of their own (the same ``register`` that loopcap.cli calls) and, once wired, through the real
``loopcap`` entry point."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from conftest import PCAPS, REPO

from loopcap import cli as loopcap_cli
from loopcap import viscli


@pytest.fixture(scope="module")
def group() -> click.Group:
    @click.group()
    def g() -> None:
        pass

    viscli.register(g, loopcap_cli._fail)
    return g


def run(group: click.Group, *args: str) -> Result:
    return CliRunner().invoke(group, list(args), catch_exceptions=False)


# ------------------------------------------------------------------------------------------ ladder
def test_ladder_prints_the_text_diagram(group: click.Group) -> None:
    r = run(group, "ladder", str(PCAPS / "tcp-echo-ipv4.pcap"), "--stream", "0")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("TCP connection 0 (tcp.stream eq 0): ladder, 18 packets\n")
    assert "SYN_SENT |" in r.stdout and "\x1b[" not in r.stdout


def test_ladder_without_stream_draws_every_connection(group: click.Group) -> None:
    r = run(group, "ladder", str(PCAPS / "concurrent-ipv4.pcap"))
    assert r.exit_code == 0
    assert [ln.split(":")[0] for ln in r.stdout.splitlines() if ln.startswith("TCP connection")] == [
        "TCP connection 0 (tcp.stream eq 0)", "TCP connection 1 (tcp.stream eq 1)",
        "TCP connection 2 (tcp.stream eq 2)"]


def test_ladder_color_flag_colours_the_text(group: click.Group) -> None:
    r = run(group, "ladder", str(PCAPS / "rst-abort-client-ipv4.pcap"), "--color")
    assert "\x1b[31m" in r.stdout and click.unstyle(r.stdout) == run(
        group, "ladder", str(PCAPS / "rst-abort-client-ipv4.pcap"), "--no-color").stdout


def test_ladder_folds_unless_all(group: click.Group) -> None:
    folded = run(group, "ladder", str(PCAPS / "bulk-ipv4.pcap"), "--head", "2", "--tail", "2").stdout
    assert "segments" in folded and "folded" in folded.splitlines()[0]
    full = run(group, "ladder", str(PCAPS / "bulk-ipv4.pcap"), "--all").stdout
    assert "folded" not in full.splitlines()[0] and " ... " not in full


def test_ladder_writes_svg(group: click.Group, tmp_path: Path) -> None:
    out = tmp_path / "ladder.svg"
    r = run(group, "ladder", str(PCAPS / "concurrent-ipv4.pcap"), "--stream", "2", "-w", str(out))
    assert r.exit_code == 0
    assert r.stdout == ""
    assert f"wrote the ladder of TCP stream 2 to {out}" in r.stderr
    root = ET.fromstring(out.read_text())
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "tcp.stream eq 2" in out.read_text()


def test_ladder_svg_of_several_connections_asks_for_a_stream(group: click.Group, tmp_path: Path) -> None:
    r = run(group, "ladder", str(PCAPS / "concurrent-ipv4.pcap"), "-w", str(tmp_path / "x.svg"))
    assert r.exit_code == 2
    assert "has 3 TCP connections: choose one with --stream N (0-2)" in r.stderr
    assert not (tmp_path / "x.svg").exists()


def test_ladder_of_an_unknown_stream_is_a_usage_error(group: click.Group) -> None:
    r = run(group, "ladder", str(PCAPS / "tcp-echo-ipv4.pcap"), "--stream", "9")
    assert r.exit_code == 2
    assert r.stderr == "loopcap: error: no TCP stream 9 in " + str(PCAPS / "tcp-echo-ipv4.pcap") + \
        " (the capture has streams 0-0)\n"


def test_ladder_of_a_udp_only_capture_says_so(group: click.Group) -> None:
    r = run(group, "ladder", str(PCAPS / "udp-echo-ipv4.pcap"))
    assert r.exit_code == 2 and "has no TCP connections to draw" in r.stderr


def test_ladder_of_a_file_that_is_not_a_capture_exits_2(group: click.Group, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"hello, not a capture")
    r = run(group, "ladder", str(bad))
    assert r.exit_code == 2 and "not a pcap or pcapng capture" in r.stderr


# ------------------------------------------------------------------------------------------ report
def test_report_writes_a_self_contained_html_file(group: click.Group, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    r = run(group, "report", str(PCAPS / "concurrent-ipv4.pcap"), "-w", str(out))
    assert r.exit_code == 0
    assert "(3 TCP connections, 0 UDP conversations)" in r.stderr
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count('<section class="conn"') == 3


def test_report_to_stdout(group: click.Group) -> None:
    r = run(group, "report", str(PCAPS / "udp-echo-ipv4.pcap"), "-w", "-", "--title", "UDP & friends")
    assert r.exit_code == 0
    assert "<title>UDP &amp; friends</title>" in r.stdout


def test_report_into_a_missing_directory_exits_2(group: click.Group, tmp_path: Path) -> None:
    r = run(group, "report", str(PCAPS / "tcp-echo-ipv4.pcap"), "-w", str(tmp_path / "no" / "r.html"))
    assert r.exit_code == 2 and "cannot write" in r.stderr


def test_report_observers_hook_adds_peer_summaries(tmp_path: Path) -> None:
    from analyzers.analysis import Analysis

    class Peer:
        def on_tcp(self, conn: object, seg: object) -> None: ...
        def on_udp(self, conv: object, dg: object) -> None: ...
        def on_other(self, frame: int, ts_ns: int, result: object) -> None: ...

        def contribute(self, analysis: Analysis, doc: dict[str, object]) -> None:
            for c in doc["tcp"]:  # type: ignore[attr-defined]
                c["zeek"] = {"conn_state": "SF", "history": "ShADadFf"}

    @click.group()
    def g() -> None:
        pass

    viscli.register(g, loopcap_cli._fail, observers=lambda: [Peer()])
    out = tmp_path / "r.html"
    assert run(g, "report", str(PCAPS / "tcp-echo-ipv4.pcap"), "-w", str(out)).exit_code == 0
    assert "Zeek conn.log" in out.read_text() and "ShADadFf" in out.read_text()


# ------------------------------------------------------------------------------------------- check
def test_check_update_then_check_passes(group: click.Group, tmp_path: Path) -> None:
    exp = tmp_path / "expected.json"
    cap = str(PCAPS / "tcp-echo-ipv4.pcap")
    r = run(group, "check", cap, "--expect", str(exp), "--update")
    assert r.exit_code == 0 and r.stdout == f"wrote the expectation of {cap} to {exp}\n"
    data = json.loads(exp.read_text())
    assert list(data["tcp"][0])[:3] == ["stream", "client", "server"]  # written in a readable order
    r = run(group, "check", cap, "--expect", str(exp))
    assert r.exit_code == 0 and r.stdout == f"{cap} matches {exp}\n"


def test_check_mismatch_exits_1_with_a_readable_diff(group: click.Group, tmp_path: Path) -> None:
    exp = tmp_path / "expected.json"
    exp.write_text(json.dumps({"tcp": [{"stream": 0, "teardown": {"kind": "four-way"},
                                        "handshake": {"complete": True}}]}))
    cap = str(PCAPS / "rst-abort-client-ipv4.pcap")
    r = run(group, "check", cap, "--expect", str(exp))
    assert r.exit_code == 1
    assert r.stdout == (f"{cap} does not match {exp}: 1 difference\n"
                        '  tcp[stream 0].teardown.kind: expected "four-way", got "reset"\n'
                        f"(to accept the new analysis: loopcap check {cap} --expect {exp} --update)\n")


@pytest.mark.parametrize(("content", "message"), [
    (None, "the expectation {exp} does not exist"),
    ("{not json", "the expectation {exp} is not valid JSON (line 1, column 2"),
    ("[1, 2]", "the expectation {exp} must hold a JSON object"),
])
def test_check_with_an_unreadable_expectation_exits_2(group: click.Group, tmp_path: Path, content: str | None,
                                                      message: str) -> None:
    exp = tmp_path / "expected.json"
    if content is not None:
        exp.write_text(content)
    r = run(group, "check", str(PCAPS / "tcp-echo-ipv4.pcap"), "--expect", str(exp))
    assert r.exit_code == 2
    assert r.stderr.startswith("loopcap: error: " + message.format(exp=exp))


def test_check_of_an_unreadable_capture_exits_2(group: click.Group, tmp_path: Path) -> None:
    exp = tmp_path / "expected.json"
    exp.write_text("{}")
    r = run(group, "check", str(tmp_path / "missing.pcap"), "--expect", str(exp))
    assert r.exit_code == 2 and "no such file" in r.stderr
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"\x00" * 64)
    r = run(group, "check", str(bad), "--expect", str(exp))
    assert r.exit_code == 2 and "not a pcap or pcapng capture" in r.stderr


def test_check_update_into_a_missing_directory_exits_2(group: click.Group, tmp_path: Path) -> None:
    r = run(group, "check", str(PCAPS / "tcp-echo-ipv4.pcap"), "--expect", str(tmp_path / "no" / "e.json"),
            "--update")
    assert r.exit_code == 2 and "cannot write" in r.stderr


# ------------------------------------------------------------------------------ the real command
@pytest.mark.skipif("ladder" not in loopcap_cli.cli.commands, reason="viscli.register is not wired into loopcap.cli yet")
def test_loopcap_command_has_the_commands_with_their_exit_codes(tmp_path: Path) -> None:
    exe = shutil.which("loopcap")
    cmd = [exe] if exe else [sys.executable, "-m", "loopcap"]
    exp = tmp_path / "e.json"
    exp.write_text(json.dumps({"tcp": [{"stream": 0, "teardown": {"kind": "four-way"}}]}))
    ok = subprocess.run([*cmd, "check", str(PCAPS / "tcp-echo-ipv4.pcap"), "--expect", str(exp)],
                        capture_output=True, text=True, cwd=REPO, timeout=120)
    bad = subprocess.run([*cmd, "check", str(PCAPS / "rst-abort-client-ipv4.pcap"), "--expect", str(exp)],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    lad = subprocess.run([*cmd, "ladder", str(PCAPS / "refused-ipv4.pcap")], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert (ok.returncode, bad.returncode, lad.returncode) == (0, 1, 0), (ok.stderr, bad.stderr, lad.stderr)
    assert "connection refused" in lad.stdout
