"""loopcap's malformed-capture corpus: damaged variants of real captures, each with its exact outcome.

    python tests/malformed/make_corpus.py OUTDIR [--large-samples N]

writes every case to ``OUTDIR/CATEGORY/NAME.pcap[ng]`` and ``OUTDIR/index.json`` (name, file, category,
expected outcome).  ``tests/test_malformed_corpus.py`` builds the same cases in a temporary
directory and runs each one through the real command line, ``loopcap analyze --json FILE``,
checking the exit code, that stderr holds no traceback, that stdout is one valid JSON document and
the outcome below.  Nothing generated is committed: the sources are the repository's own fixtures
(``pcaps/``) and the shared corpus of real captures (``../shared/corpus/captures``).

Categories (see :func:`build_cases`): truncation at every byte offset of a small pcap and a small
pcapng and at sampled offsets of two large pcaps; bad magic and bad first headers; caplen above the
snap length, above the file, 0 and 4 GB; pcapng block lengths that lie, loop back or overflow;
unknown block types; Enhanced Packet Blocks without their Interface Description Block; nonsense
link types; IP and TCP header lengths that point past the packet; TCP option lengths of 0 and 255;
and TCP sequence numbers that wrap past 2**32 in mid-stream.

Every expectation is derived from the damage itself and from an independent walk of the source's
framing written here (:func:`pcap_records`, :func:`pcapng_blocks`, :func:`packet_offsets`), never
from loopcap's reader or decoder: either *results up to the break plus a warning naming the byte
offset* (exit 0), or *a clear error naming the offset and exit code 2*, or an analysis that must be
identical to another file's (the undamaged source, or the source cut at the last whole record).
"""

from __future__ import annotations

import json
import random
import struct
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PCAPS = REPO / "pcaps"

#: loopcap's documented reader limits (analyzers/pcapfile.py; SECURITY.md)
MAX_RECORD_BYTES = 16 * 1024 * 1024
MAX_BLOCK_BYTES = MAX_RECORD_BYTES + 1024
PACKET_BLOCKS = frozenset((0x2, 0x3, 0x6))
SHB = 0x0A0D0D0A

#: samples per large capture in CI (LOOPCAP_MALFORMED_SAMPLES or --large-samples for more)
DEFAULT_LARGE_SAMPLES = 40


def corpus_captures() -> Path:
    import os

    env = os.environ.get("LOOPCAP_CORPUS")
    return (Path(env) if env else REPO.parent / "shared" / "corpus") / "captures"


# ---------------------------------------------------------------------------------------------
# expectations


@dataclass(frozen=True)
class Expect:
    """What ``loopcap analyze --json FILE`` must do with a case."""

    exit_code: int
    #: frames in the document (exit 0)
    packets: int | None = None
    #: the byte offsets the read warnings name, in order (exit 0); () means "not damaged"
    warning_offsets: tuple[int, ...] = ()
    #: text every one of those warnings contains
    warning_text: str | None = None
    #: text some other warning of the document contains (malformed packets, unknown link types...)
    other_warning: str | None = None
    #: exit 2: text of the error paragraph on stderr, and the byte offset it must name
    error: str | None = None
    error_offset: int | None = None
    #: malformed packets listed in the document: (frame, layer, reason)
    malformed: tuple[tuple[int, str, str], ...] | None = None
    #: the document must equal the analysis of this other file of the corpus (same case list),
    #: apart from the file name, the damage warning, and the keys listed in ``ignore_keys``
    same_as: str | None = None
    ignore_keys: tuple[str, ...] = ()
    #: every frame number in the document is this much higher than in ``same_as``
    frame_shift: int = 0
    #: extra checks by name (see :func:`check_outcome`)
    checks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Case:
    name: str
    category: str
    source: str
    suffix: str
    data: bytes = field(repr=False)
    expect: Expect

    @property
    def filename(self) -> str:
        return f"{self.category}/{self.name}{self.suffix}"


# ---------------------------------------------------------------------------------------------
# independent framing walks (of the undamaged sources, and of one misframed file)


def pcap_endian(data: bytes) -> str:
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        return "<"
    if magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        return ">"
    raise ValueError("not a classic pcap")


def pcap_records(data: bytes) -> list[tuple[int, int]]:
    """(offset, caplen) of every record of a well-formed classic pcap."""
    e = pcap_endian(data)
    out = []
    off = 24
    while off < len(data):
        caplen = struct.unpack_from(e + "I", data, off + 8)[0]
        if off + 16 + caplen > len(data):
            raise ValueError(f"source is damaged at {off}")
        out.append((off, caplen))
        off += 16 + caplen
    return out


def simulate_pcap(data: bytes) -> tuple[int, int | None]:
    """How many whole records a pcap reader delivers from ``data`` and where it stops early (the
    offset of the record it could not read, or None): the format's rules, written out again."""
    e = pcap_endian(data)
    off, n = 24, 0
    while True:
        if len(data) - off == 0:
            return n, None
        if len(data) - off < 16:
            return n, off
        caplen = struct.unpack_from(e + "I", data, off + 8)[0]
        if caplen > MAX_RECORD_BYTES or off + 16 + caplen > len(data):
            return n, off
        n += 1
        off += 16 + caplen


@dataclass(frozen=True)
class Block:
    offset: int
    type: int
    length: int
    endian: str


