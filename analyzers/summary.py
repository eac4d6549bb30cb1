"""Turn tracked connections into the ``loopcap/1`` JSON contract (plain dicts).

The text walkthrough, the JSON output and the checks are all rendered from these dicts, so what a
user reads and what a CI pipeline asserts on can never disagree.

Teardown classification (the same rules as the tshark-made corpus truth):

* ``none``: no FIN and no RST;
* ``reset``: an RST arrived before the graceful close had completed (both FINs sent and acknowledged);
* ``one-sided``: one side sent a FIN, no RST;
* ``simultaneous``: the second FIN does not acknowledge the first (it was sent before seeing it);
* ``half-close``: the second closer sent new data after acknowledging the first FIN;
* ``four-way``: the first FIN is acknowledged by a separate segment before the peer's FIN;
* ``three-way``: the peer's FIN itself is the first segment acknowledging the first FIN.

An RST after a completed close keeps the FIN kind and is reported as ``rst_after_close``.
"""

from __future__ import annotations

import codecs
from operator import attrgetter, itemgetter
from typing import Any, Final

from analyzers.decode import TCP_ACK, TCP_RST, TCP_SYN, flags_str, format_ip
from analyzers.reassembly import M32
from analyzers.services import port_info
from analyzers.states import Event, State, replay_to_dicts
from analyzers.tcp import Pkt, TcpConnection, _ge
from analyzers.udp import UdpConversation

# Speed: a capture has as many summaries as connections (thousands), so the code below avoids per-call
# closures, repeated formatting and per-byte Python loops.  Every result is built fresh (callers may
# mutate the documents), and its key order and values equal those of the straightforward version
# (tests/test_summary_speed_equivalence.py and the golden tests hold it to that).

SIDE: Final = ("client", "server")
KIND_NAMES: Final = {"3way": "three-way", "4way": "four-way", "simultaneous": "simultaneous",
                     "half_close": "half-close", "rst": "reset", "fin_one_side": "one-sided", "none": "none"}
#: the role of each direction, indexed by the client's direction: ``_ROLES[cd][d]``
_ROLES: Final = (("client", "server"), ("server", "client"))
_by_frame = attrgetter("frame")
_by_frame_first = itemgetter(0)
# Enum members as constants: reading one from its class costs ~0.1 µs (EnumType has a __getattr__),
# and a timeline reads a dozen per connection
_SEND_SYN: Final = Event.SEND_SYN
_RECV_SYN: Final = Event.RECV_SYN
_SEND_SYNACK: Final = Event.SEND_SYNACK
_RECV_SYNACK: Final = Event.RECV_SYNACK
_RECV_ACK_OF_SYN: Final = Event.RECV_ACK_OF_SYN
_SEND_FIN: Final = Event.SEND_FIN
_RECV_FIN: Final = Event.RECV_FIN
_RECV_ACK_OF_FIN: Final = Event.RECV_ACK_OF_FIN
_SEND_RST: Final = Event.SEND_RST
_RECV_RST: Final = Event.RECV_RST
_CLOSED: Final = State.CLOSED
_LISTEN: Final = State.LISTEN
_ESTABLISHED: Final = State.ESTABLISHED
_SYN_SENT: Final = State.SYN_SENT
_SYN_RECEIVED: Final = State.SYN_RECEIVED
_STATE_NAMES: Final = {st: st.value for st in State}  # .value is a property call too


class _FlagText(dict[int, str]):
    """``flags_str`` memoized: flags are 9 bits, so at most 512 entries, each formatted once."""

    def __missing__(self, flags: int) -> str:
        text = self[flags] = flags_str(flags)
        return text


_FLAGS: Final = _FlagText()


class _IpText(dict[bytes, str]):
    """``format_ip`` memoized: captures have many connections between few addresses."""

    def __missing__(self, addr: bytes) -> str:
        if len(self) >= 4096:  # so many addresses (a scan?) that memory must not follow them
            self.clear()
        text = self[addr] = format_ip(addr)
        return text


_IP_TEXT: Final = _IpText()


def endpoint(ep: tuple[bytes, int]) -> dict[str, Any]:
    return {"ip": format_ip(ep[0]), "port": ep[1]}


