"""The benchmark script runs end to end in its tiny smoke mode (what CI runs; the real benchmark is
run by hand, see bench/README.md): it builds the capture, times every contender, and its
correctness checks pass (loopcap's connections equal tshark's; multi-core and Dask documents equal
the single-process ones)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, need_tshark


def test_bench_smoke_builds_times_and_checks_correctness(tmp_path: Path) -> None:
    need_tshark()
    if os.geteuid() != 0 and not shutil.which("tcpdump"):
        pytest.skip("recording the base capture needs tcpdump or root")
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench.py"), "--smoke", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "all correctness checks passed" in proc.stdout
    results = json.loads(next(out.glob("results-*.json")).read_text())
    names = {r["name"] for r in results["rows"]}
    default = next(n for n in names if n.startswith("loopcap analyze --json (default: with the peers' views, "
                                                    "streamed, "))
    assert "tshark -q -z conv,tcp" in names
    checks = results["checks"]
    assert checks["connections_loopcap"] == checks["connections_tshark_streams"] > 50
    assert checks["whole_file_mismatches"] == [] and not checks["truth_cut"]["mismatches"]
    assert all(checks["identical_results"].values())
    loopcap = next(r for r in results["rows"] if r["name"] == default)
    assert loopcap["ratio_vs_tshark"] > 0 and loopcap["peak_mb"] > 0
    assert loopcap["all_processes_mb"] > loopcap["peak_mb"] / 2  # two shards and their parent, sampled
    memory = results["memory"]
    assert memory["default_peak_mb_big"] > 0 and memory["peak_mb_big"] > 0
    assert "| contender |" in proc.stdout



@pytest.mark.parametrize("name", ["http-get-ipv4.pcap", "udp-echo-ipv4.pcap"])
def test_ablation_script_times_every_step_on_the_same_conversations(name: str) -> None:
    """bench/ablate.py (the wall-clock profile of bench/README.md) runs each step and hands out
    every conversation the analysis finds, at every step."""
    from analyzers.analysis import analyze_file

    path = REPO / "pcaps" / name
    res = analyze_file(path)
    assert res.tcp or res.udp
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "ablate.py"), str(path), "--rounds", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1] == f"handed out: {len(res.tcp)} TCP connections, {len(res.udp)} UDP conversations"
    assert [line.split()[0] for line in lines[2:]] == ["nothing", "summary", "summary+json", "summary+json+spool"]
    assert all(float(line.split()[1]) >= 0 for line in lines[2:])  # seconds (tiny here)
