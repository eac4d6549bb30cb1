"""Every scenario x backend x address family, for real on lo: capture, analyze, check against the
generator manifest, and count packets against tcpdump recording the same run (no duplicates, none
missed, the first SYN included)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from analyzers.pcapfile import CaptureReader
from capture.generators import SCENARIOS, ipv6_available
from capture.lab import capture_scenario
from capture.live import privileges

_NO_RAW = ("live capture needs root or CAP_NET_RAW: " + privileges.setcap_python_command()
           if not privileges.has_cap_net_raw() else "")
pytestmark = [pytest.mark.live, pytest.mark.skipif(bool(_NO_RAW), reason=_NO_RAW)]

CASES = [(s, b, fam) for s in SCENARIOS for b in ("scapy", "pyshark") for fam in ("ipv4", "ipv6")
         if fam == "ipv4" or SCENARIOS[s].ipv6]
SMALL = {"bulk": {"size": 262144}}


def _frames(path: Path) -> list[bytes]:
    with CaptureReader.open(path) as r:
        return [rec.data for rec in r]


class Tcpdump:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.proc: subprocess.Popen[str] | None = None

    def start(self, bpf: str) -> None:
        tcpdump = shutil.which("tcpdump")
        assert tcpdump, "tcpdump is needed to cross-check the packet count (scripts/setup installs it)"
        # -B: with snaplen 262144 libpcap's ring slots are 256 KiB each, so the default 2 MiB buffer
        # holds about 8 frames and bursts overflow it: give the reference recorder 64 MiB
        self.proc = subprocess.Popen([tcpdump, "-i", "lo", "--immediate-mode", "-U", "-n", "-s", "262144",
                                      "-B", "65536", "-w", str(self.out), bpf], stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if "listening on" in line:
                return
            if not line and self.proc.poll() is not None:
                break
        raise AssertionError("tcpdump did not come up")

    def stop(self) -> str:
        """Stop tcpdump; returns its statistics lines (captured / received / dropped)."""
        if self.proc is None:
            return ""
        time.sleep(0.3)
        self.proc.send_signal(2)
        _, err = self.proc.communicate(timeout=10)
        return " ".join(ln.strip() for ln in err.splitlines() if "packets" in ln)


@pytest.fixture
def tcpdump(tmp_path: Path) -> Iterator[Tcpdump]:
    td = Tcpdump(tmp_path / "tcpdump.pcap")
    try:
        yield td
    finally:
        if td.proc is not None and td.proc.poll() is None:
            td.proc.kill()
            td.proc.wait()


@pytest.mark.parametrize(("scenario", "backend", "family"), CASES, ids=[f"{s}-{b}-{f}" for s, b, f in CASES])
def test_scenario_capture_matches_manifest_and_tcpdump(scenario: str, backend: str, family: str,
                                                       tmp_path: Path, tcpdump: Tcpdump) -> None:
    if backend == "pyshark" and shutil.which("dumpcap") is None:
        pytest.skip("dumpcap not installed (sudo apt-get install tshark)")
    if family == "ipv6" and not ipv6_available():
        pytest.skip("::1 is not available on this machine")
    host = "::1" if family == "ipv6" else "127.0.0.1"
    out = tmp_path / f"{scenario}.pcap"
    run = capture_scenario(scenario, output=out, backend=backend, host=host, options=SMALL.get(scenario),
                           before_traffic=tcpdump.start)
    tcpdump_stats = tcpdump.stop()
    assert run.check.ok, run.check.text()
    ours = _frames(out)
    theirs = _frames(tcpdump.out)
    assert run.stats.packets_written == len(ours)
    assert len(ours) == len(theirs), (f"loopcap captured {len(ours)} packets, tcpdump {len(theirs)} "
                                      f"(tcpdump: {tcpdump_stats})")
    # the same multiset of frames as tcpdump: each packet exactly once (identical frames can be legitimate:
    # two equal UDP replies over IPv6, which has no IP ID, are byte for byte the same)
    assert sorted(ours) == sorted(theirs), "the same packets, each exactly once"
    doc = run.analysis.to_dict()
    if doc["tcp"]:
        first = doc["tcp"][0]["handshake"]["syn"]
        assert first is not None and first["frame"] == 1, "the first SYN is the first packet captured"
