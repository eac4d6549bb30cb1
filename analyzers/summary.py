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

from typing import Any

from analyzers.decode import TCP_ACK, TCP_RST, TCP_SYN, flags_str, format_ip
from analyzers.reassembly import M32
from analyzers.services import port_info
from analyzers.states import EndpointStates, Event, State
from analyzers.tcp import Pkt, TcpConnection, _ge
from analyzers.udp import UdpConversation

SIDE = ("client", "server")
KIND_NAMES = {"3way": "three-way", "4way": "four-way", "simultaneous": "simultaneous",
              "half_close": "half-close", "rst": "reset", "fin_one_side": "one-sided", "none": "none"}


def endpoint(ep: tuple[bytes, int]) -> dict[str, Any]:
    return {"ip": format_ip(ep[0]), "port": ep[1]}


def preview_text(data: bytes, limit: int = 60) -> str:
    """A printable one-line preview: printable ASCII kept, the rest escaped like Python bytes."""
    out = []
    for b in data[:limit]:
        if b == 0x0A:
            out.append("\\n")
        elif b == 0x0D:
            out.append("\\r")
        elif b == 0x09:
            out.append("\\t")
        elif 0x20 <= b < 0x7F and b != 0x5C:
            out.append(chr(b))
        elif b == 0x5C:
            out.append("\\\\")
        else:
            out.append(f"\\x{b:02x}")
    s = "".join(out)
    if len(data) > limit:
        s += "..."
    return s


def _ts(ns: int) -> float:
    return ns / 1e9


