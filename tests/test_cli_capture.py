"""The capture commands as a user runs them: the demo, a scenario capture with its self-check, the
user's own traffic stopped by Ctrl+C, and the error a user without privileges sees."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from analyzers.analysis import analyze_file
from capture.generators import run_scenario
from capture.lab import free_port
from capture.live import privileges
from loopcap.cli import cli

_NO_RAW = ("live capture needs root or CAP_NET_RAW: " + privileges.setcap_python_command()
           if not privileges.has_cap_net_raw() else "")
live = [pytest.mark.live, pytest.mark.skipif(bool(_NO_RAW), reason=_NO_RAW)]


def _loopcap(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "loopcap", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.live
@pytest.mark.skipif(bool(_NO_RAW), reason=_NO_RAW)
def test_demo_captures_explains_and_passes_its_self_check(tmp_path: Path) -> None:
    proc = _loopcap("demo", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Three-way handshake: complete and valid" in out
    assert "Teardown: four-way; the client closed first" in out
    assert "self-check against the generator manifest: 9 of 9 checks passed" in out
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "loopcap-demo.pcap").stat().st_size > 24


@pytest.mark.live
@pytest.mark.skipif(bool(_NO_RAW), reason=_NO_RAW)
def test_scenario_capture_writes_pcapng_manifest_and_json(tmp_path: Path) -> None:
    proc = _loopcap("capture", "--scenario", "udp-echo", "-o", "lossy=true", "-6", "-w", "u.pcapng",
                    "--manifest", "m.json", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["check"]["ok"] and doc["capture"]["file_format"] == "pcapng"
    assert doc["analysis"]["udp"][0]["client"]["ip"] == "::1"
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert len(doc["analysis"]["udp"][0]["datagrams"]) == len(manifest["udp"][0]["datagrams"])
    assert (tmp_path / "u.pcapng").read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"


@pytest.mark.live
@pytest.mark.skipif(bool(_NO_RAW), reason=_NO_RAW)
@pytest.mark.parametrize("backend", ["scapy", "pyshark"])
def test_own_traffic_capture_stopped_by_ctrl_c_leaves_a_valid_file(tmp_path: Path, backend: str) -> None:
    port = free_port("127.0.0.1")
    out = tmp_path / "mine.pcap"
    proc = subprocess.Popen([sys.executable, "-m", "loopcap", "capture", "--backend", backend, "-i", "lo",
                             "-f", f"tcp port {port}", "-w", str(out)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 20
        line = ""
        while time.monotonic() < deadline and "capturing on" not in line:
            line = proc.stderr.readline()
        assert "capturing on lo matching" in line
        run_scenario("tcp-echo", "127.0.0.1", port)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "packets captured" in stdout
    res = analyze_file(out)
    assert not res.warnings
    assert len(res.tcp) == 1 and res.tcp_summaries[0]["teardown"]["kind"] == "four-way"


def test_capture_without_privileges_explains_the_fix_and_exits_2(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    monkeypatch.setattr(privileges, "geteuid", lambda: 1000)
    monkeypatch.setattr(privileges, "read_capabilities", lambda field="CapEff", status_path="": 0)
    result = CliRunner().invoke(cli, ["capture", "--scenario", "tcp-echo", "-w", str(tmp_path / "x.pcap")])
    assert result.exit_code == 2
    assert "CAP_NET_RAW" in result.output and "setcap" in result.output
    assert "Traceback" not in result.output


def test_capture_rejects_own_filter_with_scenario(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["capture", "--scenario", "tcp-echo", "-f", "tcp", "-w",
                                      str(tmp_path / "x.pcap")])
    assert result.exit_code == 2
    assert "sets its own filter" in result.output


def test_generate_refuses_non_loopback_address() -> None:
    result = CliRunner().invoke(cli, ["generate", "tcp-echo", "--host", "192.0.2.1"])
    assert result.exit_code == 2
    assert "not a loopback address" in result.output and "--allow-non-loopback" in result.output


def test_unknown_scenario_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["demo", "--scenario", "nope"])
    assert result.exit_code == 2 and "unknown scenario" in result.output




@pytest.mark.live
@pytest.mark.skipif(bool(_NO_RAW), reason=_NO_RAW)
def test_simultaneous_close_is_forced_in_a_private_namespace(tmp_path: Path) -> None:
    from capture import netns

    reason = netns.unavailable_reason()
    if reason is not None:
        pytest.skip(f"forcing a simultaneous close is not possible here: {reason}")
    proc = _loopcap("capture", "--scenario", "simultaneous-close", "-w", "sim.pcap", "--manifest", "m.json",
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert manifest["options"]["forced"] is True
    assert manifest["tcp"][0]["expected_teardown"] == ["simultaneous"]
    summary = analyze_file(tmp_path / "sim.pcap").tcp_summaries[0]
    assert summary["teardown"]["kind"] == "simultaneous"
    assert summary["states"]["final"] == {"client": "TIME_WAIT", "server": "TIME_WAIT"}
    assert any(ch["to"] == "CLOSING" for ch in summary["states"]["timeline"])


def test_forcing_simultaneous_close_outside_the_namespace_is_refused() -> None:
    result = CliRunner().invoke(cli, ["generate", "simultaneous-close", "-o", "forced=true"])
    assert result.exit_code == 2
    assert "namespace" in result.output
