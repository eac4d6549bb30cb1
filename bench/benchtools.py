"""The Python contenders of the benchmark, each run in its own process by bench.py.

    python bench/benchtools.py TOOL FILE...

prints one JSON line: what the tool found (``connections``: TCP connections with Linux port reuse
counted as new connections, ``packets``) plus, for some tools, internal timings.  The pass is the
same for scapy and dpkt: decode every frame to TCP flags / seq / ack / ports / payload length, and
track connections (a SYN with a new ISN on a known 4-tuple starts a new one).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

Key = tuple[Any, ...]


class Tracker:
    """Connections keyed by the unordered address/port pair; a SYN with a new ISN starts a new one."""

    def __init__(self) -> None:
        self.conns: dict[Key, list[Any]] = {}  # key -> [isn by first sender, bytes a->b, bytes b->a, a]
        self.count = 0
        self.packets = 0

    def feed(self, src: Any, sport: int, dst: Any, dport: int, flags: int, seq: int, paylen: int) -> None:
        self.packets += 1
        a = (src, sport)
        b = (dst, dport)
        key = (a, b) if a <= b else (b, a)
        c = self.conns.get(key)
        if c is not None and flags & 0x12 == 0x02 and c[3] == a and c[0] is not None and c[0] != seq:
            c = None  # port reuse
        if c is None:
            c = [seq if flags & 0x12 == 0x02 else None, 0, 0, a]
            self.conns[key] = c
            self.count += 1
        if c[3] == a:
            c[1] += paylen
        else:
            c[2] += paylen


def run_scapy(path: str) -> dict[str, Any]:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.utils import PcapReader

    t = Tracker()
    with PcapReader(path) as reader:
        for pkt in reader:
            if TCP not in pkt:
                continue
            ip = pkt[IP] if IP in pkt else pkt[IPv6]
            tcp = pkt[TCP]
            t.feed(ip.src, tcp.sport, ip.dst, tcp.dport, int(tcp.flags), tcp.seq, len(tcp.payload))
    return {"connections": t.count, "tcp_packets": t.packets}


def run_dpkt(path: str) -> dict[str, Any]:
    dpkt: Any = importlib.import_module("dpkt")  # (no type information)

    t = Tracker()
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(0)
        reader: Any = dpkt.pcapng.Reader(f) if head == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(f)
        for _ts, buf in reader:
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if not isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6):
                continue
            tcp = ip.data
            if not isinstance(tcp, dpkt.tcp.TCP):
                continue
            t.feed(ip.src, tcp.sport, ip.dst, tcp.dport, tcp.flags, tcp.seq, len(tcp.data))
    return {"connections": t.count, "tcp_packets": t.packets}


def run_pyshark(path: str) -> dict[str, Any]:
    import pyshark

    streams: set[str] = set()
    n = 0
    cap = pyshark.FileCapture(path, keep_packets=False, use_json=True)
    try:
        for pkt in cap:
            n += 1
            if "TCP" in pkt:
                tcp = pkt.tcp
                streams.add(tcp.stream)
                _ = (tcp.flags, tcp.seq_raw, tcp.ack_raw, tcp.srcport, tcp.dstport)
    finally:
        cap.close()
    return {"connections": len(streams), "packets": n}


def _dump_docs(docs: list[dict[str, Any]]) -> int:
    """Write the documents as ``loopcap analyze --json`` does (indented for one file, one line each
    for several), so that these rows and the CLI rows pay the same JSON cost."""
    from analyzers.jsonout import json_line, write_document

    with open(os.devnull, "w") as out:
        for d in docs:
            if len(docs) == 1:
                write_document(d, out)
            else:
                out.write(json_line(d))
    return sum(len(d["tcp"]) for d in docs)


def run_loopcap_many(paths: list[str], jobs: int, split_bytes: int) -> dict[str, Any]:
    from analyzers.parallel import analyze_many

    t0 = time.perf_counter()
    docs = analyze_many(paths, None, jobs, split_bytes=split_bytes)
    n = _dump_docs(docs)
    return {"connections": n, "seconds": time.perf_counter() - t0}


def run_loopcap_dask(paths: list[str], workers: int, split_bytes: int) -> dict[str, Any]:
    """What ``loopcap analyze --engine dask --json`` does: each document streamed from the workers'
    spools to the output (JSON Lines)."""
    from analyzers.dask_engine import iter_analyze_many_dask
    from analyzers.jsonout import json_line

    dist: Any = importlib.import_module("distributed")
    t0 = time.perf_counter()
    n = 0
    with dist.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None) as cluster, dist.Client(cluster) as client, \
            open(os.devnull, "w") as out:
        t1 = time.perf_counter()
        for _, doc in iter_analyze_many_dask(paths, None, scheduler=client, split_bytes=split_bytes):
            n += len(doc["tcp"])
            out.write(json_line(doc))
        t2 = time.perf_counter()
    return {"connections": n, "seconds": t2 - t1, "cluster_start_seconds": t1 - t0}


TOOLS: dict[str, Callable[[str], dict[str, Any]]] = {"scapy": run_scapy, "dpkt": run_dpkt, "pyshark": run_pyshark}


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: benchtools.py scapy|dpkt|pyshark FILE | loopcap-many JOBS SPLIT FILE... | "
              "loopcap-dask WORKERS SPLIT FILE...", file=sys.stderr)
        return 2
    tool = argv[0]
    if tool == "loopcap-many":
        out = run_loopcap_many(argv[3:], int(argv[1]), int(argv[2]))
    elif tool == "loopcap-dask":
        out = run_loopcap_dask(argv[3:], int(argv[1]), int(argv[2]))
    else:
        out = TOOLS[tool](argv[1])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
