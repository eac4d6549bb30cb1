"""The analysis loop for pcap and pcapng files, many records at a time (numpy).

:func:`analyzers.analysis._loop_fast` reads one record at a time and decodes the common packets
(Ethernet + IPv4/IPv6 + TCP) with byte indexing in the interpreter.  Here the reader hands over
a megabyte of whole records at once (:meth:`~analyzers.pcapfile.CaptureReader.pcap_blocks`, and
``pcapng_blocks`` for runs of Enhanced Packet Blocks) and numpy
parses every record header and every fixed-offset Ethernet/IP/TCP field of the block in a few array
operations, with exactly the tests of ``_loop_fast``.  What stays per packet in Python is what has
state: in capture order, a steady segment (``TcpConnection.add_steady``) costs a cache look-up of its
connection by the raw 4-tuple bytes and the call; every other packet is built into a
:class:`~analyzers.decode.TcpSegment` from the parsed fields, or decoded by the decoder, and takes
exactly the path it takes in ``_loop_fast``.  The results are identical (tests/test_fast_path.py runs
every capture through both loops and the reference loop).

numpy is optional: without it (or with ``LOOPCAP_NO_NUMPY=1``) the record-at-a-time loop runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from analyzers.decode import TcpSegment
from analyzers.pcapfile import CaptureReader, PacketRecord, RecordBlock
from analyzers.tombstones import MIX1, MIX2

if TYPE_CHECKING:
    from analyzers.analysis import Analysis, Shard
    from analyzers.tcp import TcpConnection, TcpTracker
    from analyzers.udp import UdpTracker

try:
    import numpy as np

    HAVE_NUMPY = True
except ImportError:  # pragma: no cover - numpy is a dependency; the plain loop stays correct without it
    HAVE_NUMPY = False

#: the 4-tuple cache is emptied when it holds this many flows (it only ever saves a look-up; a
#: streaming analysis also empties it every ``EXPIRE_EVERY`` packets)
MAX_CACHED_FLOWS: Final = 16_384
#: zero bytes after a block's buffer, so that fixed-offset reads past a short last record stay inside
_PAD: Final = b"\0" * 128
#: the columns :func:`loop_blocks` reads per record
_PER_RECORD: Final = ("ts", "p", "caplen", "wirelen", "kind", "seq", "ip_bytes", "ps", "stop", "ks", "ke", "sport", "dport",
                      "ack", "flags", "window", "l4", "paylen")


def available(reader: CaptureReader) -> bool:
    """Whether :func:`loop_blocks` can read this capture (a seekable file, numpy importable, not
    turned off with ``LOOPCAP_NO_NUMPY``)."""
    if not HAVE_NUMPY or os.environ.get("LOOPCAP_NO_NUMPY"):
        return False
    try:
        return bool(reader._f.seekable())
    except (AttributeError, ValueError, OSError):
        return False


# the column readers of _columns (module functions: nested ones, compiled by mypyc, would leave a
# reference cycle holding the block's arrays for every block until the paused collector ran)


def _u32(a: Any, big: bool, at: Any) -> Any:
    """The 32-bit integers at offsets ``at`` of ``a``, in the capture's byte order."""
    if big:
        return ((a[at].astype(np.int64) << 24) | (a[at + 1].astype(np.int64) << 16)
                | (a[at + 2].astype(np.int64) << 8) | a[at + 3])
    return ((a[at + 3].astype(np.int64) << 24) | (a[at + 2].astype(np.int64) << 16)
            | (a[at + 1].astype(np.int64) << 8) | a[at])


def _byte(a: Any, p: Any, o: int) -> Any:
    """Byte ``o`` of every record (records start at offsets ``p`` of ``a``)."""
    return a[p + o].astype(np.int64)


def _be16(a: Any, at: Any) -> Any:
    return (a[at].astype(np.int64) << 8) | a[at + 1]


def _be32(a: Any, at: Any) -> Any:
    return (_be16(a, at) << 16) | _be16(a, at + 2)


def _ints(column: Any) -> list[int]:
    """A column as a list of ints (typed: the compiled build keeps the loops' integers unboxed)."""
    return column.tolist()  # type: ignore[no-any-return]


