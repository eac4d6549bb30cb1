"""Ladder (sequence) diagrams of TCP connections, like Wireshark's Flow Graph.

Two vertical lines, the client's and the server's (labelled IP:port: on loopback both IPs are the
same); one arrow per packet with its time, flags, relative seq/ack and payload length; the
handshake and teardown phases marked; RSTs and retransmissions standing out; each endpoint's TCP
state written beside its line where it changes; long data phases folded
(``... 1,204 segments, 2.0 MB ...``) so that the handshake and the teardown stay readable.

Two parts, as everywhere in loopcap:

* :class:`PacketLog` is an analysis :class:`~analyzers.analysis.Observer`: it sees every segment of
  the chosen connections and keeps a *bounded* log of them (every control packet up to a limit,
  the first and last N other packets, and counters for the ones folded in between), then
  contributes it to the ``loopcap/1`` document as ``doc["tcp"][i]["ladder"]``.
* :func:`render_text` and :func:`render_svg` draw one connection from its summary dict only (the
  ``ladder`` rows when present, else the handshake and teardown packets of the summary), so the
  pictures and the JSON can never disagree.

A *retransmission* here is a segment whose sequence range (or SYN / FIN) was already seen in that
direction; an *out-of-order* segment fills a hole below the highest sequence number seen.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from analyzers import svg
from analyzers.decode import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, TcpSegment, UdpDatagram, flags_str
from analyzers.reassembly import HALF, M32
from analyzers.services import port_label
from analyzers.summary import preview_text

if TYPE_CHECKING:
    from analyzers.analysis import Analysis
    from analyzers.tcp import TcpConnection
    from analyzers.udp import UdpConversation

Style = Callable[..., str]

#: other (non-control) packets kept at the start and at the end of each connection by default
DEFAULT_HEAD = 12
DEFAULT_TAIL = 8
#: control packets (SYN, FIN, RST, the handshake ACK, ACKs of FINs, retransmissions) kept per connection
DEFAULT_MAX_CONTROL = 256
#: connections logged at most (memory stays bounded on captures with very many connections)
DEFAULT_MAX_STREAMS = 5000
PREVIEW = 24
MAX_INTERVALS = 512

_INFO_ORDER = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS")


def info_flags(flags: str) -> str:
    """``ACK,SYN`` (the JSON's order) -> ``SYN,ACK`` (Wireshark's Info column order)."""
    names = flags.split(",") if flags else []
    return ",".join(n for n in _INFO_ORDER if n in names) or "none"


def human_bytes(n: int) -> str:
    """``512 B``, ``1.5 kB``, ``2.0 MB`` (SI units, as Wireshark's statistics)."""
    if n < 1000:
        return f"{n} B"
    for unit, scale in (("kB", 1e3), ("MB", 1e6), ("GB", 1e9)):
        if n < scale * 1000 or unit == "GB":
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"  # pragma: no cover


# ==================================================================================== the log
class _Entry:
    __slots__ = ("ack", "d", "flags", "frame", "len", "pinned", "preview", "seq", "tags", "ts_ns", "window")

    def __init__(self, seg: TcpSegment, d: int, tags: list[str]) -> None:
        self.frame = seg.frame
        self.ts_ns = seg.ts_ns
        self.d = d
        self.flags = seg.flags
        self.seq = seg.seq
        self.ack = seg.ack
        self.len = seg.paylen
        self.window = seg.window
        self.preview = seg.payload[:PREVIEW] if seg.paylen else b""
        self.tags = tags
        self.pinned = False


class _Fold:
    """Packets left out between two logged ones: counted, not kept."""

    __slots__ = ("acks", "bytes", "first_frame", "first_ts", "last_frame", "last_ts", "packets", "retrans",
                 "segments")

    def __init__(self, e: _Entry) -> None:
        self.packets = 0
        self.segments = [0, 0]
        self.bytes = [0, 0]
        self.acks = 0
        self.retrans = 0
        self.first_frame = e.frame
        self.first_ts = e.ts_ns
        self.last_frame = e.frame
        self.last_ts = e.ts_ns

    def add(self, e: _Entry) -> None:
        self.packets += 1
        if e.len:
            self.segments[e.d] += 1
            self.bytes[e.d] += e.len
        else:
            self.acks += 1
        if e.tags:
            self.retrans += 1
        self.last_frame = e.frame
        self.last_ts = e.ts_ns


class _Direction:
    """Sequence ranges seen in one direction, to tell retransmissions and out-of-order segments."""

    __slots__ = ("fin_seqs", "max_end", "ranges", "ref", "syn_seqs")

    def __init__(self) -> None:
        self.ref: int | None = None
        self.ranges: list[list[int]] = []
        self.max_end: int | None = None
        self.syn_seqs: set[int] = set()
        self.fin_seqs: set[int] = set()

    def classify(self, seg: TcpSegment) -> list[str]:
        flags = seg.flags
        syn = bool(flags & TCP_SYN)
        tags: list[str] = []
        if syn:
            if seg.seq in self.syn_seqs:
                tags.append("retransmission")
            elif len(self.syn_seqs) < 16:
                self.syn_seqs.add(seg.seq)
        if self.ref is None:
            self.ref = (seg.seq + 1) & M32 if syn else seg.seq
        off = (seg.seq + (1 if syn else 0) - self.ref) & M32
        if off >= HALF:
            off -= 1 << 32
        n = seg.paylen
        if n and not tags:
            covered = self._covered(off, off + n)
            if covered:
                tags.append("retransmission")
            elif self.max_end is not None and off < self.max_end:
                tags.append("out-of-order")
            self._add(off, off + n)
        if flags & TCP_FIN:
            fs = (seg.seq + n + (1 if syn else 0)) & M32
            if fs in self.fin_seqs and not n and not tags:
                tags.append("retransmission")
            elif len(self.fin_seqs) < 16:
                self.fin_seqs.add(fs)
        return tags

    def _covered(self, s: int, e: int) -> int:
        """Bytes of [s, e) already seen."""
        total = 0
        for a, b in reversed(self.ranges):
            if b <= s:
                break
            lo, hi = max(a, s), min(b, e)
            if hi > lo:
                total += hi - lo
        return total

    def _add(self, s: int, e: int) -> None:
        if self.max_end is None or e > self.max_end:
            self.max_end = e
        rs = self.ranges
        if not rs or s > rs[-1][1]:
            rs.append([s, e])
        elif s >= rs[-1][0]:
            rs[-1][1] = max(rs[-1][1], e)
        else:
            rs.append([s, e])
            rs.sort()
            merged: list[list[int]] = []
            for a, b in rs:
                if merged and a <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], b)
                else:
                    merged.append([a, b])
            self.ranges = rs = merged
        while len(rs) > MAX_INTERVALS:  # bound memory: forget the oldest hole
            rs[0:2] = [[rs[0][0], rs[1][1]]]


