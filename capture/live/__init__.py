"""Live capture into pcap/pcapng files, exactly once per packet, with a real readiness signal.

Two backends behind one API::

    from capture.live import open_capture

    with open_capture("scapy", interface="lo", bpf="tcp port 9999", output=Path("x.pcapng")) as cap:
        run_my_traffic()          # start() has returned: the capture is live
    print(cap.stats)              # CaptureStats(packets_written=..., packets_dropped=..., ...)

* ``scapy`` (default): scapy's AsyncSniffer on our own packet socket; drops the loopback
  outgoing copies (every packet appears twice on Linux ``lo``); writes each packet at once as a
  whole record. See :mod:`capture.live.scapy_backend`.
* ``pyshark``: dumpcap captures (readiness from its ``File:`` line), pyshark re-reads and counts
  the result in its own process. See :mod:`capture.live.pyshark_backend`.

:func:`run_capture_until_interrupted` is the CLI's entry point: it stops cleanly on Ctrl+C/SIGTERM.
Every failure is a :class:`capture.live.errors.LiveCaptureError` with a fix in its ``hint``.
"""

from __future__ import annotations

from .api import BACKENDS, open_capture, run_capture_until_interrupted
from .base import CaptureConfig, CaptureSession, CaptureStats, FileFormat, file_format_for
from .errors import (
    CaptureBackendError,
    CaptureConfigError,
    CaptureFilterError,
    CapturePermissionError,
    CaptureStartTimeout,
    CaptureToolMissingError,
    InterfaceNotFoundError,
    LiveCaptureError,
    OutputNotWritableError,
)
from .pcapwriter import PacketFileWriter
from .pyshark_backend import PysharkCaptureSession
from .scapy_backend import ScapyCaptureSession

__all__ = [
    "BACKENDS",
    "CaptureBackendError",
    "CaptureConfig",
    "CaptureConfigError",
    "CaptureFilterError",
    "CapturePermissionError",
    "CaptureSession",
    "CaptureStartTimeout",
    "CaptureStats",
    "CaptureToolMissingError",
    "FileFormat",
    "InterfaceNotFoundError",
    "LiveCaptureError",
    "OutputNotWritableError",
    "PacketFileWriter",
    "PysharkCaptureSession",
    "ScapyCaptureSession",
    "file_format_for",
    "open_capture",
    "run_capture_until_interrupted",
]
