"""The pyshark backend: dumpcap captures, pyshark verifies.

What each part does, honestly:

* **dumpcap** (Wireshark's capture engine, the program pyshark's ``LiveCapture`` runs) does the
  capturing and writes the file. We start it ourselves, as an argument list (never a shell),
  *without* ``-q``, because pyshark's ``LiveCapture`` gives no ready signal (it runs ``dumpcap -q``),
  loses the traffic of its first ~0.5 s, can hang in ``sniff(timeout=...)``, and pyshark 0.6 breaks
  inside running event loops and in threads after a main-thread capture.
* **pyshark** reads the finished file back in its own process (:mod:`._pyshark_probe`) and counts
  and describes the packets; :attr:`CaptureStats.verified_packets` is its count, which must equal
  dumpcap's "Packets captured". It never touches the live capture.

Readiness (measured with dumpcap 4.0.17): dumpcap prints ``Capturing on 'Loopback: lo'`` *before*
the capture is open, so that line is not a ready signal: a TCP exchange sent right after it was
lost entirely (0 of 14 packets) in 3 runs of 3. The signal used is the next line, ``File: PATH``,
which dumpcap prints after it has opened the interface, installed the filter and flushed the file
header (``report_new_capture_file`` in dumpcap.c); ``start()`` also checks that the file starts
with a pcap/pcapng magic. Traffic sent right after that line is captured, first SYN included
(typically 15-30 ms after launch).

Stopping (also measured): libpcap hands packets to dumpcap in TPACKET_V3 ring blocks that are only
retired when full or when the 250 ms read timeout fires, and dumpcap discards the unretired block
when it gets SIGINT: stopping 0-200 ms after the last packet captured nothing, 300 ms and more
captured everything. So ``stop()`` first waits ``drain`` seconds (default 0.6 s, interrupted if
dumpcap exits on its own), then sends SIGINT, which makes dumpcap finish the file and print
"Packets captured: N" and "Packets received/dropped on interface ...: R/D (pcap:../dumpcap:../
flushed:../ps_ifdrop:..)", which become the statistics; SIGTERM then SIGKILL follow only if it
hangs. A duration-limited capture can therefore hold packets up to ``drain`` seconds past the
deadline: losing the last quarter second would be worse.

dumpcap runs in its own session (``start_new_session``) so that a terminal Ctrl+C reaches only
Python, whose handler stops dumpcap in the right order; an ``atexit`` hook stops any dumpcap still
running when the interpreter exits. (A Python process killed with SIGKILL leaves its dumpcap
running until its count/duration ends: there is no portable parent-death signal for a child in a
new session.)
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import IO, Any

from .base import CaptureSession, CaptureStats, check_interface, list_interfaces, prepare_output
from .bpf import compile_bpf
from .errors import (
    CaptureBackendError,
    CaptureFilterError,
    CapturePermissionError,
    CaptureStartTimeout,
    CaptureToolMissingError,
    InterfaceNotFoundError,
    OutputNotWritableError,
)
from .pcapwriter import trim_to_whole_records
from .privileges import check_dumpcap, find_tool

__all__ = ["DEFAULT_DRAIN", "DumpcapStats", "PysharkCaptureSession", "parse_dumpcap_stats", "pyshark_probe"]

DEFAULT_DRAIN = 0.6
_PROBE_SCRIPT = Path(__file__).with_name("_pyshark_probe.py")
_MAGICS = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a")
_DLT_LINUX_SLL = 113

_RE_CAPTURED = re.compile(r"Packets captured:\s*(\d+)")
_RE_PROGRESS = re.compile(r"^Packets:\s*(\d+)")
_RE_IFSTATS = re.compile(
    r"Packets received/dropped on interface '(?P<iface>.*)': (?P<recv>\d+)/(?P<drop>\d+)"
    r"(?: \(pcap:(?P<pcap>\d+)/dumpcap:(?P<dumpcap>\d+)/flushed:(?P<flushed>\d+)/ps_ifdrop:(?P<ifdrop>\d+)\))?"
)

_RE_WRITE_ERROR = re.compile(r"could( not|n't)? be written|no space left|file too large|disk quota|error (while )?writing",
                             re.IGNORECASE)

_live_sessions: weakref.WeakSet[PysharkCaptureSession] = weakref.WeakSet()


def _write_problem(stderr: str, rc: int | None) -> str | None:
    """What kept dumpcap from writing the file, from its messages and exit status (None: nothing)."""
    if rc is not None and rc == -getattr(signal, "SIGXFSZ", -1):
        return "dumpcap exceeded the file-size limit (ulimit -f) and was killed"
    if rc in (0, None):
        return None
    m = _RE_WRITE_ERROR.search(stderr)
    if m is None:
        return None
    text = re.sub(r"\s+", " ", stderr).strip()
    text = re.sub(r"^.*?(dumpcap: )", r"\1", text)
    return text.split(" Packets")[0][:400].rstrip(". ")


@atexit.register
def _stop_orphans() -> None:  # pragma: no cover - runs at interpreter exit
    """Sessions never stopped: drain and stop their dumpcap so the file is finished."""
    for session in list(_live_sessions):
        with contextlib.suppress(Exception):
            session._shutdown()


class DumpcapStats:
    """What dumpcap's stderr said at the end of a capture."""

    def __init__(self) -> None:
        self.captured: int | None = None
        self.received: int | None = None
        self.dropped: int | None = None
        self.interface_dropped: int | None = None
        self.lines: list[str] = []