class _StreamLog:
    def __init__(self, head: int, tail: int, max_control: int) -> None:
        self.head_left = head
        self.tail_n = tail
        self.control_left = max_control
        self.kept: list[_Entry | _Fold] = []
        self.tail: deque[_Entry] = deque()
        self.tail_unpinned = 0
        self.total = 0
        self.dirs = (_Direction(), _Direction())

    def add(self, e: _Entry, pinned: bool) -> None:
        self.total += 1
        if pinned:
            if self.control_left > 0:
                self.control_left -= 1
            else:
                pinned = False
        e.pinned = pinned
        if not self.tail and (pinned or self.head_left > 0):
            if not pinned:
                self.head_left -= 1
            self.kept.append(e)
            return
        self.tail.append(e)
        if pinned:
            return
        self.tail_unpinned += 1
        while self.tail_unpinned > self.tail_n:
            old = self.tail.popleft()
            if old.pinned:
                self.kept.append(old)
                continue
            self.tail_unpinned -= 1
            last = self.kept[-1] if self.kept else None
            if not isinstance(last, _Fold):
                last = _Fold(old)
                self.kept.append(last)
            last.add(old)

    def rows(self) -> list[_Entry | _Fold]:
        return [*self.kept, *self.tail]


class PacketLog:
    """An analysis observer keeping a bounded per-packet log of the chosen TCP connections.

    ``streams``: the ``tcp.stream`` numbers to log (an iterable or a predicate); None logs every
    connection (up to ``max_streams``).  Per connection it keeps every control packet (SYN, FIN,
    RST, the handshake's ACK, the ACKs of FINs, retransmissions; up to ``max_control``), the first
    ``head`` and the last ``tail`` other packets, and folds the rest into counters.  ``head`` or
    ``tail`` None keeps everything (unbounded: for small captures only).

    Use it through :class:`~analyzers.analysis.AnalysisOptions` ``observers=[PacketLog(...)]``; the
    finished document then has ``doc["tcp"][i]["ladder"]`` for each logged connection.
    """

    def __init__(self, streams: Iterable[int] | Callable[[int], bool] | None = None, *,
                 head: int | None = DEFAULT_HEAD, tail: int | None = DEFAULT_TAIL,
                 max_control: int = DEFAULT_MAX_CONTROL, max_streams: int = DEFAULT_MAX_STREAMS) -> None:
        if streams is None or callable(streams):
            self._want: Callable[[int], bool] | None = streams
        else:
            chosen = frozenset(streams)
            self._want = chosen.__contains__
        big = 1 << 62
        self.head = big if head is None else max(head, 0)
        self.tail = big if tail is None else max(tail, 0)
        self.max_control = max_control
        self.max_streams = max_streams
        self.logs: dict[int, _StreamLog] = {}
        self.streams_not_logged = 0
        self._refused: set[int] = set()

    # -- Observer protocol ---------------------------------------------------------------------
    def on_tcp(self, conn: TcpConnection, seg: TcpSegment) -> None:
        stream = conn.stream
        log = self.logs.get(stream)
        if log is None:
            if stream in self._refused or (self._want is not None and not self._want(stream)):
                return
            if len(self.logs) >= self.max_streams:
                self._refused.add(stream)
                self.streams_not_logged += 1
                return
            log = self.logs[stream] = _StreamLog(self.head, self.tail, self.max_control)
        d = conn.direction_of(seg)
        tags = log.dirs[d].classify(seg)
        flags = seg.flags
        frame = seg.frame
        pinned = bool(flags & (TCP_SYN | TCP_FIN | TCP_RST)) or bool(tags)
        if not pinned:
            hs = conn.hs_ack
            f0, f1 = conn.fin_acker
            pinned = ((hs is not None and hs.frame == frame) or (f0 is not None and f0.frame == frame)
                      or (f1 is not None and f1.frame == frame))
        log.add(_Entry(seg, d, tags), pinned)

    def on_udp(self, conv: UdpConversation, dg: UdpDatagram) -> None:
        return None

    def on_other(self, frame: int, ts_ns: int, result: object) -> None:
        return None

    def contribute(self, analysis: Analysis, doc: dict[str, Any]) -> None:
        conns = {c.stream: c for c in analysis.tcp}
        for item in doc.get("tcp", []):
            log = self.logs.get(item["stream"])
            conn = conns.get(item["stream"])
            if log is not None and conn is not None:
                item["ladder"] = _ladder_dict(log, conn, item)

    def limits(self) -> dict[str, int | None]:
        big = 1 << 62
        return {"head": None if self.head == big else self.head, "tail": None if self.tail == big else self.tail,
                "max_control": self.max_control}


