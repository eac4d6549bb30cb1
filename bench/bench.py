#!/usr/bin/env python3
"""loopcap's benchmark: build the capture, time every contender in one run, check correctness.

    python bench/bench.py                  # 1M packets, 3 runs each, memory at 1M and 5M
    python bench/bench.py --smoke          # everything tiny (< 60 s): what CI runs
    python bench/bench.py --packets 200000 --runs 5 --memory-packets 0 --profile

Steps (all outputs in bench/out/, which git ignores):

1. the base capture: loopcap's generators recorded by tcpdump (see benchcap.py), kept between runs
   (``--rebuild-base`` records it again);
2. the benchmark capture: the base replicated to N packets with new client ports, time stamps and
   ISNs per copy, as classic pcap and pcapng; a 10k-packet cut for pyshark; a set of files for the
   multi-core runs;
3. timings: each contender in its own process, wall time (median of ``--runs``) and peak memory
   (``wait4`` rusage of the process and the children it waited for), ratios against
   ``tshark -r F -q -z conv,tcp`` on the same file;
4. correctness: loopcap's connections equal tshark's (count, tcp.stream numbers, endpoints, payload
   bytes per direction) on the whole file, every field of the corpus truth format (payload SHA-256
   included) on a cut, and the multi-core and Dask documents equal the single-process ones;
5. optionally (``--profile``) pyinstrument and cProfile profiles of ``loopcap analyze --json``.

Exit status 0 when every correctness check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import compileall
import functools
import hashlib
import importlib
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import benchcap  # noqa: E402

PY = sys.executable


@dataclass
class Measurement:
    seconds: float
    max_rss_kb: int
    returncode: int
    stdout: Path
    stderr: str
    other_load: float  #: cores used by other processes during the run (a shared machine skews timings)
    tree_kb: int = 0  #: the highest sum of the proportional set sizes of all its processes (sampled)


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine so far (/proc/stat), or 0 where unknown."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _TICK


def wait_quiet(max_wait: float, threshold: float = 0.3) -> float:
    """Wait (at most ``max_wait`` s) until other processes use less than ``threshold`` cores."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_wait:
        b0 = cpu_busy_seconds()
        time.sleep(1.0)
        if cpu_busy_seconds() - b0 < threshold:
            break
    return time.monotonic() - t0


QUIET_WAIT = 0.0  # set from --quiet-wait


@dataclass
class Row:
    name: str
    file: str
    seconds: list[float] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)
    tree_kb: list[int] = field(default_factory=list)
    other_load: list[float] = field(default_factory=list)
    note: str = ""
    scale: float = 1.0  #: extrapolation factor (a cut of the file)
    connections: int | None = None
    skipped: str = ""
    ratio_to: str | None = ""  #: file whose tshark time is the reference ("": this row's file; None: no ratio)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) * self.scale if self.seconds else float("nan")

    @property
    def peak_mb(self) -> float:
        return max(self.rss_kb) / 1024 if self.rss_kb else float("nan")

    @property
    def tree_mb(self) -> float:
        return max(self.tree_kb) / 1024 if self.tree_kb else float("nan")