def parse_dumpcap_stats(text: str) -> DumpcapStats:
    """Parse dumpcap's closing statistics (``Packets captured: N`` and the per-interface line)."""
    stats = DumpcapStats()
    for line in re.split(r"[\r\n]+", text):
        m = _RE_CAPTURED.search(line)
        if m:
            stats.captured = int(m.group(1))
            stats.lines.append(line.strip())
            continue
        m = _RE_IFSTATS.search(line)
        if m:
            stats.received = int(m.group("recv"))
            stats.dropped = int(m.group("drop"))
            if m.group("ifdrop") is not None:
                stats.interface_dropped = int(m.group("ifdrop"))
            stats.lines.append(line.strip())
    return stats


#: how many times the pyshark read-back is tried: tshark, driven by pyshark, now and then exits with
#: an error on a file it reads fine the next time (seen once in a loaded test run); a file it cannot
#: read fails every time
PROBE_ATTEMPTS = 2


def pyshark_probe(path: Path, *, timeout: float = 120.0) -> dict[str, Any]:
    """Count and describe the packets of ``path`` with pyshark, in a separate Python process (tried
    :data:`PROBE_ATTEMPTS` times; ``result["earlier_failures"]`` lists the failures before the
    attempt that read it)."""
    failures: list[str] = []
    while True:
        try:
            proc = subprocess.run([sys.executable, str(_PROBE_SCRIPT), str(path)], capture_output=True,
                                  text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise CaptureBackendError(f"pyshark did not finish reading {str(path)!r} within {timeout:g} s.",
                                      hint="Fix: pass verify=False for very large captures.") from exc
        if proc.returncode == 0:
            break
        failures.append((proc.stderr.strip().splitlines() or ["(no output)"])[-1])
        if len(failures) >= PROBE_ATTEMPTS:
            raise CaptureBackendError(f"pyshark could not read {str(path)!r} back: {failures[-1]}",
                                      hint="Fix: check it with `capinfos FILE`; reinstall with `pip install pyshark`.")
    result: dict[str, Any] = json.loads(proc.stdout)
    if failures:
        result["earlier_failures"] = failures
    return result


class PysharkCaptureSession(CaptureSession):
    """Live capture by dumpcap, verified by pyshark (see the module docstring)."""

    backend = "pyshark"

    def __init__(self, *args: Any, verify: bool = True, drain: float = DEFAULT_DRAIN, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.verify = verify
        self.drain = drain
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._ready = threading.Event()
        self._stderr_text = ""
        self._stderr_lock = threading.Lock()
        self._progress = 0
        self._final: DumpcapStats | None = None
        self._timer: threading.Timer | None = None
        self._shutdown_lock = threading.Lock()
        self._shutdown_done = False
        self._exited_by_itself = False
        self.probe_result: dict[str, Any] | None = None

    @property
    def packets_written(self) -> int:
        if self._final is not None and self._final.captured is not None:
            return self._final.captured
        return self._progress

    # -- start ----------------------------------------------------------------------------
    def _dumpcap_command(self, dumpcap: str) -> list[str]:
        cfg = self.config
        # an absolute path: dumpcap reads "-w -" as "write to standard output" (a file named "-" would stay
        # empty and the packets go nowhere); every value is its own argument, never through a shell
        cmd = [dumpcap, "-i", cfg.interface, "-s", str(cfg.snaplen), "-B", str(cfg.buffer_mib),
               "-w", str(cfg.output.absolute()), "-P" if cfg.file_format == "pcap" else "-n"]
        if cfg.bpf:
            cmd += ["-f", cfg.bpf]
        if cfg.count is not None:
            cmd += ["-c", str(cfg.count)]
        return cmd

    def _check_interface(self, dumpcap: str) -> None:
        name = self.config.interface
        try:
            check_interface(name, extra=("any",))
        except InterfaceNotFoundError:
            # dumpcap also captures on things that are not netdevs (nflog, usbmon, extcap...)
            listing = subprocess.run([dumpcap, "-D"], capture_output=True, text=True, timeout=30, check=False)
            names = {m.group(1) for m in re.finditer(r"^\d+\.\s+(\S+)", listing.stdout, re.M)}
            if name in names or name.isdigit():
                return
            raise InterfaceNotFoundError(
                f"There is no interface named {name!r} that dumpcap can capture on. Interfaces: "
                f"{', '.join(sorted(names)) or ', '.join(list_interfaces())}.",
                interface=name, hint="Fix: pick one of those (`dumpcap -D` lists them), e.g. `-i lo`.",
            ) from None

    def _check_filter(self) -> None:
        cfg = self.config
        if not cfg.bpf:
            return
        linktype = _DLT_LINUX_SLL if cfg.interface == "any" else 1
        with contextlib.suppress(CaptureToolMissingError):  # no libpcap binding: dumpcap will judge
            compile_bpf(cfg.bpf, linktype=linktype, snaplen=cfg.snaplen)

    def _start(self) -> None:
        cfg = self.config
        dumpcap = check_dumpcap()
        if self.verify:
            find_tool("tshark")  # pyshark runs tshark
        self._check_interface(dumpcap)
        self._check_filter()
        fd, self._created_output = prepare_output(cfg.output)
        os.close(fd)
        env = dict(os.environ, LC_ALL="C", LANG="C")
        try:
            self._proc = subprocess.Popen(self._dumpcap_command(dumpcap), stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                          start_new_session=True, env=env)
        except OSError as exc:
            raise CaptureToolMissingError(f"Could not run dumpcap: {exc}.",
                                          hint="Fix: sudo apt-get install tshark") from exc
        _live_sessions.add(self)
        assert self._proc.stderr is not None
        self._reader = threading.Thread(target=self._read_stderr, args=(self._proc.stderr,),
                                        name="loopcap-dumpcap-stderr", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + cfg.ready_timeout
        while not self._ready.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
            if self._proc.poll() is not None:
                self._reader.join(2.0)
                raise self._startup_error()
            if time.monotonic() >= deadline:
                raise CaptureStartTimeout(
                    f"dumpcap did not report that it was capturing on {cfg.interface!r} within "
                    f"{cfg.ready_timeout:g} s (no 'File:' line on its stderr). It said: "
                    f"{self._stderr_summary() or '(nothing)'}",
                    hint="Fix: run the same dumpcap command by hand to see why, or use --backend scapy.",
                )
        with open(cfg.output, "rb") as fh:
            magic = fh.read(4)
        if magic not in _MAGICS:
            raise CaptureBackendError(
                f"dumpcap reported capturing but {str(cfg.output)!r} has no capture file header "
                f"(first bytes {magic!r}).", hint="Fix: report this; meanwhile use --backend scapy.")
        if cfg.duration is not None:
            self._timer = threading.Timer(cfg.duration, self._shutdown)
            self._timer.daemon = True
            self._timer.start()

    def _read_stderr(self, stream: IO[bytes]) -> None:
        pending = b""
        while True:
            chunk = stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096)
            if not chunk:
                break
            pending += chunk
            *lines, pending = re.split(rb"[\r\n]", pending)
            for raw in lines:
                self._handle_line(raw.decode("utf-8", "replace"))
        if pending:
            self._handle_line(pending.decode("utf-8", "replace"))

    def _handle_line(self, line: str) -> None:
        if not line.strip():
            return
        with self._stderr_lock:
            self._stderr_text += line + "\n"
        m = _RE_PROGRESS.match(line.strip())
        if m:
            self._progress = int(m.group(1))
        elif line.startswith("File: "):
            self._ready.set()

    def _stderr_summary(self) -> str:
        with self._stderr_lock:
            lines = [ln for ln in self._stderr_text.splitlines() if ln.strip() and not _RE_PROGRESS.match(ln)]
        return " ".join(lines)[-1500:]

    def _startup_error(self) -> Exception:
        cfg = self.config
        text = self._stderr_summary()
        low = text.lower()
        rc = None if self._proc is None else self._proc.returncode
        said = f"dumpcap exited with status {rc} before capturing: {text or '(no message)'}"
        if "could not be opened" in low or ("file" in low and "permission denied" in low):
            return OutputNotWritableError(said, path=str(cfg.output),
                                          hint=f"Fix: write somewhere dumpcap may write, e.g. /tmp/{cfg.output.name}.")
        if "permission" in low or "not permitted" in low:
            return CapturePermissionError(
                said, hint="Fix: sudo usermod -aG wireshark $USER && sudo dpkg-reconfigure wireshark-common "
                "(answer Yes), then log in again.")
        if "filter" in low or "syntax error" in low:
            return CaptureFilterError(said, bpf=cfg.bpf or "",
                                      hint="Fix: check the filter with `tcpdump -d '<filter>'`.")
        if "no such device" in low or "no device" in low or "doesn't exist" in low:
            return InterfaceNotFoundError(said, interface=cfg.interface,
                                          hint="Fix: list interfaces with `dumpcap -D` and pick one.")
        return CaptureBackendError(said, hint="Fix: run the dumpcap command by hand to see the full error.")

    # -- running / stopping -------------------------------------------------------------
    def _backend_finished(self, timeout: float) -> bool:
        proc = self._proc
        if proc is None:
            return True
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        if not self._shutdown_done:
            self._exited_by_itself = True
        return True

    def _shutdown(self) -> None:
        """Drain, then SIGINT dumpcap (escalating if it hangs). Idempotent, thread-safe."""
        with self._shutdown_lock:
            if self._shutdown_done:
                return
            proc = self._proc
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(self.drain)  # let the last ring block reach dumpcap (see docstring)
            self._shutdown_done = True
            if proc is None or proc.poll() is not None:
                return
            for sig, grace in ((signal.SIGINT, 10.0), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    return
                try:
                    proc.wait(grace)
                    return
                except subprocess.TimeoutExpired:
                    continue

    def _stop(self, reason: str) -> CaptureStats:
        cfg = self.config
        elapsed = self._elapsed()
        if self._timer is not None:
            self._timer.cancel()
        exited_before = self._proc is not None and self._proc.poll() is not None and not self._shutdown_done
        self._shutdown()
        if self._reader is not None:
            self._reader.join(5.0)
        with self._stderr_lock:
            final = parse_dumpcap_stats(self._stderr_text)
        self._final = final
        rc = None if self._proc is None else self._proc.returncode
        _live_sessions.discard(self)
        notes = list(final.lines)
        if rc not in (0, None):
            notes.append(f"dumpcap exit status {rc}")
        # a dumpcap that could not write (disk full, file-size limit) or was killed can leave a last
        # record cut short: cut it off, so the file is valid and holds every packet it reports
        in_file, cut = self._keep_whole_records()
        if cut:
            notes.append(f"the last {cut} bytes were a record cut short and were removed")
            final.captured = in_file
        problem = _write_problem(self._stderr_summary(), rc)
        if problem is not None:
            final.captured = in_file
            raise OutputNotWritableError(
                f"Writing {str(cfg.output)!r} failed after {in_file} packet(s): {problem}. The file holds those "
                "packets and is valid.", path=str(cfg.output),
                hint="Fix: free disk space or write to another file system.")
        if final.captured is None:
            raise CaptureBackendError(
                f"dumpcap ended (status {rc}) without reporting its statistics: {self._stderr_summary()}",
                hint="Fix: check the file with `capinfos`; if it is truncated dumpcap was killed.",
            )
        if exited_before and reason in ("backend exited", "stopped"):
            reason = "count" if cfg.count is not None and final.captured >= cfg.count else "backend exited"
        verified: int | None = None
        if self.verify:
            self.probe_result = pyshark_probe(cfg.output.absolute())  # tshark reads "-r -" from stdin
            verified = int(self.probe_result["packets"])
            for failure in self.probe_result.get("earlier_failures", []):
                notes.append(f"pyshark failed to read the file once ({failure}) and read it on the next try")
            first = self.probe_result.get("first")
            if first:
                notes.append(f"pyshark: first packet {'/'.join(first.get('layers', []))} "
                             f"{first.get('tcp_flags_str', '')}".rstrip())
            if verified != final.captured:
                notes.append(f"MISMATCH: dumpcap reported {final.captured} packets, pyshark read {verified}")
        return CaptureStats(
            backend=self.backend, interface=cfg.interface, output=cfg.output, file_format=cfg.file_format,
            packets_written=final.captured, packets_dropped=final.dropped,
            interface_dropped=final.interface_dropped, duration=elapsed,
            ready_latency=self._ready_latency or 0.0, stop_reason=reason, bpf=cfg.bpf, snaplen=cfg.snaplen,
            verified_packets=verified, notes=tuple(notes),
        )

    def _keep_whole_records(self) -> tuple[int, int]:
        try:
            return trim_to_whole_records(self.config.output)
        except OSError:
            return 0, 0

    def _release(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5.0)
        if self._reader is not None:
            self._reader.join(2.0)
        _live_sessions.discard(self)
