"""The backend-neutral part of live capture: configuration, statistics, the session life cycle
and the checks both backends share (file format, interface, output path).

Life cycle of a :class:`CaptureSession`::

    new --start()--> live --(count reached | duration over | backend exits | interrupt())--> ended
        \\                \\__________________ stop() ___________________________________/
         \\__ start() failed: resources released, the output file removed if we created it

``start()`` returns only when the backend has proven it is capturing (see each backend for the
signal it waits on), or raises :class:`~capture.live.errors.CaptureStartTimeout` after
``ready_timeout`` seconds. ``stop()`` is idempotent and returns the same :class:`CaptureStats`
every time. Sessions are context managers: ``__enter__`` starts (if needed), ``__exit__`` stops.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import ClassVar

from .errors import CaptureConfigError, InterfaceNotFoundError, OutputNotWritableError
from .pcapwriter import FileFormat

__all__ = [
    "DEFAULT_BUFFER_MIB",
    "DEFAULT_READY_TIMEOUT",
    "MAX_SNAPLEN",
    "CaptureConfig",
    "CaptureSession",
    "CaptureStats",
    "FileFormat",
    "check_interface",
    "file_format_for",
    "interface_rx_dropped",
    "list_interfaces",
    "prepare_output",
]

DEFAULT_READY_TIMEOUT = 10.0
MAX_SNAPLEN = 262144
#: kernel capture buffer. dumpcap's default (2 MiB) dropped 13 of 50 packets of a 1 MiB transfer on
#: lo (64 KiB GSO frames); 32 MiB dropped none in our tests.
DEFAULT_BUFFER_MIB = 32

_SUFFIX_FORMATS: dict[str, FileFormat] = {
    ".pcapng": "pcapng",
    ".ntar": "pcapng",
    ".pcap": "pcap",
    ".cap": "pcap",
    ".dmp": "pcap",
}


def file_format_for(output: Path, explicit: str | None = None) -> FileFormat:
    """The capture file format: ``explicit`` when given, else from the suffix of ``output``."""
    if explicit is not None:
        if explicit == "pcap":
            return "pcap"
        if explicit == "pcapng":
            return "pcapng"
        raise CaptureConfigError(
            f"Unknown capture file format {explicit!r}: loopcap writes 'pcap' or 'pcapng'.",
            hint="Fix: pass file_format='pcap' or file_format='pcapng' (CLI: --format pcap|pcapng).",
        )
    fmt = _SUFFIX_FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise CaptureConfigError(
            f"Cannot tell the capture file format from the name {str(output)!r}: its suffix "
            f"{output.suffix or '(none)'!r} is neither .pcap nor .pcapng.",
            hint=f"Fix: name the file {output.with_suffix('.pcapng').name} or {output.with_suffix('.pcap').name}, "
            "or pass the format explicitly (file_format='pcapng' / --format pcapng).",
        )
    return fmt


def list_interfaces() -> list[str]:
    """Names of this host's network interfaces."""
    try:
        return [name for _idx, name in socket.if_nameindex()]
    except OSError:
        return []


def check_interface(name: str, *, extra: tuple[str, ...] = ()) -> None:
    """Raise :class:`InterfaceNotFoundError` unless ``name`` is an interface (or one of ``extra``)."""
    if name in extra:
        return
    try:
        socket.if_nametoindex(name)
    except (OSError, ValueError):
        available = ", ".join(list_interfaces()) or "(none found)"
        raise InterfaceNotFoundError(
            f"There is no network interface named {name!r} on this host, so there is nothing to "
            f"capture on. Interfaces here: {available}.",
            interface=name,
            hint="Fix: pick one of those, e.g. `-i lo` for loopback traffic (list them with `ip link`).",
        ) from None


def interface_rx_dropped(name: str) -> int | None:
    """The interface's ``rx_dropped`` counter (what libpcap reports as ``ps_ifdrop``)."""
    try:
        return int(Path(f"/sys/class/net/{name}/statistics/rx_dropped").read_text().strip())
    except (OSError, ValueError):
        return None