def summarize_tcp(c: TcpConnection) -> dict[str, Any]:
    cd = c.client_dir if c.client_dir is not None else 0
    sd = 1 - cd

    def side(d: int) -> str:
        return "client" if d == cd else "server"

    base = c.base

    def rel(value: int, d: int) -> int | None:
        b = base[d]
        return None if b is None else (value - b) & M32

    def pkt(p: Pkt | None) -> dict[str, Any] | None:
        if p is None:
            return None
        od = 1 - p.d
        return {"frame": p.frame, "seq": p.seq, "ack": p.ack, "flags": flags_str(p.flags), "len": p.len,
                "from": side(p.d), "time": _ts(p.ts_ns), "relative_seq": rel(p.seq, p.d),
                "relative_ack": rel(p.ack, od) if p.flags & TCP_ACK else None}

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
        "syn": pkt(syn), "syn_ack": pkt(sa), "ack": pkt(ack3),
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

    def fin_seq(p: Pkt) -> int:
        return (p.seq + p.len + (1 if p.flags & TCP_SYN else 0)) & M32

    if f1 is not None and f2 is not None:
        a1, a2 = c.fin_acker[f1.d], c.fin_acker[f2.d]
        if a1 is not None and a2 is not None:
            close_done = max(a1.frame, a2.frame)
        if not _ge(f2.ack, (fin_seq(f1) + 1) & M32):
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
    initiator = side(f1.d) if f1 is not None else (side(rst.d) if rst is not None else None)
    rdirs = {side(d) for d in c.rst_dirs}
    reset_by = None if not rdirs else ("both" if len(rdirs) == 2 else next(iter(rdirs)))
    seen: set[int] = set()
    tpk: list[Pkt] = []
    for p in sorted(c.teardown_pkts, key=lambda q: q.frame):
        if p.frame not in seen:
            seen.add(p.frame)
            tpk.append(p)
    time_wait = []
    if kind in ("3way", "4way", "half_close"):
        assert f1 is not None
        time_wait = [side(f1.d)]
    elif kind == "simultaneous":
        time_wait = ["client", "server"]
    final_ack = c.fin_acker[f2.d] if f2 is not None else None
    fin_info: dict[str, Any] = {}
    for d in (cd, sd):
        fp = fins[d]
        acker = c.fin_acker[d]
        fin_info[side(d)] = None if fp is None else {
            "frame": fp.frame, "flags": flags_str(fp.flags), "seq": fp.seq, "ack": fp.ack, "len": fp.len,
            "fin_seq": fin_seq(fp), "frames": list(c.fin_frames[d]),
            "acked_by_frame": acker.frame if acker else None}
    teardown: dict[str, Any] = {
        "kind": KIND_NAMES[kind],
        "initiator": initiator,
        "packets": [{"frame": p.frame, "from": side(p.d), "flags": flags_str(p.flags), "seq": p.seq,
                     "ack": p.ack, "len": p.len, "time": _ts(p.ts_ns), "relative_seq": rel(p.seq, p.d),
                     "relative_ack": rel(p.ack, 1 - p.d) if p.flags & TCP_ACK else None} for p in tpk],
        "packets_omitted": c.teardown_overflow,
        "reset_by": reset_by,
        "fin_ack_pattern": KIND_NAMES[pattern] if pattern else None,
        "first_fin_by": side(f1.d) if f1 is not None else None,
        "fin": fin_info,
        "final_ack_frame": final_ack.frame if final_ack is not None else None,
        "rst": {"count": c.rst_count, "first_by": side(rst.d) if rst else None,
                "first_frame": rst.frame if rst else None,
                "after_close": bool(rst is not None and close_done is not None and rst.frame > close_done),
                "after_fin": bool(rst is not None and f1 is not None and rst.frame > f1.frame)},
        "data_after_first_fin": {"frames": [p.frame for p in data_after], "bytes": data_after_bytes},
        "time_wait": time_wait,
    }

    # ---- payload
    payload: dict[str, Any] = {}
    for d in (cd, sd):
        asm = c.assembler[d]
        rs = c.ranges[d]
        span = (max(e for _, e in rs) - min(s for s, _ in rs)) if rs else 0
        covered = sum(e - s for s, e in rs)
        trunc = c.truncated_frames[d]
        entry: dict[str, Any] = {
            "bytes": asm.bytes_out, "sha256": asm.sha256,
            "complete": not trunc and covered == span and asm.bytes_out == span and not asm.gaps,
            "segments": c.payload_segments[d], "wire_bytes": c.payload_wire_bytes[d],
            "seq_span_bytes": span, "covered_bytes": covered,
            "gaps": [g.to_dict() for g in asm.gaps],
            "truncated_frames": list(trunc), "truncated_bytes": asm.truncated_bytes,
            "preview": preview_text(bytes(asm.kept[:60])),
        }
        if c.http is not None and c.http[d].messages:
            entry["http"] = [m.to_dict() for m in c.http[d].messages]
        payload[side(d)] = entry

    client_ep, server_ep = c.ep[cd], c.ep[sd]
    result: dict[str, Any] = {
        "stream": c.stream,
        "ip_version": c.version,
        "client": endpoint(client_ep) | {"service": port_info(client_ep[1])},
        "server": endpoint(server_ep) | {"service": port_info(server_ep[1])},
        "roles_inferred": c.role_by != "syn",
        "roles_by": c.role_by,
        "frames": {"first": c.first_frame, "last": c.last_frame, "count": c.packets[0] + c.packets[1]},
        "packets": {"client": c.packets[cd], "server": c.packets[sd]},
        "ip_bytes": {"client": c.ip_bytes[cd], "server": c.ip_bytes[sd]},
        "time": {"first": _ts(c.first_ts), "last": _ts(c.last_ts), "duration": (c.last_ts - c.first_ts) / 1e9},
        "handshake": handshake,
        "teardown": teardown,
        "payload": payload,
    }
    result["states"] = _timeline(c, cd, handshake, teardown, tpk, refused)
    return result


