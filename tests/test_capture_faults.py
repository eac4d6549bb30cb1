"""Live capture under faults: SIGINT / SIGTERM at random moments, a full disk, a file-size limit and
an unwritable output path, through the real command line (``python -m loopcap capture``), with the
scapy and the pyshark (dumpcap) backends.

What must hold every time:

* the file on disk is a valid capture (every record whole, checked by our own walk, loopcap's reader
  and capinfos) holding exactly the packets the command reported, and ``loopcap analyze`` reads it
  without a damage warning;
* a fault gives a one-paragraph error and exit code 2, never a traceback, and what was captured
  until then is kept;
* a signal that arrives before loopcap has installed its handlers (interpreter start-up) ends the
  process before any output file exists.

CI runs ``CI_RUNS`` interruptions per backend and signal; ``LOOPCAP_FAULT_RUNS=25`` runs 25 each (the
figures in SECURITY.md).  Everything runs on 127.0.0.1 with bounded loops; the full-disk and
read-only cases mount a small tmpfs (root only) and unmount it in ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from echopump import EchoPump

from analyzers.analysis import analyze_file
from capture.live import privileges
from capture.live.pcapwriter import whole_records

HAVE_RAW = privileges.has_cap_net_raw()
needs_raw = pytest.mark.skipif(not HAVE_RAW, reason="live capture needs root or CAP_NET_RAW")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
HAVE_DUMPCAP = shutil.which("dumpcap") is not None and shutil.which("tshark") is not None
needs_dumpcap = pytest.mark.skipif(not HAVE_DUMPCAP, reason="needs dumpcap and tshark")
BACKENDS = ["scapy", pytest.param("pyshark", marks=needs_dumpcap)]
#: interruptions per backend and signal in CI (a pyshark run costs ~6 s: dumpcap's drain, pyshark's read-back)
CI_RUNS = {"scapy": 3, "pyshark": 2}
FULL_RUNS = int(os.environ.get("LOOPCAP_FAULT_RUNS", "0"))
SEED = int(os.environ.get("LOOPCAP_FAULT_SEED", "7"))


# --------------------------------------------------------------------------------- traffic
def echo_traffic(*, size: int = 64, pause: float = 0.005, limit: int = 100_000) -> EchoPump:
    """Echo exchanges on 127.0.0.1 in two threads, ``pause`` seconds apart, from the moment it
    starts until it is stopped (bounded: 40 s, ``limit`` exchanges)."""
    return EchoPump(size=size, pause=pause, seconds=40.0, limit=limit)


# --------------------------------------------------------------------------------- checks
def capinfos_count(path: Path) -> int | None:
    if shutil.which("capinfos") is None:
        return None
    res = subprocess.run(["capinfos", "-M", "-c", str(path)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and "cut short" not in res.stderr, res.stderr
    return int(res.stdout.strip().splitlines()[-1].split(":")[-1])


def assert_valid_capture(path: Path, reported: int | None) -> int:
    """Whole records only (our walk, loopcap's reader, capinfos) and exactly ``reported`` packets."""
    data = path.read_bytes()
    packets, end = whole_records(data)
    assert end == len(data), f"{path}: {len(data) - end} bytes after the last whole record"
    res = analyze_file(path)
    assert not res.read_warnings, [str(w) for w in res.read_warnings]
    assert res.packets == packets
    counted = capinfos_count(path)
    assert counted is None or counted == packets
    if reported is not None:
        assert packets == reported, f"the file holds {packets} packets, the capture reported {reported}"
    proc = subprocess.run([sys.executable, "-m", "loopcap", "analyze", "--json", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert json.loads(proc.stdout)["damaged"] is False
    return packets


def stop_child(proc: subprocess.Popen[str]) -> None:
    """After a failed assertion or a timeout: stop the capture the way a user would (SIGINT, so that
    it stops its dumpcap, which runs in a session of its own), and only then kill it."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def capture_cmd(backend: str, port: int, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "loopcap", "capture", "--backend", backend, "-i", "lo", "-f", f"tcp port {port}",
            "-w", str(out), "--json", *extra]


@dataclass
class Tally:
    """What the interruption runs saw (printed at the end; SECURITY.md quotes a long run)."""

    runs: int = 0
    files_verified: int = 0
    packets_verified: int = 0
    before_handlers: int = 0
    interpreter_start: int = 0
    after_stop: int = 0
    outcomes: list[str] = field(default_factory=list)


TALLY: dict[str, Tally] = {}


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    for key, t in sorted(TALLY.items()):
        print(f"\n{key}: {t.runs} runs, {t.files_verified} files verified ({t.packets_verified} packets), "
              f"{t.before_handlers} signalled before loopcap's handlers were installed ({t.interpreter_start} while "
              f"the interpreter started), {t.after_stop} after the capture had stopped")


# --------------------------------------------------------------------------------- signals
@pytest.mark.live
@needs_raw
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_signal_at_a_random_moment_leaves_a_valid_file_with_every_reported_packet(
        backend: str, sig: signal.Signals, tmp_path: Path) -> None:
    """The process is signalled at a random instant from its start (interpreter start-up, capture
    start, traffic, already stopping) while traffic flows the whole time."""
    tally = TALLY.setdefault(f"{backend}-{sig.name}", Tally())
    rng = random.Random(f"{SEED}-{backend}-{sig.name}")
    horizon = 2.5 if backend == "scapy" else 3.5  # start-up takes ~0.7 s (scapy) / ~1 s (dumpcap)
    runs = FULL_RUNS or CI_RUNS[backend]
    for run in range(runs):
        delay = rng.uniform(0.0, horizon)
        out = tmp_path / f"run{run}.{rng.choice(['pcap', 'pcapng'])}"
        with echo_traffic(pause=0.02) as pump:  # ~400 packets/s: pyshark's read-back costs ~1 ms per packet
            proc = subprocess.Popen(capture_cmd(backend, pump.port, out), cwd=REPO, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True)
            try:
                time.sleep(delay)
                os.kill(proc.pid, sig)
                stdout, stderr = proc.communicate(timeout=60)
            finally:
                stop_child(proc)
        where = f"run {run} ({backend}, {sig.name} after {delay:.3f} s)"
        tally.runs += 1
        if "capturing on lo" not in stderr:
            # signalled before the capture started: the process ends, and leaves no file
            tally.before_handlers += 1
            if sig == signal.SIGTERM:
                assert proc.returncode in (-signal.SIGTERM, 0), (where, proc.returncode, stderr[-500:])
            else:
                assert proc.returncode in (130, 1, 0, -signal.SIGINT), (where, proc.returncode, stderr[-500:])
                if "Traceback" in stderr:
                    # only while the interpreter itself starts (site and .pth imports), before any loopcap
                    # code runs: loopcap's entry points end a Ctrl+C during their own imports with 130
                    assert "KeyboardInterrupt" in stderr, (where, stderr)
                    assert not any(f"/{pkg}/" in stderr for pkg in ("loopcap", "capture", "analyzers")), (where, stderr)
                    tally.interpreter_start += 1
            assert not out.exists(), where
            continue
        assert "Traceback" not in stderr, (where, stderr)
        if proc.returncode != 0:
            # the capture had ended and loopcap had put the default handlers back (it was printing the
            # statistics): the process ends as interrupted, the file is already complete
            assert (proc.returncode, sig) in ((130, signal.SIGINT), (-signal.SIGTERM, signal.SIGTERM)), \
                (where, proc.returncode, stderr[-2000:])
            tally.after_stop += 1
            tally.packets_verified += assert_valid_capture(out, None)
            tally.files_verified += 1
            continue
        stats = json.loads(stdout)
        assert stats["stop_reason"] in (f"interrupted ({sig.name})", "backend exited"), (where, stats)
        n = assert_valid_capture(out, stats["packets_written"])
        if backend == "pyshark":
            assert stats["verified_packets"] == n, where
        tally.files_verified += 1
        tally.packets_verified += n
        tally.outcomes.append(f"{delay:.2f}s:{n}")
    assert tally.runs == runs


@pytest.mark.live
@needs_raw
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_second_signal_while_stopping_changes_nothing(backend: str, tmp_path: Path) -> None:
    out = tmp_path / "twice.pcapng"
    with echo_traffic() as pump:
        proc = subprocess.Popen(capture_cmd(backend, pump.port, out), cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            assert "capturing on lo" in line, line
            time.sleep(0.3)
            os.kill(proc.pid, signal.SIGINT)
            time.sleep(0.05)
            os.kill(proc.pid, signal.SIGTERM)
            os.kill(proc.pid, signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            stop_child(proc)
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr
    assert assert_valid_capture(out, json.loads(stdout)["packets_written"]) > 0


# --------------------------------------------------------------------------------- the disk
@contextlib.contextmanager
def tmpfs(path: Path, *options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(path)], check=True,
                   capture_output=True, timeout=30)
    try:
        yield path
    finally:
        for _ in range(50):
            if subprocess.run(["umount", str(path)], capture_output=True, timeout=30).returncode == 0:
                break
            time.sleep(0.1)  # a writer still closing its file
        else:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def run_until_it_fails(cmd: list[str], pump: EchoPump, *,
                       preexec: Callable[[], object] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=preexec)
    try:
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        stop_child(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def assert_clear_write_error(res: subprocess.CompletedProcess[str], out: Path, reason: str) -> int:
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr
    assert "capturing on lo" in res.stderr.splitlines()[0], res.stderr  # the capture had started
    error = res.stderr.split("\n", 1)[1]
    assert error.startswith("loopcap: error: Writing "), res.stderr
    text = " ".join(error.split())
    assert reason in text, text
    assert "The file holds those packets and is valid." in text and "Fix:" in text
    reported = int(text.split(" failed after ")[1].split(" packet")[0])
    assert reported > 0
    return assert_valid_capture(out, reported)


@pytest.mark.live
@needs_raw
@needs_root
@pytest.mark.parametrize(("backend", "fmt"), [("scapy", "pcap"), ("scapy", "pcapng"),
                                              pytest.param("pyshark", "pcapng", marks=needs_dumpcap)])
def test_a_full_disk_is_a_clear_error_and_the_packets_before_it_are_kept(backend: str, fmt: str,
                                                                        tmp_path: Path) -> None:
    """A 64 KiB tmpfs fills after ~230 packets: before the fix the last record was cut at the byte
    where the disk filled (scapy: 'The file holds those packets and is valid' was false; pyshark:
    success reported for a damaged file)."""
    with tmpfs(tmp_path / "small", "size=64k") as mnt, echo_traffic(size=1000, pause=0) as pump:
        out = mnt / f"full.{fmt}"
        res = run_until_it_fails(capture_cmd(backend, pump.port, out), pump)
        reason = "No space left on device" if backend == "scapy" else "no space left on the file system"
        n = assert_clear_write_error(res, out, reason)
        assert out.stat().st_size > 60_000 and n > 100


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))


@pytest.mark.live
@needs_raw
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_file_size_limit_is_a_clear_error_and_the_packets_before_it_are_kept(backend: str,
                                                                              tmp_path: Path) -> None:
    """``ulimit -f``: the writer gets EFBIG (scapy backend; SIGXFSZ is ignored there) or dumpcap is
    killed by SIGXFSZ (pyshark backend); either way the file is cut back to its last whole record."""
    out = tmp_path / "limited.pcap"
    with echo_traffic(size=1000, pause=0) as pump:
        res = run_until_it_fails(capture_cmd(backend, pump.port, out), pump, preexec=_limit_file_size)
    reason = "File too large" if backend == "scapy" else "file-size limit"
    n = assert_clear_write_error(res, out, reason)
    assert 30_000 < out.stat().st_size <= 40_000 and n > 20


@pytest.mark.live
@needs_raw
@needs_root
@pytest.mark.parametrize("backend", BACKENDS)
def test_an_unwritable_output_path_is_a_clear_error_before_capturing(backend: str, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    with tmpfs(ro, "size=64k", "ro"):
        cases = [(ro / "x.pcap", "Read-only file system"), (tmp_path / "missing" / "x.pcap", "does not exist"),
                 (tmp_path, "is a directory"), (tmp_path / "file.pcap" / "x.pcap", "Not a directory")]
        (tmp_path / "file.pcap").write_bytes(b"")
        for out, reason in cases:
            res = subprocess.run(capture_cmd(backend, 9, out), cwd=REPO, capture_output=True, text=True, timeout=60)
            assert res.returncode == 2, (out, res.returncode, res.stderr)
            assert "Traceback" not in res.stderr, res.stderr
            assert res.stderr.startswith(("loopcap: error: ", "Usage: ")), res.stderr  # click: a directory
            assert reason in res.stderr and ("Fix:" in res.stderr or "Error: Invalid value" in res.stderr), res.stderr
            assert not (out.is_file() and out.stat().st_size), out
        assert list(ro.iterdir()) == []


# --------------------------------------------------------------------------------- units (no capture)
def test_a_record_the_file_system_refuses_halfway_is_cut_off_again(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's half of the full-disk fix, without a disk: the kernel takes part of a record, then
    says ENOSPC; the file must end on the previous record and hold every packet written before."""
    import errno

    from capture.live.pcapwriter import PacketFileWriter

    for fmt in ("pcap", "pcapng"):
        path = tmp_path / f"w.{fmt}"
        w = PacketFileWriter.create(path, "pcap" if fmt == "pcap" else "pcapng", linktype=1, snaplen=262144,
                                    interface="lo")
        for i in range(5):
            w.write(1_700_000_000_000_000_000 + i, bytes(100 + i), 100 + i)
        calls = 0

        def partial_then_full(fd: int, data: Any, real_write: Any = os.write) -> int:
            nonlocal calls
            calls += 1
            if calls == 1:
                return int(real_write(fd, bytes(data)[:37]))  # the kernel took 37 bytes of the record
            raise OSError(errno.ENOSPC, "No space left on device")

        real_write = os.write

        monkeypatch.setattr(os, "write", partial_then_full)
        with pytest.raises(OSError):
            w.write(1_700_000_000_000_000_009, bytes(500), 500)
        monkeypatch.setattr(os, "write", real_write)
        with contextlib.suppress(OSError):
            w.close()
        packets, end = whole_records(path.read_bytes())
        assert (packets, end) == (5, path.stat().st_size), fmt


def test_a_capture_file_cut_by_a_killed_writer_is_trimmed_to_its_last_whole_record(tmp_path: Path) -> None:
    from capture.live.pcapwriter import trim_to_whole_records

    for name in ("tcp-echo-ipv4.pcap", "tcp-echo-ipv4.pcapng"):
        data = (REPO / "pcaps" / name).read_bytes()
        end = whole_records(data)[1]
        for cut in (len(data) - 1, len(data) - 30, end):
            path = tmp_path / name
            path.write_bytes(data[:cut])
            packets, removed = trim_to_whole_records(path)
            assert whole_records(path.read_bytes())[1] == path.stat().st_size
            assert analyze_file(path).read_warnings == []
            assert packets == analyze_file(path).packets and removed == cut - path.stat().st_size


def test_dumpcaps_write_errors_are_recognized() -> None:
    from capture.live.pyshark_backend import _write_problem

    full = ("Capturing on 'Loopback: lo'\nFile: /x.pcap\ndumpcap: Not all the packets could be written to the file"
            " to which the capture was being saved\n(\"/x.pcap\") because there is no space left on the file "
            "system\non which that file resides.\nPackets captured: 215\n")
    problem = _write_problem(full, 1)
    assert problem is not None and problem.startswith("dumpcap: Not all the packets could be written")
    assert "Packets captured" not in problem and not problem.endswith(".")
    assert _write_problem(full, 0) is None  # a clean exit is not a write error
    assert _write_problem("Packets captured: 3\n", 1) is None
    assert _write_problem("", -signal.SIGXFSZ) == "dumpcap exceeded the file-size limit (ulimit -f) and was killed"