def _phases(c: dict[str, Any]) -> tuple[set[int], int | None]:
    hs = c["handshake"]
    frames = {p["frame"] for p in (hs["syn"], hs["syn_ack"], hs["ack"]) if p is not None}
    frames.update(hs.get("syn_retransmissions") or [])
    if hs.get("refused_frame"):
        frames.add(hs["refused_frame"])
    tds = [p["frame"] for p in c["teardown"]["packets"] if p["frame"] not in frames]
    return frames, (min(tds) if tds else None)


def _phase(frame: int, hs_frames: set[int], td_start: int | None, flags: int) -> str:
    if frame in hs_frames:
        return "handshake"
    if td_start is not None and frame >= td_start:
        return "teardown"
    if flags & TCP_SYN:
        return "handshake"
    return "data"


def _ladder_dict(log: _StreamLog, conn: TcpConnection, c: dict[str, Any]) -> dict[str, Any]:
    cd = conn.client_dir if conn.client_dir is not None else 0
    base = conn.base
    hs_frames, td_start = _phases(c)

    def side(d: int) -> str:
        return "client" if d == cd else "server"

    rows: list[dict[str, Any]] = []
    shown = 0
    for r in log.rows():
        if isinstance(r, _Fold):
            rows.append({
                "type": "fold", "packets": r.packets,
                "segments": {side(0): r.segments[0], side(1): r.segments[1]},
                "bytes": {side(0): r.bytes[0], side(1): r.bytes[1]},
                "acks": r.acks, "retransmissions": r.retrans,
                "frames": {"first": r.first_frame, "last": r.last_frame},
                "time": {"first": r.first_ts / 1e9, "last": r.last_ts / 1e9}})
            continue
        shown += 1
        b, ob = base[r.d], base[1 - r.d]
        rows.append({
            "type": "packet", "frame": r.frame, "time": r.ts_ns / 1e9, "from": side(r.d),
            "flags": flags_str(r.flags), "seq": r.seq, "ack": r.ack,
            "relative_seq": None if b is None else (r.seq - b) & M32,
            "relative_ack": (r.ack - ob) & M32 if r.flags & TCP_ACK and ob is not None else None,
            "len": r.len, "window": r.window, "phase": _phase(r.frame, hs_frames, td_start, r.flags),
            "analysis": list(r.tags), "preview": preview_text(r.preview, PREVIEW) if r.len else ""})
        if r.len > len(r.preview) and rows[-1]["preview"] and not rows[-1]["preview"].endswith("..."):
            rows[-1]["preview"] += "..."
    return {"packets": log.total, "shown": shown, "folded": log.total - shown, "rows": rows}


