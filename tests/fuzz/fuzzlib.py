"""The one invariant every loopcap fuzz target checks, and the code paths it drives.

**Invariant.** Any bytes either analyze or raise loopcap's own typed error
(:class:`analyzers.errors.LoopcapError`, which the CLI turns into a message and exit code 2); never
another exception, never a hang, never memory beyond a fixed bound.

* *another exception*: the targets let it propagate, so atheris/libFuzzer (or pytest) reports it
  with the input that caused it;
* *a hang*: libFuzzer's ``-timeout`` (set to :data:`TIME_LIMIT_S` by :func:`libfuzzer_args`); the
  corpus replay in ``tests/test_fuzz.py`` times every input against the same bound;
* *memory*: libFuzzer's ``-rss_limit_mb`` (:data:`RSS_LIMIT_MB`, the whole interpreter included); the
  replay measures each input's Python allocations with :mod:`tracemalloc` against
  :data:`MEMORY_LIMIT_BYTES`.

Three code paths, one per target (``fuzz_reader.py``, ``fuzz_decode.py``, ``fuzz_tracker.py``):

* :func:`analyze_capture_bytes`: the whole ``loopcap analyze`` / ``follow`` path on a pcap or
  pcapng file held in memory, with the options the command line uses (the peers' views: Wireshark's
  tcp.analysis flags, Zeek's conn.log and its checksum-verifying decoder): reader, decoders,
  trackers, summaries, JSON, the text walkthrough, every Follow Stream format, and
  ``--format zeek``;
* :func:`decode_frames`: frames of any link type (every entry of ``LINK_LAYERS`` and unknown ones)
  through one stateful :class:`~analyzers.decode.Decoder` (IP reassembly state carries over), each
  result checked, then the same frames through the analysis;
* :func:`track_segments`: synthetic TCP segments and UDP datagrams (any flags, sequence numbers
  around the 2**32 wrap, lying lengths) straight into the sans-I/O trackers, then summaries and text.
"""

from __future__ import annotations