def pcapng_blocks(data: bytes) -> list[Block]:
    """Every block of a well-formed pcapng file (byte order per section)."""
    out = []
    off = 0
    e = "<"
    while off < len(data):
        btype = struct.unpack_from("<I", data, off)[0]
        if btype == SHB:
            e = "<" if data[off + 8:off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
        blen = struct.unpack_from(e + "I", data, off + 4)[0]
        out.append(Block(off, struct.unpack_from(e + "I", data, off)[0], blen, e))
        off += blen
    if off != len(data):
        raise ValueError("source pcapng is damaged")
    return out


def packet_offsets(data: bytes, suffix: str) -> list[tuple[int, int]]:
    """(start, end) of every packet record (pcap) / packet block (pcapng), in file order."""
    if suffix == ".pcap":
        return [(off, off + 16 + cap) for off, cap in pcap_records(data)]
    return [(b.offset, b.offset + b.length) for b in pcapng_blocks(data) if b.type in PACKET_BLOCKS]


def boundaries(data: bytes, suffix: str) -> list[int]:
    """Offsets where a record/block starts, and the end of the file."""
    if suffix == ".pcap":
        return [24] + [off + 16 + cap for off, cap in pcap_records(data)]
    return [0] + [b.offset + b.length for b in pcapng_blocks(data)]


def frame_bytes(data: bytes, suffix: str) -> list[tuple[int, int]]:
    """(offset of the frame's first byte, captured length) of every packet, in file order."""
    out = []
    if suffix == ".pcap":
        for off, cap in pcap_records(data):
            out.append((off + 16, cap))
        return out
    for b in pcapng_blocks(data):
        if b.type == 0x6:
            cap = struct.unpack_from(b.endian + "I", data, b.offset + 20)[0]
            out.append((b.offset + 28, cap))
    return out


# -- a minimal Ethernet/IP/TCP parser (for choosing frames and rewriting headers) ---------------


@dataclass(frozen=True)
class TcpAt:
    frame: int  #: 1-based
    ip: int  #: offset of the IP header in the file
    version: int
    tcp: int  #: offset of the TCP header in the file
    flags: int
    paylen: int  #: TCP payload bytes captured
    captured_ip: int  #: IP bytes captured


def tcp_frames(data: bytes, suffix: str) -> list[TcpAt]:
    """TCP segments of an Ethernet capture (no VLAN tags, no IP options needed)."""
    out = []
    for i, (start, cap) in enumerate(frame_bytes(data, suffix)):
        frame = data[start:start + cap]
        if len(frame) < 14 + 20:
            continue
        etype = struct.unpack_from(">H", frame, 12)[0]
        if etype == 0x0800 and frame[23] == 6:
            ihl = (frame[14] & 0xF) * 4
            total = struct.unpack_from(">H", frame, 16)[0]
            l4 = 14 + ihl
            version = 4
        elif etype == 0x86DD and frame[20] == 6:
            l4 = 14 + 40
            total = 40 + struct.unpack_from(">H", frame, 18)[0]
            version = 6
        else:
            continue
        hlen = (frame[l4 + 12] >> 4) * 4
        flags = struct.unpack_from(">H", frame, l4 + 12)[0] & 0x1FF
        out.append(TcpAt(i + 1, start + 14, version, start + l4, flags,
                         min(cap, 14 + total) - l4 - hlen, cap - 14))
    return out


def internet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_checksum(data: bytes, seg: TcpAt) -> int:
    """The full TCP checksum of a captured segment (pseudo-header included), checksum field as 0."""
    if seg.version == 4:
        ip = data[seg.ip:seg.ip + 20]
        total = struct.unpack_from(">H", ip, 2)[0]
        tcp_len = total - (seg.tcp - seg.ip)
        pseudo = ip[12:20] + struct.pack(">BBH", 0, 6, tcp_len)
    else:
        plen = struct.unpack_from(">H", data, seg.ip + 4)[0]
        tcp_len = plen - (seg.tcp - seg.ip - 40)
        pseudo = data[seg.ip + 8:seg.ip + 40] + struct.pack(">IxxxB", tcp_len, 6)
    tcp = bytearray(data[seg.tcp:seg.tcp + tcp_len])
    tcp[16:18] = b"\x00\x00"
    return internet_checksum(pseudo + bytes(tcp))


def put(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, *values)
    return bytes(buf)


# ---------------------------------------------------------------------------------------------
# sources


@dataclass(frozen=True)
class Source:
    name: str
    path: Path
    suffix: str

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()


def sources() -> dict[str, Source]:
    cap = corpus_captures()
    out = {
        "tcp-echo-ipv4": Source("tcp-echo-ipv4", PCAPS / "tcp-echo-ipv4.pcap", ".pcap"),
        "tcp-echo-ipv6": Source("tcp-echo-ipv6", PCAPS / "tcp-echo-ipv6.pcap", ".pcap"),
        "tcp-echo-ipv4-ng": Source("tcp-echo-ipv4-ng", PCAPS / "tcp-echo-ipv4.pcapng", ".pcapng"),
        "fin-4way": Source("fin-4way", cap / "05_tcp_client_fin_4way.pcap", ".pcap"),
        "dumpcap-ng": Source("dumpcap-ng", cap / "16_pcapng_dumpcap.pcapng", ".pcapng"),
        "large-http": Source("large-http", cap / "03_http_large_transfer.pcap", ".pcap"),
        "large-loss": Source("large-loss", cap / "14_loss_retrans.pcap", ".pcap"),
    }
    return {k: v for k, v in out.items() if v.path.is_file()}


# ---------------------------------------------------------------------------------------------
# the cases


def _truncations(src: Source, cuts: list[int], category: str) -> Iterator[Case]:
    data = src.data
    bounds = boundaries(data, src.suffix)
    packets = packet_offsets(data, src.suffix)
    for cut in cuts:
        name = f"{src.name}-cut-{cut:07d}"
        if cut < 4:
            yield Case(name, category, src.name, src.suffix, data[:cut],
                       Expect(2, error=f"file is too short to be a capture ({cut} bytes)", error_offset=0))
            continue
        if src.suffix == ".pcap" and cut < 24:
            yield Case(name, category, src.name, src.suffix, data[:cut],
                       Expect(2, error="pcap file header is truncated (needs 24 bytes)", error_offset=cut))
            continue
        n = sum(1 for _, end in packets if end <= cut)
        last_whole = max(b for b in bounds if b <= cut)
        prefix = f"{src.name}-prefix-{last_whole:07d}"
        if cut in bounds:
            yield Case(name, category, src.name, src.suffix, data[:cut], Expect(0, packets=n))
        elif last_whole < 4:  # inside the first Section Header Block: nothing to compare with
            yield Case(name, category, src.name, src.suffix, data[:cut],
                       Expect(0, packets=0, warning_offsets=(0,), checks=("no_connections",)))
        else:
            yield Case(name, category, src.name, src.suffix, data[:cut],
                       Expect(0, packets=n, warning_offsets=(last_whole,), same_as=prefix))


def _prefixes(src: Source, category: str) -> Iterator[Case]:
    """The source cut at every record boundary: what a damaged file must reproduce."""
    data = src.data
    for b in boundaries(data, src.suffix):
        if b >= 4:
            n = sum(1 for _, end in packet_offsets(data, src.suffix) if end <= b)
            yield Case(f"{src.name}-prefix-{b:07d}", category, src.name, src.suffix, data[:b], Expect(0, packets=n))


def truncation_cases(srcs: dict[str, Source], large_samples: int) -> list[Case]:
    out: list[Case] = []
    for key in ("fin-4way", "tcp-echo-ipv4-ng"):
        if key in srcs:
            src = srcs[key]
            out += _prefixes(src, "truncated-every-offset")
            out += _truncations(src, list(range(len(src.data) + 1)), "truncated-every-offset")
    rng = random.Random(20241121)
    for key in ("large-http", "large-loss"):
        if key not in srcs:
            continue
        src = srcs[key]
        data = src.data
        bounds = boundaries(data, src.suffix)
        picks = {1, 23, 24, len(data) - 1, len(data)}
        while len(picks) < large_samples:
            b = rng.choice(bounds[:-1])
            picks.add(min(len(data), b + rng.choice((0, 1, 8, 15, 16, 17, 54, 1000, 30000))))
        cuts = sorted(picks)
        wanted = {max(b for b in bounds if b <= c) for c in cuts if c >= bounds[0]}
        out += [c for c in _prefixes(src, "truncated-sampled") if int(c.name.rsplit("-", 1)[1]) in wanted]
        out += _truncations(src, cuts, "truncated-sampled")
    return out


def header_cases(srcs: dict[str, Source]) -> list[Case]:
    out: list[Case] = []
    pcap = srcs["tcp-echo-ipv4"]
    ng = srcs["tcp-echo-ipv4-ng"]
    cat = "bad-magic"
    for label, magic in [("zeros", b"\x00\x00\x00\x00"), ("text", b"GET "), ("zip", b"PK\x03\x04"),
                         ("one-bit-off", b"\xd4\xc3\xb2\xa3"), ("pcapng-swapped", b"\x0a\x0d\x0d\x0b")]:
        out.append(Case(f"magic-{label}", cat, pcap.name, ".pcap", magic + pcap.data[4:],
                        Expect(2, error=f"not a pcap or pcapng capture (first bytes {magic.hex()})", error_offset=0)))
    out.append(Case("magic-gzip", cat, pcap.name, ".pcap", b"\x1f\x8b\x08\x00" + pcap.data[4:],
                    Expect(2, error="not a pcap or pcapng capture (first bytes 1f8b0800)", error_offset=0,
                           checks=("gzip_hint",))))
    out.append(Case("empty-file", cat, pcap.name, ".pcap", b"",
                    Expect(2, error="file is too short to be a capture (0 bytes)", error_offset=0)))
    out.append(Case("pcapng-bad-byte-order-magic", cat, ng.name, ".pcapng", put(ng.data, 8, "<I", 0x01020304),
                    Expect(2, error="pcapng byte-order magic is 04030201, not 1a2b3c4d", error_offset=8)))
    for label, blen in [("7", 7), ("16", 16), ("2^32-4", 0xFFFFFFFC)]:
        out.append(Case(f"pcapng-first-shb-length-{label}", cat, ng.name, ".pcapng", put(ng.data, 4, "<I", blen),
                        Expect(2, error=f"pcapng Section Header Block length {blen} is invalid", error_offset=4)))
    return out


def caplen_cases(srcs: dict[str, Source]) -> list[Case]:
    out: list[Case] = []
    cat = "caplen"
    src = srcs["tcp-echo-ipv4"]
    data = src.data
    recs = pcap_records(data)
    n = len(recs)
    k = 5  # the sixth record (a data segment)
    off, cap = recs[k]
    # the header's snap length below every record: loopcap (like Wireshark) reads what each record says
    out.append(Case("caplen-above-snaplen", cat, src.name, ".pcap", put(data, 16, "<I", 40),
                    Expect(0, packets=n, same_as=f"{src.name}-original")))
    out.append(Case(f"{src.name}-original", cat, src.name, ".pcap", data, Expect(0, packets=n)))
    rest = len(data) - off - 16
    for label, value, text in [("past-eof", rest + 1, "file ends inside a record"),
                               ("far-past-eof", MAX_RECORD_BYTES, "file ends inside a record"),
                               ("over-limit", MAX_RECORD_BYTES + 1, f"claims {MAX_RECORD_BYTES + 1} captured bytes"),
                               ("2^31", 0x80000000, "claims 2147483648 captured bytes"),
                               ("4GB", 0xFFFFFFFF, "claims 4294967295 captured bytes")]:
        out.append(Case(f"caplen-{label}", cat, src.name, ".pcap", put(data, off + 8, "<I", value),
                        Expect(0, packets=k, warning_offsets=(off,), warning_text=text,
                               same_as=f"{src.name}-prefix-{off:07d}")))
    out.append(Case(f"{src.name}-prefix-{off:07d}", cat, src.name, ".pcap", data[:off], Expect(0, packets=k)))
    last_off, last_cap = recs[-1]
    out.append(Case("caplen-last-record-one-past-eof", cat, src.name, ".pcap",
                    put(data, last_off + 8, "<I", last_cap + 1),
                    Expect(0, packets=n - 1, warning_offsets=(last_off,), warning_text="file ends inside a record")))
    # caplen 0, the frame's bytes removed: an empty frame, decoded as a malformed Ethernet frame
    zero = put(data, off + 8, "<I", 0)
    zero = zero[:off + 16] + zero[off + 16 + cap:]
    out.append(Case("caplen-0", cat, src.name, ".pcap", zero,
                    Expect(0, packets=n, malformed=((k + 1, "Ethernet",
                                                     "frame shorter than the 14-byte Ethernet header (0 bytes)"),))))
    # caplen 0 with the bytes left in place: the next "record header" is frame data
    misframed = put(data, off + 8, "<I", 0)
    got, stop = simulate_pcap(misframed)
    out.append(Case("caplen-0-misframed", cat, src.name, ".pcap", misframed,
                    Expect(0, packets=got, warning_offsets=() if stop is None else (stop,))))
    # a wire length below the captured length, and one of 4 GB: the frame is what was captured
    out.append(Case("wirelen-below-caplen", cat, src.name, ".pcap", put(data, off + 12, "<I", 1),
                    Expect(0, packets=n, same_as=f"{src.name}-original")))
    out.append(Case("wirelen-4GB", cat, src.name, ".pcap", put(data, off + 12, "<I", 0xFFFFFFFF),
                    Expect(0, packets=n, same_as=f"{src.name}-original")))
    # pcapng: an EPB whose caplen says more than the block holds is skipped, reading goes on
    ng = srcs["tcp-echo-ipv4-ng"]
    blocks = pcapng_blocks(ng.data)
    epbs = [b for b in blocks if b.type == 6]
    b = epbs[3]
    out.append(Case("pcapng-epb-caplen-65535", cat, ng.name, ".pcapng", put(ng.data, b.offset + 20, "<I", 0xFFFF),
                    Expect(0, packets=len(epbs) - 1, warning_offsets=(b.offset,),
                           warning_text="Enhanced Packet Block claims 65535 captured bytes but holds")))
    out.append(Case("pcapng-epb-caplen-4GB", cat, ng.name, ".pcapng",
                    put(ng.data, b.offset + 20, "<I", 0xFFFFFFFF),
                    Expect(0, packets=len(epbs) - 1, warning_offsets=(b.offset,),
                           warning_text="claims 4294967295 captured bytes but holds")))
    empty = (4, "Ethernet", "frame shorter than the 14-byte Ethernet header (0 bytes)")
    out.append(Case("pcapng-epb-caplen-0", cat, ng.name, ".pcapng", put(ng.data, b.offset + 20, "<I", 0),
                    Expect(0, packets=len(epbs), malformed=(empty,))))
    return out


def pcapng_length_cases(srcs: dict[str, Source]) -> list[Case]:
    out: list[Case] = []
    cat = "pcapng-block-length"
    src = srcs["tcp-echo-ipv4-ng"]
    data = src.data
    blocks = pcapng_blocks(data)
    epbs = [b for b in blocks if b.type == 6]
    b = epbs[2]
    before = sum(1 for x in epbs if x.offset < b.offset)
    out.append(Case(f"{src.name}-prefix-{b.offset:07d}", cat, src.name, ".pcapng", data[:b.offset],
                    Expect(0, packets=before)))
    prefix = f"{src.name}-prefix-{b.offset:07d}"

    def lie(label: str, length: int, text: str) -> Case:
        mutated = put(data, b.offset + 4, "<I", length)
        return Case(f"epb-length-{label}", cat, src.name, ".pcapng", mutated,
                    Expect(0, packets=before, warning_offsets=(b.offset,), warning_text=text, same_as=prefix))

    out.append(lie("0", 0, "has an invalid length 0"))
    out.append(lie("8", 8, "has an invalid length 8"))
    out.append(lie("not-multiple-of-4", b.length + 2, f"has an invalid length {b.length + 2}"))
    # a length that lies by a little: the trailing length read there is another block's bytes (unless
    # those bytes happen to hold the same number, e.g. the next block's own length field: not a case)
    for delta in (-4, -8, 4, 8, 12, 16):
        length = b.length + delta
        trailer = struct.unpack_from("<I", data, b.offset + length - 4)[0]
        if trailer == length:
            continue
        out.append(lie(f"{'+' if delta > 0 else ''}{delta}", length,
                       f"trailing length {trailer} does not match leading length {length}"))
    # loops back (a "negative" length), overflows, or claims more than any block may
    out.append(lie("loop-back-minus-12", (-12) & 0xFFFFFFFF, f"claims {(-12) & 0xFFFFFFFF} bytes (limit"))
    out.append(lie("2^32-4", 0xFFFFFFFC, "claims 4294967292 bytes (limit"))
    out.append(lie("2^31", 0x80000000, "claims 2147483648 bytes (limit"))
    out.append(lie("over-limit", MAX_BLOCK_BYTES + 4, f"claims {MAX_BLOCK_BYTES + 4} bytes (limit"))
    out.append(lie("past-eof", len(data) - b.offset + 4 - (len(data) - b.offset) % 4,
                   "file ends inside a block of type 0x00000006"))
    mutated = put(data, b.offset + b.length - 4, "<I", 1234)
    out.append(Case("epb-trailing-length-1234", cat, src.name, ".pcapng", mutated,
                    Expect(0, packets=before, warning_offsets=(b.offset,),
                           warning_text=f"trailing length 1234 does not match leading length {b.length}",
                           same_as=prefix)))
    idb = next(x for x in blocks if x.type == 1)
    out.append(Case("idb-length-2^32-4", cat, src.name, ".pcapng", put(data, idb.offset + 4, "<I", 0xFFFFFFFC),
                    Expect(0, packets=0, warning_offsets=(idb.offset,),
                           warning_text="block of type 0x00000001 claims 4294967292 bytes")))
    return out


def block_type_cases(srcs: dict[str, Source]) -> list[Case]:
    out: list[Case] = []
    cat = "pcapng-block-types"
    src = srcs["tcp-echo-ipv4-ng"]
    data = src.data
    blocks = pcapng_blocks(data)
    epbs = [b for b in blocks if b.type == 6]
    n = len(epbs)
    out.append(Case(f"{src.name}-original", cat, src.name, ".pcapng", data, Expect(0, packets=n)))
    orig = f"{src.name}-original"

    def block(btype: int, body: bytes) -> bytes:
        body += b"\x00" * (-len(body) % 4)
        return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    at = epbs[2].offset
    for label, btype in [("unknown-0badf00d", 0x0BADF00D), ("reserved-high-bit", 0x80000001),
                         ("decryption-secrets", 0x0000000A), ("name-resolution", 0x00000004),
                         ("interface-statistics", 0x00000005)]:
        out.append(Case(f"inserted-{label}", cat, src.name, ".pcapng",
                        data[:at] + block(btype, b"\x00" * 8 + b"loopcap!") + data[at:],
                        Expect(0, packets=n, same_as=orig)))
    # custom blocks take a frame number (as in Wireshark): every later frame number moves by one
    first = epbs[0].offset
    for label, btype in [("custom-copyable", 0x00000BAD), ("custom-no-copy", 0x40000BAD)]:
        out.append(Case(f"inserted-{label}", cat, src.name, ".pcapng",
                        data[:first] + block(btype, struct.pack("<I", 32473) + b"custom data") + data[first:],
                        Expect(0, packets=n, same_as=orig, frame_shift=1)))
    # an Enhanced Packet Block for an interface no IDB describes
    idb = next(x for x in blocks if x.type == 1)
    no_idb = data[:idb.offset] + data[idb.offset + idb.length:]
    shifted = tuple(b.offset - idb.length for b in epbs)
    out.append(Case("idb-missing", cat, src.name, ".pcapng", no_idb,
                    Expect(0, packets=0, warning_offsets=shifted,
                           warning_text="packet refers to interface 0, but only 0 interface(s) are described")))
    b = epbs[4]
    out.append(Case("epb-interface-7", cat, src.name, ".pcapng", put(data, b.offset + 8, "<I", 7),
                    Expect(0, packets=n - 1, warning_offsets=(b.offset,),
                           warning_text="packet refers to interface 7, but only 1 interface(s) are described")))
    spb = block(0x3, struct.pack("<I", 60) + b"\x00" * 60)
    out.append(Case("spb-before-idb", cat, src.name, ".pcapng",
                    data[:idb.offset] + spb + data[idb.offset:],
                    Expect(0, packets=n, warning_offsets=(idb.offset,),
                           warning_text="Simple Packet Block before any Interface Description Block",
                           same_as=orig)))
    return out


def linktype_cases(srcs: dict[str, Source]) -> list[Case]:
    out: list[Case] = []
    cat = "link-type"
    src = srcs["tcp-echo-ipv4"]
    data = src.data
    n = len(pcap_records(data))
    for label, value, shown in [("0xbeef", 0xBEEF, 0xBEEF), ("0xffffffff", 0xFFFFFFFF, 0x0FFFFFFF),
                                ("65535", 0xFFFF, 0xFFFF)]:
        out.append(Case(f"pcap-linktype-{label}", cat, src.name, ".pcap", put(data, 20, "<I", value),
                        Expect(0, packets=n, other_warning=f"{n} frame(s) with unknown link type {shown} were not "
                               "decoded", checks=("no_connections",))))
    out.append(Case(f"{src.name}-original", cat, src.name, ".pcap", data, Expect(0, packets=n)))
    out.append(Case("pcap-linktype-ethernet-with-fcs-bits", cat, src.name, ".pcap",
                    put(data, 20, "<I", 0x10000001), Expect(0, packets=n, same_as=f"{src.name}-original")))
    for label, value in [("raw-ip", 101), ("linux-sll", 113), ("null", 0), ("loop", 108), ("sll2", 276)]:
        out.append(Case(f"pcap-ethernet-frames-as-{label}", cat, src.name, ".pcap", put(data, 20, "<I", value),
                        Expect(0, packets=n, checks=("no_connections",))))
    ng = srcs["tcp-echo-ipv4-ng"]
    idb = next(x for x in pcapng_blocks(ng.data) if x.type == 1)
    n_ng = sum(1 for b in pcapng_blocks(ng.data) if b.type == 6)
    out.append(Case("pcapng-idb-linktype-65535", cat, ng.name, ".pcapng", put(ng.data, idb.offset + 8, "<H", 0xFFFF),
                    Expect(0, packets=n_ng, other_warning=f"{n_ng} frame(s) with unknown link type 65535 were not "
                           "decoded", checks=("no_connections",))))
    return out


def header_length_cases(srcs: dict[str, Source]) -> list[Case]:
    out: list[Case] = []
    cat = "ip-tcp-header-length"
    for key in ("tcp-echo-ipv4", "tcp-echo-ipv6"):
        src = srcs[key]
        data = src.data
        n = len(pcap_records(data))
        segs = tcp_frames(data, src.suffix)
        pure = next(s for s in segs if s.flags == 0x010 and s.paylen == 0)  # a bare ACK
        dseg = next(s for s in segs if s.paylen > 0)
        mal = f"{src.name}-"
        if dseg.version == 4:
            ip_cap = pure.captured_ip
            out.append(Case(f"{mal}ipv4-ihl-60", cat, src.name, ".pcap", put(data, pure.ip, "B", 0x4F),
                            Expect(0, packets=n, malformed=((pure.frame, "IPv4", f"header length 60 points past the "
                                                             f"captured data ({ip_cap} bytes)"),))))
            out.append(Case(f"{mal}ipv4-ihl-16", cat, src.name, ".pcap", put(data, pure.ip, "B", 0x44),
                            Expect(0, packets=n, malformed=((pure.frame, "IPv4",
                                                             "header length 16 is below the minimum of 20"),))))
            out.append(Case(f"{mal}ipv4-total-length-10", cat, src.name, ".pcap", put(data, pure.ip + 2, ">H", 10),
                            Expect(0, packets=n, malformed=((pure.frame, "IPv4", "total length 10 is smaller than "
                                                             "the header length 20"),))))
            out.append(Case(f"{mal}ipv4-version-6", cat, src.name, ".pcap", put(data, pure.ip, "B", 0x65),
                            Expect(0, packets=n, malformed=((pure.frame, "IPv4", "version field is 6, not 4"),))))
            out.append(Case(f"{mal}ipv4-total-length-65535", cat, src.name, ".pcap",
                            put(data, dseg.ip + 2, ">H", 0xFFFF),
                            Expect(0, packets=n, other_warning="truncated by the capture's snap length")))
        else:
            out.append(Case(f"{mal}ipv6-version-5", cat, src.name, ".pcap", put(data, pure.ip, "B", 0x50),
                            Expect(0, packets=n, malformed=((pure.frame, "IPv6", "version field is 5, not 6"),))))
            out.append(Case(f"{mal}ipv6-payload-length-65535", cat, src.name, ".pcap",
                            put(data, dseg.ip + 4, ">H", 0xFFFF),
                            Expect(0, packets=n, other_warning="truncated by the capture's snap length")))
            # a hop-by-hop header whose length byte points past the packet
            hbh = put(put(data, pure.ip + 6, "B", 0), pure.tcp, "BB", 6, 255)
            out.append(Case(f"{mal}ipv6-extension-length-past-packet", cat, src.name, ".pcap", hbh,
                            Expect(0, packets=n, malformed=((pure.frame, "IPv6", "extension header length points "
                                                             "past the packet"),))))
        tcp_wire = pure.captured_ip - (20 if pure.version == 4 else 40)
        for doff, reason in [(15, f"header length 60 points past the segment ({tcp_wire} bytes)"),
                             (4, "header length 16 is below the minimum of 20"),
                             (0, "header length 0 is below the minimum of 20")]:
            raw = data[pure.tcp + 12]
            out.append(Case(f"{mal}tcp-data-offset-{doff}", cat, src.name, ".pcap",
                            put(data, pure.tcp + 12, "B", (doff << 4) | (raw & 0x0F)),
                            Expect(0, packets=n, malformed=((pure.frame, "TCP", reason),),
                                   checks=("same_streams_as_original",))))
        out.append(Case(f"{src.name}-original", cat, src.name, ".pcap", data, Expect(0, packets=n)))
    return out


def option_cases(srcs: dict[str, Source]) -> list[Case]:
    out: list[Case] = []
    cat = "tcp-option-length"
    for key in ("tcp-echo-ipv4", "tcp-echo-ipv4-ng"):
        src = srcs[key]
        data = src.data
        n = len(packet_offsets(data, src.suffix))
        segs = tcp_frames(data, src.suffix)
        syn = next(s for s in segs if s.flags == 0x002)
        synack = next(s for s in segs if s.flags == 0x012)
        assert data[syn.tcp + 20] == 2 and data[syn.tcp + 21] == 4, "the SYN's first option is not the MSS"
        for length in (0, 1, 255):
            out.append(Case(f"{src.name}-syn-mss-length-{length}", cat, src.name, src.suffix,
                            put(data, syn.tcp + 21, "B", length),
                            Expect(0, packets=n, checks=(f"client_options_malformed:option 2 has an invalid length "
                                                         f"{length}", "handshake_complete"))))
        # the SYN-ACK's options: find the window scale option (kind 3) and make its length 255 / 0
        hlen = (data[synack.tcp + 12] >> 4) * 4
        pos = synack.tcp + 20
        while pos < synack.tcp + hlen and data[pos] != 3:
            pos += 1 if data[pos] == 1 else data[pos + 1]
        for length in (0, 255):
            out.append(Case(f"{src.name}-synack-wscale-length-{length}", cat, src.name, src.suffix,
                            put(data, pos + 1, "B", length),
                            Expect(0, packets=n, checks=(f"server_options_malformed:option 3 has an invalid length "
                                                         f"{length}", "handshake_complete"))))
    return out


def wrap_cases(srcs: dict[str, Source]) -> list[Case]:
    """Rewrite every sequence/acknowledgment number so that both directions cross 2**32 in mid-stream:
    the analysis must not change apart from the raw numbers."""
    out: list[Case] = []
    cat = "seq-wrap"
    for key in ("tcp-echo-ipv4", "tcp-echo-ipv6", "tcp-echo-ipv4-ng", "fin-4way"):
        if key not in srcs:
            continue
        src = srcs[key]
        data = src.data
        segs = tcp_frames(data, src.suffix)
        syn = next(s for s in segs if s.flags == 0x002)
        synack = next(s for s in segs if s.flags == 0x012)
        client_port = struct.unpack_from(">H", data, syn.tcp)[0]
        isn_c = struct.unpack_from(">I", data, syn.tcp + 4)[0]
        isn_s = struct.unpack_from(">I", data, synack.tcp + 4)[0]
        # client data wraps 5 bytes into its first message, server data 3 bytes in
        shift = {True: (0xFFFFFFFF - 5 - isn_c) & 0xFFFFFFFF, False: (0xFFFFFFFF - 3 - isn_s) & 0xFFFFFFFF}
        buf = bytearray(data)
        for s in segs:
            from_client = struct.unpack_from(">H", data, s.tcp)[0] == client_port
            seq, ack = struct.unpack_from(">II", data, s.tcp + 4)
            full = struct.unpack_from(">H", data, s.tcp + 16)[0] == tcp_checksum(data, s)
            struct.pack_into(">I", buf, s.tcp + 4, (seq + shift[from_client]) & 0xFFFFFFFF)
            if s.flags & 0x010:
                struct.pack_into(">I", buf, s.tcp + 8, (ack + shift[not from_client]) & 0xFFFFFFFF)
            if full:  # a valid checksum stays valid (Linux's partial ones cover no seq/ack: they stay as they are)
                struct.pack_into(">H", buf, s.tcp + 16, tcp_checksum(bytes(buf), s))
        out.append(Case(f"{src.name}-original", cat, src.name, src.suffix, data,
                        Expect(0, packets=len(packet_offsets(data, src.suffix)))))
        out.append(Case(f"{src.name}-wraps-mid-stream", cat, src.name, src.suffix, bytes(buf),
                        Expect(0, packets=len(packet_offsets(data, src.suffix)), same_as=f"{src.name}-original",
                               ignore_keys=("seq", "ack", "fin_seq"), checks=("wrapped",))))
    return out


def build_cases(large_samples: int = DEFAULT_LARGE_SAMPLES) -> list[Case]:
    """Every case of the corpus (names are unique within a category)."""
    srcs = sources()
    missing = {"tcp-echo-ipv4", "tcp-echo-ipv6", "tcp-echo-ipv4-ng"} - set(srcs)
    if missing:
        raise FileNotFoundError(f"fixture captures missing: {sorted(missing)}")
    cases = (truncation_cases(srcs, large_samples) + header_cases(srcs) + caplen_cases(srcs)
             + pcapng_length_cases(srcs) + block_type_cases(srcs) + linktype_cases(srcs)
             + header_length_cases(srcs) + option_cases(srcs) + wrap_cases(srcs))
    seen: set[str] = set()
    for c in cases:
        key = c.filename
        if key in seen:
            raise ValueError(f"duplicate case {key}")
        seen.add(key)
    return cases


# ---------------------------------------------------------------------------------------------
# checking an outcome


def normalized(doc: dict[str, Any], ignore: tuple[str, ...] = (), frame_shift: int = 0,
               drop_damage: bool = True) -> Any:
    """A document without its file name and damage warning, without ``ignore`` keys anywhere, and with
    frame numbers lowered by ``frame_shift``."""
    out = dict(doc)
    out.pop("file", None)
    if drop_damage:
        out.pop("damaged", None)
        out["warnings"] = [w for w in out.get("warnings", []) if not w.startswith("the capture is damaged at")]

    def walk(x: Any, key: str = "") -> Any:
        if isinstance(x, dict):
            return {k: walk(v, k) for k, v in x.items() if k not in ignore}
        if isinstance(x, list):
            return [walk(v, key) for v in x]
        is_frame = key in ("frame", "frames", "first", "last") or key.endswith(("_frame", "_frames"))
        if frame_shift and is_frame and isinstance(x, int) and not isinstance(x, bool):
            return x - frame_shift
        return x

    return walk(out)


def check_outcome(case: Case, exit_code: int, stdout: str, stderr: str,
                  docs: dict[str, dict[str, Any]]) -> list[str]:
    """Problems with one run of ``loopcap analyze --json`` on ``case`` (empty: as expected).

    ``docs`` maps case names of the same category to their documents (for ``same_as``)."""
    e = case.expect
    problems = []
    if "Traceback" in stderr or "Traceback" in stdout:
        problems.append("a traceback was printed")
    if exit_code != e.exit_code:
        problems.append(f"exit code {exit_code}, expected {e.exit_code}; stderr: {stderr.strip()[:300]}")
        return problems
    if exit_code != 0:
        if stdout.strip():
            problems.append(f"output on stdout with exit code {exit_code}: {stdout[:200]!r}")
        text = " ".join(stderr.split())
        if not stderr.startswith("loopcap: error: "):
            problems.append(f"the error paragraph does not start with 'loopcap: error:': {stderr[:200]!r}")
        if e.error and e.error not in text:
            problems.append(f"error {text[:300]!r} lacks {e.error!r}")
        if e.error_offset is not None and f"byte offset {e.error_offset}:" not in text:
            problems.append(f"error {text[:300]!r} does not name byte offset {e.error_offset}")
        if "gzip_hint" in e.checks and "gunzip" not in text:
            problems.append("no gunzip hint")
        return problems
    try:
        doc = json.loads(stdout)
    except ValueError as exc:
        return [f"stdout is not one JSON document: {exc}"]
    if doc.get("schema") != "loopcap/1":
        problems.append("not a loopcap/1 document")
    if e.packets is not None and doc["packets"] != e.packets:
        problems.append(f"{doc['packets']} packets, expected {e.packets}")
    damage = [w for w in doc["warnings"] if w.startswith("the capture is damaged at")]
    if len(damage) != len(e.warning_offsets):
        problems.append(f"{len(damage)} damage warnings, expected {len(e.warning_offsets)}: {damage[:3]}")
    for w, off in zip(damage, e.warning_offsets, strict=False):
        if f"byte offset {off} " not in w:
            problems.append(f"warning {w!r} does not name byte offset {off}")
        if e.warning_text and e.warning_text not in w:
            problems.append(f"warning {w!r} lacks {e.warning_text!r}")
    if doc["damaged"] != bool(e.warning_offsets):
        problems.append(f"damaged is {doc['damaged']}")
    if e.other_warning and not any(e.other_warning in w for w in doc["warnings"]):
        problems.append(f"no warning contains {e.other_warning!r}: {doc['warnings']}")
    if e.malformed is not None:
        got = [(m["frame"], m["layer"], m["reason"]) for m in doc["malformed"]["packets"]]
        if got != list(e.malformed) or doc["malformed"]["count"] != len(e.malformed):
            problems.append(f"malformed packets {got}, expected {list(e.malformed)}")
        for frame, layer, reason in e.malformed:
            if not any(f"frame {frame}: {layer}: {reason}" in w for w in doc["warnings"]):
                problems.append(f"no warning names malformed frame {frame}")
    elif doc["malformed"]["count"] and e.same_as is None:
        pass  # misframed or foreign-link-type cases may decode garbage as malformed frames
    if e.same_as is not None:
        ref = docs.get(e.same_as)
        if ref is None:
            problems.append(f"reference case {e.same_as} missing")
        # Zeek's uids are made from a connection's first frame: with frames shifted, they differ
        ignore = (*e.ignore_keys, "uid", "uids") if e.frame_shift else e.ignore_keys
        if ref is not None and normalized(doc, ignore, e.frame_shift) != normalized(ref, ignore):
            problems.append(f"the analysis differs from {e.same_as}'s")
    for check in e.checks:
        name, _, arg = check.partition(":")
        if name == "no_connections" and (doc["tcp"] or doc["udp"]):
            problems.append("connections were found in frames of a foreign link type")
        elif name == "handshake_complete" and not (doc["tcp"] and doc["tcp"][0]["handshake"]["complete"]):
            problems.append("the handshake is not complete")
        elif name in ("client_options_malformed", "server_options_malformed"):
            which = "client_options" if name.startswith("client") else "server_options"
            opts = doc["tcp"][0]["handshake"][which] if doc["tcp"] else None
            if not opts or opts["malformed"] != arg:
                problems.append(f"{which} are {opts}, expected malformed {arg!r}")
        elif name == "wrapped":
            raw = [p["seq"] for c in doc["tcp"] for p in c["teardown"]["packets"]]
            syn = doc["tcp"][0]["handshake"]["syn"]["seq"] if doc["tcp"] else 0
            if not (syn > 0xFFFF0000 and raw and min(raw) < 0x10000):
                problems.append("the rewritten numbers do not wrap")
        elif name == "same_streams_as_original":
            ref = docs.get(f"{case.source}-original")
            if ref is None or [c["stream"] for c in ref["tcp"]] != [c["stream"] for c in doc["tcp"]]:
                problems.append("TCP stream numbering changed")
    return problems


# ---------------------------------------------------------------------------------------------
# the script


def write_corpus(out: Path, cases: list[Case]) -> None:
    index = []
    for c in cases:
        path = out / c.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(c.data)
        index.append({"name": c.name, "file": c.filename, "category": c.category, "source": c.source,
                      "expect": asdict(c.expect)})
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")


def summary(cases: list[Case]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for c in cases:
        row = out.setdefault(c.category, {"cases": 0, "exit 0": 0, "exit 0 damaged": 0, "exit 2": 0})
        row["cases"] += 1
        if c.expect.exit_code == 2:
            row["exit 2"] += 1
        elif c.expect.warning_offsets:
            row["exit 0 damaged"] += 1
        else:
            row["exit 0"] += 1
    return out


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--large-samples", type=int, default=DEFAULT_LARGE_SAMPLES)
    args = parser.parse_args(argv)
    cases = build_cases(args.large_samples)
    write_corpus(args.outdir, cases)
    for cat, row in summary(cases).items():
        print(f"{cat:<24} {row}")
    print(f"{len(cases)} cases written to {args.outdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))


__all__ = ["Case", "Expect", "build_cases", "check_outcome", "normalized", "summary", "write_corpus"]
