"""Client of the writer process (:mod:`capture.live._writer_helper`): kill-safe capture files.

Why a separate process: each record is written with one ``write(2)``, but Linux checks for a
pending fatal signal between the pages of a buffered write, so a ``SIGKILL`` (or a default-action
SIGTERM) that lands while the capturing process writes a record spanning a page boundary leaves that
record cut. Measured: a process writing 60-1460-byte records in a loop, killed with SIGKILL, left a
pcap whose last record stopped exactly at a 4096-byte boundary. Moving the writes into a helper that
ignores SIGINT/SIGTERM/SIGHUP and ends on EOF means the capture process can die at any instant: every
message it finished sending is written whole, a half-sent one is discarded, and the helper then
closes the file. (Killing the *helper* with SIGKILL can still cut its last record; it spends its
time blocked reading the pipe, so that window is small.)

The parent opens the output file itself (so path errors are reported in-process) and hands the
descriptor to the helper with ``pass_fds``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ._writer_helper import CLOSE_MARK, HEADER
from .errors import CaptureBackendError, CaptureStartTimeout, OutputNotWritableError
from .pcapwriter import FileFormat

__all__ = ["WriterProcess"]

_HELPER = Path(__file__).with_name("_writer_helper.py")
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_PIPE_SIZE = 1 << 20


class WriterProcess:
    """Send packets to the writer helper; ``close()`` returns its summary."""

    def __init__(self, fd: int, path: Path, file_format: FileFormat, *, linktype: int, snaplen: int,
                 interface: str, ready_timeout: float = 10.0) -> None:
        self.path = path
        self.sent = 0
        self.summary: dict[str, Any] | None = None
        self.proc = subprocess.Popen(
            [sys.executable, "-E", "-s", "-S", str(_HELPER), str(fd), file_format, str(linktype), str(snaplen),
             interface],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(fd,),
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in = self.proc.stdin.fileno()
        with contextlib.suppress(OSError):  # a bigger pipe absorbs bursts while the helper writes
            fcntl.fcntl(self._in, _F_SETPIPE_SZ, _PIPE_SIZE)
        ready, _, _ = select.select([self.proc.stdout], [], [], ready_timeout)
        line = self.proc.stdout.readline().decode(errors="replace").strip() if ready else ""
        if line != "READY":
            self.kill()
            if not ready:
                raise CaptureStartTimeout(f"The capture-file writer process did not start within {ready_timeout:g} s.",
                                          hint="Fix: retry; if the machine is very loaded raise ready_timeout.")
            detail = line
            with contextlib.suppress(ValueError):
                detail = json.loads(line).get("error") or line
            raise OutputNotWritableError(f"Cannot write the capture file header to {str(path)!r}: {detail}.",
                                         path=str(path), hint="Fix: choose another output path, e.g. /tmp.")

    def write(self, ts_ns: int, data: bytes, wirelen: int, direction: int | None = None) -> None:
        """Hand one packet to the writer (blocks only if the pipe is full)."""
        message = HEADER.pack(ts_ns, len(data), wirelen, -1 if direction is None else direction) + data
        view = memoryview(message)
        while view:
            n = os.write(self._in, view)
            view = view[n:]
        self.sent += 1

    def close(self, *, received: int | None = None, dropped: int | None = None,
              timeout: float = 60.0) -> dict[str, Any]:
        """Finish the file (pcapng: with the received/dropped counters) and return the summary."""
        if self.summary is not None:
            return self.summary
        payload = json.dumps({"received": received, "dropped": dropped}).encode()
        with contextlib.suppress(BrokenPipeError):
            os.write(self._in, HEADER.pack(0, CLOSE_MARK, len(payload), -1) + payload)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self.kill()
            raise CaptureBackendError(f"The capture-file writer did not finish {str(self.path)!r} "
                                      f"within {timeout:g} s.") from exc
        lines = out.decode(errors="replace").strip().splitlines()
        try:
            summary: dict[str, Any] = json.loads(lines[-1])
        except (IndexError, ValueError):
            raise CaptureBackendError(
                f"The capture-file writer for {str(self.path)!r} ended without a summary "
                f"(status {self.proc.returncode}): {err.decode(errors='replace').strip()[-500:]}") from None
        self.summary = summary
        return summary

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        deadline = time.monotonic() + 5
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
