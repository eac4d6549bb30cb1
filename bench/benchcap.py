"""Build the benchmark capture: loopcap's own generators under a real capture, then replicated.

1. ``record_base``: the walkthrough scenarios (tcp-echo, concurrent, tcp-welcome, http-get,
   half-close, rst-abort from either side, refused, simultaneous-close, 1 MiB bulk, udp-echo and its
   lossy variant; IPv4 and IPv6) run on loopback while ``tcpdump --immediate-mode`` records them.
   As root the recording happens in a private network namespace (``unshare -n``) whose ``lo`` has
   a 1500-byte MTU and no GSO, so TCP segments are wire-sized (1514-byte frames) as on a real
   link, and nothing else on the machine is captured or disturbed.  Without root, ``lo`` itself is
   recorded with a port filter (64 KiB loopback segments), through capture.live's scapy backend
   when tcpdump is missing.
2. ``replicate``: the base capture is copied until it holds N packets; each copy shifts the time
   stamps, gives every client a new port, counting up per destination as Linux does, within a
   window of 512 ports (so a busy destination sees its 4-tuples come back), and gives both sides
   of every connection new initial sequence numbers (so a reused 4-tuple is a new connection, as
   with Linux port reuse).  The copies are
   deterministic: the same base and N give the same bytes.  Written as classic pcap and pcapng.

Run as a script only for the recording step inside the namespace (bench.py does that).
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

EPHEMERAL_LO = 32768
#: client ports of the copies cycle through this many ports per destination, like a host whose
#: ip_local_port_range is narrowed to 512 ports: a busy destination sees its 4-tuples come back
PORT_WINDOW = 512
#: where a client goes whose window port would be its server's own port (above Linux's ephemeral range)
SPARE_PORT_LO = 61000
#: bump when the replication changes: older benchmark captures are rebuilt
REPLICATION_VERSION = 2
#: ports of the scenario servers when the host's own lo is recorded (a filter keeps other traffic out)
HOST_PORT_BASE = 47100
M32 = 0xFFFFFFFF


@dataclass(frozen=True)
class Run:
    scenario: str
    host: str
    options: tuple[tuple[str, object], ...] = ()


def scenario_plan(smoke: bool) -> list[Run]:
    """The runs of the base capture: about 1 connection per 20 packets, 1 MiB bulk transfers carrying
    most packets, ~10% UDP, ~20% IPv6, 1% refused (the mix of the issue's reference capture)."""
    runs: list[Run] = []
    fast = (("close_delay", 0.0),)
    slow = (("close_delay", 0.3),)
    if smoke:
        for host in ("127.0.0.1", "::1"):
            runs += [Run("tcp-echo", host, slow), Run("tcp-welcome", host, fast), Run("http-get", host, fast),
                     Run("half-close", host), Run("rst-abort", host, (("aborter", "client"),)),
                     Run("rst-abort", host, (("aborter", "server"),)), Run("refused", host),
                     Run("udp-echo", host), Run("concurrent", host, (("clients", 3), *fast))]
        runs.append(Run("bulk", "127.0.0.1", (("size", 65536), *fast)))
        runs.append(Run("simultaneous-close", "127.0.0.1"))
        return runs
    for rnd in range(5):
        host = "::1" if rnd == 4 else "127.0.0.1"  # one round in five on IPv6
        for i in range(4):
            runs.append(Run("tcp-echo", host, slow if i % 2 else fast))
        for _ in range(6):
            runs.append(Run("concurrent", host, (("clients", 10), *fast)))
        runs.append(Run("concurrent", host, (("clients", 10), *slow)))
        for i in range(12):
            runs.append(Run("tcp-welcome", host, slow if i % 4 == 0 else fast))
        for i in range(16):
            runs.append(Run("http-get", host, slow if i % 4 == 0 else fast))
        for _ in range(3):
            runs.append(Run("half-close", host))
        for aborter in ("client", "server", "client", "server"):
            runs.append(Run("rst-abort", host, (("aborter", aborter),)))
        runs.append(Run("refused", host))
        runs.append(Run("simultaneous-close", host))
        for i in range(30):
            runs.append(Run("udp-echo", host, (("lossy", True),) if i % 5 == 0 else ()))
        if rnd in (0, 2):
            runs.append(Run("bulk", host, (("seed", rnd), *fast)))
    return runs


def _closed_port(host: str) -> int:
    import socket

    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _run_all(runs: list[Run], port_for: Callable[[int, Run], int], threads: int) -> int:
    from capture.generators import run_scenario

    def one(i_run: tuple[int, Run]) -> int:
        i, r = i_run
        port = port_for(i, r)
        if r.scenario == "refused" and port == 0:
            port = _closed_port(r.host)
        m = run_scenario(r.scenario, host=r.host, port=port, options=dict(r.options))  # type: ignore[arg-type]
        return len(m.tcp) + len(m.udp)

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(one, enumerate(runs)))