def _endpoint_with_service(ep: tuple[bytes, int]) -> dict[str, Any]:
    """``endpoint(ep) | {"service": port_info(port)}`` in one dict."""
    return {"ip": _IP_TEXT[ep[0]], "port": ep[1], "service": port_info(ep[1])}


#: the codec's C function itself: ``str.encode("unicode_escape")`` looks the codec up by name each call
_unicode_escape = codecs.getencoder("unicode_escape")


def preview_text(data: bytes | bytearray, limit: int = 60) -> str:
    r"""A printable one-line preview: printable ASCII kept, the rest escaped like Python bytes.

    That is byte for byte what the ``unicode_escape`` codec writes for U+0000..U+00FF (``\t``, ``\n``,
    ``\r``, ``\\``, other non-printables as lowercase ``\xhh``), so latin-1 decoding (one code point
    per byte) and encoding with it does in C what a per-byte loop did.  ``str(..., "latin-1")``
    accepts any bytes-like object.
    """
    s = _escaped(data[:limit])
    if len(data) > limit:
        s += "..."
    return s


def _escaped(data: bytes | bytearray) -> str:
    """Every byte of ``data`` as :func:`preview_text` shows it (no limit)."""
    return _unicode_escape(str(data, "latin-1"))[0].decode("ascii")


def _fin_seq(p: Pkt) -> int:
    """The sequence number a FIN occupies."""
    return (p.seq + p.len + (1 if p.flags & TCP_SYN else 0)) & M32


def _handshake_pkt(p: Pkt | None, roles: tuple[str, str], base: list[int | None]) -> dict[str, Any] | None:
    if p is None:
        return None
    d = p.d
    b = base[d]
    ob = base[1 - d]
    return {"frame": p.frame, "seq": p.seq, "ack": p.ack, "flags": _FLAGS[p.flags], "len": p.len,
            "from": roles[d], "time": p.ts_ns / 1e9, "relative_seq": None if b is None else (p.seq - b) & M32,
            "relative_ack": (None if ob is None else (p.ack - ob) & M32) if p.flags & TCP_ACK else None}


def _teardown_pkt(p: Pkt, roles: tuple[str, str], base: list[int | None]) -> dict[str, Any]:
    d = p.d
    b = base[d]
    ob = base[1 - d]
    return {"frame": p.frame, "from": roles[d], "flags": _FLAGS[p.flags], "seq": p.seq,
            "ack": p.ack, "len": p.len, "time": p.ts_ns / 1e9,
            "relative_seq": None if b is None else (p.seq - b) & M32,
            "relative_ack": (None if ob is None else (p.ack - ob) & M32) if p.flags & TCP_ACK else None}