def _timeline(c: TcpConnection, cd: int, hs: dict[str, Any], td: dict[str, Any],
              tpk: list[Pkt], refused: bool) -> dict[str, Any]:
    """Endpoint states through the control packets (handshake, FINs, their ACKs, RSTs)."""
    midstream = c.syn is None and c.synack is None
    if midstream:
        es = EndpointStates(State.ESTABLISHED, State.ESTABLISHED)
        initial = "ESTABLISHED (no handshake in the capture)"
    elif refused:
        es = EndpointStates(State.CLOSED, State.CLOSED)
        initial = "client CLOSED, server CLOSED (nothing listening)"
    else:
        es = EndpointStates()
        initial = "client CLOSED, server LISTEN"
    events: list[tuple[int, int, str, Event]] = []  # (frame, order, side, event)
    other = {"client": "server", "server": "client"}
    if c.syn is not None:
        events.append((c.syn.frame, 0, "client", Event.SEND_SYN))
        events.append((c.syn.frame, 1, "server", Event.RECV_SYN))
    if c.synack is not None:
        if c.syn is None:  # only the SYN-ACK was captured
            es.state["client"] = State.SYN_SENT
            es.state["server"] = State.SYN_RECEIVED
        events.append((c.synack.frame, 0, "server", Event.SEND_SYNACK))
        events.append((c.synack.frame, 1, "client", Event.RECV_SYNACK))
    if c.hs_ack is not None:
        events.append((c.hs_ack.frame, 1, "server", Event.RECV_ACK_OF_SYN))
    crossed = td["fin_ack_pattern"] == "simultaneous"
    for sd in ("client", "server"):
        f = td["fin"][sd]
        if f is not None:
            events.append((f["frame"], 0, sd, Event.SEND_FIN))
            if crossed and sd == td["first_fin_by"]:
                # the peer's own FIN did not acknowledge this one: it had not received it yet; its
                # first acknowledgement of this FIN is the evidence of receipt
                if f["acked_by_frame"] is not None:
                    events.append((f["acked_by_frame"], -1, other[sd], Event.RECV_FIN))
            else:
                events.append((f["frame"], 2, other[sd], Event.RECV_FIN))
            if f["acked_by_frame"] is not None:
                # the ACK of a FIN is applied to the FIN's sender before a FIN the same packet carries
                events.append((f["acked_by_frame"], 1, sd, Event.RECV_ACK_OF_FIN))
    for p in tpk:
        if p.flags & TCP_RST:
            sside = "client" if p.d == cd else "server"
            events.append((p.frame, 0, sside, Event.SEND_RST))
            events.append((p.frame, 1, other[sside], Event.RECV_RST))
    events.sort(key=lambda e: (e[0], e[1]))
    seen_rst = False
    for frame, _, sd, ev in events:
        if ev in (Event.SEND_RST, Event.RECV_RST):
            seen_rst = True
        elif seen_rst:
            continue
        es.apply(frame, sd, ev)
    return {"initial": initial,
            "timeline": [ch.to_dict() for ch in es.timeline],
            "final": {"client": es.state["client"].value, "server": es.state["server"].value}}


def summarize_udp(conv: UdpConversation) -> dict[str, Any]:
    dg = []
    for r in conv.datagrams:
        item: dict[str, Any] = {"frame": r.frame, "from": "client" if r.direction == 0 else "server",
                                "len": r.length, "sha256": r.sha256, "captured": r.captured,
                                "time": _ts(r.ts_ns), "preview": preview_text(r.preview, 40)}
        if r.fragment_frames:
            item["ip_fragment_frames"] = list(r.fragment_frames)
        if r.truncated:
            item["truncated"] = True
        dg.append(item)
    return {
        "stream": conv.stream,
        "ip_version": conv.version,
        "client": endpoint(conv.client) | {"service": port_info(conv.client[1])},
        "server": endpoint(conv.server) | {"service": port_info(conv.server[1])},
        "packets": {"client": conv.packets[0], "server": conv.packets[1]},
        "payload_bytes": {"client": conv.payload_bytes[0], "server": conv.payload_bytes[1]},
        "time": {"first": _ts(conv.first_ts), "last": _ts(conv.last_ts),
                 "duration": (conv.last_ts - conv.first_ts) / 1e9},
        "datagrams": dg,
        "datagrams_omitted": conv.dropped_records,
    }
