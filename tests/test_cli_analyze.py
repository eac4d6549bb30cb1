"""`loopcap analyze` and `loopcap follow` as a user runs them: output, filters, formats, exit codes,
and Follow TCP Stream compared with tshark's own."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import PCAPS, corpus_dir, need_corpus, need_tshark

from loopcap.cli import cli

ECHO = PCAPS / "tcp-echo-ipv4.pcap"
HTTP = PCAPS / "http-get-ipv4.pcap"
UDP = PCAPS / "udp-echo-lossy-ipv4.pcap"


def run(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.stdout, res.stderr


def test_analyze_text_walks_through_handshake_data_and_teardown() -> None:
    code, out, _ = run("analyze", str(ECHO))
    assert code == 0
    for needle in ("Three-way handshake: complete and valid", "ack = x+1 [ok]", "ack = y+1 [ok]",
                   '"Welcome!Hello, Michael!', "Teardown: four-way; the client closed first",
                   "final states: client TIME_WAIT, server CLOSED", "9999 (tcp-echo demo)", "(ephemeral)"):
        assert needle in out


def test_analyze_names_http_requests_and_responses() -> None:
    code, out, _ = run("analyze", str(HTTP))
    assert code == 0
    assert "HTTP request  #" in out and "GET / HTTP/1.1" in out
    assert "HTTP response #" in out and "200 OK" in out


def test_analyze_json_follows_the_loopcap1_contract() -> None:
    code, out, _ = run("analyze", "--json", str(ECHO))
    assert code == 0
    doc = json.loads(out)
    assert doc["schema"] == "loopcap/1" and doc["packets"] == 18 and doc["warnings"] == []
    c = doc["tcp"][0]
    assert set(c) >= {"stream", "client", "server", "roles_inferred", "handshake", "teardown", "payload"}
    assert set(c["handshake"]) >= {"syn", "syn_ack", "ack", "complete", "valid", "rtt"}
    assert set(c["handshake"]["syn"]) >= {"frame", "seq", "ack"}
    assert set(c["teardown"]) >= {"kind", "initiator", "packets", "reset_by"}
    assert set(c["teardown"]["packets"][0]) >= {"frame", "from", "flags", "seq", "ack", "len"}
    assert set(c["payload"]["client"]) >= {"bytes", "sha256", "complete"}
    code, out, _ = run("analyze", "--format", "json", str(UDP))
    u = json.loads(out)["udp"][0]
    assert set(u) >= {"stream", "client", "server", "datagrams"}
    assert set(u["datagrams"][0]) >= {"frame", "from", "len", "sha256"}


def test_filters_select_streams_ports_and_hosts() -> None:
    path = str(PCAPS / "concurrent-ipv4.pcap")
    code, out, _ = run("analyze", "--json", "--stream", "1", path)
    assert code == 0 and [c["stream"] for c in json.loads(out)["tcp"]] == [1]
    _, out, _ = run("analyze", "--json", "--port", "9999", path)
    assert len(json.loads(out)["tcp"]) == 3
    _, out, _ = run("analyze", "--json", "--host", "10.9.9.9", path)
    assert json.loads(out)["tcp"] == []
    code, _, err = run("analyze", "--stream", "7", path)
    assert code == 2 and "no TCP stream 7" in err and "streams 0-2" in err


def test_several_files_with_json_give_json_lines() -> None:
    code, out, _ = run("analyze", "--json", str(ECHO), str(UDP))
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 2
    assert [json.loads(x)["file"] for x in lines] == [str(ECHO), str(UDP)]


def test_follow_ascii_interleaves_both_sides_like_wireshark() -> None:
    code, out, _ = run("follow", str(ECHO), "--stream", "0")
    assert code == 0
    lines = out.splitlines()
    assert lines[1] == "Follow: tcp,ascii" and lines[2] == "Filter: tcp.stream eq 0"
    assert "\tWelcome!" in lines and "Michael" in lines and "\tHello, Michael!" in lines


def test_follow_binary_direction_is_exactly_the_reassembled_payload() -> None:
    _code, out, _ = run("analyze", "--json", str(HTTP))
    want = json.loads(out)["tcp"][0]["payload"]["server"]
    res = subprocess.run([sys.executable, "-m", "loopcap", "follow", str(HTTP), "--stream", "0",
                          "--direction", "server", "--format", "binary"], capture_output=True, timeout=60)
    assert res.returncode == 0
    assert len(res.stdout) == want["bytes"] and hashlib.sha256(res.stdout).hexdigest() == want["sha256"]


def test_follow_hex_and_udp_stream() -> None:
    code, out, _ = run("follow", str(ECHO), "--stream", "0", "--format", "hex", "--direction", "client")
    assert code == 0 and "00000000  4d 69 63 68 61 65 6c" in out
    code, out, _ = run("follow", str(UDP), "--udp-stream", "0", "--format", "raw")
    assert code == 0 and "Follow: udp,raw" in out and "4d69636861656c" in out


def test_follow_needs_exactly_one_stream_option() -> None:
    code, _, err = run("follow", str(ECHO))
    assert code == 2 and "--stream" in err


@pytest.mark.tshark
@pytest.mark.parametrize("name", ["02_http11_keepalive_nginx.pcap", "14_loss_retrans.pcap", "11_redis.pcap"])
def test_follow_raw_matches_tshark_follow_raw(name: str) -> None:
    need_tshark()
    need_corpus()
    path = corpus_dir() / "captures" / name
    tshark = subprocess.run(["tshark", "-n", "-r", str(path), "-q", "-z", "follow,tcp,raw,0"],
                            capture_output=True, text=True, timeout=120).stdout
    def body(text: str) -> list[str]:
        lines = text.splitlines()
        start = next(i for i, ln in enumerate(lines) if ln.startswith("Node 1:")) + 1
        return [ln for ln in lines[start:] if ln.strip() and not ln.startswith("=")]

    theirs = body(tshark)
    code, out, _ = run("follow", str(path), "--stream", "0", "--format", "raw")
    ours = body(out)
    assert code == 0
    # tshark prints one line per record; loopcap merges the records of one frame: compare per side
    for side_prefix in ("\t", ""):
        def joined(lines: list[str], prefix: str = side_prefix) -> str:
            picked = [ln for ln in lines if ln.startswith("\t")] if prefix else \
                [ln for ln in lines if not ln.startswith("\t")]
            return "".join(ln.strip() for ln in picked)
        assert joined(ours) == joined(theirs)


def test_not_a_capture_is_a_clear_error_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("hello, this is not a pcap\n")
    proc = subprocess.run([sys.executable, "-m", "loopcap", "analyze", str(bad)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "not a pcap or pcapng capture" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "loopcap", "analyze", str(tmp_path / "missing.pcap")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no such file" in proc.stderr


def test_truncated_capture_gives_results_and_a_warning_with_exit_0(tmp_path: Path) -> None:
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(ECHO.read_bytes()[:-30])
    proc = subprocess.run([sys.executable, "-m", "loopcap", "analyze", "--json", str(cut)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    doc = json.loads(proc.stdout)
    assert doc["damaged"] and doc["packets"] == 17
    assert any("byte offset" in w for w in doc["warnings"])
    assert "Traceback" not in proc.stderr


def test_states_prints_the_transition_table() -> None:
    code, out, _ = run("states")
    assert code == 0 and "FIN_WAIT_1" in out and "CLOSING" in out and "TIME_WAIT" in out


def test_analyze_shows_the_peers_view_by_default_and_not_with_no_peers() -> None:
    path = str(corpus_dir() / "captures" / "14_loss_retrans.pcap")
    need_corpus()
    code, out, _ = run("analyze", path, "--stream", "1")
    assert code == 0
    assert "Wireshark: 1 duplicate ACK, 3 retransmissions" in out
    assert "Zeek: conn_state SF (normal establishment and termination), history ShADadfF" in out
    code, out, _ = run("analyze", "--json", path, "--stream", "1")
    c = json.loads(out)["tcp"][0]
    assert c["analysis"]["counts"]["retransmission"] == 3 and c["zeek"]["conn_state"] == "SF"
    code, out, _ = run("analyze", "--json", "--no-peers", path)
    assert "analysis" not in json.loads(out)["tcp"][0]


def test_format_zeek_writes_a_conn_log_that_zeek_tools_read() -> None:
    code, out, _ = run("analyze", "--format", "zeek", str(ECHO), str(PCAPS / "refused-ipv4.pcap"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "#separator \\x09" and lines[4] == "#path\tconn" and lines[-1].startswith("#close")
    fields = next(ln for ln in lines if ln.startswith("#fields")).split("\t")[1:]
    rows = [dict(zip(fields, ln.split("\t"), strict=True)) for ln in lines if not ln.startswith("#")]
    assert [(r["conn_state"], r["history"]) for r in rows] == [("SF", "ShAdDaFf"), ("REJ", "Sr")]
    assert rows[0]["id.resp_p"] == "9999" and rows[0]["orig_bytes"] == "21" and rows[0]["resp_bytes"] == "49"


def test_ctrl_c_while_python_imports_loopcap_ends_quietly_with_130() -> None:
    code = ("import builtins, sys\n"
            "real = builtins.__import__\n"
            "def imp(name, *a, **k):\n"
            "    if name == 'loopcap.cli':\n"
            "        raise KeyboardInterrupt\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = imp\n"
            "sys.argv = ['loopcap', '--version']\n"
            "from loopcap._entry import main\n"
            "main()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130
    assert proc.stderr == "loopcap: interrupted\n"


@pytest.mark.parametrize("fmt", ["--json", "--format=text"])
def test_several_files_with_the_peers_views_each_get_their_own(fmt: str) -> None:
    """The peers' views keep state (Zeek's table, its rows): each file gets a fresh set.  They were
    shared, and the second file's document listed the first file's conn.log rows."""
    files = [str(ECHO), str(UDP), str(HTTP)]
    code, together, _ = run("analyze", fmt, "-q", *files)
    assert code == 0
    alone = [run("analyze", fmt, "-q", f)[1] for f in files]
    if fmt == "--json":
        docs = [json.loads(line) for line in together.splitlines()]
        assert docs == [json.loads(a) for a in alone]
        assert [{r["proto"] for r in d["zeek"]} for d in docs] == [{"tcp"}, {"udp"}, {"tcp"}]
    else:
        assert together == "\n".join(alone)


@pytest.mark.parametrize("filters", [["--stream", "1"], ["--port", "9999"], ["--host", "::1"], ["--udp-stream", "0"],
                                     ["--port", "80", "--stream", "0"], ["--stream", "99"], ["--udp-stream", "7"]])
def test_filtered_output_is_streamed_and_equals_filtering_the_whole_document(filters: list[str]) -> None:
    """--stream / --udp-stream / --port / --host read a streamed analysis once, keeping only the
    matches: the same JSON and text as filtering the in-memory document, the same error when
    nothing matches."""
    from analyzers.analysis import analyze_file
    from analyzers.errors import UsageError
    from analyzers.jsonout import document_text
    from analyzers.walkthrough import render
    from loopcap.cli import _options, filter_doc

    args = {"--stream": "stream", "--udp-stream": "udp_stream", "--port": "port", "--host": "host"}
    kw: dict[str, Any] = {v: None for v in args.values()}
    for flag, value in zip(filters[::2], filters[1::2], strict=True):
        kw[args[flag]] = value if flag == "--host" else int(value)
    for p in [PCAPS / "concurrent-ipv4.pcap", PCAPS / "tcp-echo-ipv6.pcap", HTTP, UDP]:
        doc = analyze_file(p, _options((), peers=True)).to_dict()
        try:
            want = filter_doc(doc, **kw)
        except UsageError as err:
            code, out, errtext = run("analyze", "--json", "-q", str(p), *filters)
            assert code == 2 and str(err) in errtext and not out
            continue
        code, out, _ = run("analyze", "--json", "-q", str(p), *filters)
        assert code == 0 and out == document_text(want), p
        code, out, _ = run("analyze", "-q", str(p), *filters)
        assert code == 0 and out == render(want, all_datagrams=kw["udp_stream"] is not None), p


def test_output_piped_into_head_ends_quietly_with_exit_code_0() -> None:
    """The walkthrough is written a connection at a time: a reader that stops early (``| head``)
    must not turn into exit code 1 or a traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "loopcap", "analyze", "-q", str(PCAPS / "concurrent-ipv4.pcap"),
                             str(PCAPS / "bulk-ipv4.pcap"), str(HTTP)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"loopcap analysis of")
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0
    assert b"Traceback" not in err and b"Broken pipe" not in err


def test_the_peers_views_add_to_the_analysis_and_never_change_it() -> None:
    """``--no-peers`` gives the same analysis without the peers' parts, on every real capture (the
    peers' decoder verifies checksums, but opens no frame the plain one does not: PPP, PPPoE and
    MPLS are opened by both)."""
    from test_fast_path import real_captures

    from analyzers.analysis import analyze_file
    from analyzers.errors import LoopcapError
    from loopcap.cli import _options

    checked = 0
    for p in real_captures():
        try:
            plain = analyze_file(p, _options((), peers=False)).to_dict()
        except LoopcapError:
            continue
        doc = analyze_file(p, _options((), peers=True)).to_dict()
        del doc["zeek"], doc["zeek_checksums"]
        for kind in ("tcp", "udp"):
            for item in doc[kind]:
                item.pop("zeek", None)
                item.pop("analysis", None)
        doc["warnings"] = [w for w in doc["warnings"] if not w.startswith("Zeek view:")]
        assert doc == plain, p
        checked += 1
    assert checked >= 80  # fixtures, the corpus and Zeek's traces (bench/out adds more where it was built)