import atexit
import io
import json
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
for _p in (str(REPO), str(REPO / "tests")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

# the modules under test are imported by the fuzz scripts inside atheris.instrument_imports()
from analyzers.analysis import Analysis, AnalysisOptions, analyze_records  # noqa: E402
from analyzers.decode import (  # noqa: E402
    FRAGMENT,
    LINK_LAYERS,
    OTHER,
    Decoder,
    IcmpError,
    Malformed,
    TcpSegment,
    UdpDatagram,
    parse_tcp_options,
)
from analyzers.errors import CaptureFormatError, LoopcapError  # noqa: E402
from analyzers.follow import node, render_follow, tcp_chunks, udp_chunks  # noqa: E402
from analyzers.pcapfile import CaptureReader, PacketRecord  # noqa: E402
from analyzers.tcp import TcpTracker  # noqa: E402
from analyzers.udp import UdpTracker  # noqa: E402
from analyzers.walkthrough import render  # noqa: E402
from analyzers.zeek import ZeekOptions, ZeekTracker, write_conn_log, zeek_analyze  # noqa: E402
from loopcap.cli import _options as cli_options  # noqa: E402  (what `loopcap analyze` runs)

#: inputs longer than this are cut (libFuzzer's -max_len is set to it as well)
MAX_INPUT_BYTES = 64 * 1024
#: wall-clock bound per input, seconds (libFuzzer -timeout; the replay asserts it)
TIME_LIMIT_S = 5
#: bound on the Python memory one input may allocate (tracemalloc peak, in the replay)
MEMORY_LIMIT_BYTES = 64 * 1024 * 1024
#: bound on the fuzzing process's resident memory, interpreter included (libFuzzer -rss_limit_mb)
RSS_LIMIT_MB = 1024

#: every link type loopcap decodes, plus a few it does not (they must be counted, not crash)
LINKTYPES: tuple[int, ...] = (*sorted(LINK_LAYERS), 2, 105, 127, 0xFFFF, 0x0FFFFFFF)

CORPUS = Path(__file__).resolve().parent / "corpus"


def _plain(text: str, **_: Any) -> str:
    return text


class InvariantError(AssertionError):
    """A documented property did not hold (an exception atheris reports like any other)."""


def check(cond: bool, what: str) -> None:
    if not cond:
        raise InvariantError(what)


def check_typed_error(exc: LoopcapError, size: int) -> None:
    """What the CLI needs to print an error: a message, an exit code, and for a capture-format
    error the byte offset inside the input."""
    check(bool(str(exc)), "a LoopcapError without a message")
    check(exc.exit_code == 2, f"exit code {exc.exit_code} for unreadable input, documented as 2")
    if isinstance(exc, CaptureFormatError):
        check(exc.offset is not None and 0 <= exc.offset <= max(size, 24),
              f"format error offset {exc.offset} outside a {size}-byte input")


def render_document(doc: dict[str, Any]) -> None:
    """What the CLI prints: JSON (strict: no NaN) and the text walkthrough."""
    json.dumps(doc, allow_nan=False)
    text = render(doc, _plain, all_datagrams=True)
    check(isinstance(text, str), "render() did not return text")


def render_follows(res: Analysis) -> None:
    """Every Follow Stream format of every TCP connection and UDP conversation."""
    for c in res.tcp[:8]:
        cd = c.client_dir or 0
        chunks = tcp_chunks(c)
        for fmt in ("ascii", "hex", "raw", "binary"):
            render_follow(chunks, fmt, proto="tcp", stream=c.stream, nodes=(node(c.ep[cd]), node(c.ep[1 - cd])))
    for u in res.udp[:8]:
        chunks = udp_chunks(u)
        for fmt in ("ascii", "raw"):
            render_follow(chunks, fmt, proto="udp", stream=u.stream, nodes=(node(u.client), node(u.server)),
                          direction="client")


def analyze_capture_bytes(data: bytes) -> dict[str, Any] | None:
    """``loopcap analyze`` + ``follow`` on an in-memory capture.  Returns the loopcap/1 document,
    or None when the reader refused the file header with a typed error (exit code 2)."""
    data = data[:MAX_INPUT_BYTES]
    try:
        reader = CaptureReader(io.BytesIO(data), name="<fuzz>", size=len(data))
    except LoopcapError as exc:
        check_typed_error(exc, len(data))
        return None
    delivered: list[int] = []

    def records() -> Any:
        for rec in reader:
            check(isinstance(rec, PacketRecord), "the reader yielded something else than a PacketRecord")
            check(len(rec.data) <= rec.wirelen, "captured length above the wire length")
            delivered.append(rec.frame)
            yield rec

    try:
        res = analyze_records(records(), analysis_options(len(data)), file="<fuzz>")
    except LoopcapError as exc:  # a pcapng Section Header Block is checked as it is read
        check_typed_error(exc, len(data))
        check(not delivered and isinstance(exc, CaptureFormatError) and exc.offset is not None
              and exc.offset < 12, "a typed error after the file header (damage there must be a warning)")
        return None
    res.file_format = reader.file_format
    res.linktypes = reader.linktypes
    res.read_warnings = list(reader.warnings)
    res.bytes_read = reader.offset
    check(delivered == list(range(1, len(delivered) + 1)) or reader.file_format == "pcapng",
          "pcap frames are not numbered 1, 2, 3...")
    check(len(res.read_warnings) <= 1 or reader.file_format == "pcapng",
          "a classic pcap stops at its first damage: at most one warning")
    for w in res.read_warnings:
        check(0 <= w.offset <= len(data), f"warning offset {w.offset} outside the {len(data)}-byte input")
        check(f"byte offset {w.offset}" in str(w), "a read warning that does not name its byte offset")
    doc = res.to_dict()
    check(doc["packets"] == len(delivered), "packets in the document differ from records read")
    check(doc["damaged"] == bool(res.read_warnings), "damaged flag disagrees with the warnings")
    render_document(doc)
    render_follows(res)
    zeek_log(CaptureReader(io.BytesIO(data), name="<fuzz>", size=len(data)), len(data))
    return doc


def analysis_options(variant: int) -> AnalysisOptions:
    """``loopcap analyze``'s options (``variant`` picks the --checksums mode and --no-http), keeping
    the payload of the first two connections as ``follow`` does for its one."""
    opts = cli_options((), keep=lambda s: s < 2, http=variant % 4 != 3, peers=True,
                       checksums=("auto", "verify", "ignore")[variant % 3])
    return opts


def zeek_log(records: Any, variant: int) -> None:
    """``loopcap analyze --format zeek``."""
    log = zeek_analyze(records, ZeekOptions(checksums=("auto", "verify", "ignore")[variant % 3]))
    write_conn_log(log.rows, io.StringIO())


# ---------------------------------------------------------------------------------------------
# decoders


ALLOWED_RESULTS = (TcpSegment, UdpDatagram, IcmpError, Malformed)


def check_decoded(x: object, data: bytes) -> None:
    if isinstance(x, str):
        check(x in (OTHER, FRAGMENT), f"unknown decode result {x!r}")
        return
    check(isinstance(x, ALLOWED_RESULTS), f"decode returned {type(x).__name__}")
    if isinstance(x, TcpSegment):
        check(0 <= x.sport <= 0xFFFF and 0 <= x.dport <= 0xFFFF, "TCP port out of range")
        check(len(x.payload) <= x.paylen, "TCP payload longer than its wire length")
        check(0 <= x.seq <= 0xFFFFFFFF and 0 <= x.ack <= 0xFFFFFFFF, "TCP seq/ack out of range")
        check(len(x.options) <= 40, "more than 40 bytes of TCP options")
        opts = parse_tcp_options(x.options)
        check(opts.malformed is None or isinstance(opts.malformed, str), "options.malformed is not text")
    elif isinstance(x, UdpDatagram):
        check(x.length >= 8 and len(x.payload) <= x.length - 8, "UDP payload longer than its length field")
    elif isinstance(x, Malformed):
        check(bool(x.layer) and bool(x.reason), "a Malformed result without layer or reason")


def frames_from(data: bytes) -> tuple[int, list[tuple[bytes, int]]]:
    """Split fuzz bytes into (link type, [(frame, wire length)]): byte 0 picks the link type, then
    each frame is a 2-byte big-endian length (capped at what is left), a wire-length bonus byte and
    the frame bytes."""
    if not data:
        return LINKTYPES[0], []
    linktype = LINKTYPES[data[0] % len(LINKTYPES)]
    pos = 1
    frames: list[tuple[bytes, int]] = []
    while pos + 3 <= len(data) and len(frames) < 4096:
        n = min(struct.unpack_from(">H", data, pos)[0], len(data) - pos - 3)
        bonus = data[pos + 2]
        frame = data[pos + 3:pos + 3 + n]
        pos += 3 + n
        frames.append((frame, len(frame) + (0 if bonus < 128 else bonus * 64)))
    return linktype, frames


def decode_frames(data: bytes) -> None:
    """Frames of one link type through one Decoder (fragment state carries over), then the analysis."""
    linktype, frames = frames_from(data[:MAX_INPUT_BYTES])
    dec = Decoder()
    for i, (frame, wirelen) in enumerate(frames):
        check_decoded(dec.decode(i + 1, i * 1000, linktype, frame, wirelen), frame)
    records = [PacketRecord(i + 1, 1_700_000_000_000_000_000 + i * 1000, linktype, f, w)
               for i, (f, w) in enumerate(frames)]
    res = analyze_records(records, analysis_options(len(data)))
    render_document(res.to_dict())
    render_follows(res)
    zeek_log(records, len(data))


# ---------------------------------------------------------------------------------------------
# trackers


_ADDRS4 = (bytes((10, 0, 0, 1)), bytes((10, 0, 0, 2)), bytes((127, 0, 0, 1)))
_ADDRS6 = (b"\xfd" + b"\x00" * 14 + b"\x01", b"\xfd" + b"\x00" * 14 + b"\x02", b"\x00" * 15 + b"\x01")
_PORTS = (80, 40000, 9999, 40000, 0, 65535)
SEGMENT_HEADER = 12


def track_segments(data: bytes) -> None:
    """Synthetic segments straight into the trackers, 12 header bytes each (then payload bytes):

    ``b0``: bit 0 direction, bits 1-2 which of four 4-tuples, bit 3 IPv6, bit 4 UDP, bit 5 quoted
    (an ICMP quote), bit 6 truncated capture; ``b1-b2``: TCP flags (9 bits); ``b3-b6``: sequence
    number: top two bits pick next expected / near it / far / absolute; ``b7-b10``: acknowledgment
    number, the same way relative to the peer; ``b11``: payload length (low 6 bits, the bytes follow)
    and a wire-length bonus (top 2 bits: none, +1, +1000, +65000).
    """
    data = data[:MAX_INPUT_BYTES]
    tcp = TcpTracker(keep_payload=lambda s: s == 0, http=True, server_ports=(80,))
    udp = UdpTracker(keep_payload=True)
    observers = analysis_options(len(data)).observers  # the peers' views see every segment too
    zeek = ZeekTracker(ZeekOptions())
    isn = int.from_bytes(data[:4].ljust(4, b"\xff"), "big")  # often near the 2**32 wrap
    nxt: dict[tuple[int, int], int] = {}
    pos = 4
    frame = 0
    while pos + SEGMENT_HEADER <= len(data) and frame < 20_000:
        h = data[pos:pos + SEGMENT_HEADER]
        pos += SEGMENT_HEADER
        frame += 1
        b0 = h[0]
        d, conn, v6, is_udp, quoted, short = b0 & 1, (b0 >> 1) & 3, bool(b0 & 8), bool(b0 & 16), bool(b0 & 32), \
            bool(b0 & 64)
        flags = ((h[1] << 8) | h[2]) & 0x1FF
        n = h[11] & 0x3F
        payload = data[pos:pos + n]
        pos += n
        wirelen = len(payload) + (0, 1, 1000, 65000)[h[11] >> 6]
        captured = payload[: len(payload) // 2] if short else payload
        addrs = _ADDRS6 if v6 else _ADDRS4
        a, b = (addrs[conn % 3], _PORTS[conn]), (addrs[(conn + 1) % 3], _PORTS[conn + 2])
        src, dst = (a, b) if d == 0 else (b, a)
        key, peer = (conn, d), (conn, 1 - d)
        mine = nxt.setdefault(key, (isn + conn * 0x01000193 + d * 0x7FFFFFFF) & 0xFFFFFFFF)
        theirs = nxt.setdefault(peer, (isn + conn * 0x01000193 + (1 - d) * 0x7FFFFFFF) & 0xFFFFFFFF)
        seq = _pick(int.from_bytes(h[3:7], "big"), mine)
        ack = _pick(int.from_bytes(h[7:11], "big"), theirs)
        ts = 1_700_000_000_000_000_000 + frame * 1_000_000
        zeek.advance(ts)
        if is_udp:
            dg = UdpDatagram(frame, ts, 6 if v6 else 4, src[0], dst[0], src[1], dst[1], 8 + wirelen, captured,
                             28 + wirelen)
            if quoted:
                udp.feed_quoted(dg)
            else:
                conv = udp.feed(dg)
                zeek.udp(dg)
                for ob in observers:
                    ob.on_udp(conv, dg)
            continue
        seg = TcpSegment(frame, ts, 6 if v6 else 4, src[0], dst[0], src[1], dst[1], seq, ack, flags, 65535,
                         bytes(h[3:3 + (n % 13)]), captured, wirelen, 40 + wirelen)
        if quoted:
            tcp.feed_quoted(seg)
            continue
        tracked = tcp.feed(seg)
        zeek.tcp(seg, header_only=short and n == 0)
        for ob in observers:
            ob.on_tcp(tracked, seg)
        nxt[key] = (seq + wirelen + (1 if flags & 0x3 else 0)) & 0xFFFFFFFF
    res = Analysis("<fuzz>")
    res.packets = frame
    res.tcp = tcp.finish()
    res.udp = udp.finish()
    res.observers = observers
    write_conn_log(zeek.finish(), io.StringIO())
    for c in res.tcp:
        for asm in c.assembler:
            check(asm.held_segments == 0, "held-back segments left after finish()")
            check(len(asm.kept) <= asm.bytes_out, "kept more bytes than were emitted")
    render_document(res.to_dict())
    render_follows(res)


def _pick(raw: int, expected: int) -> int:
    mode = raw >> 30
    if mode == 0:
        return expected
    if mode == 1:
        return (expected + (raw & 0xFFFF) - 0x8000) & 0xFFFFFFFF
    if mode == 2:
        return (expected + (raw & 0x3FFFFFFF)) & 0xFFFFFFFF
    return raw & 0xFFFFFFFF


TARGETS: dict[str, Callable[[bytes], object]] = {
    "reader": analyze_capture_bytes,
    "decode": decode_frames,
    "tracker": track_segments,
}


def libfuzzer_args(argv: list[str], target: str) -> list[str]:
    """The script's arguments plus loopcap's bounds (unless given): per-input timeout, RSS limit,
    input length, and crash files written under /tmp instead of the working directory."""
    out = list(argv)
    defaults = {"-timeout": str(TIME_LIMIT_S), "-rss_limit_mb": str(RSS_LIMIT_MB),
                "-max_len": str(MAX_INPUT_BYTES), "-artifact_prefix": f"/tmp/loopcap-fuzz-{target}-"}
    for flag, value in defaults.items():
        if not any(a.startswith(flag + "=") for a in out):
            out.append(f"{flag}={value}")
    return out


def run_atheris(target: str) -> None:
    """Main of a fuzz script: ``python tests/fuzz/fuzz_TARGET.py [libFuzzer flags] [corpus dirs]``;
    with no corpus directory, the saved corpus ``tests/fuzz/corpus/TARGET`` is used read-only
    (new inputs go to a temporary directory)."""
    import tempfile

    import atheris

    fn = TARGETS[target]

    def one_input(data: bytes) -> None:
        fn(data)

    argv = libfuzzer_args(sys.argv, target)
    if not any(not a.startswith("-") for a in argv[1:]):
        work = tempfile.mkdtemp(prefix=f"loopcap-fuzz-{target}-")
        argv += [work, str(CORPUS / target)]
    atheris.Setup(argv, one_input)
    atexit.register(_stop_timeout_alarm)
    atheris.Fuzz()


def _stop_timeout_alarm() -> None:
    """At exit, after the session: libFuzzer's per-input timeout is a periodic SIGALRM, and once the
    interpreter's shutdown has put the signal back to its default, a tick that comes while shutting
    down (slowly, on a busy machine) kills the finished session with "Alarm clock" (exit 142)."""
    import signal

    if hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_IGN)


# ---------------------------------------------------------------------------------------------
# seeds (the starting corpus; `python tests/fuzz/fuzzlib.py seed` writes them into corpus/)


def encode_frames(linktype: int, frames: list[bytes]) -> bytes:
    """The inverse of :func:`frames_from` (for seeds)."""
    out = bytearray((LINKTYPES.index(linktype),))
    for f in frames:
        out += struct.pack(">HB", len(f), 0) + f
    return bytes(out)


def encode_segment(d: int, conn: int, flags: int, payload: bytes = b"", *, seq_mode: int = 0, ack_mode: int = 0,
                   udp: bool = False, v6: bool = False) -> bytes:
    """One synthetic segment for :func:`track_segments` (for seeds)."""
    b0 = d | (conn << 1) | (8 if v6 else 0) | (16 if udp else 0)
    return (bytes((b0, flags >> 8, flags & 0xFF)) + (seq_mode << 30).to_bytes(4, "big")
            + (ack_mode << 30).to_bytes(4, "big") + bytes((len(payload),)) + payload)


def seed_inputs(target: str) -> dict[str, bytes]:
    """Small valid inputs that reach deep into each target."""
    import pcapbuild as pb

    c4, s4, c6, s6 = "10.0.0.1", "10.0.0.2", "fd00::1", "fd00::2"
    flow = pb.TcpFlow(cisn=0xFFFFFFF0)
    opts = pb.opt_mss(1460) + pb.NOP + pb.opt_wscale(7) + pb.opt_sack_permitted() + pb.opt_timestamps(1, 0)
    tcp4 = [flow.c("S", options=opts), flow.s("SA", options=opts), flow.c("A"),
            flow.c("PA", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            flow.s("PA", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            flow.c("FA"), flow.s("FA"), flow.c("A")]
    flow6 = pb.TcpFlow(c6, 5555, s6, 80)
    tcp6 = [*flow6.handshake(), flow6.c("PA", b"x" * 20), flow6.s("R")]
    udp = [pb.udp_packet(c4, 5000, s4, 53, b"\x12\x34query"), pb.udp_packet(s6, 53, c6, 5000, b"answer")]
    frags4 = pb.ipv4_fragments(c4, s4, 17, pb.udp_datagram(1, 2, b"F" * 100), ident=7, chunk=32)
    frags6 = pb.ipv6_fragments(c6, s6, 17, pb.udp_datagram(1, 2, b"G" * 90), ident=8, chunk=32,
                               unfragmentable=[(pb.EXT_HOP_BY_HOP, b"")])
    nxt, chain = pb.ipv6_chain([(pb.EXT_DEST_OPTS, b""), (pb.EXT_ROUTING, pb.routing_body([]))], 6,
                               pb.tcp_segment(1, 2, 3, flags="S"))
    ext6 = pb.ipv6_packet(c6, s6, nxt, chain)
    icmp = pb.ipv4_packet(s4, c4, 1, pb.icmp_error(3, 3, udp[0][:28]))
    icmp6 = pb.ipv6_packet(s6, c6, 58, pb.icmp_error(1, 4, udp[1][:48], v6=True))
    ip_packets = [*tcp4, *tcp6, *udp, *frags4, *frags6, ext6, icmp, icmp6]
    if target == "reader":
        seeds: dict[str, bytes] = {}
        seeds["pcap-ethernet"] = pb.pcap_file([pb.Frame(pb.START_NS + i, pb.ethernet(p))
                                               for i, p in enumerate(ip_packets)])
        seeds["pcap-be-nsec-sll2"] = pb.pcap_file([pb.Frame(pb.START_NS + i, pb.sll2_frame(p))
                                                   for i, p in enumerate(tcp4)], pb.LINKTYPE_SLL2, endian=">",
                                                  nanosecond=True)
        seeds["pcap-null-snapped"] = pb.pcap_file([pb.Frame(pb.START_NS, pb.null_frame(tcp4[3], 2)[:50],
                                                            len(tcp4[3]) + 4)], pb.LINKTYPE_NULL, snaplen=50)
        ng = pb.shb(options=[(4, b"loopcap")]) + pb.idb(1, tsresol=9, name="lo") + pb.idb(113, tsresol=0x86)
        ng += b"".join(pb.epb(i % 2, 1_700_000_000_000_000_000 + i,
                              pb.ethernet(p) if i % 2 == 0 else pb.sll_frame(p)) for i, p in enumerate(tcp4))
        ng += pb.spb(pb.ethernet(udp[0])) + pb.pb(0, 5, pb.ethernet(udp[1])) + pb.nrb() + pb.isb(0)
        ng += pb.custom_block() + pb.shb(">") + pb.idb(101, ">") + pb.epb(0, 7, frags4[0], ">")
        seeds["pcapng-mixed"] = ng
        return seeds
    if target == "decode":
        variants: dict[str, tuple[int, Callable[[bytes], bytes]]] = {
                    "ethernet": (1, lambda p: pb.ethernet(p)),
                    "qinq": (1, lambda p: pb.ethernet(p, vlans=[(0x88A8, 10), (0x8100, 20)])),
                    "null": (0, lambda p: pb.null_frame(p, 24 if p[0] >> 4 == 6 else 2)),
                    "loop": (108, lambda p: pb.loop_frame(p, 24 if p[0] >> 4 == 6 else 2)),
                    "raw": (101, lambda p: p), "sll": (113, lambda p: pb.sll_frame(p)),
                    "sll2": (276, lambda p: pb.sll2_frame(p))}
        return {name: encode_frames(lt, [wrap(p) for p in ip_packets]) for name, (lt, wrap) in variants.items()}
    # tracker
    syn, synack, ack, psh, fin, rst = 0x002, 0x012, 0x010, 0x018, 0x011, 0x004
    hs = [encode_segment(0, 0, syn), encode_segment(1, 0, synack), encode_segment(0, 0, ack)]
    http = [encode_segment(0, 0, psh, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            encode_segment(1, 0, psh, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")]
    close = [encode_segment(0, 0, fin), encode_segment(1, 0, ack), encode_segment(1, 0, fin),
             encode_segment(0, 0, ack)]
    out_of_order = [encode_segment(0, 1, syn), encode_segment(1, 1, synack), encode_segment(0, 1, ack),
                    encode_segment(0, 1, psh, b"later", seq_mode=1), encode_segment(0, 1, psh, b"first"),
                    encode_segment(1, 1, rst)]
    udp_segs = [encode_segment(0, 2, 0, b"ping", udp=True), encode_segment(1, 2, 0, b"pong", udp=True, v6=True)]
    wrap = b"\xff\xff\xff\x00"
    return {"handshake-http-close": wrap + b"".join(hs + http + close),
            "out-of-order-reset": b"\x00\x00\x10\x00" + b"".join(out_of_order),
            "udp": b"\x00\x00\x00\x00" + b"".join(udp_segs)}


def write_seeds() -> None:
    for target in TARGETS:
        d = CORPUS / target
        d.mkdir(parents=True, exist_ok=True)
        for name, data in seed_inputs(target).items():
            (d / f"seed-{name}").write_bytes(data)


if __name__ == "__main__" and sys.argv[1:] == ["seed"]:
    write_seeds()