def _start_tcpdump(out: Path, bpf: list[str]) -> subprocess.Popen[str]:
    cmd = ["tcpdump", "-i", "lo", "--immediate-mode", "-U", "-n", "-B", "131072", "-s", "262144", "-w", str(out),
           *bpf]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        if "listening on" in line:
            time.sleep(0.3)  # the filter is attached right after the line
            return proc
    proc.kill()
    proc.wait(5)
    raise RuntimeError("tcpdump did not come up (is it installed, and may this user capture?)")


def _stop(proc: subprocess.Popen[str]) -> str:
    """Stop tcpdump; returns its closing statistics (captured / dropped)."""
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:  # pragma: no cover
        proc.kill()
        _, err = proc.communicate(timeout=5)
    return " ".join(line.strip() for line in (err or "").splitlines() if "packets" in line)


def record_in_namespace(out: Path, smoke: bool) -> int:
    """Inside ``unshare -n``: a private lo with a 1500-byte MTU and no GSO, tcpdump, the scenarios."""
    for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "link", "set", "lo", "mtu", "1500"],
                ["ip", "link", "set", "lo", "gso_max_segs", "1", "gso_max_size", "1500"]):
        subprocess.run(cmd, check=True)
    proc = _start_tcpdump(out, [])
    try:
        n = _run_all(scenario_plan(smoke), lambda i, r: 0, 1 if smoke else 6)
    finally:
        print(_stop(proc))
    return n


def record_base(out: Path, smoke: bool, log: Callable[[str], None]) -> str:
    """Record the base capture into ``out``; returns how it was made."""
    out.parent.mkdir(parents=True, exist_ok=True)
    unshare = shutil.which("unshare")
    if os.geteuid() == 0 and unshare and shutil.which("tcpdump") and shutil.which("ip"):
        cmd = [unshare, "-n", sys.executable, str(Path(__file__).resolve()), "record", str(out)]
        if smoke:
            cmd.append("--smoke")
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if done.returncode == 0:
            stats = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
            return f"tcpdump --immediate-mode in a private network namespace (lo MTU 1500, no GSO): {stats}"
        log(f"namespace recording failed ({done.stderr.strip()[-300:]}); recording the host's lo instead")
    runs = scenario_plan(smoke)
    # fixed ports in a private range so that a filter keeps other programs' loopback traffic out
    ports = {i: HOST_PORT_BASE + (i % 90) for i in range(len(runs))}
    bpf = [f"portrange {HOST_PORT_BASE}-{HOST_PORT_BASE + 99}"]
    if shutil.which("tcpdump"):
        proc = _start_tcpdump(out, bpf)
        try:
            _run_all(runs, lambda i, r: ports[i], 1)
        finally:
            stats = _stop(proc)
        return f"tcpdump --immediate-mode on the host's lo (64 KiB loopback segments): {stats}"
    from capture.live import open_capture

    with open_capture("scapy", interface="lo", bpf=bpf[0], output=out, file_format="pcap"):
        _run_all(runs, lambda i, r: ports[i], 1)
    return "capture.live (scapy backend) on the host's lo (64 KiB loopback segments)"


# ---------------------------------------------------------------------------------------------
# reading and writing classic pcap / pcapng (plain struct: the benchmark must not lean on loopcap)