# ================================================================= rows for the renderers
def ladder_rows(c: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows to draw: the logged ``ladder`` rows, or (without a packet log) the handshake and
    teardown packets of the summary with one fold for the data phase in between."""
    if c.get("ladder"):
        return list(c["ladder"]["rows"])
    hs_frames, td_start = _phases(c)
    pk: dict[int, dict[str, Any]] = {}
    hs = c["handshake"]
    for p in (hs["syn"], hs["syn_ack"], hs["ack"]):
        if p is not None:
            pk[p["frame"]] = p
    for p in c["teardown"]["packets"]:
        pk.setdefault(p["frame"], p)
    rows: list[dict[str, Any]] = []
    last_hs = max((f for f in pk if f in hs_frames), default=None)
    data_segments = c["payload"]["client"]["segments"] + c["payload"]["server"]["segments"]
    folded_done = False
    for frame in sorted(pk):
        p = pk[frame]
        if not folded_done and last_hs is not None and frame > last_hs and data_segments:
            rows.append(_summary_fold(c))
            folded_done = True
        flags = p["flags"].split(",")
        rows.append({"type": "packet", "frame": frame, "time": p.get("time"), "from": p["from"],
                     "flags": p["flags"], "seq": p["seq"], "ack": p["ack"],
                     "relative_seq": p.get("relative_seq"), "relative_ack": p.get("relative_ack"),
                     "len": p.get("len", 0), "window": None,
                     "phase": "handshake" if frame in hs_frames else (
                         "teardown" if td_start is not None and frame >= td_start else
                         ("handshake" if "SYN" in flags else "data")),
                     "analysis": [], "preview": ""})
    if not folded_done and data_segments:
        rows.append(_summary_fold(c))
    return rows


def _summary_fold(c: dict[str, Any]) -> dict[str, Any]:
    pc, ps = c["payload"]["client"], c["payload"]["server"]
    return {"type": "fold", "packets": None, "segments": {"client": pc["segments"], "server": ps["segments"]},
            "bytes": {"client": pc["wire_bytes"], "server": ps["wire_bytes"]}, "acks": None,
            "retransmissions": 0, "frames": None, "time": None}


def fold_text(f: dict[str, Any]) -> str:
    """``... 1,204 segments, 2.0 MB, 602 ACKs (frames 7-1812) ...``"""
    segs = f["segments"]["client"] + f["segments"]["server"]
    size = f["bytes"]["client"] + f["bytes"]["server"]
    parts = [f"{segs:,} segment{'' if segs == 1 else 's'}", human_bytes(size)] if segs or not f.get("acks") else []
    if f.get("acks"):
        parts.append(f"{f['acks']:,} ACK{'' if f['acks'] == 1 else 's'}")
    if f.get("retransmissions"):
        parts.append(f"{f['retransmissions']:,} retransmitted")
    s = ", ".join(parts)
    fr = f.get("frames")
    if fr:
        s += f" (frame {fr['first']})" if fr["first"] == fr["last"] else f" (frames {fr['first']}-{fr['last']})"
    elif f.get("packets") is None:
        s += " (data phase, packets not logged)"
    return f"... {s} ..."


def fold_detail(f: dict[str, Any]) -> str:
    out = [f"client > server: {f['segments']['client']:,} segments, {human_bytes(f['bytes']['client'])}",
           f"server > client: {f['segments']['server']:,} segments, {human_bytes(f['bytes']['server'])}"]
    if f.get("time"):
        out.append(f"over {f['time']['last'] - f['time']['first']:.6f} s")
    return "; ".join(out)


def arrow_label(p: dict[str, Any]) -> str:
    """``SYN,ACK seq=0 ack=1`` / ``PSH,ACK seq=1 ack=1 len=8`` (relative numbers where known)."""
    s = info_flags(p["flags"])
    s += f" seq={p['relative_seq'] if p.get('relative_seq') is not None else p['seq']}"
    if "ACK" in p["flags"].split(","):
        s += f" ack={p['relative_ack'] if p.get('relative_ack') is not None else p['ack']}"
    if p.get("len"):
        s += f" len={p['len']}"
    return s


def state_changes(c: dict[str, Any]) -> dict[int, dict[str, str]]:
    """frame -> {side: state after the frame} (unexpected transitions as ``?event``)."""
    out: dict[int, dict[str, str]] = {}
    for ch in c["states"]["timeline"]:
        out.setdefault(ch["frame"], {})[ch["side"]] = ch["to"] if ch["expected"] else f"?{ch['event']}"
    return out


def initial_states(c: dict[str, Any]) -> tuple[str, str]:
    init = c["states"]["initial"]
    if init.startswith("ESTABLISHED"):
        return "ESTABLISHED", "ESTABLISHED"
    if "server CLOSED" in init:
        return "CLOSED", "CLOSED"
    return "CLOSED", "LISTEN"


def packet_notes(c: dict[str, Any], p: dict[str, Any]) -> list[str]:
    """Why a packet matters: RST, refused, retransmission, ACK of a FIN."""
    notes: list[str] = []
    flags = p["flags"].split(",")
    hs = c["handshake"]
    if "RST" in flags:
        notes.append("connection refused" if hs.get("refused_frame") == p["frame"] else "RESET")
    for tag in p.get("analysis") or []:
        notes.append(tag)
    for s in ("client", "server"):
        f = c["teardown"]["fin"].get(s)
        if f and f.get("acked_by_frame") == p["frame"] and p["from"] != s:
            notes.append(f"ACK of the {s}'s FIN")
    return notes


def short_preview(preview: str, limit: int = 24) -> str:
    """A quoted payload preview for a diagram, or ``(binary)`` when it is mostly escapes."""
    if not preview:
        return ""
    if preview.count("\\x") * 4 > len(preview) // 3:
        return "(binary)"
    if len(preview) > limit:
        preview = preview[:limit].rstrip("\\") + "..."
    return f'"{preview}"'


def endpoint_label(e: dict[str, Any]) -> str:
    ip = f"[{e['ip']}]" if ":" in e["ip"] else e["ip"]
    return f"{ip}:{e['port']}"


# ========================================================================== text rendering
def _plain(text: str, **_: Any) -> str:
    return text


def render_text(c: dict[str, Any], style: Style = _plain, *, min_width: int = 44) -> str:
    """The ladder of one connection as ASCII text (``style`` = ``click.style`` for colour)."""
    rows = ladder_rows(c)
    states = state_changes(c)
    t0 = c["time"]["first"]
    labels = [arrow_label(r) for r in rows if r["type"] == "packet"]
    w = max([min_width, *(len(x) + 10 for x in labels)])
    sw = 12  # state column: len("SYN_RECEIVED")
    lead = 6 + 1 + 10 + 1  # "#12345" time
    cl, sv = c["client"], c["server"]
    out: list[str] = []
    head = f"TCP connection {c['stream']} (tcp.stream eq {c['stream']}): ladder"
    lg = c.get("ladder")
    if lg:
        head += f", {lg['packets']:,} packets" + (f" ({lg['folded']:,} folded)" if lg["folded"] else "")
    out.append(style(head, bold=True))
    pad = " " * (lead + sw + 1)
    cl_lab, sv_lab = f"client {endpoint_label(cl)}", f"server {endpoint_label(sv)}"
    out.append(f"{pad}{cl_lab:<{w + 2}}{sv_lab}")
    ci, si = initial_states(c)
    out.append(f"{'frame':<6} {'time (s)':>10} {ci:>{sw}} |{' ' * w}| {si}")
    phase = None
    for r in rows:
        if r["type"] == "fold":
            txt = fold_text(r)
            inner = f" {txt} "
            line = f"{'':<{lead}}{'':>{sw}} :{inner:^{w}}:"
            if len(inner) > w:
                line = f"{'':<{lead}}{'':>{sw}} :{inner}"
            out.append(style(line.rstrip(), dim=True))
            continue
        if r["phase"] != phase:
            phase = r["phase"]
            banner = f"-- {phase} "
            out.append(style(f"{'':<{lead}}{banner:-<{sw + w + 3}}", fg=_PHASE_FG.get(phase), bold=True))
        label = f" {arrow_label(r)} "
        flags = r["flags"].split(",")
        rst = "RST" in flags
        rtx = "retransmission" in (r.get("analysis") or [])
        body = "=" if rst else ("~" if rtx else "-")
        fill = w - 1 - len(label)
        left = max(fill // 2, 2)
        right = max(fill - left, 2)
        if r["from"] == "client":
            arrow = f"{body * left}{label}{body * (right - 0)}>"
        else:
            arrow = f"<{body * left}{label}{body * right}"
        arrow = arrow[:w] if len(arrow) > w else arrow.ljust(w, body)
        ch = states.get(r["frame"], {})
        cs, ss = ch.get("client", ""), ch.get("server", "")
        tm = f"{r['time'] - t0:.6f}" if r.get("time") is not None else ""
        notes = packet_notes(c, r)
        pv = short_preview(r.get("preview") or "")
        extra = "   ".join(x for x in ([pv] if pv else []) + notes)
        fg = "red" if rst else ("yellow" if rtx else None)
        arrow_s = style(arrow, fg=fg, bold=rst) if fg else arrow
        cs_cell = " " * (sw - len(cs)) + (style(cs, fg="cyan") if cs else "")
        ss_cell = (style(ss, fg="cyan") if ss else "") + " " * (sw - len(ss))
        line = f"#{r['frame']:<5} {tm:>10} {cs_cell} |{arrow_s}| {ss_cell}"
        if extra:
            line += "  " + (style(extra, fg=fg) if fg and notes else extra)
        out.append(line.rstrip())
    final = c["states"]["final"]
    out.append(f"{'':<{lead}}{final['client']:>{sw}} |{' ' * w}| {final['server']}")
    return "\n".join(out) + "\n"


_PHASE_FG = {"handshake": "green", "data": "blue", "teardown": "magenta"}


# =========================================================================== SVG rendering
_COL = {"normal": "#1f2937", "rst": "#dc2626", "rtx": "#d97706", "state": "#1d4ed8", "muted": "#6b7280",
        "handshake": "#ecfdf5", "data": "#f8fafc", "teardown": "#fff7ed", "line": "#374151"}
_PHASE_EDGE = {"handshake": "#10b981", "data": "#94a3b8", "teardown": "#f97316"}
ROW_H = 46
FOLD_H = 34


def render_svg(c: dict[str, Any], *, id_prefix: str | None = None) -> str:
    """The ladder of one connection as a standalone SVG document (inline-able in HTML)."""
    rows = ladder_rows(c)
    states = state_changes(c)
    t0 = c["time"]["first"]
    pfx = id_prefix or f"lc{c['stream']}"
    fs = 12.0
    labels = [arrow_label(r) for r in rows if r["type"] == "packet"]
    span = max([380.0, *(svg.text_width(x, fs) + 60 for x in labels)])
    x_frame, x_time = 10.0, 62.0
    cx = 250.0
    sx = cx + span
    width = sx + 160.0
    top = 128.0
    parts: list[str] = []
    markers = "".join(
        svg.el("marker", svg.el("path", d="M0,0 L10,5 L0,10 z", fill=colour), id=f"{pfx}-{name}",
               viewBox="0 0 10 10", refX=10, refY=5, markerWidth=8, markerHeight=8, orient="auto-start-reverse")
        for name, colour in (("n", _COL["normal"]), ("r", _COL["rst"]), ("t", _COL["rtx"])))
    parts.append(svg.el("defs", markers))
    # layout: y of every row
    ys: list[float] = []
    y = top
    for r in rows:
        ys.append(y)
        y += FOLD_H if r["type"] == "fold" else ROW_H
    bottom = y + 10
    height = bottom + 40
    parts.append(svg.el("rect", x=0, y=0, width=width, height=height, fill="#ffffff"))
    # phase bands
    i = 0
    while i < len(rows):
        r = rows[i]
        if r["type"] != "packet" or r["phase"] == "data":
            i += 1
            continue
        ph = r["phase"]
        j = i
        while j + 1 < len(rows) and rows[j + 1]["type"] == "packet" and rows[j + 1]["phase"] == ph:
            j += 1
        y0 = ys[i] - 20
        y1 = ys[j] + 32
        parts.append(svg.group([
            svg.el("rect", x=4, y=y0, width=width - 8, height=y1 - y0, rx=6, fill=_COL[ph],
                   stroke=_PHASE_EDGE[ph], stroke_width=1, stroke_opacity=0.5),
            svg.text(10, y0 + 12, ph, font_family=svg.SANS, font_size=11,
                     fill=_PHASE_EDGE[ph], font_weight="bold")],
            class_="lc-phase", data_phase=ph))
        i = j + 1
    # title and endpoints
    parts.append(svg.text(10, 22, f"TCP connection {c['stream']} (tcp.stream eq {c['stream']})",
                          font_family=svg.SANS, font_size=15, font_weight="bold", fill=_COL["normal"],
                          class_="lc-title"))
    ci, si = initial_states(c)
    for role, x, e, st in (("client", cx, c["client"], ci), ("server", sx, c["server"], si)):
        lab = endpoint_label(e)
        wbox = max(svg.text_width(lab, 12), 70) + 20
        parts.append(svg.group([
            svg.el("rect", x=x - wbox / 2, y=34, width=wbox, height=38, rx=5, fill="#f3f4f6",
                   stroke=_COL["line"], stroke_width=1),
            svg.text(x, 50, role, font_family=svg.SANS, font_size=12, font_weight="bold",
                     text_anchor="middle", fill=_COL["normal"]),
            svg.text(x, 65, lab, font_family=svg.MONO, font_size=12, text_anchor="middle", fill=_COL["normal"],
                     class_="lc-endpoint-label"),
            svg.title(f"{role} {e['ip']} port {port_label(e['port'])}")],
            class_="lc-endpoint", data_role=role))
        parts.append(_state_label(x, 88, st, role, None))
        parts.append(svg.el("line", x1=x, y1=72, x2=x, y2=bottom, stroke=_COL["line"], stroke_width=2))
    parts.append(svg.text(x_frame, 88, "frame", font_family=svg.SANS, font_size=10, fill=_COL["muted"]))
    parts.append(svg.text(x_time, 88, "time (s)", font_family=svg.SANS, font_size=10, fill=_COL["muted"]))
    # rows
    for r, y in zip(rows, ys, strict=True):
        if r["type"] == "fold":
            parts.append(_fold_svg(r, cx, sx, y, width))
            continue
        parts.append(_packet_svg(c, r, cx, sx, y, t0, pfx, x_frame, x_time))
        for role, x in (("client", cx), ("server", sx)):
            changed = states.get(r["frame"], {}).get(role)
            if changed:
                parts.append(_state_label(x, y + 8, changed, role, r["frame"]))
    final = c["states"]["final"]
    parts.append(svg.text(10, bottom + 26, f"final states: client {final['client']}, server {final['server']}"
                          f"; teardown: {c['teardown']['kind']}", font_family=svg.SANS, font_size=11,
                          fill=_COL["muted"], class_="lc-final"))
    label = (f"Ladder diagram of TCP connection {c['stream']}: client {endpoint_label(c['client'])}, "
             f"server {endpoint_label(c['server'])}")
    return svg.document(width, height, parts, label=label)


def _state_label(x: float, y: float, st: str, role: str, frame: int | None) -> str:
    unexpected = st.startswith("?")
    shown = f"unexpected {st[1:]}" if unexpected else st
    w = svg.text_width(shown, 10.5) + 10
    bx = x - 8 - w if role == "client" else x + 8
    fill = "#fef2f2" if unexpected else "#eff6ff"
    col = _COL["rst"] if unexpected else _COL["state"]
    return svg.group([
        svg.el("rect", x=bx, y=y - 11, width=w, height=16, rx=8, fill=fill, stroke=col, stroke_width=0.8),
        svg.text(bx + w / 2, y + 1, shown, font_family=svg.MONO, font_size=10.5, text_anchor="middle", fill=col)],
        class_="lc-state", data_side=role, data_frame=frame, data_state=shown)


def _packet_svg(c: dict[str, Any], r: dict[str, Any], cx: float, sx: float, y: float, t0: float, pfx: str,
                x_frame: float, x_time: float) -> str:
    flags = r["flags"].split(",")
    rst = "RST" in flags
    rtx = "retransmission" in (r.get("analysis") or [])
    kind = "r" if rst else ("t" if rtx else "n")
    colour = _COL["rst"] if rst else (_COL["rtx"] if rtx else _COL["normal"])
    x1, x2 = (cx, sx) if r["from"] == "client" else (sx, cx)
    label = arrow_label(r)
    notes = packet_notes(c, r)
    tm = f"{r['time'] - t0:.6f}" if r.get("time") is not None else ""
    classes = ["lc-packet", f"lc-{r['phase']}"]
    if rst:
        classes.append("lc-rst")
    if rtx:
        classes.append("lc-retransmission")
    tip = [f"frame {r['frame']}: {r['from']} > {'server' if r['from'] == 'client' else 'client'} "
           f"{info_flags(r['flags'])}", f"seq={r['seq']} (relative {r.get('relative_seq')})"]
    if "ACK" in flags:
        tip.append(f"ack={r['ack']} (relative {r.get('relative_ack')})")
    tip.append(f"len={r.get('len', 0)}" + (f" win={r['window']}" if r.get("window") is not None else ""))
    if r.get("preview"):
        tip.append(f"payload: {r['preview']}")
    tip += notes
    mid = (cx + sx) / 2
    kids = [svg.title("\n".join(tip)),
            svg.text(x_frame, y + 8, f"#{r['frame']}", font_family=svg.MONO, font_size=11, fill=_COL["muted"]),
            svg.text(x_time, y + 8, tm, font_family=svg.MONO, font_size=11, fill=_COL["muted"]),
            svg.el("line", x1=x1, y1=y, x2=x2 + (-2 if x2 > x1 else 2), y2=y + 12, stroke=colour,
                   stroke_width=2.4 if rst else 1.6, stroke_dasharray="6 3" if rtx else None,
                   marker_end=f"url(#{pfx}-{kind})", class_="lc-arrow"),
            svg.text(mid, y - 3, label, font_family=svg.MONO, font_size=12, text_anchor="middle", fill=colour,
                     font_weight="bold" if rst else None, class_="lc-label")]
    below = [n for n in notes if not n.startswith("ACK of")]
    pv = short_preview(r.get("preview") or "")
    sub = "  ".join([*(f"[{n}]" for n in below), *([pv] if pv else [])])
    if sub:
        kids.append(svg.text(mid, y + 26, sub, font_family=svg.MONO, font_size=10.5, text_anchor="middle",
                             fill=colour if below else _COL["muted"], class_="lc-note"))
    return svg.group(kids, class_=" ".join(classes), data_frame=r["frame"], data_from=r["from"],
                     data_flags=info_flags(r["flags"]))


def _fold_svg(f: dict[str, Any], cx: float, sx: float, y: float, width: float) -> str:
    txt = fold_text(f)
    kids = [svg.title(fold_detail(f)),
            svg.el("rect", x=cx + 10, y=y - 12, width=sx - cx - 20, height=22, rx=4, fill="#f9fafb",
                   stroke=_COL["muted"], stroke_width=1, stroke_dasharray="4 3"),
            svg.text((cx + sx) / 2, y + 3, txt, font_family=svg.MONO, font_size=11, text_anchor="middle",
                     fill=_COL["muted"], class_="lc-fold-text")]
    for x in (cx, sx):  # break marks on both lines
        kids.append(svg.el("path", d=f"M{svg.num(x - 6)},{svg.num(y - 2)} l12,-5 M{svg.num(x - 6)},"
                           f"{svg.num(y + 5)} l12,-5", stroke=_COL["line"], stroke_width=1.5, fill="none"))
    return svg.group(kids, class_="lc-fold", data_packets=f.get("packets"))


# ============================================================================ convenience
def analyze_with_log(path: str | os.PathLike[str], streams: Iterable[int] | None = None, *,
                     head: int | None = DEFAULT_HEAD, tail: int | None = DEFAULT_TAIL,
                     server_ports: frozenset[int] = frozenset()) -> dict[str, Any]:
    """Analyze a capture with a :class:`PacketLog` and return the ``loopcap/1`` document."""
    from analyzers.analysis import AnalysisOptions, analyze_file

    log = PacketLog(streams, head=head, tail=tail)
    res = analyze_file(path, AnalysisOptions(server_ports=server_ports, observers=[log]))
    return res.to_dict()
