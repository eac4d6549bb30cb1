"""Entry points: :func:`open_capture` and :func:`run_capture_until_interrupted`."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from .base import (
    DEFAULT_BUFFER_MIB,
    DEFAULT_READY_TIMEOUT,
    MAX_SNAPLEN,
    CaptureConfig,
    CaptureSession,
    CaptureStats,
    FileFormat,
    file_format_for,
)
from .errors import CaptureConfigError
from .pyshark_backend import DEFAULT_DRAIN, PysharkCaptureSession
from .scapy_backend import ScapyCaptureSession

__all__ = ["BACKENDS", "open_capture", "run_capture_until_interrupted"]

BACKENDS: dict[str, type[CaptureSession]] = {
    "scapy": ScapyCaptureSession,
    "pyshark": PysharkCaptureSession,
}


def open_capture(
    backend: str = "scapy",
    *,
    interface: str = "lo",
    bpf: str | None = None,
    output: Path | str,
    file_format: FileFormat | None = None,
    count: int | None = None,
    duration: float | None = None,
    snaplen: int = MAX_SNAPLEN,
    ready_timeout: float = DEFAULT_READY_TIMEOUT,
    buffer_mib: int = DEFAULT_BUFFER_MIB,
    verify: bool = True,
    drain: float = DEFAULT_DRAIN,
) -> CaptureSession:
    """Prepare a live capture of ``interface`` into ``output`` (not started yet).

    :param backend: ``"scapy"`` (AsyncSniffer on a packet socket) or ``"pyshark"`` (dumpcap
        captures, pyshark verifies).
    :param bpf: libpcap filter expression, e.g. ``"tcp port 9999"``; None captures everything.
    :param file_format: ``"pcap"`` or ``"pcapng"``; default from the suffix of ``output``. (A CLI
        holding a plain ``str`` can call :func:`file_format_for` ``(output, value)`` first: it
        validates and returns the literal type.)
    :param count: stop after this many packets. :param duration: stop after this many seconds.
    :param snaplen: bytes kept of each packet (1..262144).
    :param ready_timeout: how long ``start()`` may wait for the capture to become live.
    :param buffer_mib: kernel capture buffer in MiB (socket receive buffer / dumpcap ``-B``).
    :param verify: pyshark backend only: read the finished file back with pyshark.
    :param drain: pyshark backend only: seconds to let libpcap hand over its last ring block
        before dumpcap is stopped.

    Use it as a context manager (``with open_capture(...) as cap:`` starts and stops it) or call
    ``start()`` / ``wait()`` / ``stop()``. Raises :class:`~capture.live.errors.CaptureConfigError`
    for impossible arguments; ``start()`` raises the other typed errors.
    """
    cls = BACKENDS.get(backend)
    if cls is None:
        raise CaptureConfigError(
            f"Unknown capture backend {backend!r}; loopcap has {', '.join(sorted(BACKENDS))}.",
            hint="Fix: pass backend='scapy' (default) or backend='pyshark' (CLI: --backend).",
        )
    out = Path(output)
    config = CaptureConfig(backend=backend, interface=interface, bpf=bpf or None, output=out,
                           file_format=file_format_for(out, file_format), count=count, duration=duration,
                           snaplen=snaplen, ready_timeout=ready_timeout, buffer_mib=buffer_mib)
    if cls is PysharkCaptureSession:
        return PysharkCaptureSession(config, verify=verify, drain=drain)
    return cls(config)


def run_capture_until_interrupted(
    backend: str = "scapy",
    *,
    on_ready: Callable[[CaptureSession], None] | None = None,
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
    **options: Any,
) -> CaptureStats:
    """Capture until count/duration ends or SIGINT/SIGTERM arrives; return the statistics.

    For the CLI: installs handlers for ``signals`` (main thread only) that ask the capture to end,
    so Ctrl+C or ``kill`` leaves a complete, valid file holding everything captured so far; the
    previous handlers are restored afterwards. ``on_ready`` is called once the capture is live
    (e.g. to print "capturing on lo"). ``options`` are :func:`open_capture`'s keyword arguments.
    A second signal during the (bounded) shutdown is ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        raise CaptureConfigError(
            "run_capture_until_interrupted() must run in the main thread: only it can receive signals.",
            hint="Fix: call it from the main thread, or use open_capture() and stop() yourself.",
        )
    session = open_capture(backend, **options)
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)  # no locks in a signal handler: just record it
        session.interrupt(f"interrupted ({signal.Signals(signum).name})")

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        session.start()
        if on_ready is not None:
            on_ready(session)
        while not session.wait(timeout=0.25):
            pass
        return session.stop()
    finally:
        if session.running:
            session.stop()
        for sig, old in previous.items():
            signal.signal(sig, old)