def _flow_hashes(sport: Any, src_last: Any, dport: Any, dst_last: Any) -> Any:
    """:func:`analyzers.tombstones.flow_hash` of every row (int64; uint64 products wrap modulo 2**64
    as the function's ``& M64`` does)."""
    va = (sport << 8) | src_last
    vb = (dport << 8) | dst_last
    z = ((np.minimum(va, vb) << 24) | np.maximum(va, vb)).astype(np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
    return ((z ^ (z >> np.uint64(31))) >> np.uint64(48)).astype(np.int64)


def _columns(block: RecordBlock, shard: tuple[int, int] | None) -> dict[str, Any]:
    """Every record's header fields and, for Ethernet, the fast path's classification and fields
    (and ``a``: the block's bytes and :data:`_PAD`, as uint8)."""
    a = np.frombuffer(block.buf + _PAD, dtype=np.uint8)
    h = np.asarray(block.starts, dtype=np.int64)
    big = block.big_endian

    mul, div, off = block.ts_mul, block.ts_div, block.ts_offset_ns
    if block.pcapng:  # Enhanced Packet Blocks: type, length, interface, timestamp (high, low), lengths
        raw = (_u32(a, big, h + 12).astype(np.uint64) << np.uint64(32)) | _u32(a, big, h + 16).astype(np.uint64)
        caplen = _u32(a, big, h + 20)
        wirelen = _u32(a, big, h + 24)
        p = h + 28
        if int(raw.max()) <= (1 << 62) // mul and abs(off) <= 1 << 62:
            ts: Any = raw.astype(np.int64) * mul // div + off
        else:  # beyond 64-bit arithmetic: Python's integers, as the record reader computes it
            ts = np.array([r * mul // div + off for r in raw.tolist()], dtype=object)
    else:  # classic pcap: seconds, fraction, captured and original lengths
        ts = _u32(a, big, h) * 1_000_000_000 + _u32(a, big, h + 4) * mul
        caplen = _u32(a, big, h + 8)
        wirelen = _u32(a, big, h + 12)
        p = h + 16
    wirelen = np.maximum(wirelen, caplen)
    cols: dict[str, Any] = {"p": p, "caplen": caplen, "wirelen": wirelen, "ts": ts, "a": a}
    if block.linktype != 1:
        return cols

    b = partial(_byte, a, p)  # byte ``o`` of every record
    # _loop_fast's tests, on every record at once
    e12, e13, v = b(12), b(13), b(14)
    total = (b(16) << 8) | b(17)
    hlen4 = (b(46) >> 4) * 4
    end4 = 14 + np.minimum(total, caplen - 14)
    ok4 = ((caplen >= 54) & (e12 == 8) & (e13 == 0) & (v == 0x45) & (b(23) == 6) & ((b(20) & 0x3F) == 0)
           & (b(21) == 0) & (total >= 40) & (hlen4 >= 20) & (hlen4 <= total - 20) & (34 + hlen4 <= end4))
    plen = (b(18) << 8) | b(19)
    end6 = np.minimum(54 + plen, caplen)
    hlen6 = (b(66) >> 4) * 4
    ok6 = ((caplen >= 74) & (e12 == 0x86) & (e13 == 0xDD) & ((v >> 4) == 6) & (b(20) == 6) & (plen > 0)
           & (hlen6 >= 20) & (hlen6 <= plen) & (54 + hlen6 <= end6))
    fast = ok4 | ok6
    l4 = np.where(ok4, 34, 54)
    hlen = np.where(ok4, hlen4, hlen6)
    stop = p + np.where(ok4, end4, end6)  # where the captured IP packet ends
    ip_bytes = np.where(ok4, total, 40 + plen)
    q = p + l4
    sport = _be16(a, q)
    dport = _be16(a, q + 2)
    flags = _be16(a, q + 12) & 0x1FF
    ps = q + hlen  # the payload's start
    paylen = ip_bytes - (l4 - 14) - hlen
    steady = fast & ((flags == 0x10) | (flags == 0x18)) & (stop - ps == paylen)
    # 0: the decoder's path; 1: a fast-path segment; 2: a candidate for add_steady; 3: another shard's
    kind = np.where(steady, 2, np.where(fast, 1, 0))
    if shard is not None:
        k, shards = shard
        owner = _flow_hashes(sport, np.where(ok4, b(29), b(37)), dport, np.where(ok4, b(33), b(53))) % shards
        kind = np.where(fast & (owner != k), 3, kind)
    ks = p + np.where(ok4, 26, 22)  # the raw (src, dst, sport, dport) bytes: the flow cache's key
    cols.update(kind=kind, l4=l4, stop=stop, ip_bytes=ip_bytes, sport=sport, dport=dport,
                seq=_be32(a, q + 4), ack=_be32(a, q + 8), flags=flags, window=_be16(a, q + 14), ps=ps, paylen=paylen,
                ks=ks, ke=np.where(ok4, ks + 12, ks + 36))
    return cols


def loop_blocks(reader: CaptureReader, res: Analysis, decode: Callable[..., object], tcp: TcpTracker,
                udp: UdpTracker, shard: tuple[int, int, Callable[[int, bytes, int], int],
                                              Callable[[bytes, int, bytes, int, int], int]] | None = None,
                progress: Callable[[int], None] | None = None) -> tuple[int, int | None, int]:
    """:func:`analyzers.analysis._loop_fast` over the reader's blocks of records (same arguments,
    same result); ``progress`` is called with the packet count after each block."""
    from analyzers.analysis import EXPIRE_EVERY, decode_and_feed

    k, shards, raw_owner, flow_owner = shard if shard is not None else (0, 1, None, None)
    by_key = tcp._by_key
    idle = tcp.idle_limit_ns
    feed_tcp = tcp.feed
    streaming = tcp._on_done is not None or udp._on_done is not None
    flows: dict[bytes, tuple[TcpConnection, int]] = {}  # raw 4-tuple bytes -> (connection, direction)
    n = 0
    first_ts: int | None = None
    ts = 0

    blocks = reader.pcapng_blocks() if reader.file_format == "pcapng" else reader.pcap_blocks()
    for block in blocks:
        if isinstance(block, PacketRecord):  # the reader's tail, one record at a time
            ts = block.ts_ns
            if first_ts is None:
                first_ts = ts
            n += 1
            if streaming and not n % EXPIRE_EVERY:
                tcp.expire(ts)
                udp.expire(ts)
            decode_and_feed(block.frame, ts, block.linktype, block.data, block.wirelen, res, decode, tcp, udp, k,
                            shards, raw_owner, flow_owner)
            continue
        buf = block.buf
        linktype = block.linktype
        c = _columns(block, (k, shards) if shards > 1 else None)
        count = len(c["p"])
        if not count:
            continue
        if first_ts is None:
            first_ts = int(c["ts"][0])
        if linktype != 1:  # no fast path: every record through the decoder
            tsl = _ints(c["ts"])
            pl = _ints(c["p"])
            cl = _ints(c["caplen"])
            wl = _ints(c["wirelen"])
            for i, p in enumerate(pl):
                n += 1
                ts = tsl[i]
                if streaming and not n % EXPIRE_EVERY:
                    tcp.expire(ts)
                    udp.expire(ts)
                decode_and_feed(block.frame0 + i + 1, ts, linktype, buf[p:p + cl[i]], wl[i], res, decode, tcp, udp, k,
                                shards, raw_owner, flow_owner)
        else:
            if len(flows) > MAX_CACHED_FLOWS:
                flows.clear()
            n0 = n
            if shards > 1:  # only this shard's records (and those where connections expire) reach Python
                keep = c["kind"] != 3
                if streaming:
                    keep |= (n0 + np.arange(1, count + 1)) % EXPIRE_EVERY == 0
                sel = np.flatnonzero(keep)
                idxl: list[int] | range = _ints(sel)
                cols = {name: c[name][sel] for name in _PER_RECORD}
            else:
                idxl = range(count)
                cols = c
            tsl = _ints(cols["ts"])
            pl = _ints(cols["p"])
            cl = _ints(cols["caplen"])
            wl = _ints(cols["wirelen"])
            kind = _ints(cols["kind"])
            seql = _ints(cols["seq"])
            ipl = _ints(cols["ip_bytes"])
            psl = _ints(cols["ps"])
            stl = _ints(cols["stop"])
            ksl = _ints(cols["ks"])
            kel = _ints(cols["ke"])
            spl = _ints(cols["sport"])
            dpl = _ints(cols["dport"])
            ackl = _ints(cols["ack"])
            fll = _ints(cols["flags"])
            wnl = _ints(cols["window"])
            l4l = _ints(cols["l4"])
            pwl = _ints(cols["paylen"])
            i = -1
            frame0 = block.frame0 + 1  # pcapng: blocks without a packet count as frames, so not always n
            for idx, kd, ts, seq, ip_bytes, ps, stop, ks, ke in zip(idxl, kind, tsl, seql, ipl, psl, stl, ksl,
                                                                      kel, strict=True):
                i += 1
                n = n0 + idx + 1
                frame = frame0 + idx
                if streaming and not n % EXPIRE_EVERY:
                    tcp.expire(ts)
                    udp.expire(ts)
                    flows.clear()  # it would keep connections handed out since alive
                if kd == 2:
                    fk = buf[ks:ke]
                    hit = flows.get(fk)
                    if hit is None:
                        half = (ke - ks - 4) >> 1
                        a = (buf[ks:ks + half], spl[i])
                        b = (buf[ks + half:ke - 4], dpl[i])
                        conn = by_key.get((a, b) if a <= b else (b, a))
                        if conn is not None:
                            hit = flows[fk] = (conn, 0 if a == conn.ep[0] else 1)
                    if hit is not None:
                        conn = hit[0]
                        if conn.steady:
                            if ts - conn.last_ts <= idle and conn.add_steady(hit[1], frame, ts, seq, ip_bytes,
                                                                             buf[ps:stop]):
                                continue
                        else:
                            del flows[fk]  # the 4-tuple may belong to a new connection by the next packet
                elif kd == 3:
                    continue
                if kd:
                    half = (ke - ks - 4) >> 1
                    feed_tcp(TcpSegment(frame, ts, 6 if half == 16 else 4, buf[ks:ks + half], buf[ks + half:ke - 4],
                                        spl[i], dpl[i], seq, ackl[i], fll[i], wnl[i], buf[pl[i] + l4l[i] + 20:ps],
                                        buf[ps:stop], pwl[i], ip_bytes))
                    continue
                p = pl[i]
                decode_and_feed(frame, ts, linktype, buf[p:p + cl[i]], wl[i], res, decode, tcp, udp,
                                k, shards, raw_owner, flow_owner)
            n = n0 + count
        ts = int(c["ts"][-1])
        if progress is not None:
            progress(n)
    return n, first_ts, ts


# ---------------------------------------------------------------------------------------------
# the loop with observers (the peers' views): every packet decoded, checksums verified in numpy

#: how much of the file :func:`loop_blocks_observed` reads at a time
OBSERVED_BLOCK_BYTES = 256 * 1024
#: checksum statuses by code (see :func:`_tcp_checksums`)
_STATUS: Final = ("ok", "partial", "bad", "bad_ip", "unverified")


class _WordSums:
    """Sums of big-endian 16-bit words over byte ranges of one buffer (RFC 1071's sum before folding):
    prefix sums of the words at even offsets and at odd offsets, made once per block (:meth:`load`).

    The prefix sums are 32-bit and wrap; the difference of two of them is still exact for a range
    of fewer than 65,537 words (its true sum is below 2**32), which covers any IP packet.

    One instance serves every block of a loop: its two prefix arrays are reused, and the words are
    read in place from the block's padded bytes.  Fresh half-megabyte arrays per block came from
    new mappings (glibc's malloc maps big blocks), and faulting their pages in cost three times
    the sums themselves."""

    def __init__(self) -> None:
        self._even = np.zeros(1, dtype=np.uint32)
        self._odd = np.zeros(1, dtype=np.uint32)
        self.a: Any = self._even[:0]
        self.even: Any = self._even
        self.odd: Any = self._odd

    def load(self, a: Any) -> _WordSums:
        """Sums over ``a`` (uint8, the block's bytes and :data:`_PAD`: a range never reaches its end)."""
        n = (len(a) - 1) // 2  # the words at even offsets, and as many at odd ones, inside ``a``
        if len(self._even) < n + 1:
            self._even = np.zeros(n + 1, dtype=np.uint32)
            self._odd = np.zeros(n + 1, dtype=np.uint32)
        self.a = a
        self.even = self._prefix(a[:2 * n].view(">u2"), self._even[:n + 1])
        self.odd = self._prefix(a[1:2 * n + 1].view(">u2"), self._odd[:n + 1])
        return self

    @staticmethod
    def _prefix(words: Any, out: Any) -> Any:
        out[0] = 0
        np.cumsum(words, dtype=np.uint32, out=out[1:])
        return out

    def __call__(self, start: Any, length: Any) -> Any:
        """The sum over ``[start, start + length)`` for every row (an odd last byte is its word's
        high byte, as RFC 1071 pads it), as int64."""
        k0 = start >> 1
        m = length >> 1
        total = np.where((start & 1).astype(bool), self.odd[k0 + m] - self.odd[k0], self.even[k0 + m] - self.even[k0])
        return total.astype(np.int64) + np.where(length & 1, self.a[start + length - 1].astype(np.int64) << 8, 0)


def _fold(v: Any) -> Any:
    """:func:`analyzers.checksum.ones_sum`'s result from a sum of words (``v`` >= 0)."""
    r = v % 0xFFFF
    return np.where(v == 0, 0, np.where(r == 0, 0xFFFF, r))


def _tcp_checksums(c: dict[str, Any], rows: Any, sums: _WordSums) -> list[int]:
    """The checksum status code (index into :data:`_STATUS`) of fast-path TCP segments ``rows`` of
    a block (its :func:`_columns` ``c``; ``sums``: the loop's :class:`_WordSums`), exactly as
    :class:`analyzers.checksum.ChecksumDecoder` classifies them: a bad IPv4 header checksum, else
    unverified when the capture cut the segment, else the TCP checksum over the pseudo-header and
    the segment: ok, partial (the field holds the pseudo-header sum: Linux's offload on loopback),
    or bad."""
    sums = sums.load(c["a"])
    a = sums.a
    p = c["p"][rows]
    l4 = c["l4"][rows]
    v4 = l4 == 34
    seg = p + l4
    wire = c["ip_bytes"][rows] - (l4 - 14)
    captured = c["stop"][rows] - seg
    ip_ok = ~v4 | (_fold(sums(p + 14, np.full(len(rows), 20))) == 0xFFFF)
    addr = sums(np.where(v4, p + 26, p + 22), np.where(v4, 8, 32))  # the source and destination addresses
    pseudo = _fold(addr + 6 + np.where(v4, wire, (wire >> 16) + (wire & 0xFFFF)))
    whole = captured >= wire
    length = np.where(whole, wire, 0)
    ok = _fold(sums(seg, length) + pseudo) == 0xFFFF
    field = (a[seg + 16].astype(np.int64) << 8) | a[seg + 17]
    partial = (field == pseudo) | (((field == 0) | (field == 0xFFFF)) & ((pseudo == 0) | (pseudo == 0xFFFF)))
    code = np.where(ok, 0, np.where(partial, 1, 2))
    code = np.where(whole, code, 4)
    return np.where(ip_ok, code, 3).tolist()  # type: ignore[no-any-return]


def loop_blocks_observed(reader: CaptureReader, res: Analysis, decoder: Any, feed_tcp: Callable[[TcpSegment], object],
                         feed_udp: Callable[[Any], object], tcp: TcpTracker, udp: UdpTracker, observers: list[Any],
                         progress: Callable[[int], None] | None = None, shard: Shard | None = None
                         ) -> tuple[int, int | None, int]:
    """:func:`analyzers.analysis._loop` (every packet decoded and shown to the observers) over the
    reader's blocks: the plain Ethernet/IPv4/IPv6/TCP segments are built from the block's parsed
    fields, and when ``decoder`` verifies checksums (:class:`~analyzers.checksum.ChecksumDecoder`,
    the peers' views' decoder) their checksums are classified in numpy; every other record goes
    through ``decoder``.  The same result as ``_loop`` (tests/test_blockloop.py), sharded too (other
    shards' segments are told apart in numpy; the observers get only their time)."""
    from analyzers.analysis import EXPIRE_EVERY, decode_and_observe
    from analyzers.checksum import ChecksumDecoder

    decode = decoder.decode
    checks = isinstance(decoder, ChecksumDecoder)
    streaming = tcp._on_done is not None or udp._on_done is not None
    n = 0
    first_ts: int | None = None
    ts = 0

    skips = [ob.on_skip for ob in observers] if shard is not None else []
    sums = _WordSums()

    # smaller blocks than the plain loop's: here every packet costs far more than its block's share, and
    # a block's lists and prefix sums are what this loop adds to the observers' memory
    chunk = OBSERVED_BLOCK_BYTES
    blocks = reader.pcapng_blocks(chunk) if reader.file_format == "pcapng" else reader.pcap_blocks(chunk)
    for block in blocks:
        if isinstance(block, PacketRecord):
            n += 1
            ts = block.ts_ns
            if first_ts is None:
                first_ts = ts
            if streaming and not n % EXPIRE_EVERY:
                tcp.expire(ts)
                udp.expire(ts)
            decode_and_observe(block.frame, ts, block.linktype, block.data, block.wirelen, res, decode, feed_tcp,
                               feed_udp, tcp, udp, observers, shard)
            continue
        buf = block.buf
        linktype = block.linktype
        c = _columns(block, shard[:2] if shard is not None and shard[1] > 1 else None)
        count = len(c["p"])
        if not count:
            continue
        tsl = _ints(c["ts"])
        if first_ts is None:
            first_ts = tsl[0]
        pl = _ints(c["p"])
        cl = _ints(c["caplen"])
        wl = _ints(c["wirelen"])
        frame0 = block.frame0 + 1
        if linktype != 1:
            kind = [0] * count
        else:
            kind = _ints(c["kind"])
            seql, ipl, psl, stl = _ints(c["seq"]), _ints(c["ip_bytes"]), _ints(c["ps"]), _ints(c["stop"])
            ksl, kel, spl, dpl = _ints(c["ks"]), _ints(c["ke"]), _ints(c["sport"]), _ints(c["dport"])
            ackl, fll, wnl = _ints(c["ack"]), _ints(c["flags"]), _ints(c["window"])
            l4l, pwl = _ints(c["l4"]), _ints(c["paylen"])
            status: list[int] = []
            fast = np.flatnonzero((c["kind"] == 1) | (c["kind"] == 2))  # (3: another shard's)
            if checks and len(fast):
                status = [0] * count
                for i, code in zip(_ints(fast), _tcp_checksums(c, fast, sums), strict=True):
                    status[i] = code
        for i in range(count):
            n += 1
            ts = tsl[i]
            if streaming and not n % EXPIRE_EVERY:
                tcp.expire(ts)
                udp.expire(ts)
            kd = kind[i]
            if kd == 3:
                for skip in skips:
                    skip(frame0 + i, ts)
            elif kd:
                ks, ke, ps = ksl[i], kel[i], psl[i]
                half = (ke - ks - 4) >> 1
                seg = TcpSegment(frame0 + i, ts, 6 if half == 16 else 4, buf[ks:ks + half], buf[ks + half:ke - 4],
                                 spl[i], dpl[i], seql[i], ackl[i], fll[i], wnl[i], buf[pl[i] + l4l[i] + 20:ps],
                                 buf[ps:stl[i]], pwl[i], ipl[i])
                if checks:
                    st = _STATUS[status[i]]
                    seg.checksum = st
                    decoder._count(st)
                feed_tcp(seg)
            else:
                p = pl[i]
                decode_and_observe(frame0 + i, ts, linktype, buf[p:p + cl[i]], wl[i], res, decode, feed_tcp, feed_udp,
                                   tcp, udp, observers, shard)
        ts = tsl[-1]
        if progress is not None:
            progress(n)
    return n, first_ts, ts