def iter_pcap(path: Path) -> Iterator[tuple[int, bytes, int]]:
    """(ts_us, data, wirelen) of every record of a microsecond or nanosecond classic pcap."""
    with open(path, "rb", buffering=4 << 20) as f:
        head = f.read(24)
        e = "<" if struct.unpack("<I", head[:4])[0] in (0xA1B2C3D4, 0xA1B23C4D) else ">"
        ns = struct.unpack(e + "I", head[:4])[0] == 0xA1B23C4D
        hdr = struct.Struct(e + "IIII")
        while True:
            h = f.read(16)
            if len(h) < 16:
                return
            sec, frac, caplen, wirelen = hdr.unpack(h)
            data = f.read(caplen)
            if len(data) < caplen:
                return
            yield sec * 1_000_000 + (frac // 1000 if ns else frac), data, wirelen


def pcap_linktype(path: Path) -> int:
    with open(path, "rb") as f:
        head = f.read(24)
    e = "<" if struct.unpack("<I", head[:4])[0] in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    return int(struct.unpack(e + "I", head[20:24])[0]) & 0x0FFFFFFF


class CaptureWriter:
    """Write the same records as classic pcap (microseconds) and/or pcapng (one interface)."""

    def __init__(self, pcap: Path | None, pcapng: Path | None, linktype: int) -> None:
        self._pcap = open(pcap, "wb", buffering=4 << 20) if pcap else None  # noqa: SIM115
        self._ng = open(pcapng, "wb", buffering=4 << 20) if pcapng else None  # noqa: SIM115
        self.count = 0
        if self._pcap:
            self._pcap.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype))
        if self._ng:
            shb_body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
            self._ng.write(struct.pack("<II", 0x0A0D0D0A, 12 + len(shb_body)) + shb_body
                           + struct.pack("<I", 12 + len(shb_body)))
            idb_body = struct.pack("<HHI", linktype, 0, 262144)
            self._ng.write(struct.pack("<II", 1, 12 + len(idb_body)) + idb_body + struct.pack("<I", 12 + len(idb_body)))
        self._rec = struct.Struct("<IIII")
        self._epb = struct.Struct("<IIIIIII")

    def write(self, ts_us: int, data: bytes | bytearray, wirelen: int) -> None:
        n = len(data)
        if self._pcap:
            self._pcap.write(self._rec.pack(ts_us // 1_000_000, ts_us % 1_000_000, n, wirelen))
            self._pcap.write(data)
        if self._ng:
            pad = -n % 4
            blen = 32 + n + pad
            self._ng.write(self._epb.pack(6, blen, 0, ts_us >> 32, ts_us & M32, n, wirelen))
            self._ng.write(data)
            self._ng.write(b"\0" * pad + struct.pack("<I", blen))
        self.count += 1

    def close(self) -> None:
        for f in (self._pcap, self._ng):
            if f:
                f.close()


# ---------------------------------------------------------------------------------------------
# replication


@dataclass
class _Plan:
    """How to rewrite one base record in each copy (offsets into an Ethernet frame)."""

    ts_us: int
    data: bytes
    wirelen: int
    l4: int  # offset of the TCP/UDP header, or -1: copy 0 only
    port_off: int  # offset of the client port field
    server: int  # index of the destination (server address, port, protocol)
    server_port: int
    rank: int  # index of the client among that destination's clients
    tcp: bool
    from_client: bool
    ack: bool


def _ip_layer(data: bytes) -> tuple[int, bytes, bytes, int] | None:
    """(proto, src, dst, l4 offset) of an unfragmented IPv4/IPv6 packet in an Ethernet frame."""
    if len(data) < 14:
        return None
    et = (data[12] << 8) | data[13]
    if et == 0x0800 and len(data) >= 34:
        ihl = (data[14] & 0x0F) * 4
        if ((data[20] << 8) | data[21]) & 0x3FFF:
            return None
        return data[23], data[26:30], data[30:34], 14 + ihl
    if et == 0x86DD and len(data) >= 54:
        return data[20], data[22:38], data[38:54], 54
    return None


def plan_records(linktype: int, records: Iterable[tuple[int, bytes, int]]) -> tuple[list[_Plan], list[int]]:
    """How to rewrite each record, and the number of clients of each destination."""
    if linktype != 1:
        raise ValueError(f"the base capture must be Ethernet (linktype 1), not {linktype}")
    client_of: dict[tuple[object, ...], tuple[bytes, int]] = {}
    servers: dict[tuple[object, ...], int] = {}
    clients: list[dict[tuple[bytes, int], int]] = []
    plans = []
    for ts, data, wirelen in records:
        ip = _ip_layer(data)
        if ip is None or ip[0] not in (6, 17) or len(data) < ip[3] + 20:
            plans.append(_Plan(ts, data, wirelen, -1, 0, 0, 0, 0, False, False, False))
            continue
        proto, src, dst, l4 = ip
        sport, dport = struct.unpack_from(">HH", data, l4)
        a, b = (src, sport), (dst, dport)
        key = (proto, *sorted((a, b)))
        tcp = proto == 6
        flags = data[l4 + 13] if tcp else 0
        if tcp and flags & 0x12 == 0x02:  # SYN: its sender is the client
            client_of[key] = a
        elif tcp and flags & 0x12 == 0x12:  # SYN-ACK: its receiver is
            client_of[key] = b
        elif key not in client_of:  # UDP: the first sender; TCP midstream: the higher port
            client_of[key] = a if (not tcp or sport > dport) else b
        from_client = a == client_of[key]
        client, server = (a, b) if from_client else (b, a)
        sid = servers.setdefault((proto, *server), len(servers))
        if sid == len(clients):
            clients.append({})
        rank = clients[sid].setdefault(client, len(clients[sid]))
        plans.append(_Plan(ts, data, wirelen, l4, l4 if from_client else l4 + 2, sid, server[1], rank, tcp, from_client,
                           bool(flags & 0x10)))
    return plans, [len(c) for c in clients]


def replicate(plans: list[_Plan], clients: list[int], packets: int
              ) -> Iterator[tuple[int, bytearray | bytes, int]]:
    """Copies of the base records until ``packets`` records were produced (deterministic)."""
    if not plans:
        return
    t0 = plans[0].ts_us
    span = plans[-1].ts_us - t0 + 1000
    made = 0
    copy = 0
    pack_h = struct.Struct(">H").pack_into
    pack_i = struct.Struct(">I").pack_into
    unpack_i = struct.Struct(">I").unpack_from
    while made < packets:
        dt = copy * span
        d_client = (copy * 2654435761) & M32
        d_server = (copy * 40503 * 65599 + 12345 * copy) & M32
        for p in plans:
            if made >= packets:
                return
            if p.l4 < 0:
                if copy == 0:
                    yield p.ts_us, p.data, p.wirelen
                    made += 1
                continue
            if copy == 0:
                yield p.ts_us, p.data, p.wirelen
                made += 1
                continue
            buf = bytearray(p.data)
            k = clients[p.server]
            if k <= PORT_WINDOW:  # (a destination with more clients in the base keeps its ports)
                port = EPHEMERAL_LO + (p.server * 7919 + copy * k + p.rank) % PORT_WINDOW
                if port == p.server_port:  # never the server's own port: that 4-tuple would have no direction
                    port = SPARE_PORT_LO + p.server % 4000
                pack_h(buf, p.port_off, port)
            if p.tcp and len(buf) >= p.l4 + 16:
                mine, theirs = (d_client, d_server) if p.from_client else (d_server, d_client)
                pack_i(buf, p.l4 + 4, (unpack_i(buf, p.l4 + 4)[0] + mine) & M32)
                if p.ack:
                    pack_i(buf, p.l4 + 8, (unpack_i(buf, p.l4 + 8)[0] + theirs) & M32)
            yield p.ts_us + dt, buf, p.wirelen
            made += 1
        copy += 1


def build(base: Path, packets: int, pcap: Path | None, pcapng: Path | None) -> int:
    """Replicate ``base`` to ``packets`` records, written to ``pcap`` and/or ``pcapng``."""
    linktype = pcap_linktype(base)
    plans, clients = plan_records(linktype, iter_pcap(base))
    w = CaptureWriter(pcap, pcapng, linktype)
    try:
        for ts, data, wirelen in replicate(plans, clients, packets):
            w.write(ts, data, wirelen)
    finally:
        w.close()
    return w.count


def cut(src: Path, dst: Path, packets: int) -> int:
    """The first ``packets`` records of a classic pcap."""
    w = CaptureWriter(dst, None, pcap_linktype(src))
    try:
        for i, (ts, data, wirelen) in enumerate(iter_pcap(src)):
            if i >= packets:
                break
            w.write(ts, data, wirelen)
    finally:
        w.close()
    return w.count


def split(src: Path, outs: list[Path], packets: int) -> None:
    """Cut a classic pcap of ``packets`` records into len(outs) consecutive parts of equal counts."""
    per = -(-packets // len(outs))
    lt = pcap_linktype(src)
    writers = [CaptureWriter(o, None, lt) for o in outs]
    try:
        for i, (ts, data, wirelen) in enumerate(iter_pcap(src)):
            writers[min(i // per, len(outs) - 1)].write(ts, data, wirelen)
    finally:
        for w in writers:
            w.close()


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "record":
        record_in_namespace(Path(sys.argv[2]), "--smoke" in sys.argv[3:])
        sys.exit(0)
    print("usage: (internal) benchcap.py record OUT [--smoke]; run bench/bench.py instead", file=sys.stderr)
    sys.exit(2)
