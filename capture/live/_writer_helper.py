"""The capture-file writer process (a script, run by :mod:`capture.live.writer_process`).

It receives framed packets on stdin and appends them to the capture file (an inherited file
descriptor) with :class:`pcapwriter.PacketFileWriter`, one whole record per ``write(2)``. It exists so
that the file survives a ``SIGKILL`` of the capture process: Linux may cut a ``write(2)`` that spans a
page boundary when the *writing* process gets a fatal signal (measured: a record cut exactly at a
4096-byte boundary), so the process that writes must not be the one that gets killed. This one
ignores SIGINT/SIGTERM/SIGHUP (a terminal Ctrl+C reaches the whole process group) and ends when its
stdin reaches EOF, i.e. when the capture process closes the pipe or dies; a message cut short by the
capture process's death is discarded, never written.

Only the standard library and the sibling ``pcapwriter`` module are imported (started with
``python -E -s -S``: ~20 ms).

Protocol on stdin: repeated ``<QIIi`` headers (ts_ns, caplen, wirelen, direction or -1) each
followed by ``caplen`` bytes; ``caplen == 0xFFFFFFFF`` announces the close: ``wirelen`` bytes of
JSON ``{"received": int|null, "dropped": int|null}`` follow. Output on stdout: ``READY`` once the
file header is written, and a JSON summary at the end.
"""

from __future__ import annotations

import contextlib
import json
import signal
import struct
import sys
from typing import TYPE_CHECKING, Any

HEADER = struct.Struct("<QIIi")
CLOSE_MARK = 0xFFFFFFFF


def main(argv: list[str]) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    # a file-size limit (RLIMIT_FSIZE) must be a write error (EFBIG) that the writer handles like a full
    # disk, not a signal that kills this process in the middle of a record
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    if TYPE_CHECKING:
        from capture.live.pcapwriter import PacketFileWriter
    else:  # the sibling module: this script's directory is sys.path[0]
        from pcapwriter import PacketFileWriter

    fd, file_format, linktype, snaplen, interface = argv
    if file_format not in ("pcap", "pcapng"):
        raise SystemExit(f"bad format {file_format!r}")
    summary: dict[str, Any] = {"packets": 0, "clean": False, "discarded_partial": False, "error": None}
    try:
        writer = PacketFileWriter(int(fd), "pcap" if file_format == "pcap" else "pcapng",
                                  linktype=int(linktype), snaplen=int(snaplen), interface=interface or None)
    except OSError as exc:
        summary["error"] = f"{exc.strerror or exc} (errno {exc.errno})"
        print(json.dumps(summary), flush=True)
        return 1
    print("READY", flush=True)
    stdin = sys.stdin.buffer
    close_args: dict[str, Any] = {}
    try:
        while True:
            head = stdin.read(HEADER.size)
            if len(head) < HEADER.size:
                summary["discarded_partial"] = bool(head)
                break
            ts_ns, caplen, wirelen, direction = HEADER.unpack(head)
            if caplen == CLOSE_MARK:
                payload = stdin.read(wirelen)
                stats = json.loads(payload) if len(payload) == wirelen else {}
                close_args = {"received": stats.get("received"), "dropped": stats.get("dropped")}
                summary["clean"] = True
                break
            data = stdin.read(caplen)
            if len(data) < caplen:
                summary["discarded_partial"] = True
                break
            writer.write(ts_ns, data, wirelen, direction=direction if direction >= 0 else None)
    except OSError as exc:
        summary["error"] = f"{exc.strerror or exc} (errno {exc.errno})"
    finally:
        summary["packets"] = writer.packets
        try:
            writer.close(**close_args)
        except OSError as exc:
            summary["error"] = summary["error"] or f"{exc.strerror or exc} (errno {exc.errno})"
    with contextlib.suppress(BrokenPipeError):  # the capture process is gone; the file is what matters
        print(json.dumps(summary), flush=True)
    return 0 if summary["error"] is None else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