#: how often the memory of a run's whole process tree is sampled, in seconds
TREE_EVERY_S = 0.1


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class TreeSampler(threading.Thread):
    """The peak memory of a whole run, workers included: every :data:`TREE_EVERY_S` the proportional
    set sizes (shared pages split between the processes sharing them) of the processes under ``pid``
    are summed.  ``ru_maxrss`` gives only the largest single process."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kb = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            todo, total = _children(self.pid), 0  # under the wrapper (/usr/bin/time or the launcher)
            while todo:
                p = todo.pop()
                total += _pss_kb(p)
                todo += _children(p)
            self.peak_kb = max(self.peak_kb, total)
            self._done.wait(TREE_EVERY_S)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak_kb


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _limit_memory(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


def memory_cap() -> int:
    """The address-space cap of the memory-point run: a third of the memory available now (the machine
    is shared; a contender whose memory grows with the file must fail, not exhaust it)."""
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        avail = 8 << 30
    return max(1 << 30, avail // 3)


#: a tiny launcher (fork, exec, wait4) used when /usr/bin/time is missing
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, ru = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(ru.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""


def measure(cmd: list[str], stdout: Path, env: dict[str, str] | None = None, mem_limit: int = 0,
            cwd: Path = REPO) -> Measurement:
    """Run ``cmd``: wall time, and the peak RSS of it and the children it waited for.

    The peak comes from ``wait4`` in a small intermediate process (``/usr/bin/time``, else a Python
    launcher), never from this process's own ``wait4``: Linux starts a spawned child's high-water mark
    at its parent's, so a benchmark process that has grown would inflate every later figure."""
    if QUIET_WAIT:
        wait_quiet(QUIET_WAIT)
    rss_file = Path(str(stdout) + ".rss")
    rss_file.unlink(missing_ok=True)
    if os.path.exists("/usr/bin/time"):
        wrapped = ["/usr/bin/time", "-q", "-f", "%M", "-o", str(rss_file), *cmd]
    else:
        wrapped = [PY, "-c", _LAUNCHER, str(rss_file), *cmd]
    with open(stdout, "wb") as out, open(str(stdout) + ".err", "wb") as err:
        busy0 = cpu_busy_seconds()
        t0 = time.perf_counter()
        proc = subprocess.Popen(wrapped, stdout=out, stderr=err, env=env, cwd=cwd,
                                preexec_fn=_limit_memory(mem_limit) if mem_limit else None)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        tree_kb = sampler.stop()
        busy = cpu_busy_seconds() - busy0
    proc.returncode = os.waitstatus_to_exitcode(status)
    errtext = Path(str(stdout) + ".err").read_text(errors="replace")
    try:
        max_rss_kb = int(rss_file.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        max_rss_kb = usage.ru_maxrss
    if proc.returncode != 0 and errtext.rstrip().endswith(f"Command exited with non-zero status {proc.returncode}"):
        errtext = errtext.rstrip().rsplit("\n", 1)[0]
    other = max(0.0, busy - usage.ru_utime - usage.ru_stime) / seconds if seconds > 0 else 0.0
    return Measurement(seconds, max_rss_kb, proc.returncode, stdout, errtext, other, tree_kb)


def digest(docs: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(json.dumps(d, sort_keys=True).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# correctness


def tshark_streams(path: Path) -> dict[int, tuple[tuple[str, int], tuple[str, int], int, int]]:
    """tcp.stream -> (first sender, its peer, payload bytes sender->peer, peer->sender) from tshark."""
    cmd = ["tshark", "-n", "-r", str(path), "-Y", "tcp && !icmp && !icmpv6", "-T", "fields", "-E", "separator=\t",
           "-e", "tcp.stream", "-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport", "-e", "ip.dst",
           "-e", "ipv6.dst", "-e", "tcp.dstport", "-e", "tcp.len", "-o", "tcp.check_checksum:FALSE"]
    out: dict[int, list[Any]] = {}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        f = line.rstrip("\n").split("\t")
        if len(f) < 8 or not f[0]:
            continue
        s = int(f[0])
        src = (f[1] or f[2], int(f[3]))
        dst = (f[4] or f[5], int(f[6]))
        n = int(f[7] or 0)
        e = out.get(s)
        if e is None:
            e = out[s] = [src, dst, 0, 0]
        if src == e[0]:
            e[2] += n
        else:
            e[3] += n
    proc.wait()
    return {k: (v[0], v[1], v[2], v[3]) for k, v in out.items()}


def compare_with_tshark(doc: dict[str, Any], ts: dict[int, tuple[tuple[str, int], tuple[str, int], int, int]]
                        ) -> list[str]:
    """Mismatches between loopcap's TCP connections and tshark's tcp.stream table."""
    bad: list[str] = []
    ours = {c["stream"]: c for c in doc["tcp"]}
    if set(ours) != set(ts):
        only_l = sorted(set(ours) - set(ts))[:5]
        only_t = sorted(set(ts) - set(ours))[:5]
        bad.append(f"stream numbers differ: {len(ours)} vs {len(ts)} (only loopcap {only_l}, only tshark {only_t})")
    for s in sorted(set(ours) & set(ts)):
        c = ours[s]
        a, b, ab, ba = ts[s]
        cl = (c["client"]["ip"], c["client"]["port"])
        sv = (c["server"]["ip"], c["server"]["port"])
        by = {cl: c["payload"]["client"]["wire_bytes"], sv: c["payload"]["server"]["wire_bytes"]}
        if {cl, sv} != {a, b}:
            bad.append(f"stream {s}: endpoints {cl}/{sv} vs tshark {a}/{b}")
        elif (by[a], by[b]) != (ab, ba):
            bad.append(f"stream {s}: payload bytes {by[a]}/{by[b]} vs tshark {ab}/{ba}")
        if len(bad) > 20:
            break
    return bad


def truth_agreement(cut: Path, out: Path) -> tuple[str, list[str]]:
    """Every field of the corpus truth format (build_truth.py, tshark) on a cut."""
    tools = REPO.parent / "shared" / "corpus" / "tools" / "build_truth.py"
    if not tools.exists():
        return "skipped: shared/corpus/tools/build_truth.py not found", []
    tdir = out / "truth"
    subprocess.run([PY, str(tools), "--out", str(tdir), "--raw", str(tdir / "raw"), "--manifest",
                    str(tdir / "none.json"), str(cut)], check=True, capture_output=True)
    truth = json.loads((tdir / (cut.name + ".json")).read_text())
    sys.path.insert(0, str(REPO / "tests"))
    compare: Callable[..., Any] = importlib.import_module("truthcompare").compare

    from analyzers.analysis import analyze_file

    ag = compare(analyze_file(cut).to_dict(), truth, cut.name)
    total = sum(ag.total.values())
    matched = sum(ag.matched.values())
    return f"{matched}/{total} fields agree on {truth['summary']['tcp_connections']} connections", ag.mismatches


# ---------------------------------------------------------------------------------------------
# the run


def have(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


def conv_rows(text: str) -> int:
    return sum(1 for line in text.splitlines() if "<->" in line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="everything tiny (< 60 s), as CI runs it")
    ap.add_argument("--packets", type=int, help="packets in the benchmark capture (default 1,000,000)")
    ap.add_argument("--runs", type=int, help="runs per contender; the median is reported (default 3)")
    ap.add_argument("--slow-runs", type=int, default=1, help="runs of scapy and pyshark (default 1)")
    ap.add_argument("--no-memory-default", dest="memory_default", action="store_false",
                    help="skip the default command's memory point (about 5 minutes at 5M packets)")
    ap.add_argument("--memory-packets", type=int,
                    help="also measure loopcap's peak memory on a capture this large (default 5,000,000; 0: skip)")
    ap.add_argument("--pyshark-packets", type=int, help="packets of the cut pyshark reads (default 10,000)")
    ap.add_argument("--truth-packets", type=int, help="packets of the cut checked field by field (default 5,000)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes of the multi-core runs")
    ap.add_argument("--files", type=int, default=4, help="files in the multi-file set (default 4)")
    ap.add_argument("--no-dask", action="store_true", help="skip the Dask LocalCluster run")
    ap.add_argument("--extra", action="store_true", help="also time tshark -T fields")
    ap.add_argument("--profile", action="store_true", help="profile loopcap analyze (pyinstrument, cProfile)")
    ap.add_argument("--no-compiled", dest="compiled", action="store_false",
                    help="skip the compiled build's rows (LOOPCAP_MYPYC=1, built with scripts/build_compiled.py; "
                         "never in --smoke)")
    ap.add_argument("--rebuild-base", action="store_true", help="record the base capture again")
    ap.add_argument("--quiet-wait", type=float, default=0.0,
                    help="before each timed run, wait up to this many seconds for other processes to go idle")
    ap.add_argument("--out", type=Path, default=HERE / "out", help="working directory (default bench/out)")
    a = ap.parse_args(argv)
    global QUIET_WAIT
    QUIET_WAIT = a.quiet_wait
    smoke = a.smoke
    n = a.packets or (3000 if smoke else 1_000_000)
    runs = a.runs or (1 if smoke else 3)
    mem_n = a.memory_packets if a.memory_packets is not None else (2 * n if smoke else 5_000_000)
    ps_n = a.pyshark_packets or (500 if smoke else 10_000)
    truth_n = a.truth_packets or (n if smoke else 5000)
    out: Path = a.out
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    results: dict[str, Any] = {"packets": n, "runs": runs, "smoke": smoke, "cores": os.cpu_count()}
    failures: list[str] = []

    if not shutil.which("tshark"):
        log("tshark is not installed: it is the reference (apt-get install tshark)")
        return 2

    # -- 1. base capture ----------------------------------------------------------------------
    base = out / ("base-smoke.pcap" if smoke else "base.pcap")
    meta = base.with_suffix(".json")
    if a.rebuild_base or not base.exists() or not meta.exists():
        log(f"recording the base capture {base.name} ...")
        how = benchcap.record_base(base, smoke, log)
        meta.write_text(json.dumps({"how": how, "sha256": hashlib.sha256(base.read_bytes()).hexdigest()}))
    results["base"] = json.loads(meta.read_text()) | {"file": base.name}
    log(f"base: {results['base']['how']}")

    # -- 2. benchmark captures ----------------------------------------------------------------
    def built(path: Path, make: Callable[[], object]) -> Path:
        stamp = path.with_name(path.name + ".ok")
        version = f"replication {benchcap.REPLICATION_VERSION}"
        if not (path.exists() and stamp.exists() and stamp.stat().st_mtime >= base.stat().st_mtime
                and stamp.read_text() == version):
            log(f"building {path.name} ...")
            make()
            stamp.write_text(version)
        return path

    tag = f"{'smoke-' if smoke else ''}{n}"
    pcap = out / f"bench-{tag}.pcap"
    pcapng = out / f"bench-{tag}.pcapng"
    built(pcap, lambda: benchcap.build(base, n, pcap, pcapng))
    ps_cut = built(out / f"cut-{tag}-{ps_n}.pcap", lambda: benchcap.cut(pcap, out / f"cut-{tag}-{ps_n}.pcap", ps_n))
    truth_cut = built(out / f"truthcut-{tag}-{truth_n}.pcap",
                      lambda: benchcap.cut(pcap, out / f"truthcut-{tag}-{truth_n}.pcap", truth_n))
    parts = [out / f"part-{tag}-{i}of{a.files}.pcap" for i in range(a.files)]
    built(parts[-1], lambda: benchcap.split(pcap, parts, n))
    size_mb = pcap.stat().st_size / 1e6
    results["file"] = {"pcap": pcap.name, "pcap_mb": round(size_mb, 1), "pcapng_mb": round(pcapng.stat().st_size / 1e6, 1)}
    log(f"{pcap.name}: {n} packets, {size_mb:.0f} MB")

    # -- 3. timings -----------------------------------------------------------------------------
    # loopcap's modules byte-compiled, as an installed package is (pip compiles at install): where
    # PYTHONDONTWRITEBYTECODE is set (containers often set it), an editable checkout would otherwise
    # compile its sources again in every timed process (0.15 s each)
    for pkg in ("analyzers", "capture", "loopcap"):
        compileall.compile_dir(REPO / pkg, quiet=1)
    rows: list[Row] = []
    loopcap_cli = [PY, "-m", "loopcap", "analyze", "--json"]

    def bench_row(name: str, cmd: list[str], file: Path, note: str = "", times: int = runs, scale: float = 1.0,
                  keep: Path | None = None, ratio_to: str | None = "", mem_limit: int = 0,
                  env: dict[str, str] | None = None, cwd: Path = REPO) -> Row:
        row = Row(name, file.name, note=note, scale=scale, ratio_to=ratio_to)
        for i in range(times):
            dest = keep if keep is not None else out / "last.out"
            m = measure(cmd, dest, env=env, mem_limit=mem_limit, cwd=cwd)
            if m.returncode != 0 and mem_limit and "MemoryError" in m.stderr:
                row.skipped = f"exceeded the {mem_limit / 2**30:.1f} GiB memory cap (MemoryError after {m.seconds:.0f} s)"
                log(f"{name} [{file.name}]: {row.skipped}")
                break
            if m.returncode != 0:
                failures.append(f"{name}: exit {m.returncode}: {m.stderr.strip()[-400:]}")
                row.skipped = f"failed (exit {m.returncode})"
                break
            row.seconds.append(m.seconds)
            row.rss_kb.append(m.max_rss_kb)
            row.tree_kb.append(m.tree_kb)
            row.other_load.append(m.other_load)
            log(f"{name} [{file.name}] run {i + 1}/{times}: {m.seconds:.2f} s, {m.max_rss_kb / 1024:.0f} MB "
                f"(all processes: {m.tree_kb / 1024:.0f} MB) "
                f"(other processes: {m.other_load:.2f} cores)")
        rows.append(row)
        return row

    tshark = bench_row("tshark -q -z conv,tcp", ["tshark", "-n", "-r", str(pcap), "-q", "-z", "conv,tcp"], pcap,
                       keep=out / "tshark-conv.txt")
    tshark_conns = conv_rows((out / "tshark-conv.txt").read_text())
    tshark.connections = tshark_conns
    bench_row("tshark -q -z conv,tcp", ["tshark", "-n", "-r", str(pcapng), "-q", "-z", "conv,tcp"], pcapng)
    if a.extra:
        bench_row("tshark -T fields (stream, flags, seq, ack, ports)",
                  ["tshark", "-n", "-r", str(pcap), "-T", "fields", "-e", "frame.number", "-e", "tcp.stream",
                   "-e", "tcp.flags", "-e", "tcp.seq_raw", "-e", "tcp.ack_raw", "-e", "tcp.srcport",
                   "-e", "tcp.dstport"], pcap)
    if shutil.which("tcpdump"):
        bench_row("tcpdump -nn -r (prints, no tracking)", ["tcpdump", "-nn", "-r", str(pcap)], pcap)
    bench_row("cat (reading the file)", ["cat", str(pcap)], pcap)
    doc_path = out / f"loopcap-{tag}.json"
    jobs = max(1, a.jobs)
    # the default command: the peers' views too, a large file sharded by flow on every core
    default_name = f"loopcap analyze --json (default: with the peers' views, streamed, {jobs} processes)"
    lc = bench_row(default_name, [*loopcap_cli, "-j", str(jobs), str(pcap)], pcap, keep=doc_path)
    bench_row(default_name, [*loopcap_cli, "-j", str(jobs), str(pcapng)], pcapng)
    if jobs > 1:
        bench_row("loopcap analyze --json -j 1 (default: with the peers' views, streamed, 1 process)",
                  [*loopcap_cli, "-j", "1", str(pcap)], pcap)
    # the core analysis alone (what the Dask engine runs)
    help_text = subprocess.run([*loopcap_cli[:-1], "--help"], capture_output=True, text=True, cwd=REPO).stdout
    no_peers = ["--no-peers"] if "--no-peers" in help_text else []
    lc_plain = lc
    lc_one = lc
    if no_peers:
        # the core analysis streams: on every core (flow shards) by default, in one process with -j 1
        lc_plain = bench_row(f"loopcap analyze --json --no-peers (streamed, {jobs} processes)",
                             [*loopcap_cli, *no_peers, "-j", str(jobs), str(pcap)], pcap, keep=out / "no-peers.json")
        bench_row(f"loopcap analyze --json --no-peers (streamed, {jobs} processes)",
                  [*loopcap_cli, *no_peers, "-j", str(jobs), str(pcapng)], pcapng)
        lc_one = bench_row("loopcap analyze --json --no-peers -j 1 (streamed, 1 process)",
                           [*loopcap_cli, *no_peers, "-j", "1", str(pcap)], pcap)
        bench_row("loopcap analyze --json --no-peers -j 1 (streamed, 1 process)",
                  [*loopcap_cli, *no_peers, "-j", "1", str(pcapng)], pcapng)
    # (not in the smoke run: the build takes minutes, and tests/test_compiled_build.py checks it)
    compiled_doc = compiled_rows(a.compiled and not smoke, out, jobs, no_peers, pcap, pcapng, bench_row)
    sharded = bench_row(f"loopcap analyze_many, 1 file sharded by flow, {jobs} processes",
                        [PY, str(HERE / "benchtools.py"), "loopcap-many", str(jobs), "1", str(pcap)], pcap,
                        keep=out / "sharded.out")
    if not sharded.skipped:
        sharded.connections = json.loads((out / "sharded.out").read_text())["connections"]

    if have("dpkt"):
        r = bench_row("dpkt loop (decode + track)", [PY, str(HERE / "benchtools.py"), "dpkt", str(pcap)], pcap,
                      keep=out / "dpkt.out")
        r.connections = None if r.skipped else json.loads((out / "dpkt.out").read_text())["connections"]
    else:
        rows.append(Row("dpkt loop (decode + track)", pcap.name, skipped="not installed (pip install dpkt)"))
    if have("scapy"):
        r = bench_row("scapy PcapReader (decode + track)", [PY, str(HERE / "benchtools.py"), "scapy", str(pcap)],
                      pcap, times=a.slow_runs, keep=out / "scapy.out")
        r.connections = None if r.skipped else json.loads((out / "scapy.out").read_text())["connections"]
    if have("pyshark"):
        bench_row(f"pyshark FileCapture (JSON), on a {ps_n}-packet cut, extrapolated x{n / ps_n:g}",
                  [PY, str(HERE / "benchtools.py"), "pyshark", str(ps_cut)], ps_cut, times=a.slow_runs,
                  scale=n / ps_n)

    # -- memory at a second size ------------------------------------------------------------------
    mem: dict[str, Any] = {}
    if mem_n:
        big = out / f"bench-{'smoke-' if smoke else ''}{mem_n}.pcap"
        built(big, lambda: benchcap.build(base, mem_n, big, None))
        cap = memory_cap()
        # the memory target is the streamed core analysis in one process (-j 1): its 1M row above
        # and the same command on the big file
        r = bench_row("loopcap analyze --json --no-peers -j 1 (memory point)",
                      [*loopcap_cli, *no_peers, "-j", "1", str(big)], big, times=1,
                      keep=out / "mem-big.json", ratio_to=None, mem_limit=cap)
        (out / "mem-big.json").unlink(missing_ok=True)
        if r.skipped.startswith("exceeded"):
            mem = {"packets_small": n, "peak_mb_small": round(lc_one.peak_mb, 1), "packets_big": mem_n,
                   "peak_mb_big": None, "cap_mb": round(cap / 2**20), "growth": None}
        elif not r.skipped:
            mem = {"packets_small": n, "peak_mb_small": round(lc_one.peak_mb, 1), "packets_big": mem_n,
                   "peak_mb_big": round(r.peak_mb, 1), "growth": round(r.peak_mb / lc_one.peak_mb, 2),
                   "seconds_big": round(r.median, 2)}
        if a.memory_default and not lc.skipped:
            # the default command (the peers' views too) streams as well: the same two sizes
            d = bench_row("loopcap analyze --json, default (memory point)", [*loopcap_cli, str(big)], big, times=1,
                          keep=out / "mem-big.json", ratio_to=None, mem_limit=cap)
            (out / "mem-big.json").unlink(missing_ok=True)
            if not d.skipped and mem:
                mem.update(default_peak_mb_small=round(lc.peak_mb, 1), default_peak_mb_big=round(d.peak_mb, 1),
                           default_growth=round(d.peak_mb / lc.peak_mb, 2))
    results["memory"] = mem

    # -- multi-core and Dask on a set of files ------------------------------------------------------
    multi: dict[str, Any] = {"files": a.files, "jobs": jobs}
    pstr = [str(p) for p in parts]
    # what a user runs on a set of files: JSON Lines, each file streamed (by the workers, in parallel)
    one = bench_row(f"loopcap analyze --json --no-peers, {a.files} files, 1 process",
                    [*loopcap_cli, *no_peers, "-j", "1", *pstr], parts[0], ratio_to=pcap.name)
    many = bench_row(f"loopcap analyze --json --no-peers, {a.files} files, {jobs} processes",
                     [*loopcap_cli, *no_peers, "-j", str(jobs), *pstr], parts[0], ratio_to=pcap.name)
    if one.seconds and many.seconds:
        multi["speedup_files"] = round(one.median / many.median, 2)
    if lc_one.seconds and lc_plain.seconds and lc_one is not lc_plain:
        # one large file: the streamed analysis in one process against the same on every core
        multi["speedup_streamed_file"] = round(lc_one.median / lc_plain.median, 2)
    if not a.no_dask and have("distributed"):
        d = bench_row(f"loopcap on Dask LocalCluster ({jobs} worker processes), {a.files} files",
                      [PY, str(HERE / "benchtools.py"), "loopcap-dask", str(jobs), str(1 << 62), *pstr], parts[0],
                      keep=out / "dask.out", ratio_to=pcap.name)
        if not d.skipped:
            info = json.loads((out / "dask.out").read_text())
            multi["dask_seconds_in_cluster"] = round(info["seconds"], 2)
            multi["dask_cluster_start_seconds"] = round(info["cluster_start_seconds"], 2)
            if one.seconds:
                multi["dask_speedup_vs_1_process"] = round(one.median / info["seconds"], 2)
    results["multicore"] = multi

    # -- 4. correctness -----------------------------------------------------------------------------
    log("correctness: loopcap vs tshark on the whole file ...")
    doc = json.loads(doc_path.read_text())
    lc.connections = len(doc["tcp"])
    plain_path = out / "no-peers.json" if no_peers else doc_path
    single_digest = digest([json.loads(plain_path.read_text())]) if no_peers else digest([doc])
    ts = tshark_streams(pcap)
    bad = compare_with_tshark(doc, ts)
    checks: dict[str, Any] = {
        "connections_loopcap": len(doc["tcp"]), "connections_tshark_streams": len(ts),
        "tshark_conv_tcp_rows": tshark_conns, "whole_file_mismatches": bad[:20],
        "udp_conversations": len(doc["udp"]),
        "distinct_4tuples": len({frozenset(((c["client"]["ip"], c["client"]["port"]),
                                            (c["server"]["ip"], c["server"]["port"]))) for c in doc["tcp"]}),
    }
    if bad:
        failures.append(f"loopcap differs from tshark on the whole file: {bad[:3]}")
    summary, mism = truth_agreement(truth_cut, out)
    checks["truth_cut"] = {"packets": truth_n, "agreement": summary, "mismatches": mism[:20]}
    if mism:
        failures.append(f"truth format disagreement on the cut: {mism[:3]}")
    # the multi-core and Dask documents equal the single-process ones
    from analyzers.analysis import analyze_file
    from analyzers.parallel import analyze_many

    ref_parts = digest([analyze_file(p).to_dict() for p in parts])
    same: dict[str, bool] = {}
    same["sharded_file_vs_single"] = digest(analyze_many([pcap], None, max(2, jobs), split_bytes=1)) == single_digest
    same["files_jobs_vs_single"] = digest(analyze_many(parts, None, max(2, jobs))) == ref_parts
    if not a.no_dask and have("distributed"):
        from analyzers.dask_engine import analyze_many_dask

        dist: Any = importlib.import_module("distributed")
        with dist.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                               host="127.0.0.1", dashboard_address=None) as cluster, dist.Client(cluster) as client:
            same["dask_files_vs_single"] = digest(analyze_many_dask(parts, None, scheduler=client)) == ref_parts
            same["dask_sharded_file_vs_single"] = digest(
                analyze_many_dask([pcap], None, scheduler=client, split_bytes=1)) == single_digest
    if compiled_doc is not None and no_peers:
        same["compiled_vs_pure"] = compiled_doc.read_bytes() == plain_path.read_bytes()
    checks["identical_results"] = same
    for k, v in same.items():
        if not v:
            failures.append(f"{k}: documents differ")
    for r in rows:
        if r.connections is not None and r.connections != len(ts):
            checks.setdefault("connection_counts_off", {})[f"{r.name} [{r.file}]"] = r.connections
    results["checks"] = checks

    # -- 5. profile ---------------------------------------------------------------------------------
    if a.profile:
        prof_n = min(n, 200_000)
        prof_cut = built(out / f"profcut-{tag}-{prof_n}.pcap",
                         lambda: benchcap.cut(pcap, out / f"profcut-{tag}-{prof_n}.pcap", prof_n))
        run_profiles(pcap, prof_cut, out)

    # -- report ---------------------------------------------------------------------------------------
    ref = {pcap.name: tshark.median}
    tng = next((r for r in rows if r.name.startswith("tshark -q") and r.file == pcapng.name), None)
    if tng is not None:
        ref[pcapng.name] = tng.median
    results["rows"] = [{"name": r.name, "file": r.file, "seconds_median": None if not r.seconds else round(r.median, 3),
                        "runs": len(r.seconds), "peak_mb": None if not r.rss_kb else round(r.peak_mb, 1),
                        "all_processes_mb": None if not r.tree_kb else round(r.tree_mb, 1),
                        "ratio_vs_tshark": None if not r.seconds or r.ratio_to is None
                        else round(r.median / ref.get(r.ratio_to or r.file, tshark.median), 3),
                        "connections": r.connections, "note": r.note, "skipped": r.skipped,
                        "seconds_all": [round(x, 3) for x in r.seconds],
                        "other_load_cores": [round(x, 2) for x in r.other_load]} for r in rows]
    results["failures"] = failures
    results["seconds_total"] = round(time.perf_counter() - t_start, 1)
    table = render(results, rows, ref, tshark.median)
    (out / f"results-{tag}.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / f"results-{tag}.md").write_text(table)
    print(table)
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print(f"all correctness checks passed ({results['seconds_total']} s)")
    return 0


def compiled_rows(wanted: bool, out: Path, jobs: int, no_peers: list[str], pcap: Path, pcapng: Path,
                  bench_row: Callable[..., Row]) -> Path | None:
    """The main commands again with the compiled build (mypyc, ``LOOPCAP_MYPYC=1``); its ``--no-peers``
    document (to compare with the pure build's), or None when not run."""
    if not wanted:
        return None
    sys.path.insert(0, str(REPO / "scripts"))
    import build_compiled

    reason = build_compiled.why_not()
    if reason is not None:
        log(f"compiled build: skipped ({reason})")
        return None
    log("compiled build: building (mypyc, a few minutes; reused while the sources do not change) ...")
    site = build_compiled.build(out / "compiled")
    compileall.compile_dir(site, quiet=1)
    # the compiled package first on the path, and not the checkout (the working directory of
    # ``python -m``, so not the repository)
    env = {**os.environ, "PYTHONPATH": str(site)}
    row = functools.partial(bench_row, env=env, cwd=out)
    cli = [PY, "-m", "loopcap", "analyze", "--json"]
    name = "loopcap analyze --json, compiled (mypyc)"
    row(f"{name}, default, {jobs} processes", [*cli, "-j", str(jobs), str(pcap)], pcap)
    if jobs > 1:
        row(f"{name}, default, -j 1", [*cli, "-j", "1", str(pcap)], pcap)
    if not no_peers:
        return None
    doc = out / "no-peers-compiled.json"
    row(f"{name} --no-peers, {jobs} processes", [*cli, *no_peers, "-j", str(jobs), str(pcap)], pcap, keep=doc)
    row(f"{name} --no-peers, {jobs} processes", [*cli, *no_peers, "-j", str(jobs), str(pcapng)], pcapng)
    row(f"{name} --no-peers -j 1", [*cli, *no_peers, "-j", "1", str(pcap)], pcap)
    return doc


def render(results: dict[str, Any], rows: list[Row], ref: dict[str, float], tshark_s: float) -> str:
    n = results["packets"]
    f = results["file"]
    lines = [f"loopcap benchmark: {n:,} packets ({f['pcap_mb']} MB pcap, {f['pcapng_mb']} MB pcapng), "
             f"{results['cores']} cores, medians of {results['runs']} run(s)",
             f"base capture: {results['base']['how']}", "",
             "| contender | file | wall time vs `tshark -q -z conv,tcp` (>1 slower) | seconds | peak memory "
             "(largest process) | all processes (PSS) | connections |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.skipped or not r.seconds:
            lines.append(f"| {r.name} | {r.file} | {r.skipped or 'not run'} | | | | |")
            continue
        runs = f" (n={len(r.seconds)})" if len(r.seconds) != results["runs"] else ""
        if r.ratio_to is None:
            speed = "(not compared)"
        else:
            ratio = r.median / ref.get(r.ratio_to or r.file, tshark_s)
            speed = f"{ratio:.3f}x ({1 / ratio:.1f}x faster)" if ratio < 1 else f"{ratio:.2f}x"
            if r.ratio_to:
                speed += f" (vs tshark on {r.ratio_to})"
        tree = f"{r.tree_mb:.0f} MB" if any(r.tree_kb) else "(too short to sample)"
        lines.append(f"| {r.name} | {r.file} | {speed}{runs} | {r.median:.2f} | {r.peak_mb:.0f} MB | "
                     f"{tree} | {'' if r.connections is None else r.connections} |")
    m = results.get("memory") or {}
    if m and m.get("peak_mb_big") is None:
        lines += ["", f"loopcap peak memory: {m['peak_mb_small']} MB at {m['packets_small']:,} packets; at "
                      f"{m['packets_big']:,} packets it exceeded the {m['cap_mb']} MB cap of the run"]
    elif m:
        lines += ["", f"loopcap peak memory: {m['peak_mb_small']} MB at {m['packets_small']:,} packets, "
                      f"{m['peak_mb_big']} MB at {m['packets_big']:,} packets ({m['growth']}x; flat within 20% "
                      f"is the target)"]
        if "default_growth" in m:
            lines += [f"the default command (with the peers' views): {m['default_peak_mb_small']} MB at "
                      f"{m['packets_small']:,} packets, {m['default_peak_mb_big']} MB at {m['packets_big']:,} "
                      f"({m['default_growth']}x)"]
    mc = results.get("multicore") or {}
    if mc:
        parts = [f"{k} = {v}" for k, v in mc.items()]
        lines += ["", "multi-core / Dask: " + ", ".join(parts)]
    c = results["checks"]
    loads = [x for r in rows for x in r.other_load]
    if loads:
        lines += ["", f"other processes on the machine during the timed runs: {statistics.median(loads):.2f} cores "
                      f"median, {max(loads):.2f} max (of {results['cores']})"]
    lines += ["", f"correctness: loopcap {c['connections_loopcap']} TCP connections, tshark {c['connections_tshark_streams']} "
                  f"tcp.stream values ({c['tshark_conv_tcp_rows']} conv,tcp rows; {c['distinct_4tuples']} distinct "
                  f"4-tuples); whole-file mismatches: {len(c['whole_file_mismatches'])}",
              f"truth format on a {c['truth_cut']['packets']}-packet cut: {c['truth_cut']['agreement']}",
              "identical documents: " + ", ".join(f"{k}={v}" for k, v in c["identical_results"].items())]
    if c.get("connection_counts_off"):
        lines.append("tools with another connection count: " + json.dumps(c["connection_counts_off"]))
    return "\n".join(lines) + "\n"


def run_profiles(pcap: Path, cut: Path, out: Path) -> None:
    """pyinstrument (statistical, low overhead) on the whole file and cProfile (per-function totals,
    several times slower) on a cut, of ``loopcap analyze --json`` in one process (a shard of a sharded
    run does the same per-packet work on its share), with the peers' views (the default) and without."""
    import io
    import pstats

    for tag, extra in (("", []), ("-no-peers", ["--no-peers"])):
        cmd = ["-m", "loopcap", "analyze", "--json", "-q", "-j", "1", *extra]
        if have("pyinstrument"):
            log(f"profiling{tag or ' the default command'} with pyinstrument ...")
            subprocess.run([PY, "-m", "pyinstrument", "-o", str(out / f"profile-pyinstrument{tag}.txt"), "-r", "text",
                            "--show-all", *cmd, str(pcap)], stdout=subprocess.DEVNULL, check=False, cwd=REPO)
        log(f"profiling{tag or ' the default command'} with cProfile ...")
        stats = out / f"profile{tag}.cprof"
        subprocess.run([PY, "-m", "cProfile", "-o", str(stats), *cmd, str(cut)],
                       stdout=subprocess.DEVNULL, check=False, cwd=REPO)
        buf = io.StringIO()
        pstats.Stats(str(stats), stream=buf).sort_stats("tottime").print_stats(30)
        (out / f"profile-cprofile{tag}.txt").write_text(buf.getvalue())


if __name__ == "__main__":
    sys.exit(main())
