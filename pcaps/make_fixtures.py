#!/usr/bin/env python3
"""Re-create the fixture captures in pcaps/ from loopcap's own generators.

Each scenario runs on its tutorial port (ephemeral for refused) while an independent recorder
(tcpdump, or dumpcap for the pcapng fixture) captures loopback with a filter on that port; the
recorder is confirmed live (its "listening on" line) before the client sends its first packet.
Next to each capture goes the generator's manifest (``NAME.manifest.json``), and the golden outputs
are then refreshed with ``pytest tests/test_golden.py --update-golden``.

Needs root (or CAP_NET_RAW), tcpdump and dumpcap.  Usage:  python3 pcaps/make_fixtures.py [NAME...]
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from capture.generators import run_scenario

HERE = Path(__file__).resolve().parent


@dataclass
class Fixture:
    name: str
    scenario: str
    host: str = "127.0.0.1"
    port: int | None = None  # None: the scenario's tutorial port
    options: dict[str, object] = field(default_factory=dict)
    recorder: str = "tcpdump"  # or "dumpcap" (pcapng)
    about: str = ""


FIXTURES = [
    Fixture("tcp-echo-ipv4.pcap", "tcp-echo", about="tutorial echo: Welcome!, Hello, X! x3, exit; four-way close by the client"),
    Fixture("tcp-echo-ipv6.pcap", "tcp-echo", host="::1", about="the same on ::1"),
    Fixture("tcp-echo-ipv4.pcapng", "tcp-echo", recorder="dumpcap", about="the same recorded by dumpcap as pcapng"),
    Fixture("tcp-welcome-ipv4.pcap", "tcp-welcome", about="server sends 'welcome to python!' and closes first"),
    Fixture("udp-echo-ipv4.pcap", "udp-echo", about="UDP echo: 'Your data was N bytes'"),
    Fixture("udp-echo-lossy-ipv4.pcap", "udp-echo", options={"lossy": True},
            about="lossy server drops requests on purpose; the client retries with a doubling timeout"),
    Fixture("udp-echo-ipv6.pcap", "udp-echo", host="::1", about="UDP echo on ::1"),
    Fixture("http-get-ipv4.pcap", "http-get", about="HTTP/1.1 GET with Connection: close; header and body"),
    Fixture("half-close-ipv4.pcap", "half-close", about="client shutdown(SHUT_WR); the server keeps sending"),
    Fixture("rst-abort-client-ipv4.pcap", "rst-abort", options={"aborter": "client"},
            about="client sets SO_LINGER 0 and closes: RST instead of FIN"),
    Fixture("rst-abort-server-ipv4.pcap", "rst-abort", options={"aborter": "server"},
            about="server aborts with SO_LINGER 0"),
    Fixture("refused-ipv4.pcap", "refused", port=0, about="SYN to a closed port, RST/ACK back"),
    Fixture("refused-ipv6.pcap", "refused", host="::1", port=0, about="the same on ::1"),
    Fixture("concurrent-ipv4.pcap", "concurrent", options={"clients": 3},
            about="three tcp-echo clients at once against the threaded server"),
    Fixture("bulk-ipv4.pcap", "bulk", options={"size": 262144},
            about="256 KiB each way: many large loopback segments"),
    Fixture("simultaneous-close-ipv4.pcap", "simultaneous-close",
            about="both sides close at once (not forced: usually three-way on plain loopback)"),
]


def closed_port(host: str) -> int:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def record(fx: Fixture) -> None:
    from capture.generators import SCENARIOS

    info = SCENARIOS[fx.scenario]
    port = fx.port if fx.port not in (None, 0) else (info.default_port or 0)
    if port == 0:
        port = closed_port(fx.host)
    out = HERE / fx.name
    proto = "udp" if "udp" in info.transports else "tcp"
    bpf = f"{proto} port {port}"
    if fx.recorder == "tcpdump":
        cmd = ["tcpdump", "-i", "lo", "--immediate-mode", "-U", "-n", "-s", "262144", "-B", "65536", "-w", str(out), bpf]
    else:
        cmd = ["dumpcap", "-i", "lo", "-f", bpf, "-w", str(out), "-n"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)

    def wait_live() -> None:
        assert proc.stderr is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            if "listening on" in line or "Capturing on" in line:
                time.sleep(0.2)  # the kernel filter is attached right after this line is printed
                return
        raise RuntimeError(f"{cmd[0]} did not come up")

    try:
        manifest = run_scenario(fx.scenario, host=fx.host, port=port, before_client=wait_live,
                                options=fx.options)  # type: ignore[arg-type]
        time.sleep(0.5)
    finally:
        proc.send_signal(2)
        proc.wait(10)
    (HERE / (fx.name + ".manifest.json")).write_text(json.dumps(manifest.to_dict(), indent=1) + "\n")
    print(f"{fx.name}: {manifest.scenario}, {len(manifest.tcp)} TCP / {len(manifest.udp)} UDP")


def main(argv: list[str]) -> int:
    chosen = [f for f in FIXTURES if not argv or f.name in argv]
    for fx in chosen:
        record(fx)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