def prepare_output(output: Path) -> tuple[int, bool]:
    """Create/truncate ``output`` for writing; return ``(fd, created)``.

    ``created`` tells whether the file did not exist before (so a failed start can remove it).
    Raises :class:`OutputNotWritableError` with the reason and a fix.
    """
    path = str(output)
    if output.is_dir():
        raise OutputNotWritableError(
            f"Cannot write the capture to {path!r}: it is a directory.",
            path=path, hint=f"Fix: give a file name inside it, e.g. {str(output / 'capture.pcapng')!r}.",
        )
    parent = output.parent
    if not parent.exists():
        raise OutputNotWritableError(
            f"Cannot write the capture to {path!r}: the directory {str(parent)!r} does not exist.",
            path=path, hint=f"Fix: mkdir -p {parent}",
        )
    existed = output.exists()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno in (errno.EACCES, errno.EPERM):
            hint = (f"Fix: write somewhere you own (e.g. /tmp/{output.name}) or make the directory "
                    f"writable: sudo chown $USER {parent}")
        elif exc.errno == errno.EROFS:
            hint = f"Fix: {parent} is on a read-only file system; write to /tmp/{output.name} instead."
        elif exc.errno == errno.ENOTDIR:
            hint = "Fix: a component of the path is a file, not a directory; choose another path."
        elif exc.errno == errno.ENOSPC:
            hint = "Fix: free some disk space or write to another file system."
        else:
            hint = f"Fix: choose another output path, e.g. /tmp/{output.name}."
        raise OutputNotWritableError(
            f"Cannot write the capture to {path!r}: {reason} (errno {exc.errno}).", path=path, hint=hint,
        ) from exc
    return fd, not existed


@dataclass(frozen=True)
class CaptureConfig:
    """What to capture, where, and when to stop. Built and validated by :func:`open_capture`."""

    backend: str
    interface: str
    bpf: str | None
    output: Path
    file_format: FileFormat
    count: int | None = None
    duration: float | None = None
    snaplen: int = MAX_SNAPLEN
    ready_timeout: float = DEFAULT_READY_TIMEOUT
    buffer_mib: int = DEFAULT_BUFFER_MIB

    def __post_init__(self) -> None:
        if self.count is not None and (isinstance(self.count, bool) or not isinstance(self.count, int)
                                       or self.count <= 0):
            raise CaptureConfigError(f"count must be a positive whole number of packets, not {self.count!r}.",
                                     hint="Fix: pass count=N with N >= 1, or leave it out for no limit.")
        if self.duration is not None and not self.duration > 0:
            raise CaptureConfigError(f"duration must be a positive number of seconds, not {self.duration!r}.",
                                     hint="Fix: pass duration=S with S > 0, or leave it out for no limit.")
        if not 1 <= self.snaplen <= MAX_SNAPLEN:
            raise CaptureConfigError(f"snaplen must be between 1 and {MAX_SNAPLEN} bytes, not {self.snaplen!r}.",
                                     hint=f"Fix: pass snaplen={MAX_SNAPLEN} (whole packets) or a smaller cut.")
        if isinstance(self.buffer_mib, bool) or not isinstance(self.buffer_mib, int) or self.buffer_mib < 1:
            raise CaptureConfigError(f"buffer_mib must be a whole number of MiB >= 1, not {self.buffer_mib!r}.",
                                     hint=f"Fix: pass buffer_mib={DEFAULT_BUFFER_MIB} (the default).")
        if not self.ready_timeout > 0:
            raise CaptureConfigError(f"ready_timeout must be positive, not {self.ready_timeout!r}.")
        if not self.interface:
            raise CaptureConfigError("The capture interface name is empty.", hint="Fix: pass interface='lo'.")


