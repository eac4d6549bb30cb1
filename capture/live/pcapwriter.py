"""A pcap / pcapng writer that hands every record to the kernel in one ``write(2)``.

Why not scapy's ``PcapWriter``: it writes a record header and its data in separate ``write`` calls
through a buffered file object, so a process killed between them (or a record bigger than the
buffer) leaves a truncated last record. Here each record (pcap record header + data, or one whole
pcapng Enhanced Packet Block) is built in memory and written with a single unbuffered ``os.write``,
so whatever happens to the process *between* writes, the file ends on a record boundary.

One gap remains, and it is the kernel's: a ``write(2)`` to a regular file is copied page by page,
and Linux checks for a pending fatal signal (SIGKILL, or a SIGTERM without handler) between pages;
a record that spans a page boundary can therefore be cut if the writing process is killed during
that very call (measured: a writer looping on 60-1460-byte records, killed with SIGKILL, left a last
record cut exactly at a 4096-byte boundary). That is why live captures do not call this class from
the capturing process but from a separate writer process (:mod:`capture.live.writer_process`).

pcap files use the classic microsecond format (magic ``a1b2c3d4``), as tcpdump writes by default.
pcapng files hold one Section Header Block, one Interface Description Block (link type, snap length,
interface name, ``if_tsresol`` = microseconds), one Enhanced Packet Block per packet (with
``epb_flags`` direction when known) and, on a clean close, an Interface Statistics Block with the
kernel's received/dropped counters, as dumpcap writes them.
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
from types import TracebackType
from typing import Literal

__all__ = ["FileFormat", "PacketFileWriter", "trim_to_whole_records", "whole_records"]

FileFormat = Literal["pcap", "pcapng"]

_PCAP_MAGIC_US = 0xA1B2C3D4
_SHB = 0x0A0D0D0A
_IDB = 0x00000001
_EPB = 0x00000006
_ISB = 0x00000005
_BYTE_ORDER_MAGIC = 0x1A2B3C4D

_OPT_END = 0
_OPT_COMMENT = 1
_SHB_USERAPPL = 4
_IF_NAME = 2
_IF_TSRESOL = 9
_EPB_FLAGS = 2
_ISB_STARTTIME = 2
_ISB_ENDTIME = 3
_ISB_IFRECV = 4
_ISB_IFDROP = 5

#: epb_flags direction values (bits 0-1).
DIRECTION_INBOUND = 1
DIRECTION_OUTBOUND = 2


def _pad4(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad4(value)


def _block(block_type: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


def _ts_pair(ts_us: int) -> tuple[int, int]:
    return (ts_us >> 32) & 0xFFFFFFFF, ts_us & 0xFFFFFFFF


class PacketFileWriter:
    """Write packets to ``fd`` (an open, writable file descriptor, which this object then owns).

    >>> w = PacketFileWriter.create(path, "pcapng", linktype=1, snaplen=262144, interface="lo")
    >>> w.write(ts_ns, frame_bytes, wirelen)
    >>> w.close(received=..., dropped=...)
    """

    def __init__(self, fd: int, file_format: FileFormat, *, linktype: int, snaplen: int,
                 interface: str | None = None, application: str = "loopcap") -> None:
        if file_format not in ("pcap", "pcapng"):
            raise ValueError(f"unknown capture file format {file_format!r}")
        self._fd = fd
        self.file_format: FileFormat = file_format
        self.linktype = linktype
        self.snaplen = snaplen
        self.packets = 0
        self.bytes_written = 0
        self._closed = False
        self._start_us = time.time_ns() // 1000
        if file_format == "pcap":
            header = struct.pack("<IHHiIII", _PCAP_MAGIC_US, 2, 4, 0, 0, snaplen, linktype)
        else:
            shb_opts = _option(_SHB_USERAPPL, application.encode()) + _option(_OPT_END, b"")
            shb = _block(_SHB, struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1) + shb_opts)
            idb_opts = b""
            if interface:
                idb_opts += _option(_IF_NAME, interface.encode())
            idb_opts += _option(_IF_TSRESOL, bytes([6])) + _option(_OPT_END, b"")
            idb = _block(_IDB, struct.pack("<HHI", linktype, 0, snaplen) + idb_opts)
            header = shb + idb
        self._write_all(header)

    @classmethod
    def create(cls, path: str | os.PathLike[str], file_format: FileFormat, *, linktype: int,
               snaplen: int, interface: str | None = None) -> PacketFileWriter:
        """Create (truncate) ``path`` and write the file header."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            return cls(fd, file_format, linktype=linktype, snaplen=snaplen, interface=interface)
        except BaseException:
            os.close(fd)
            raise

    @property
    def closed(self) -> bool:
        return self._closed

    def _write_all(self, data: bytes) -> None:
        """Write one whole record, or nothing: when the file system refuses part of it (disk full,
        file-size limit, quota) the part already written is cut off again, so the file still ends on a
        record boundary and holds every packet written before."""
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError:
            with contextlib.suppress(OSError):  # and write the next record (or the closing block) there
                os.ftruncate(self._fd, self.bytes_written)
                os.lseek(self._fd, self.bytes_written, os.SEEK_SET)
            raise
        self.bytes_written += len(data)

    def write(self, ts_ns: int, data: bytes, wirelen: int | None = None, *,
              direction: int | None = None) -> None:
        """Append one packet (``data`` already cut to the snap length) as one whole record."""
        if self._closed:
            raise ValueError("write to a closed capture file")
        caplen = len(data)
        orig = caplen if wirelen is None else max(wirelen, caplen)
        ts_us = ts_ns // 1000
        if self.file_format == "pcap":
            sec, usec = divmod(ts_us, 1_000_000)
            record = struct.pack("<IIII", sec & 0xFFFFFFFF, usec, caplen, orig) + data
        else:
            hi, lo = _ts_pair(ts_us)
            opts = b""
            if direction:
                opts = _option(_EPB_FLAGS, struct.pack("<I", direction & 0x3)) + _option(_OPT_END, b"")
            record = _block(_EPB, struct.pack("<IIIII", 0, hi, lo, caplen, orig) + _pad4(data) + opts)
        self._write_all(record)
        self.packets += 1

    def close(self, *, received: int | None = None, dropped: int | None = None,
              comment: str | None = None) -> None:
        """Close the file; pcapng files get an Interface Statistics Block first."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.file_format == "pcapng":
                end_us = time.time_ns() // 1000
                opts = _option(_ISB_STARTTIME, struct.pack("<II", *_ts_pair(self._start_us)))
                opts += _option(_ISB_ENDTIME, struct.pack("<II", *_ts_pair(end_us)))
                if received is not None:
                    opts += _option(_ISB_IFRECV, struct.pack("<Q", received))
                if dropped is not None:
                    opts += _option(_ISB_IFDROP, struct.pack("<Q", dropped))
                if comment:
                    opts += _option(_OPT_COMMENT, comment.encode())
                opts += _option(_OPT_END, b"")
                hi, lo = _ts_pair(end_us)
                self._write_all(_block(_ISB, struct.pack("<III", 0, hi, lo) + opts))
        finally:
            os.close(self._fd)

    def __enter__(self) -> PacketFileWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


_PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\xa1\xb2\x3c\x4d": ">"}
_PACKET_BLOCKS = (0x2, 0x3, _EPB)


def whole_records(data: bytes) -> tuple[int, int]:
    """(packets, end): how many whole packet records a pcap / pcapng file starts with, and the offset
    where its last whole record (or block) ends.  Used to cut a capture that a writer left with a
    half-written last record (another program's writer killed, or refused by a full disk)."""
    e = _PCAP_MAGICS.get(data[:4])
    if e is not None:
        if len(data) < 24:
            return 0, 0
        off, n = 24, 0
        while off + 16 <= len(data):
            caplen = struct.unpack_from(e + "I", data, off + 8)[0]
            if off + 16 + caplen > len(data):
                break
            off += 16 + caplen
            n += 1
        return n, off
    off, n, end = 0, 0, 0
    e = "<"
    while off + 12 <= len(data):
        if struct.unpack_from("<I", data, off)[0] == _SHB:
            e = "<" if struct.unpack_from("<I", data, off + 8)[0] == _BYTE_ORDER_MAGIC else ">"
        btype, blen = struct.unpack_from(e + "II", data, off)
        if blen < 12 or blen % 4 or off + blen > len(data):
            break
        off += blen
        end = off
        n += btype in _PACKET_BLOCKS
    return n, end


def trim_to_whole_records(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Cut ``path`` after its last whole record (see :func:`whole_records`); return (packets, bytes cut)."""
    with open(path, "rb") as fh:
        data = fh.read()
    n, end = whole_records(data)
    cut = len(data) - end
    if cut and end:
        os.truncate(path, end)
    return n, cut if end else 0
