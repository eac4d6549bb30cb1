"""loopcap's pytest plugin (loopcap/pytest_plugin.py), tested with pytest's own ``pytester``: each
test writes a user's test file, runs pytest on it (the plugin comes in through its ``pytest11``
entry point, as for a user) and checks what the user sees, failures included.

Live captures need root or CAP_NET_RAW; those tests skip with the reason otherwise.  All traffic is
a bounded exchange with a server thread on 127.0.0.1, port 0.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
from conftest import PCAPS, REPO

from capture.live import privileges
from loopcap.pytest_plugin import Capture, Doc, DocList, assert_capture, load_capture

pytest_plugins = ["pytester"]

needs_raw = pytest.mark.skipif(not privileges.has_cap_net_raw(),
                               reason="live capture needs root or CAP_NET_RAW: " + privileges.setcap_python_command())

#: a user's server and client: the client says "Michael", reads the answer and closes first
USER_CODE = '''
import socket
import threading


def start_server():
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(5)

    def run():
        conn, _ = srv.accept()
        conn.settimeout(5)
        with conn:
            while data := conn.recv(100):
                conn.sendall(b"Hello, " + data + b"!")
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return srv.getsockname()[1], t


def talk(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"Michael")
        assert s.recv(100) == b"Hello, Michael!"
'''


def test_plugin_is_registered_through_the_pytest11_entry_point(pytester: pytest.Pytester) -> None:
    eps = importlib.metadata.entry_points(group="pytest11")
    assert "loopcap.pytest_plugin" in [ep.value for ep in eps if ep.name == "loopcap"]
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*loopcap packet captures:*", "*--loopcap-keep*", "*--loopcap-keep-dir=DIR*"])
    pytester.makepyfile("def test_fixtures(loopback_capture, loopcap_load):\n    assert callable(loopcap_load)\n")
    pytester.runpytest().assert_outcomes(passed=1)


# ------------------------------------------------------------------------------- live captures
@pytest.mark.live
@needs_raw
def test_loopback_capture_records_the_users_exchange(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(user=USER_CODE)
    pytester.makepyfile(test_user='''
from user import start_server, talk


def test_client_closes_first(loopback_capture):
    port, server = start_server()
    with loopback_capture(port=port) as cap:
        talk(port)
        server.join(5)
    assert cap.pcap.exists() and cap.pcap.suffix == ".pcap"
    assert cap.stats.packets_written == cap.packets
    assert len(cap.tcp) == 1 and len(cap.udp) == 0
    c = cap.tcp[0]
    assert c.handshake.complete and c.handshake.valid
    assert c.server.port == port
    assert c.teardown.initiator == "client"
    assert c.teardown.kind in ("four-way", "three-way")
    assert c.payload.client.bytes == 7 and c.payload.server.bytes == 15
    assert c.states.final.client == "TIME_WAIT"
    assert "SYN seq=0" in cap.ladder(0)
    cap.expect({"tcp": [{"stream": 0, "handshake": {"complete": True}}]})
    assert cap.report().read_text().startswith("<!DOCTYPE html>")
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=1)


@pytest.mark.live
@needs_raw
def test_a_failing_assertion_shows_the_values_and_keeps_the_capture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(user=USER_CODE)
    pytester.makepyfile(test_user='''
from user import start_server, talk


def test_server_resets(loopback_capture):
    port, server = start_server()
    with loopback_capture(port=port) as cap:
        talk(port)
        server.join(5)
    assert cap.tcp[0].teardown.kind == "reset"
''')
    kept = pytester.path / "kept"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--loopcap-keep", f"--loopcap-keep-dir={kept}",
                                           timeout=120)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*def test_server_resets(loopback_capture):*",
        ">*assert cap.tcp[[]0[]].teardown.kind == \"reset\"",
        "E*AssertionError: assert '*-way' == 'reset'*",
        "*- reset",
        "*loopcap captures (call)*",
        f"capture 1 kept: {kept}/test_user.py_test_server_resets-1.pcap",
        "  filter: port *",
        "  tcp 0: 127.0.0.1:* -> 127.0.0.1:*, handshake complete, teardown *-way (first by the client), "
        "client sent 7 B, server sent 15 B",
        f"  see it: loopcap analyze {kept}/test_user.py_test_server_resets-1.pcap*",
        "*- loopcap -*",
        f"kept 1 capture(s) of failed tests in {kept}:",
    ])
    files = list(kept.iterdir())
    assert [f.name for f in files] == ["test_user.py_test_server_resets-1.pcap"]
    again = load_capture(files[0])
    assert again.tcp[0].handshake.complete and again.tcp[0].payload.client.bytes == 7


@pytest.mark.live
@needs_raw
def test_without_keep_the_report_says_how_to_keep_the_capture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user='''
import socket


def test_nothing_listens(loopback_capture):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # bound, never listening: connecting is refused
        with loopback_capture(port=port) as cap:
            with socket.socket() as c:
                assert c.connect_ex(("127.0.0.1", port)) != 0
    assert cap.tcp[0].handshake.refused
    assert cap.tcp[0].teardown.reset_by == "server"
    assert cap.tcp[0].handshake.complete
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "E*assert False",
        "*loopcap captures (call)*",
        "capture 1: */loopcap-1.pcap (temporary; run pytest with --loopcap-keep to keep the captures of failed tests)",
        "  tcp 0: *, handshake refused, teardown reset (first by the server)*",
    ])
    result.stdout.no_fnmatch_line("*kept*capture(s)*")


@pytest.mark.live
@needs_raw
def test_the_readme_example_passes_as_written(pytester: pytest.Pytester) -> None:
    example = (REPO / "docs" / "examples" / "test_echo_server.py").read_text()
    assert len([ln for ln in example.splitlines() if ln.strip()]) <= 10
    pytester.makepyfile(test_echo_server=example)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=1)


def test_missing_capture_privileges_skip_with_the_fix(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user='''
from capture.live import privileges


def test_needs_capture(loopback_capture, monkeypatch):
    monkeypatch.setattr(privileges, "has_cap_net_raw", lambda: False)
    monkeypatch.setattr(privileges, "geteuid", lambda: 1000)
    with loopback_capture(port=9999) as cap:
        raise AssertionError("the block must not run without capture privileges")
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", timeout=120)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([
        "SKIPPED [[]1[]] test_user.py:*: loopback_capture: Live capture needs root or the CAP_NET_RAW capability "
        "*Fix: sudo setcap cap_net_raw,cap_net_admin=eip *",
    ])


# ------------------------------------------------------------------------ fixture pcap helpers
def test_fixture_pcap_helpers_pass_and_fail_with_a_readable_diff(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_fixture_pcaps=f'''
from loopcap.pytest_plugin import assert_capture

RST = {str(PCAPS / "rst-abort-client-ipv4.pcap")!r}


def test_rst_abort(loopcap_load):
    cap = loopcap_load(RST)
    assert cap.tcp[0].teardown.kind == "reset"
    assert cap.tcp[0].teardown.reset_by == "client"
    assert_capture(cap, {{"tcp": [{{"stream": 0, "handshake": {{"complete": True}}}}]}})


def test_expected_a_clean_close(loopcap_load):
    cap = loopcap_load(RST)
    assert_capture(cap, {{"tcp": [{{"stream": 0, "teardown": {{"kind": "four-way", "reset_by": None}}}}]}})


def test_misspelt_field(loopcap_load):
    assert loopcap_load(RST).tcp[0].teardwn.kind == "reset"
''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "E*AssertionError: */rst-abort-client-ipv4.pcap does not match the expectation (2 differences):",
        'E*  tcp[[]stream 0[]].teardown.kind: expected "four-way", got "reset"',
        'E*  tcp[[]stream 0[]].teardown.reset_by: expected null, got "client"',
        "*loopcap captures (call)*",
        "fixture rst-abort-client-ipv4.pcap: */pcaps/rst-abort-client-ipv4.pcap",
        "  tcp 0: 127.0.0.1:40566 -> 127.0.0.1:9101, handshake complete, teardown reset (first by the client), "
        "client sent 29 B, server sent 17 B",
    ])
    result.stdout.fnmatch_lines([
        "E*AttributeError: tcp[[]0[]] has no field 'teardwn'; its fields are: client, frames, handshake, *teardown*",
    ])


def test_assert_capture_reads_expectation_files_as_loopcap_check_writes_them(tmp_path: Path) -> None:
    from analyzers.expect import make_expectation

    cap = load_capture(PCAPS / "tcp-echo-ipv4.pcap")
    exp = tmp_path / "expected.json"
    import json

    exp.write_text(json.dumps(make_expectation(cap.doc)))
    assert_capture(cap, exp)
    assert_capture(PCAPS / "tcp-echo-ipv4.pcap", exp)
    with pytest.raises(AssertionError, match=r"rst-abort-client-ipv4.pcap does not match .*expected.json \(\d+ "
                                             r"differences\):\n  tcp\[stream 0\]"):
        assert_capture(PCAPS / "rst-abort-client-ipv4.pcap", exp)


# ------------------------------------------------------------------------------- the wrapper
def test_attribute_access_follows_the_json_contract() -> None:
    cap = load_capture(PCAPS / "tcp-echo-ipv4.pcap")
    assert isinstance(cap.tcp, DocList) and isinstance(cap.tcp[0], Doc)
    assert cap.tcp[0].handshake.syn.frame == 1
    assert cap.tcp[0]["teardown"]["kind"] == cap.tcp[0].teardown.kind == "four-way"
    assert cap.schema == "loopcap/1" and cap.packets == 18
    assert cap.tcp[0].teardown.time_wait == ["client"]
    assert cap.tcp[0].handshake == cap.doc["tcp"][0]["handshake"]
    assert cap.tcp[0].teardown.fin.client.to_dict() == cap.doc["tcp"][0]["teardown"]["fin"]["client"]
    assert "handshake" in cap.tcp[0] and "teardown" in dir(cap.tcp[0])
    assert cap.tcp[0].get("zeek") is None
    assert cap.connections(port=9999) == cap.tcp and cap.connections(port=1) == []
    assert repr(cap.tcp[0].server) == ('<tcp[0].server: {"ip": "127.0.0.1", "port": 9999, "service": '
                                       '{"ephemeral": false, "name": "tcp-echo demo"}}>')
    assert repr(cap).endswith("tcp-echo-ipv4.pcap: 1 TCP connection(s), 0 UDP conversation(s)>")
    with pytest.raises(AttributeError, match=r"^tcp\[0\]\.handshake has no field 'synack'; its fields are: "
                                             r".*syn_ack"):
        _ = cap.tcp[0].handshake.synack
    with pytest.raises(KeyError, match="the analysis has no field 'TCP'"):
        _ = cap["TCP"]
    with pytest.raises(AttributeError, match="read-only"):
        cap.tcp[0].stream = 5


def test_reading_the_analysis_inside_the_block_is_a_clear_error(tmp_path: Path) -> None:
    cap = Capture(tmp_path / "x.pcap")
    assert not cap.ready and "still running" in repr(cap)
    with pytest.raises(RuntimeError, match=r"the capture is still running: read its analysis .* after the "
                                           r"`with loopback_capture\(...\) as cap:` block has ended"):
        _ = cap.tcp
