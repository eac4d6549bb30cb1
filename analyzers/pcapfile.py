"""Streaming pcap / pcapng reader.

The reader never decodes packets: like dpkt's reader and gopacket's ``PacketDataSource`` it yields
one neutral :class:`PacketRecord` per captured frame (timestamp, link type, bytes, original length),
so the analyzers never know whether bytes came from a file or a live interface.

Memory is bounded: one record is held at a time and no length field read from the file is trusted
for an allocation larger than :data:`MAX_RECORD_BYTES`.

Damage handling:

* a file whose header cannot be read as pcap or pcapng raises :class:`CaptureFormatError` with the
  byte offset;
* damage after the header (a truncated last record, a block length that lies) ends the iteration
  early and appends a :class:`ReadWarning` naming the byte offset to :attr:`CaptureReader.warnings`:
  every record before the break is still delivered.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Final, NamedTuple

from analyzers.errors import CaptureFormatError
from analyzers.picklable import fields_reduce

#: No single record may claim more than this (Wireshark's own limit is 256 KiB for most link types;
#: Linux loopback with GSO stays under 64 KiB + headers).  Larger lengths are treated as corruption.
MAX_RECORD_BYTES: Final = 16 * 1024 * 1024
#: pcapng blocks (other than packet blocks) larger than this are treated as corruption.
MAX_BLOCK_BYTES: Final = MAX_RECORD_BYTES + 1024
#: lengths above this are read in steps of this size, so that a length that lies near the end of the file
#: allocates what the file holds (plus one step), never what the length claims
READ_STEP: Final = 1024 * 1024
#: how much :meth:`CaptureReader.pcap_blocks` reads at a time
BLOCK_READ_BYTES = 1024 * 1024

PCAP_MAGIC_US: Final = 0xA1B2C3D4
PCAP_MAGIC_NS: Final = 0xA1B23C4D
PCAPNG_SHB: Final = 0x0A0D0D0A
PCAPNG_BOM: Final = 0x1A2B3C4D

BLOCK_IDB: Final = 0x00000001
BLOCK_PB_OBSOLETE: Final = 0x00000002
BLOCK_SPB: Final = 0x00000003
BLOCK_EPB: Final = 0x00000006
#: blocks that Wireshark shows as frames of their own (systemd journal export, sysdig events, custom
#: blocks): they carry no packet for loopcap but take a frame number, so later frames keep Wireshark's
RECORD_BLOCKS_WITHOUT_PACKET: Final = frozenset((0x00000009, 0x00000204, 0x00000216, 0x00000221, 0x00000BAD,
                                                 0x40000BAD))


class RecordBlock(NamedTuple):
    """Records read together (:meth:`CaptureReader.pcap_blocks`, :meth:`CaptureReader.pcapng_blocks`):
    ``buf`` holds whole records (classic pcap: 16-byte record headers; pcapng: Enhanced Packet Blocks
    of one interface) starting at ``starts``; the first is frame ``frame0 + 1``.  A raw timestamp
    (pcap: the fraction of a second; pcapng: the 64-bit count) times ``ts_mul`` over ``ts_div`` is
    nanoseconds, plus ``ts_offset_ns``."""

    frame0: int
    buf: bytes
    starts: list[int]
    linktype: int
    pcapng: bool = False
    big_endian: bool = False
    ts_mul: int = 1000
    ts_div: int = 1
    ts_offset_ns: int = 0


class PacketRecord(NamedTuple):
    """One captured frame, independent of where it came from."""

    frame: int  #: 1-based frame number, as Wireshark numbers frames
    ts_ns: int  #: capture time, nanoseconds since the Unix epoch
    linktype: int  #: LINKTYPE_* value of the interface the frame was captured on
    data: bytes  #: the captured bytes (may be shorter than ``wirelen``)
    wirelen: int  #: the frame's length on the wire
    interface: int = 0  #: pcapng interface id (0 for classic pcap)


@dataclass(frozen=True)
class ReadWarning:
    """Damage found while reading; the records before ``offset`` were delivered."""

    offset: int
    message: str
    frame: int | None = None

    def __str__(self) -> str:
        where = f"byte offset {self.offset}"
        if self.frame is not None:
            where += f" (after frame {self.frame - 1})" if self.frame > 1 else " (before the first frame)"
        return f"{where}: {self.message}"

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return fields_reduce(self)  # pickled by its fields (see analyzers/picklable.py)


@dataclass
class Interface:
    linktype: int
    snaplen: int
    ts_divisor_ns: tuple[int, int]  # (multiplier, divisor) turning raw units into ns
    ts_offset_s: int = 0
    name: str | None = None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return fields_reduce(self)  # pickled by its fields (see analyzers/picklable.py)


def _read_in_steps(read: Callable[[int], bytes], n: int) -> bytes:
    """``read(n)`` without allocating ``n`` bytes up front (a buffered ``read(n)`` does) when the file
    ends sooner: a record that claims 16 MiB in a 100-byte file costs one step, not 16 MiB."""
    if n <= READ_STEP:
        return read(n)
    parts = []
    left = n
    while left:
        chunk = read(min(READ_STEP, left))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


# the record walks of the block readers: module functions, so that their integers are plain ``int``
# locals (the compiled build keeps them unboxed; a generator's locals live in its frame object)


def _walk_pcap(buf: bytes, off: int, caplen_at: Callable[[bytes, int], tuple[Any, ...]],
               starts: list[int]) -> tuple[int, bool]:
    """Classic pcap: append to ``starts`` the offsets of the whole records of ``buf`` from ``off``;
    return where the walk stopped and whether every length read was sane (not over
    :data:`MAX_RECORD_BYTES`)."""
    n = len(buf)
    limit = MAX_RECORD_BYTES
    add = starts.append
    while off + 16 <= n:
        caplen: int = caplen_at(buf, off + 8)[0]
        if caplen > limit:
            return off, False
        end = off + 16 + caplen
        if end > n:
            break
        add(off)
        off = end
    return off, True


def _walk_epbs(buf: bytes, pos: int, head: Callable[[bytes, int], tuple[Any, ...]],
               trailer_at: Callable[[bytes, int], tuple[Any, ...]], interfaces: int,
               starts: list[int]) -> tuple[int, int]:
    """pcapng: append to ``starts`` the offsets of the run of whole, sane Enhanced Packet Blocks of
    one interface at ``pos`` of ``buf``; return where the run stopped and its interface (-1: none)."""
    n = len(buf)
    add = starts.append
    iface = -1
    while pos + 32 <= n:
        fields = head(buf, pos)
        btype: int = fields[0]
        blen: int = fields[1]
        ifc: int = fields[2]
        caplen: int = fields[5]
        if (btype != BLOCK_EPB or blen % 4 or blen < 32 or blen > MAX_BLOCK_BYTES
                or caplen > blen - 32 or ifc >= interfaces or (iface >= 0 and ifc != iface)
                or pos + blen > n or trailer_at(buf, pos + blen - 4)[0] != blen):
            break
        iface = ifc
        add(pos)
        pos += blen
    return pos, iface


def _resolution(code: int) -> tuple[int, int]:
    """pcapng if_tsresol -> (mul, div) so that ns = raw * mul // div."""
    if code & 0x80:
        exp = code & 0x7F
        return (10**9, 1 << exp)
    exp = code
    if exp <= 9:
        return (10 ** (9 - exp), 1)
    return (1, 10 ** (exp - 9))


