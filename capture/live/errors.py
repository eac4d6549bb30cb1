"""Typed errors of the live capture layer.

Every error says what went wrong in one paragraph (``message``) and, where one exists, the exact
command or change that fixes it (``hint``). They all derive from
:class:`analyzers.errors.LoopcapError`, so the CLI prints them without a traceback. Each class sets
``exit_code`` 2, as the README documents for "cannot capture"; the class tells the failures apart.
"""

from __future__ import annotations

from analyzers.errors import LoopcapError, UsageError

__all__ = [
    "CaptureBackendError",
    "CaptureConfigError",
    "CaptureFilterError",
    "CapturePermissionError",
    "CaptureStartTimeout",
    "CaptureToolMissingError",
    "InterfaceNotFoundError",
    "LiveCaptureError",
    "OutputNotWritableError",
]


class LiveCaptureError(LoopcapError):
    """Base class of every error raised by :mod:`capture.live`."""

    exit_code = 2  # loopcap exit code 2: cannot capture (EX_SOFTWARE in sysexits terms)


class CaptureConfigError(LiveCaptureError, UsageError):
    """The capture was asked for something impossible (unknown backend, bad count, bad suffix...)."""

    exit_code = 2  # loopcap exit code 2: cannot capture (EX_USAGE in sysexits terms)


class CapturePermissionError(LiveCaptureError):
    """The process (or dumpcap) lacks the privilege to open a raw packet socket."""

    exit_code = 2  # loopcap exit code 2: cannot capture (EX_NOPERM in sysexits terms)


class CaptureToolMissingError(LiveCaptureError):
    """A program or library the backend needs (dumpcap, tshark, libpcap) is not installed."""

    exit_code = 2  # loopcap exit code 2: cannot capture (EX_UNAVAILABLE in sysexits terms)


class InterfaceNotFoundError(LiveCaptureError):
    """The capture interface does not exist (or the backend cannot capture on it)."""

    exit_code = 2  # loopcap exit code 2: cannot capture (EX_NOHOST in sysexits terms)

    def __init__(self, message: str, *, interface: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.interface = interface


class OutputNotWritableError(LiveCaptureError):
    """The capture file cannot be created or written."""

    exit_code = 2  # loopcap exit code 2: cannot capture (EX_CANTCREAT in sysexits terms)

    def __init__(self, message: str, *, path: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class CaptureFilterError(LiveCaptureError, UsageError):
    """The BPF capture filter does not compile."""

    exit_code = 2  # loopcap exit code 2: cannot capture (EX_USAGE in sysexits terms)

    def __init__(self, message: str, *, bpf: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.bpf = bpf


class CaptureStartTimeout(LiveCaptureError):
    """The backend did not signal that it is capturing within the allowed time."""

    exit_code = 2  # loopcap exit code 2: cannot capture (EX_TEMPFAIL in sysexits terms)


class CaptureBackendError(LiveCaptureError):
    """The capture backend failed while starting, running or stopping."""

    exit_code = 2  # loopcap exit code 2: cannot capture (EX_SOFTWARE in sysexits terms)
