"""Typed errors: every failure loopcap reports says what went wrong and where.

Anything raised to a user is a :class:`LoopcapError`; the CLI turns it into a one-paragraph
message and an exit code, never a traceback.
"""

from __future__ import annotations


class LoopcapError(Exception):
    """Base class of every error loopcap raises on purpose."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n{self.hint}"
        return self.message


class CaptureFormatError(LoopcapError):
    """The input cannot be read as a pcap/pcapng capture (bad magic, bad header...)."""

    def __init__(self, message: str, *, path: str | None = None, offset: int | None = None,
                 hint: str | None = None) -> None:
        where = []
        if path is not None:
            where.append(path)
        if offset is not None:
            where.append(f"byte offset {offset}")
        full = f"{': '.join(where)}: {message}" if where else message
        super().__init__(full, hint=hint)
        self.path = path
        self.offset = offset
        self.reason = message


class UsageError(LoopcapError):
    """The command line asks for something that cannot be done (unknown stream, bad filter)."""