def summarize_tcp(c: TcpConnection) -> dict[str, Any]:
    cd = c.client_dir if c.client_dir is not None else 0
    sd = 1 - cd
    roles = _ROLES[cd]  # roles[d]: "client" or "server" for direction d
    base = c.base

    # ---- handshake
    syn, sa, ack3 = c.syn, c.synack, c.hs_ack
    checks: dict[str, bool] = {}
    if syn and sa:
        checks["synack_ack_is_syn_seq_plus_1"] = sa.ack == (syn.seq + 1) & M32
        checks["synack_ack_covers_syn_data"] = syn.len > 0 and sa.ack == (syn.seq + 1 + syn.len) & M32
    if sa and ack3:
        checks["ack_ack_is_synack_seq_plus_1"] = ack3.ack == (sa.seq + 1) & M32
        checks["ack_seq_is_synack_ack"] = ack3.seq == sa.ack
    complete = bool(syn and sa and ack3)
    valid = bool(complete and (checks["synack_ack_is_syn_seq_plus_1"] or checks["synack_ack_covers_syn_data"])
                 and checks["ack_ack_is_synack_seq_plus_1"] and checks["ack_seq_is_synack_ack"])
    refused = False
    refused_frame = None
    if syn is not None and sa is None:
        for p in c.teardown_pkts:
            if p.d != syn.d and p.flags & TCP_RST and p.flags & TCP_ACK and p.ack in (
                    (syn.seq + 1) & M32, (syn.seq + 1 + syn.len) & M32):
                refused = True
                refused_frame = p.frame
                break
    handshake: dict[str, Any] = {
        "syn": _handshake_pkt(syn, roles, base), "syn_ack": _handshake_pkt(sa, roles, base),
        "ack": _handshake_pkt(ack3, roles, base),
        "complete": complete, "valid": valid,
        "rtt": c.first_rtt_ns / 1e9 if c.first_rtt_ns is not None else None,
        "checks": checks,
        "syn_retransmissions": list(c.syn_rtx),
        "syn_ack_count": c.synack_count[sd],
        "refused": refused, "refused_frame": refused_frame,
        "client_options": syn.options.to_dict() if syn and syn.options else None,
        "server_options": sa.options.to_dict() if sa and sa.options else None,
        "syn_to_syn_ack": (sa.ts_ns - syn.ts_ns) / 1e9 if syn and sa else None,
        "syn_ack_to_ack": (ack3.ts_ns - sa.ts_ns) / 1e9 if sa and ack3 else None,
        "tfo_data_in_syn": syn.len if syn is not None else 0,
        "ecn": {"syn_ece_cwr": c.ecn_syn, "syn_ack_ece": c.ecn_synack,
                "negotiated": c.ecn_syn and c.ecn_synack, "ece_or_cwr_later": c.ece_cwr_seen},
    }
    if syn and sa and syn.options and sa.options:
        handshake["negotiated"] = {
            "mss": {"client": syn.options.mss, "server": sa.options.mss},
            "window_scale": (syn.options.window_scale is not None and sa.options.window_scale is not None),
            "sack_permitted": syn.options.sack_permitted and sa.options.sack_permitted,
            "timestamps": syn.options.timestamps is not None and sa.options.timestamps is not None,
        }

    # ---- teardown
    fins = c.fin
    order = c.fin_order
    f1 = fins[order[0]] if order else None
    f2 = fins[order[1]] if len(order) > 1 else None
    pattern = None
    close_done = None
    data_after: list[Pkt] = []
    data_after_bytes = 0
    if f1 is not None and f2 is not None:
        a1, a2 = c.fin_acker[f1.d], c.fin_acker[f2.d]
        if a1 is not None and a2 is not None:
            close_done = max(a1.frame, a2.frame)
        if not _ge(f2.ack, (_fin_seq(f1) + 1) & M32):
            pattern = "simultaneous"
        elif a1 is not None and a1.frame == f2.frame:
            pattern = "3way"
        else:
            pattern = "4way"
        data_after, data_after_bytes = c.after_before_f2, c.after_before_f2_bytes
    elif f1 is not None:
        data_after, data_after_bytes = c.after_any, c.after_any_bytes
    rst = c.rst_first
    if f1 is None and rst is None:
        kind = "none"
    elif rst is not None and (close_done is None or rst.frame < close_done):
        kind = "rst"
    elif f1 is not None and f2 is None:
        kind = "fin_one_side"
    elif pattern == "simultaneous":
        kind = "simultaneous"
    elif data_after:
        kind = "half_close"
    else:
        kind = pattern or "none"
    initiator = roles[f1.d] if f1 is not None else (roles[rst.d] if rst is not None else None)
    rst_dirs = c.rst_dirs  # the directions (0 / 1) that sent an RST
    reset_by = None if not rst_dirs else ("both" if len(rst_dirs) == 2 else roles[next(iter(rst_dirs))])
    # the teardown packets in frame order, each frame once
    seen: set[int] = set()
    tpk: list[Pkt] = []
    for p in sorted(c.teardown_pkts, key=_by_frame):
        if p.frame not in seen:
            seen.add(p.frame)
            tpk.append(p)
    time_wait = []
    if kind in ("3way", "4way", "half_close"):
        assert f1 is not None
        time_wait = [roles[f1.d]]
    elif kind == "simultaneous":
        time_wait = ["client", "server"]
    final_ack = c.fin_acker[f2.d] if f2 is not None else None
    fin_info: dict[str, Any] = {}
    for d in (cd, sd):
        fp = fins[d]
        acker = c.fin_acker[d]
        fin_info[roles[d]] = None if fp is None else {
            "frame": fp.frame, "flags": _FLAGS[fp.flags], "seq": fp.seq, "ack": fp.ack, "len": fp.len,
            "fin_seq": _fin_seq(fp), "frames": list(c.fin_frames[d]),
            "acked_by_frame": acker.frame if acker else None}
    teardown: dict[str, Any] = {
        "kind": KIND_NAMES[kind],
        "initiator": initiator,
        "packets": [_teardown_pkt(p, roles, base) for p in tpk],
        "packets_omitted": c.teardown_overflow,
        "reset_by": reset_by,
        "fin_ack_pattern": KIND_NAMES[pattern] if pattern else None,
        "first_fin_by": roles[f1.d] if f1 is not None else None,
        "fin": fin_info,
        "final_ack_frame": final_ack.frame if final_ack is not None else None,
        "rst": {"count": c.rst_count, "first_by": roles[rst.d] if rst else None,
                "first_frame": rst.frame if rst else None,
                "after_close": bool(rst is not None and close_done is not None and rst.frame > close_done),
                "after_fin": bool(rst is not None and f1 is not None and rst.frame > f1.frame)},
        "data_after_first_fin": {"frames": [p.frame for p in data_after] if data_after else [],
                                 "bytes": data_after_bytes},
        "time_wait": time_wait,
    }

    # ---- payload
    payload: dict[str, Any] = {}
    for d in (cd, sd):
        asm = c.assembler[d]
        rs = c.ranges[d]
        if len(rs) == 1:  # the usual case: one contiguous range, no need for three passes
            span = covered = rs[0][1] - rs[0][0]
        else:
            span = (max(e for _, e in rs) - min(s for s, _ in rs)) if rs else 0
            covered = sum(e - s for s, e in rs)
        trunc = c.truncated_frames[d]
        entry: dict[str, Any] = {
            "bytes": asm.bytes_out, "sha256": asm.sha256,
            "complete": not trunc and covered == span and asm.bytes_out == span and not asm.gaps,
            "segments": c.payload_segments[d], "wire_bytes": c.payload_wire_bytes[d],
            "seq_span_bytes": span, "covered_bytes": covered,
            "gaps": [g.to_dict() for g in asm.gaps] if asm.gaps else [],
            "truncated_frames": list(trunc), "truncated_bytes": asm.truncated_bytes,
            "preview": _escaped(asm.kept[:60]),  # preview_text(kept[:60]): never longer than its limit
        }
        if c.http is not None and c.http[d].messages:
            entry["http"] = [m.to_dict() for m in c.http[d].messages]
        payload[roles[d]] = entry

    return {
        "stream": c.stream,
        "ip_version": c.version,
        "client": _endpoint_with_service(c.ep[cd]),
        "server": _endpoint_with_service(c.ep[sd]),
        "roles_inferred": c.role_by != "syn",
        "roles_by": c.role_by,
        "frames": {"first": c.first_frame, "last": c.last_frame, "count": c.packets[0] + c.packets[1]},
        "packets": {"client": c.packets[cd], "server": c.packets[sd]},
        "ip_bytes": {"client": c.ip_bytes[cd], "server": c.ip_bytes[sd]},
        "time": {"first": c.first_ts / 1e9, "last": c.last_ts / 1e9,
                 "duration": (c.last_ts - c.first_ts) / 1e9},
        "handshake": handshake,
        "teardown": teardown,
        "payload": payload,
        "states": _timeline(c, cd, refused, pattern, f1, tpk),
    }


