"""The text walkthrough: a capture explained connection by connection, the way a Wireshark
tutorial explains the three-way handshake and the FIN sequence.

Rendered from the ``loopcap/1`` summary dicts only, so the text and the JSON can never disagree.
Plain ASCII, deterministic (golden-file tested); colour is optional and off when not on a terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from analyzers.jsonout import decoded_items
from analyzers.services import port_label

Style = Callable[..., str]

KIND_EXPLAINED = {
    "four-way": "each FIN was acknowledged by a separate ACK (FIN, ACK, FIN, ACK)",
    "three-way": "the second FIN carried the ACK of the first one (FIN, FIN+ACK, ACK)",
    "simultaneous": "both sides sent a FIN before seeing the other's (simultaneous close: both pass "
                    "through CLOSING)",
    "half-close": "after the first FIN, data kept flowing the other way before the second FIN (half-close)",
    "reset": "the connection was aborted by an RST before a graceful close completed",
    "one-sided": "only one side sent a FIN (the other never closed, or the capture ended first)",
    "none": "no FIN or RST in the capture (still open, or the capture ended first)",
}

ROLES_EXPLAINED = {
    "syn": "the client is the side that sent the SYN",
    "syn_ack": "no SYN captured; the client is the side that received the SYN-ACK",
    "known_server_port": "no SYN or SYN-ACK captured: roles inferred from the known server port",
    "lower_port_is_server": "no SYN or SYN-ACK captured: roles GUESSED (the lower port is taken as the server)",
    "first_packet": "no SYN or SYN-ACK captured: roles GUESSED (the first packet's sender is taken as the client)",
}


def _plain(text: str, **_: Any) -> str:
    return text


def _num(n: int) -> str:
    return f"{n:,}"


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{_num(n)} {word if n == 1 else (plural or word + 's')}"


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.3f} ms"
    return f"{seconds:.3f} s"


def _opts(o: dict[str, Any] | None) -> str:
    if not o:
        return "none"
    parts = []
    if o.get("mss") is not None:
        parts.append(f"MSS {o['mss']}")
    if o.get("window_scale") is not None:
        parts.append(f"window scale {o['window_scale']} (x{1 << min(o['window_scale'], 14)})")
    if o.get("sack_permitted"):
        parts.append("SACK permitted")
    if o.get("timestamps"):
        parts.append("timestamps")
    if o.get("fast_open_cookie") is not None:
        parts.append("TCP Fast Open cookie" + (" request" if not o["fast_open_cookie"] else ""))
    if o.get("malformed"):
        parts.append(f"MALFORMED ({o['malformed']})")
    return ", ".join(parts) if parts else "none"


_INFO_ORDER = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS")


def info_flags(flags: str) -> str:
    """``ACK,SYN`` (the JSON's tcp.flags order) -> ``SYN,ACK`` (Wireshark's Info column order)."""
    names = flags.split(",") if flags else []
    return ",".join(n for n in _INFO_ORDER if n in names) or "none"


def _arrow(frm: str) -> str:
    return "client > server" if frm == "client" else "server > client"


def _seqack(p: dict[str, Any]) -> str:
    s = f"seq={p['seq']} (rel {p['relative_seq']})" if p.get("relative_seq") is not None else f"seq={p['seq']}"
    if "ACK" in p["flags"].split(","):
        if p.get("relative_ack") is not None:
            s += f"  ack={p['ack']} (rel {p['relative_ack']})"
        else:
            s += f"  ack={p['ack']}"
    if p.get("len"):
        s += f"  len={p['len']}"
    return s


def _state_notes(timeline: list[dict[str, Any]]) -> dict[int, str]:
    by_frame: dict[int, list[str]] = {}
    for ch in timeline:
        if ch["expected"]:
            by_frame.setdefault(ch["frame"], []).append(f"{ch['side']} -> {ch['to']}")
        else:
            by_frame.setdefault(ch["frame"], []).append(f"{ch['side']}: unexpected {ch['event']} in {ch['from']}")
    return {f: ", ".join(v) for f, v in by_frame.items()}


_ZEEK_STATES = {
    "S0": "connection attempt seen, no reply", "S1": "established, not terminated",
    "SF": "normal establishment and termination", "REJ": "connection attempt rejected",
    "S2": "established, close attempt by the originator seen (no reply)",
    "S3": "established, close attempt by the responder seen (no reply)",
    "RSTO": "established, the originator aborted (sent an RST)",
    "RSTR": "the responder sent an RST", "RSTOS0": "the originator sent a SYN then an RST, no SYN-ACK",
    "RSTRH": "the responder sent a SYN-ACK then an RST, no SYN seen", "SH": "the originator sent a SYN then a FIN, "
    "no SYN-ACK", "SHR": "the responder sent a SYN-ACK then a FIN, no SYN seen", "OTH": "no SYN seen, midstream",
}


_FLAG_WORDS = {"duplicate_ack": "duplicate ACK", "ack_lost_segment": "ACK of an unseen segment",
               "lost_segment": "previous segment not captured", "keep_alive_ack": "keep-alive ACK",
               "zero_window_probe_ack": "zero-window probe ACK", "reused_ports": "reused-ports SYN"}


def _peer_lines(c: dict[str, Any], style: Style) -> list[str]:
    out: list[str] = []
    an = c.get("analysis")
    if an:
        counts = {k: v for k, v in an.get("counts", {}).items() if v}
        what = ", ".join(_plural(v, _FLAG_WORDS.get(k, k.replace("_", " "))) for k, v in sorted(counts.items()))
        what = what or "no analysis flags"
        out.append(f"    Wireshark: {what}; tcp.completeness {an['completeness']} ({an['completeness_label']})")
    z = c.get("zeek")
    if z:
        rows = z if isinstance(z, list) else z.get("rows", [z]) if isinstance(z, dict) and "rows" in z else [z]
        for r in rows:
            if not isinstance(r, dict) or "conn_state" not in r:
                continue
            st = r["conn_state"]
            out.append(f"    Zeek: conn_state {st} ({_ZEEK_STATES.get(st, '?')}), history {r.get('history') or '-'}"
                       + (f", uid {r['uid']}" if r.get("uid") else ""))
    if out:
        out.insert(0, style("  Peers' view", bold=True))
    return out


def _frame_flags(c: dict[str, Any], frame: int) -> list[str]:
    an = c.get("analysis")
    if not an:
        return []
    names = an.get("flags", {}).get(str(frame)) or an.get("flags", {}).get(frame) or []
    return [str(n).replace("_", " ") for n in names]


def render_tcp(c: dict[str, Any], style: Style = _plain) -> list[str]:
    out: list[str] = []
    cl, sv = c["client"], c["server"]
    ipv = "IPv6" if c["ip_version"] == 6 else "IPv4"

    def ep(e: dict[str, Any]) -> str:
        ip = f"[{e['ip']}]" if ":" in e["ip"] else e["ip"]
        return f"{ip}:{port_label(e['port'])}"

    out.append(style(f"TCP connection {c['stream']} (tcp.stream eq {c['stream']}), {ipv}", bold=True))
    out.append(f"  client {ep(cl)}  ->  server {ep(sv)}")
    out.append(f"  roles: {ROLES_EXPLAINED.get(c['roles_by'], c['roles_by'])}")
    fr = c["frames"]
    out.append(f"  frames {fr['first']}-{fr['last']}: {_plural(fr['count'], 'packet')} "
               f"(client {c['packets']['client']}, server {c['packets']['server']}) "
               f"over {c['time']['duration']:.6f} s")
    notes = _state_notes(c["states"]["timeline"])

    # handshake
    hs = c["handshake"]
    out.append("")
    if hs["complete"]:
        verdict = "complete and valid" if hs["valid"] else style("complete but INVALID", fg="red")
    elif hs["refused"]:
        verdict = style("refused: the server answered the SYN with RST,ACK (nothing listening on the port)",
                        fg="red")
    elif hs["syn"] is None and hs["syn_ack"] is None:
        verdict = "not in the capture (it started mid-connection)"
    else:
        missing = [n for n, k in (("SYN", "syn"), ("SYN-ACK", "syn_ack"), ("ACK", "ack")) if hs[k] is None]
        verdict = style("incomplete: no " + ", no ".join(missing), fg="yellow")
    out.append(style("  Three-way handshake: ", bold=True) + verdict)
    rows = []
    syn, sa, ak = hs["syn"], hs["syn_ack"], hs["ack"]
    if syn:
        rows.append((syn, "x = client ISN" if syn["relative_seq"] == 0 else ""))
    if sa:
        check = ""
        if syn:
            ok = hs["checks"].get("synack_ack_is_syn_seq_plus_1") or hs["checks"].get("synack_ack_covers_syn_data")
            check = "ack = x+1 " + ("[ok]" if ok else style("[WRONG]", fg="red"))
        rows.append((sa, ("y = server ISN; " + check) if check else "y = server ISN"))
    if ak:
        ok = hs["checks"].get("ack_ack_is_synack_seq_plus_1") and hs["checks"].get("ack_seq_is_synack_ack")
        rows.append((ak, "ack = y+1 " + ("[ok]" if ok else style("[WRONG]", fg="red"))))
    for p, why in rows:
        line = f"    #{p['frame']:<6} {_arrow(p['from'])}  {info_flags(p['flags']):<8} {_seqack(p)}"
        extra = "; ".join(x for x in (why, notes.get(p["frame"], ""), *_frame_flags(c, p["frame"])) if x)
        out.append(line + (f"   {extra}" if extra else ""))
    if hs["syn_retransmissions"]:
        out.append(f"    SYN retransmitted in frame(s) {', '.join(map(str, hs['syn_retransmissions']))}")
    if hs["refused"] and hs["refused_frame"]:
        out.append(f"    #{hs['refused_frame']:<6} server > client  RST,ACK  nothing listens on the port: "
                   "connection refused")
    if syn or sa:
        out.append(f"    options  client: {_opts(hs['client_options'])}")
        if sa:
            out.append(f"             server: {_opts(hs['server_options'])}")
    if hs["tfo_data_in_syn"]:
        out.append(f"    TCP Fast Open: the SYN carried {hs['tfo_data_in_syn']} bytes of data")
    ecn = hs["ecn"]
    if ecn["syn_ece_cwr"]:
        out.append("    ECN: " + ("negotiated (SYN with ECE+CWR, SYN-ACK with ECE)" if ecn["negotiated"]
                                  else "requested by the client (SYN with ECE+CWR), not accepted"))
    if hs["rtt"] is not None:
        out.append(f"    initial RTT {_ms(hs['rtt'])} (from the SYN to the first ACK, as Wireshark's iRTT)")

    # data
    out.append("")
    out.append(style("  Data exchanged", bold=True))
    for side in ("client", "server"):
        p = c["payload"][side]
        line = f"    {_arrow(side)}: {_plural(p['bytes'], 'byte')} in {_plural(p['segments'], 'segment')}"
        if p["bytes"]:
            line += f'   "{p["preview"]}"'
        out.append(line)
        if p["truncated_frames"]:
            out.append(style(f"      {len(p['truncated_frames'])} frame(s) truncated by the snap length: "
                             f"{_num(p['truncated_bytes'])} bytes not captured", fg="yellow"))
        for g in p["gaps"]:
            out.append(style(f"      gap: {_num(g['length'])} bytes missing at offset {_num(g['offset'])} "
                             f"(noticed at frame {g['frame']})", fg="yellow"))
        for m in p.get("http", [])[:20]:
            body = f"body {_num(m['body_bytes'])} B ({m['body_framing']})"
            if m["kind"] == "request":
                out.append(f"      HTTP request  #{m['frame']}: {m['method']} {m['target']} {m['version']}; "
                           f"header {_num(m['header_bytes'])} B, {body}")
            else:
                out.append(f"      HTTP response #{m['frame']}: {m['status']} {m['reason']}; "
                           f"header {_num(m['header_bytes'])} B, {body}")
        if len(p.get("http", [])) > 20:
            out.append(f"      ... {len(p['http']) - 20} more HTTP messages")

    # teardown
    td = c["teardown"]
    out.append("")
    head = f"  Teardown: {td['kind']}"
    if td["kind"] in ("reset",):
        who = td["reset_by"]
        head += f" by the {who}" if who in ("client", "server") else " by both sides"
        if td["first_fin_by"]:
            head += f" (after the {td['first_fin_by']} had sent a FIN)"
    elif td["kind"] == "simultaneous" and td["initiator"]:
        head += f"; both sides closed at once (the {td['initiator']}'s FIN was first on the wire)"
    elif td["initiator"]:
        head += f"; the {td['initiator']} closed first (active close)"
    if td["time_wait"]:
        head += f"; {' and '.join(td['time_wait'])} end{'s' if len(td['time_wait']) == 1 else ''} in TIME_WAIT"
    out.append(style(head, bold=True))
    out.append(f"    {KIND_EXPLAINED[td['kind']]}")
    fin_ack: dict[int, list[str]] = {}
    for side in ("client", "server"):
        f = td["fin"][side]
        if f and f["acked_by_frame"]:
            fin_ack.setdefault(f["acked_by_frame"], []).append(side)
    for p in td["packets"]:
        notes_t: list[str] = []
        if p["frame"] in fin_ack:
            notes_t.append(" and ".join(f"acknowledges the {s}'s FIN" for s in fin_ack[p["frame"]]))
        if "RST" in p["flags"].split(","):
            notes_t.append(style("RESET", fg="red"))
        first_fin = td["fin"][p["from"]]
        if "FIN" in p["flags"].split(",") and first_fin and p["frame"] != first_fin["frame"]:
            notes_t.append(style("retransmitted FIN", fg="yellow"))
        if p["frame"] in notes:
            notes_t.append(notes[p["frame"]])
        notes_t.extend(f for f in _frame_flags(c, p["frame"]) if f != "retransmission" or "FIN" not in p["flags"])
        out.append(f"    #{p['frame']:<6} {_arrow(p['from'])}  {info_flags(p['flags']):<8} {_seqack(p)}"
                   + (f"   {'; '.join(notes_t)}" if notes_t else ""))
    if td["packets_omitted"]:
        out.append(f"    ... {td['packets_omitted']} more FIN/RST packets not listed")
    if td["data_after_first_fin"]["bytes"]:
        out.append(f"    {_num(td['data_after_first_fin']['bytes'])} bytes were sent after the first FIN "
                   f"(frames {', '.join(map(str, td['data_after_first_fin']['frames'][:10]))})")
    if td["rst"]["after_close"]:
        out.append("    an RST followed the completed close")
    final = c["states"]["final"]
    out.append(f"    final states: client {final['client']}, server {final['server']}")
    peers = _peer_lines(c, style)
    if peers:
        out.append("")
        out.extend(peers)
    return out


def render_udp(u: dict[str, Any], style: Style = _plain, max_datagrams: int | None = 20) -> list[str]:
    out: list[str] = []
    ipv = "IPv6" if u["ip_version"] == 6 else "IPv4"

    def ep(e: dict[str, Any]) -> str:
        ip = f"[{e['ip']}]" if ":" in e["ip"] else e["ip"]
        return f"{ip}:{port_label(e['port'])}"

    n = len(u["datagrams"])
    out.append(style(f"UDP conversation {u['stream']} (udp.stream eq {u['stream']}), {ipv}", bold=True))
    out.append(f"  client {ep(u['client'])}  ->  server {ep(u['server'])}   (client = first sender)")
    out.append(f"  {_plural(n, 'datagram')}: client {u['packets']['client']} "
               f"({_plural(u['payload_bytes']['client'], 'byte')}), server {u['packets']['server']} "
               f"({_plural(u['payload_bytes']['server'], 'byte')}) over {u['time']['duration']:.6f} s")
    shown = u["datagrams"] if max_datagrams is None else u["datagrams"][:max_datagrams]
    for d in shown:
        extra = ""
        if d.get("ip_fragment_frames"):
            extra += f"  [reassembled from IP fragments in frames {', '.join(map(str, d['ip_fragment_frames']))}]"
        if d.get("truncated"):
            extra += f"  [truncated: {d['captured']} bytes captured]"
        out.append(f"    #{d['frame']:<6} {_arrow(d['from'])}  {d['len']:>6} bytes  \"{d['preview']}\"{extra}")
    if len(shown) < n:
        out.append(f"    ... {n - len(shown)} more datagrams (use --udp-stream {u['stream']} to list them all)")
    return out


def render(doc: dict[str, Any], style: Style = _plain, *, all_datagrams: bool = False) -> str:
    return "".join(iter_render(doc, style, all_datagrams=all_datagrams))


def iter_render(doc: dict[str, Any], style: Style = _plain, *, all_datagrams: bool = False) -> Iterator[str]:
    """:func:`render` piece by piece (a connection at a time), for a streamed document too."""
    lts = ", ".join(x["name"] for x in doc["link_types"]) or "no link type"
    t = doc["time"]
    dur = (t["last"] - t["first"]) if t["first"] is not None and t["last"] is not None else 0.0
    yield "\n".join([
        style(f"loopcap analysis of {doc['file']}", bold=True),
        f"  {doc['format']} capture, {lts}; {_plural(doc['packets'], 'packet')} over {dur:.6f} s",
        f"  {_plural(len(doc['tcp']), 'TCP connection')}, {_plural(len(doc['udp']), 'UDP conversation')}"
        + (" shown (filtered)" if doc.get("filtered") else "")]) + "\n"
    for c in decoded_items(doc["tcp"]):
        yield "\n" + "\n".join(render_tcp(c, style)) + "\n"
    for u in decoded_items(doc["udp"]):
        yield "\n" + "\n".join(render_udp(u, style, None if all_datagrams else 20)) + "\n"
    if doc["warnings"]:
        yield "\n" + "".join(style(f"warning: {w}", fg="yellow") + "\n" for w in doc["warnings"])
