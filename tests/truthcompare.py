"""Compare a loopcap/1 document with a truth file made by ``build_truth.py`` (tshark 4.0).

Returns per-field agreement counts and a list of readable mismatches, so the same code drives the
corpus test, the differential test on ``pcaps/`` and the agreement figures in the notes.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

TRUTH_KIND = {"3way": "three-way", "4way": "four-way", "simultaneous": "simultaneous",
              "half_close": "half-close", "rst": "reset", "fin_one_side": "one-sided", "none": "none"}


class Agreement:
    def __init__(self) -> None:
        self.total: Counter[str] = Counter()
        self.matched: Counter[str] = Counter()
        self.mismatches: list[str] = []

    def check(self, field: str, where: str, ours: object, truth: object) -> None:
        self.total[field] += 1
        if ours == truth:
            self.matched[field] += 1
        else:
            self.mismatches.append(f"{where}: {field}: loopcap={ours!r} tshark={truth!r}")

    def merge(self, other: Agreement) -> None:
        self.total.update(other.total)
        self.matched.update(other.matched)
        self.mismatches.extend(other.mismatches)

    def table(self) -> str:
        w = max((len(k) for k in self.total), default=5)
        lines = [f"{'field':<{w}}  matched / total"]
        for k in sorted(self.total):
            lines.append(f"{k:<{w}}  {self.matched[k]:>7} / {self.total[k]}")
        return "\n".join(lines)


def _ep(d: dict[str, Any]) -> tuple[str, int]:
    return (d["ip"], d["port"])


def _hs(p: dict[str, Any] | None, ack: bool = True) -> tuple[Any, Any, Any] | None:
    if p is None:
        return None
    return (p["frame"], p.get("seq", p.get("seq_raw")), p.get("ack", p.get("ack_raw")) if ack else None)


def compare(doc: dict[str, Any], truth: dict[str, Any], name: str = "") -> Agreement:
    ag = Agreement()
    ours_tcp = doc["tcp"]
    t_tcp = truth["tcp"]
    ag.check("tcp.count", name, len(ours_tcp), len(t_tcp))
    ag.check("tcp.streams", name, [c["stream"] for c in ours_tcp], [c["stream"] for c in t_tcp])
    by_stream = {c["stream"]: c for c in ours_tcp}
    for t in t_tcp:
        where = f"{name} tcp.stream {t['stream']}"
        o = by_stream.get(t["stream"])
        if o is None:
            ag.check("tcp.present", where, None, t["stream"])
            continue
        ag.check("client", where, _ep(o["client"]), _ep(t["client"]))
        ag.check("server", where, _ep(o["server"]), _ep(t["server"]))
        hs, th = o["handshake"], t["handshake"]
        syn = th["syn"]
        ag.check("handshake.syn", where, _hs(hs["syn"], ack=False),
                 (syn["frame"], syn["seq_raw"], None) if syn else None)
        sa = th["syn_ack"]
        ag.check("handshake.syn_ack", where, _hs(hs["syn_ack"]),
                 (sa["frame"], sa["seq_raw"], sa["ack_raw"]) if sa else None)
        ak = th["ack"]
        ag.check("handshake.ack", where, _hs(hs["ack"]), (ak["frame"], ak["seq_raw"], ak["ack_raw"]) if ak else None)
        ag.check("handshake.complete", where, hs["complete"], th["complete"])
        ag.check("handshake.valid", where, hs["valid"], th["valid"])
        ag.check("handshake.refused", where, hs["refused"], th["refused_by_rst"])
        td, tt = o["teardown"], t["teardown"]
        ag.check("teardown.kind", where, td["kind"], TRUTH_KIND[tt["type"]])
        ag.check("teardown.fin_ack_pattern", where, td["fin_ack_pattern"],
                 TRUTH_KIND[tt["fin_ack_pattern"]] if tt["fin_ack_pattern"] else None)
        truth_init = tt["first_fin_by"] or tt["rst"]["first_by"]
        ag.check("teardown.initiator", where, td["initiator"], truth_init)
        ag.check("teardown.packets", where, [(p["frame"], p["from"], p["flags"], p["seq"], p["ack"], p["len"])
                                             for p in td["packets"]],
                 [(p["frame"], p["from"], p["flags"], p["seq_raw"], p["ack_raw"], p["len"]) for p in tt["sequence"]])
        rby = tt["rst"]["by"]
        ag.check("teardown.reset_by", where, td["reset_by"],
                 None if not rby else ("both" if len(rby) == 2 else rby[0]))
        ag.check("teardown.data_after_first_fin", where, td["data_after_first_fin"]["frames"],
                 tt["data_after_first_fin"]["frames"])
        for ours_side, truth_side in (("client", "client_to_server"), ("server", "server_to_client")):
            op, tp = o["payload"][ours_side], t["payload"][truth_side]
            ag.check("payload.bytes", f"{where} {ours_side}", op["bytes"], tp["bytes"])
            ag.check("payload.sha256", f"{where} {ours_side}", op["sha256"], tp["sha256"])
            ag.check("payload.complete", f"{where} {ours_side}", op["complete"], tp["complete"])
            ag.check("payload.segments", f"{where} {ours_side}", op["segments"], tp["segments_with_payload"])
        ag.check("frames.count", where, o["frames"]["count"], t["frames"]["count"])
    # UDP
    tconv = truth["udp"]["conversations"]
    ag.check("udp.count", name, len(doc["udp"]), len(tconv))
    ours_udp = {c["stream"]: c for c in doc["udp"]}
    for tc in tconv:
        where = f"{name} udp.stream {tc['udp_stream']}"
        oc = ours_udp.get(tc["udp_stream"])
        if oc is None:
            ag.check("udp.present", where, None, tc["udp_stream"])
            continue
        ag.check("udp.client", where, _ep(oc["client"]), _ep(tc["a"]))
        ag.check("udp.server", where, _ep(oc["server"]), _ep(tc["b"]))
        ag.check("udp.frames", where, [d["frame"] for d in oc["datagrams"]], tc["frames"])
    tdg = {d["frame"]: d for d in truth["udp"]["datagrams"]}
    for oc in doc["udp"]:
        for d in oc["datagrams"]:
            t = tdg.get(d["frame"])
            where = f"{name} udp frame {d['frame']}"
            if t is None:
                ag.check("udp.datagram.present", where, d["frame"], None)
                continue
            frm = _ep(oc["client"] if d["from"] == "client" else oc["server"])
            ag.check("udp.datagram.from", where, frm, _ep(t["src"]))
            ag.check("udp.datagram.len", where, d["len"], t["payload_len"])
            ag.check("udp.datagram.sha256", where, d["sha256"], t["payload_sha256"])
            ag.check("udp.datagram.fragments", where, d.get("ip_fragment_frames", []), t["ip_fragment_frames"])
    return ag