def _timeline(c: TcpConnection, cd: int, refused: bool, pattern: str | None,
              f1: Pkt | None, tpk: list[Pkt]) -> dict[str, Any]:
    """Endpoint states through the control packets (handshake, FINs, their ACKs, RSTs)."""
    roles = _ROLES[cd]
    syn, synack = c.syn, c.synack
    if syn is None and synack is None:  # midstream
        client, server = _ESTABLISHED, _ESTABLISHED
        initial = "ESTABLISHED (no handshake in the capture)"
    elif refused:
        client, server = _CLOSED, _CLOSED
        initial = "client CLOSED, server CLOSED (nothing listening)"
    else:
        client, server = _CLOSED, _LISTEN
        initial = "client CLOSED, server LISTEN"
    # The events (frame, side, event) are applied by frame and, within a frame, by rank: -1 the
    # receipt of a crossed FIN (below), 0 what the packet's sender does, 1 what its ACK does to the
    # receiver, 2 the receipt of a FIN it carries; equal ranks keep the order they are listed in.  One
    # list per rank, concatenated and stable-sorted by frame, gives that order with a plain int key.
    late_fin: list[tuple[int, str, Event]] = []
    sends: list[tuple[int, str, Event]] = []
    acks: list[tuple[int, str, Event]] = []
    fin_recvs: list[tuple[int, str, Event]] = []
    if syn is not None:
        sends.append((syn.frame, "client", _SEND_SYN))
        acks.append((syn.frame, "server", _RECV_SYN))
    if synack is not None:
        if syn is None:  # only the SYN-ACK was captured
            client, server = _SYN_SENT, _SYN_RECEIVED
        sends.append((synack.frame, "server", _SEND_SYNACK))
        acks.append((synack.frame, "client", _RECV_SYNACK))
    if c.hs_ack is not None:
        acks.append((c.hs_ack.frame, "server", _RECV_ACK_OF_SYN))
    crossed = pattern == "simultaneous"
    for d in (cd, 1 - cd):
        f = c.fin[d]
        if f is not None:
            sd, peer = roles[d], roles[1 - d]
            acker = c.fin_acker[d]
            sends.append((f.frame, sd, _SEND_FIN))
            if crossed and f1 is not None and d == f1.d:
                # the peer's own FIN did not acknowledge this one: it had not received it yet; its
                # first acknowledgement of this FIN is the evidence of receipt
                if acker is not None:
                    late_fin.append((acker.frame, peer, _RECV_FIN))
            else:
                fin_recvs.append((f.frame, peer, _RECV_FIN))
            if acker is not None:
                # the ACK of a FIN is applied to the FIN's sender before a FIN the same packet carries
                acks.append((acker.frame, sd, _RECV_ACK_OF_FIN))
    resets = False
    for p in tpk:
        if p.flags & TCP_RST:
            resets = True
            sends.append((p.frame, roles[p.d], _SEND_RST))
            acks.append((p.frame, roles[1 - p.d], _RECV_RST))
    steps = late_fin + sends + acks + fin_recvs
    steps.sort(key=_by_frame_first)
    if resets:  # after a reset only resets still count
        first = next(i for i, (_, _, ev) in enumerate(steps) if ev is _SEND_RST or ev is _RECV_RST)
        steps[first:] = [st for st in steps[first:] if st[2] is _SEND_RST or st[2] is _RECV_RST]
    timeline, final = replay_to_dicts(client, server, steps)
    return {"initial": initial, "timeline": timeline,
            "final": {"client": _STATE_NAMES[final["client"]], "server": _STATE_NAMES[final["server"]]}}


def summarize_udp(conv: UdpConversation) -> dict[str, Any]:
    dg = []
    for r in conv.datagrams:
        item: dict[str, Any] = {"frame": r.frame, "from": "client" if r.direction == 0 else "server",
                                "len": r.length, "sha256": r.sha256, "captured": r.captured,
                                "time": r.ts_ns / 1e9, "preview": preview_text(r.preview, 40)}
        if r.fragment_frames:
            item["ip_fragment_frames"] = list(r.fragment_frames)
        if r.truncated:
            item["truncated"] = True
        dg.append(item)
    return {
        "stream": conv.stream,
        "ip_version": conv.version,
        "client": _endpoint_with_service(conv.client),
        "server": _endpoint_with_service(conv.server),
        "packets": {"client": conv.packets[0], "server": conv.packets[1]},
        "payload_bytes": {"client": conv.payload_bytes[0], "server": conv.payload_bytes[1]},
        "time": {"first": conv.first_ts / 1e9, "last": conv.last_ts / 1e9,
                 "duration": (conv.last_ts - conv.first_ts) / 1e9},
        "datagrams": dg,
        "datagrams_omitted": conv.dropped_records,
    }