@dataclass(frozen=True)
class CaptureStats:
    """What a capture did. Returned by :meth:`CaptureSession.stop`."""

    backend: str
    interface: str
    output: Path
    file_format: FileFormat
    #: packets written to ``output`` (each exactly once).
    packets_written: int
    #: packets the kernel capture buffer dropped because the reader was too slow; None if unknown.
    packets_dropped: int | None
    #: packets the interface itself dropped during the capture (``rx_dropped`` delta, all traffic).
    interface_dropped: int | None
    #: seconds from "live" to "stopped".
    duration: float
    #: seconds :meth:`CaptureSession.start` took to prove the capture live.
    ready_latency: float
    #: "count", "duration", "stopped", "interrupted (SIGINT)", "backend exited"...
    stop_reason: str
    bpf: str | None = None
    snaplen: int = MAX_SNAPLEN
    #: packets counted again by reading the file back (pyshark backend: by pyshark); None if not done.
    verified_packets: int | None = None
    #: scapy backend on loopback: outgoing copies of packets skipped (each packet appears twice on lo).
    loopback_copies_skipped: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (paths as strings)."""
        out = asdict(self)
        out["output"] = str(self.output)
        out["notes"] = list(self.notes)
        return out


class CaptureSession(abc.ABC):
    """One live capture into one file. Create it with :func:`capture.live.open_capture`."""

    backend: ClassVar[str] = "?"

    def __init__(self, config: CaptureConfig) -> None:
        self.config = config
        self._state = "new"
        self._state_lock = threading.Lock()
        self._interrupt_reason: str | None = None
        self._live_mono: float | None = None
        self._stopped_mono: float | None = None
        self._ready_latency: float | None = None
        self._stats: CaptureStats | None = None
        self._created_output = False

    # ----------------------------------------------------------------- public API
    @property
    def output(self) -> Path:
        return self.config.output

    @property
    def ready_latency(self) -> float | None:
        """Seconds :meth:`start` took until the capture was proven live (None before)."""
        return self._ready_latency

    @property
    def running(self) -> bool:
        return self._state == "live"

    @property
    def stats(self) -> CaptureStats | None:
        """The statistics once :meth:`stop` has run."""
        return self._stats

    @property
    @abc.abstractmethod
    def packets_written(self) -> int:
        """Packets written so far (for the pyshark backend: as last reported by dumpcap)."""

    def start(self) -> CaptureSession:
        """Start capturing; return once the capture is live. Raises a typed error otherwise."""
        with self._state_lock:
            if self._state != "new":
                raise CaptureConfigError(f"This capture session was already started (state: {self._state}).",
                                         hint="Fix: open a new session with open_capture(...) for a new capture.")
            self._state = "starting"
        t0 = time.monotonic()
        try:
            self._start()
        except BaseException:
            self._state = "failed"
            self._cleanup_failed_start()
            raise
        self._live_mono = time.monotonic()
        self._ready_latency = self._live_mono - t0
        self._state = "live"
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the capture ends by itself (count reached, duration over, backend exited)
        or :meth:`interrupt` is called. Return True if it ended, False if ``timeout`` ran out.

        Without count or duration, only an interrupt, a backend exit or a ``stop()`` from another
        thread ends the wait, so pass a timeout or use :func:`run_capture_until_interrupted`.
        """
        if self._state in ("new", "starting"):
            raise CaptureConfigError("wait() needs a started capture.", hint="Fix: call start() first.")
        if self._state != "live":
            return True
        end = None if timeout is None else time.monotonic() + timeout
        deadline = self._deadline()
        while True:
            if self._interrupt_reason is not None or self._state != "live":
                return True
            now = time.monotonic()
            step = 0.1
            if deadline is not None:
                if now >= deadline:
                    return True
                step = min(step, deadline - now)
            if end is not None:
                if now >= end:
                    return False
                step = min(step, end - now)
            if self._backend_finished(max(step, 0.0)):
                return True

    def interrupt(self, reason: str = "interrupted") -> None:
        """Ask the capture to end: :meth:`wait` returns, and :meth:`stop` records ``reason``.

        Safe to call from a signal handler: it only assigns an attribute.
        """
        if self._interrupt_reason is None:
            self._interrupt_reason = reason

    def stop(self) -> CaptureStats:
        """Stop capturing, finish the file and return the statistics (idempotent)."""
        with self._state_lock:
            if self._stats is not None:
                return self._stats
            if self._state != "live":
                raise CaptureConfigError(f"Cannot stop a capture that is not running (state: {self._state}).",
                                         hint="Fix: call start() first.")
            self._state = "stopping"
            try:
                stats = self._stop(self._stop_reason())
            finally:
                self._state = "stopped"
                self._stopped_mono = time.monotonic()
            self._stats = stats
            return stats

    def __enter__(self) -> CaptureSession:
        if self._state == "new":
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._state == "live":
            if exc_type is not None and self._interrupt_reason is None:
                self.interrupt(f"error ({exc_type.__name__})")
            self.stop()

    # ------------------------------------------------------------ for backends
    def _deadline(self) -> float | None:
        if self.config.duration is None or self._live_mono is None:
            return None
        return self._live_mono + self.config.duration

    def _elapsed(self) -> float:
        if self._live_mono is None:
            return 0.0
        return time.monotonic() - self._live_mono

    def _stop_reason(self) -> str:
        if self._interrupt_reason is not None:
            return self._interrupt_reason
        if self.config.count is not None and self.packets_written >= self.config.count:
            return "count"
        deadline = self._deadline()
        if deadline is not None and time.monotonic() >= deadline:
            return "duration"
        if self._backend_finished(0.0):
            return "backend exited"
        return "stopped"

    def _cleanup_failed_start(self) -> None:
        """Release what a failed :meth:`_start` left behind; remove an output file we created."""
        self._release()
        if self._created_output:
            with contextlib.suppress(OSError):
                self.config.output.unlink()

    @abc.abstractmethod
    def _start(self) -> None:
        """Start the backend and block until it is live (bounded by ``config.ready_timeout``)."""

    @abc.abstractmethod
    def _stop(self, reason: str) -> CaptureStats:
        """Stop the backend, finish the file, build the statistics."""

    @abc.abstractmethod
    def _backend_finished(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the backend to end by itself; True if it has."""

    @abc.abstractmethod
    def _release(self) -> None:
        """Free every resource (idempotent); used after a failed start."""
