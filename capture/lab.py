"""The lab: run a built-in scenario inside a live capture, analyze the file, check it end to end.

``capture_scenario`` is what ``loopcap capture --scenario`` and ``loopcap demo`` run:

1. pick the server port (the user's, or a free ephemeral one) so the capture filter can name it;
2. open the capture (scapy or pyshark/dumpcap) and wait until it is really live;
3. run the scenario's server and client (``run_scenario``), which record what they sent;
4. stop the capture, analyze the file, and compare the analysis with the manifest.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from analyzers.analysis import Analysis, AnalysisOptions, analyze_file
from capture.check import CheckReport, check_manifest
from capture.generators import SCENARIOS, Manifest, OptionInput, PortInUseError, run_scenario
from capture.generators.net import resolve_host
from capture.live import CaptureStats, file_format_for, open_capture

#: time left after the programs finished for the last packets (the final ACK) to reach the capture
DRAIN_SECONDS = 0.1


@dataclass
class LabRun:
    scenario: str
    manifest: Manifest
    stats: CaptureStats
    analysis: Analysis
    check: CheckReport
    pcap: Path
    bpf: str


def free_port(host: str, kind: int = socket.SOCK_STREAM) -> int:
    """A port nothing listens on right now (bind port 0, read it, close)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def scenario_filter(scenario: str, port: int) -> str:
    info = SCENARIOS[scenario]
    protos = [t for t in info.transports]
    return " or ".join(f"{p} port {port}" for p in protos)


def port_is_free(host: str, port: int, kind: int = socket.SOCK_STREAM) -> bool:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, kind) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def capture_scenario(scenario: str, *, output: Path, backend: str = "scapy", host: str = "127.0.0.1",
                     port: int | None = 0, options: Mapping[str, OptionInput] | None = None,
                     file_format: str | None = None, interface: str = "lo", allow_non_loopback: bool = False,
                     before_traffic: Callable[[str], None] | None = None) -> LabRun:
    """Run ``scenario`` under a live capture into ``output``, analyze and self-check it.

    ``port``: 0 picks a free ephemeral port; ``None`` the tutorial's port when it is free (else an
    ephemeral one).  ``before_traffic(bpf)`` is called once the capture is live, before the first
    packet (tests start a second recorder there)."""
    info = SCENARIOS[scenario]
    # check the address before anything binds to it (no socket, no DNS query off loopback)
    host = resolve_host(host, allow_non_loopback=allow_non_loopback).ip
    kind = socket.SOCK_DGRAM if "udp" in info.transports and "tcp" not in info.transports else socket.SOCK_STREAM
    if port is None:
        tutorial = info.default_port
        port = tutorial if tutorial and port_is_free(host, tutorial, kind) else 0
    attempts = 3 if port == 0 else 1
    last: PortInUseError | None = None
    for _ in range(attempts):
        p = port or free_port(host, kind)
        bpf = scenario_filter(scenario, p)
        fmt = file_format_for(output, file_format)
        session = open_capture(backend, interface=interface, bpf=bpf, output=output, file_format=fmt)
        with session:
            if before_traffic is not None:
                before_traffic(bpf)
            try:
                manifest = run_scenario(scenario, host, p, options=options, allow_non_loopback=allow_non_loopback)
            except PortInUseError as exc:
                last = exc
                continue
            time.sleep(DRAIN_SECONDS)
            stats = session.stop()
        analysis = analyze_file(output, AnalysisOptions(server_ports=frozenset({p})))
        report = check_manifest(analysis.to_dict(), manifest.to_dict())
        for problem in manifest.problems:
            report.failures.append(f"generator: {problem}")
        return LabRun(scenario, manifest, stats, analysis, report, output, bpf)
    assert last is not None
    raise last