class CaptureReader:
    """Iterate over the records of a pcap or pcapng file (or any binary stream).

    >>> with CaptureReader.open("capture.pcap") as reader:    # doctest: +SKIP
    ...     for record in reader:
    ...         ...
    """

    def __init__(self, stream: BinaryIO, *, name: str = "<stream>", size: int | None = None) -> None:
        self._f = stream
        self.name = name
        self.size = size
        self.warnings: list[ReadWarning] = []
        self.offset = 0
        self.frames = 0
        self.file_format = ""
        self.interfaces: list[Interface] = []
        self._linktypes: set[int] = set()  # of every section, not only the current one
        self._owns = False
        head = self._read_exact_or_short(4)
        if len(head) < 4:
            raise CaptureFormatError(
                f"file is too short to be a capture ({len(head)} bytes)", path=name, offset=0,
                hint="A pcap file starts with a 24-byte header, a pcapng file with a Section Header Block.")
        magic_le = struct.unpack("<I", head)[0]
        magic_be = struct.unpack(">I", head)[0]
        self._head = head
        if magic_le in (PCAP_MAGIC_US, PCAP_MAGIC_NS) or magic_be in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            self._init_pcap(head)
        elif magic_le == PCAPNG_SHB:
            self.file_format = "pcapng"
            self._endian = "<"
        else:
            hint = "It does not start with a pcap magic (a1b2c3d4 / a1b23c4d) or a pcapng Section Header Block."
            if head[:2] in (b"\x1f\x8b",) or head.startswith(b"\x1f\x8b"):
                hint = "It looks gzip-compressed: decompress it first (gunzip FILE)."
            raise CaptureFormatError(f"not a pcap or pcapng capture (first bytes {head.hex()})",
                                     path=name, offset=0, hint=hint)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> CaptureReader:
        p = os.fspath(path)
        try:
            f = open(p, "rb", buffering=1024 * 1024)  # noqa: SIM115 - closed by close()/__exit__
        except FileNotFoundError:
            raise CaptureFormatError("no such file", path=p) from None
        except IsADirectoryError:
            raise CaptureFormatError("is a directory, not a capture file", path=p) from None
        except PermissionError:
            raise CaptureFormatError("permission denied", path=p,
                                     hint="Check the file's permissions (ls -l) or run as its owner.") from None
        except OSError as exc:
            raise CaptureFormatError(f"cannot open: {exc.strerror}", path=p) from None
        try:
            size = os.fstat(f.fileno()).st_size
            reader = cls(f, name=p, size=size)
        except BaseException:
            f.close()
            raise
        reader._owns = True
        return reader

    def close(self) -> None:
        if self._owns:
            self._f.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers ------------------------------------------------------------------------------
    def _read_exact_or_short(self, n: int) -> bytes:
        try:
            data = self._f.read(n)
        except OSError as exc:
            raise CaptureFormatError(f"read error: {exc.strerror}", path=self.name, offset=self.offset) from None
        self.offset += len(data)
        return data

    def _warn(self, offset: int, message: str) -> None:
        self.warnings.append(ReadWarning(offset, message, self.frames + 1))

    @property
    def linktypes(self) -> list[int]:
        return sorted(lt for lt in self._linktypes | {i.linktype for i in self.interfaces} if lt >= 0)

    # -- classic pcap ---------------------------------------------------------------------------
    def _init_pcap(self, head: bytes) -> None:
        rest = self._read_exact_or_short(20)
        if len(rest) < 20:
            raise CaptureFormatError("pcap file header is truncated (needs 24 bytes)", path=self.name,
                                     offset=self.offset)
        hdr = head + rest
        if struct.unpack("<I", head)[0] in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            self._endian = "<"
        else:
            self._endian = ">"
        magic, vmaj, vmin, _tz, _sig, snaplen, network = struct.unpack(self._endian + "IHHiIII", hdr)
        self.nanosecond = magic == PCAP_MAGIC_NS
        self.file_format = "nsecpcap" if self.nanosecond else "pcap"
        self.version = (vmaj, vmin)
        linktype = network & 0x0FFFFFFF  # upper bits carry FCS length flags
        self.interfaces.append(Interface(linktype, snaplen, (1, 1) if self.nanosecond else (1000, 1)))
        self.snaplen = snaplen

    def _iter_pcap(self, frame: int = 0) -> Iterator[PacketRecord]:
        """Records from the read position on (``frame`` records were read before it)."""
        unpack = struct.Struct(self._endian + "IIII").unpack
        read = self._f.read
        linktype = self.interfaces[0].linktype
        limit = MAX_RECORD_BYTES  # never trust a length from the file (snaplen included) beyond this
        ns = self.nanosecond
        offset = self.offset
        while True:
            hdr = read(16)
            if len(hdr) < 16:
                if hdr:
                    self.offset = offset + len(hdr)
                    self.frames = frame
                    self._warn(offset, f"file ends inside a record header ({len(hdr)} of 16 bytes): "
                                       "the capture was cut short")
                break
            sec, frac, caplen, wirelen = unpack(hdr)
            if caplen > limit:
                self.offset = offset
                self.frames = frame
                self._warn(offset, f"record claims {caplen} captured bytes (limit {limit}): corrupt record "
                                   "header, reading stopped here")
                break
            data = read(caplen) if caplen <= READ_STEP else _read_in_steps(read, caplen)
            if len(data) < caplen:
                self.offset = offset + 16 + len(data)
                self.frames = frame
                self._warn(offset, f"file ends inside a record ({len(data)} of {caplen} bytes): "
                                   "the capture was cut short")
                break
            frame += 1
            offset += 16 + caplen
            ts = sec * 1_000_000_000 + (frac if ns else frac * 1000)
            yield PacketRecord(frame, ts, linktype, data, wirelen if wirelen >= caplen else caplen, 0)
        self.offset = offset
        self.frames = frame

    def pcap_blocks(self, chunk: int | None = None) -> Iterator[RecordBlock | PacketRecord]:
        """Classic pcap, many records at a time: :class:`RecordBlock` runs of whole records read
        ``chunk`` bytes (default :data:`BLOCK_READ_BYTES`) at a time (the consumer parses their headers, see :mod:`analyzers.blockloop`),
        then, from the first record that is not whole and sane (a length over the limit, the file's
        end cut inside a record), the records of the one-at-a-time reader, which also warns exactly as
        :meth:`__iter__` does.  The same records, frame numbers, offsets and warnings as
        :meth:`__iter__`; the file must be seekable."""
        if self.file_format == "pcapng":
            raise ValueError("pcap_blocks reads classic pcap only")
        chunk = chunk or BLOCK_READ_BYTES
        read = self._f.read
        caplen_at = struct.Struct(self._endian + "I").unpack_from
        frame = 0
        base = self.offset  # the file offset of buf[0]
        rest = b""
        while True:
            try:
                data = read(chunk)
            except OSError as exc:
                raise CaptureFormatError(f"read error: {exc.strerror}", path=self.name, offset=base) from None
            buf = rest + data if rest else data
            starts: list[int] = []
            off, sane = _walk_pcap(buf, 0, caplen_at, starts)
            if starts:
                yield RecordBlock(frame, buf, starts, self.interfaces[0].linktype, False, self._endian == ">",
                                  1 if self.nanosecond else 1000)
                frame += len(starts)
                self.frames = frame
            self.offset = base + off
            if not sane or not data:
                break  # a length over the limit, or the end of the file: the record reader takes the rest
            rest = buf[off:]
            base += off
        self._f.seek(self.offset)
        yield from self._iter_pcap(frame)

    def pcapng_blocks(self, chunk: int | None = None) -> Iterator[RecordBlock | PacketRecord]:
        """pcapng, many records at a time: runs of whole, sane Enhanced Packet Blocks of one interface
        (one :class:`RecordBlock` each, read ``chunk`` bytes at a time); every other block (section and
        interface descriptions, statistics, simple or obsolete packet blocks, anything damaged) goes
        through the one-at-a-time reader, one block at a time, which also warns exactly as
        :meth:`__iter__` does.  The same records, frame numbers, offsets and warnings; the file must be
        seekable."""
        if self.file_format != "pcapng":
            raise ValueError("pcapng_blocks reads pcapng only")
        chunk = chunk or BLOCK_READ_BYTES
        read = self._f.read
        frame = 0
        offset = 0  # the file offset of the next block
        scanned = 0  # bytes read ahead for runs of EPBs: bounded by the file's length (see below)
        while True:
            # one block for the record reader (the section header first of all) ...
            self._f.seek(offset if offset else 4)  # the first block's type was read with the file header
            yield from self._iter_pcapng(frame, offset, blocks=1)
            offset, frame = self.offset, self.frames
            if self._stopped:
                return
            if scanned > 4 * offset + 4 * chunk:
                # EPBs and other blocks alternate: each short run re-read a chunk ahead; the rest of the
                # file goes one block at a time (reading ahead must not cost a multiple of the file)
                self._f.seek(offset)
                yield from self._iter_pcapng(frame, offset)
                return
            # ... then as many plain Enhanced Packet Blocks as follow it
            self._f.seek(offset)
            e = self._endian
            head = struct.Struct(e + "IIIIIII").unpack_from
            trailer_at = struct.Struct(e + "I").unpack_from
            interfaces = self.interfaces
            buf = b""
            base = offset  # the file offset of buf[0]
            pos = 0
            while True:
                n = len(buf)
                starts: list[int] = []
                pos, iface = _walk_epbs(buf, pos, head, trailer_at, len(interfaces), starts)
                if starts:
                    ifd = interfaces[iface]
                    mul, div = ifd.ts_divisor_ns
                    yield RecordBlock(frame, buf, starts, ifd.linktype, True, e == ">", mul, div,
                                      ifd.ts_offset_s * 1_000_000_000)
                    frame += len(starts)
                    self.frames = frame
                    self.offset = base + pos
                    continue
                # no whole plain EPB at pos: read on if it may be one that is not all buffered yet
                if pos + 28 <= n:
                    btype, blen = head(buf, pos)[:2]
                    if btype != BLOCK_EPB or pos + blen <= n or blen > MAX_BLOCK_BYTES:
                        break  # another kind of block, or a damaged one: the record reader takes it
                data = read(chunk)
                if not data:
                    break
                scanned += len(data)
                buf = buf[pos:] + data
                base += pos
                pos = 0
            offset = base + pos

    # -- pcapng ---------------------------------------------------------------------------------
    def _iter_pcapng(self, frame: int = 0, offset: int = 0, blocks: int = -1) -> Iterator[PacketRecord]:
        """Records from the block at ``offset`` (the read position; ``frame`` records before it), for
        at most ``blocks`` blocks (-1: to the end).  :attr:`_stopped`: the file ended or was damaged."""
        read = self._f.read
        first = offset == 0
        head = self._head
        e = self._endian
        self._stopped = True
        while True:
            if not blocks:
                self._stopped = False
                break
            blocks -= 1
            if first:
                bh = head + read(4)
                first = False
            else:
                bh = read(8)
            if len(bh) < 8:
                if bh:
                    self.frames = frame
                    self._warn(offset, f"file ends inside a block header ({len(bh)} of 8 bytes): "
                                       "the capture was cut short")
                break
            btype = struct.unpack(e + "I", bh[:4])[0]
            if btype == PCAPNG_SHB:
                # byte order may change per section: read the BOM to learn it
                bom = read(4)
                if len(bom) < 4:
                    self.frames = frame
                    self._warn(offset, "file ends inside a Section Header Block")
                    break
                if struct.unpack("<I", bom)[0] == PCAPNG_BOM:
                    e = "<"
                elif struct.unpack(">I", bom)[0] == PCAPNG_BOM:
                    e = ">"
                else:
                    if offset == 0:
                        raise CaptureFormatError(f"pcapng byte-order magic is {bom.hex()}, not 1a2b3c4d",
                                                 path=self.name, offset=8)
                    self.frames = frame
                    self._warn(offset, f"Section Header Block with a bad byte-order magic ({bom.hex()}): "
                                       "reading stopped here")
                    break
                self._endian = e
                blen = struct.unpack(e + "I", bh[4:8])[0]
                if blen < 28 or blen % 4 or blen > MAX_BLOCK_BYTES:
                    if offset == 0:
                        raise CaptureFormatError(f"pcapng Section Header Block length {blen} is invalid",
                                                 path=self.name, offset=4)
                    self.frames = frame
                    self._warn(offset, f"Section Header Block length {blen} is invalid: reading stopped here")
                    break
                body = _read_in_steps(read, blen - 12)
                if len(body) < blen - 12:
                    self.frames = frame
                    self._warn(offset, "file ends inside a Section Header Block")
                    break
                self.interfaces = []
                offset += blen
                continue
            blen = struct.unpack(e + "I", bh[4:8])[0]
            if blen < 12 or blen % 4:
                self.frames = frame
                self._warn(offset, f"block of type 0x{btype:08x} has an invalid length {blen}: "
                                   "reading stopped here")
                break
            if blen > MAX_BLOCK_BYTES:
                self.frames = frame
                self._warn(offset, f"block of type 0x{btype:08x} claims {blen} bytes (limit {MAX_BLOCK_BYTES}):"
                                   " corrupt block, reading stopped here")
                break
            body = read(blen - 8) if blen <= READ_STEP else _read_in_steps(read, blen - 8)
            if len(body) < blen - 8:
                self.frames = frame
                self._warn(offset, f"file ends inside a block of type 0x{btype:08x} "
                                   f"({len(body) + 8} of {blen} bytes): the capture was cut short")
                break
            trailer = struct.unpack(e + "I", body[-4:])[0]
            if trailer != blen:
                self.frames = frame
                self._warn(offset, f"block of type 0x{btype:08x}: trailing length {trailer} does not match "
                                   f"leading length {blen}: reading stopped here")
                break
            block_offset = offset
            offset += blen
            body = body[:-4]
            self.frames = frame  # so that a warning about this block names the right frame
            if btype == BLOCK_EPB:
                if len(body) < 20:
                    self._warn(block_offset, "Enhanced Packet Block too short; skipped")
                    continue
                iface, hi, lo, caplen, wirelen = struct.unpack(e + "IIIII", body[:20])
                if iface >= len(self.interfaces):
                    self._warn(block_offset, f"packet refers to interface {iface}, but only "
                                             f"{len(self.interfaces)} interface(s) are described; skipped")
                    continue
                if caplen > len(body) - 20:
                    self._warn(block_offset, f"Enhanced Packet Block claims {caplen} captured bytes but holds "
                                             f"{len(body) - 20}; skipped")
                    continue
                ifc = self.interfaces[iface]
                raw = (hi << 32) | lo
                mul, div = ifc.ts_divisor_ns
                ts = raw * mul // div + ifc.ts_offset_s * 1_000_000_000
                frame += 1
                yield PacketRecord(frame, ts, ifc.linktype, body[20:20 + caplen],
                                   wirelen if wirelen >= caplen else caplen, iface)
            elif btype == BLOCK_SPB:
                if not self.interfaces:
                    self._warn(block_offset, "Simple Packet Block before any Interface Description Block; "
                                             "skipped")
                    continue
                if len(body) < 4:
                    self._warn(block_offset, "Simple Packet Block too short; skipped")
                    continue
                wirelen = struct.unpack(e + "I", body[:4])[0]
                ifc = self.interfaces[0]
                cap = min(wirelen, len(body) - 4)
                if ifc.snaplen:
                    cap = min(cap, ifc.snaplen)
                frame += 1
                yield PacketRecord(frame, 0, ifc.linktype, body[4:4 + cap], max(wirelen, cap), 0)
            elif btype == BLOCK_PB_OBSOLETE:
                if len(body) < 20:
                    self._warn(block_offset, "Packet Block too short; skipped")
                    continue
                iface, _drops, hi, lo, caplen, wirelen = struct.unpack(e + "HHIIII", body[:20])
                if iface >= len(self.interfaces) or caplen > len(body) - 20:
                    self._warn(block_offset, "Packet Block refers to an unknown interface or lies about its "
                                             "length; skipped")
                    continue
                ifc = self.interfaces[iface]
                mul, div = ifc.ts_divisor_ns
                frame += 1
                ts = ((hi << 32) | lo) * mul // div + ifc.ts_offset_s * 1_000_000_000  # as an EPB's
                yield PacketRecord(frame, ts, ifc.linktype, body[20:20 + caplen], max(wirelen, caplen), iface)
            elif btype == BLOCK_IDB:
                if len(body) < 8:
                    self._warn(block_offset, "Interface Description Block too short; skipped")
                    self.interfaces.append(Interface(-1, 0, (1000, 1)))
                    continue
                linktype, _res, snaplen = struct.unpack(e + "HHI", body[:8])
                ifc = Interface(linktype, snaplen, (1000, 1))
                self._parse_idb_options(body[8:], ifc, e)
                self.interfaces.append(ifc)
                self._linktypes.add(linktype)
            elif btype in RECORD_BLOCKS_WITHOUT_PACKET:
                frame += 1
            # every other block type (NRB, ISB, DSB, unknown) is skipped
        self.frames = frame
        self.offset = offset

    @staticmethod
    def _parse_idb_options(opts: bytes, ifc: Interface, e: str) -> None:
        pos = 0
        n = len(opts)
        while pos + 4 <= n:
            code, olen = struct.unpack(e + "HH", opts[pos:pos + 4])
            if code == 0:
                break
            val = opts[pos + 4:pos + 4 + olen]
            if code == 9 and olen >= 1:
                ifc.ts_divisor_ns = _resolution(val[0])
            elif code == 14 and olen == 8:
                ifc.ts_offset_s = struct.unpack(e + "q", val)[0]
            elif code == 2 and olen:
                ifc.name = val.decode("utf-8", "replace")
            pos += 4 + olen + (-olen % 4)

    # -- iteration ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[PacketRecord]:
        if self.file_format == "pcapng":
            return self._iter_pcapng()
        return self._iter_pcap()


def open_capture_bytes(data: bytes, name: str = "<bytes>") -> CaptureReader:
    """A reader over an in-memory capture (used by tests and fuzzers)."""
    return CaptureReader(io.BytesIO(data), name=name, size=len(data))
