"""The end-to-end self-check: does the analysis of a capture reproduce what the generators did?

``check_manifest(doc, manifest)`` compares a ``loopcap/1`` analysis document with a generator
manifest (``Manifest.to_dict()``): every connection found by its endpoints, handshake complete and
valid (or refused, for the refused scenario), the teardown kind among the acceptable ones, the
initiator and RST sender, payload bytes and SHA-256 per direction equal to what each program sent;
every UDP datagram in order with its length and SHA-256.  It returns a :class:`CheckReport`;
``report.ok`` is what decides exit code 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class CheckReport:
    checks: int = 0
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def expect(self, cond: bool, what: str) -> None:
        self.checks += 1
        if not cond:
            self.failures.append(what)

    def text(self) -> str:
        lines = [f"self-check against the generator manifest: {self.checks - len(self.failures)} of "
                 f"{self.checks} checks passed"]
        lines += [f"  FAILED: {f}" for f in self.failures]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _ep(d: dict[str, Any]) -> tuple[str, int]:
    return (d["ip"], int(d["port"]))


def _norm_ip(ip: str) -> str:
    import ipaddress

    return str(ipaddress.ip_address(ip))


def _key(client: dict[str, Any], server: dict[str, Any]) -> tuple[tuple[str, int], tuple[str, int]]:
    return ((_norm_ip(client["ip"]), int(client["port"])), (_norm_ip(server["ip"]), int(server["port"])))


def check_manifest(doc: dict[str, Any], manifest: dict[str, Any]) -> CheckReport:
    rep = CheckReport()
    by_key: dict[tuple[tuple[str, int], tuple[str, int]], list[dict[str, Any]]] = {}
    for c in doc["tcp"]:
        by_key.setdefault(_key(c["client"], c["server"]), []).append(c)
    for i, m in enumerate(manifest.get("tcp", [])):
        key = _key(m["client"], m["server"])
        label = f"TCP connection {i} ({key[0][0]}:{key[0][1]} -> {key[1][0]}:{key[1][1]})"
        found = by_key.get(key)
        rep.expect(bool(found), f"{label}: not in the capture")
        if not found:
            continue
        c = found.pop(0)
        label = f"{label} = tcp.stream {c['stream']}"
        hs = c["handshake"]
        if m.get("refused"):
            rep.expect(hs["refused"], f"{label}: expected the SYN to be refused with RST/ACK")
        else:
            rep.expect(hs["complete"], f"{label}: handshake incomplete")
            rep.expect(hs["valid"], f"{label}: handshake invalid (sequence numbers do not match)")
        td = c["teardown"]
        kinds = m.get("expected_teardown") or []
        if kinds:
            rep.expect(td["kind"] in kinds, f"{label}: teardown {td['kind']!r}, expected one of {kinds}")
        closes = m.get("closes_first")
        if closes in ("client", "server") and td["kind"] != "reset":
            rep.expect(td["initiator"] == closes, f"{label}: the {td['initiator']} closed first, expected the {closes}")
        if m.get("reset_by") is not None or td["reset_by"] is not None:
            rep.expect(td["reset_by"] == m.get("reset_by"),
                       f"{label}: RST sent by {td['reset_by']}, expected {m.get('reset_by')}")
        for side in ("client", "server"):
            sent = m.get(f"{side}_sent")
            if sent is None:
                continue
            p = c["payload"][side]
            rep.expect(p["bytes"] == sent["bytes"], f"{label}: {side} sent {sent['bytes']} bytes, capture holds {p['bytes']}")
            rep.expect(p["sha256"] == sent["sha256"], f"{label}: {side} payload SHA-256 differs from what it sent")
    leftovers = [c["stream"] for cs in by_key.values() for c in cs]
    if leftovers:
        rep.notes.append(f"TCP streams not made by the generator: {leftovers}")

    ubykey: dict[tuple[tuple[str, int], tuple[str, int]], dict[str, Any]] = {}
    for u in doc["udp"]:
        ubykey[_key(u["client"], u["server"])] = u
    for i, m in enumerate(manifest.get("udp", [])):
        key = _key(m["client"], m["server"])
        label = f"UDP conversation {i} ({key[0][0]}:{key[0][1]} -> {key[1][0]}:{key[1][1]})"
        u = ubykey.get(key)
        rep.expect(u is not None, f"{label}: not in the capture")
        if u is None:
            continue
        want = [(d["from"], d["len"], d["sha256"]) for d in m["datagrams"]]
        got = [(d["from"], d["len"], d["sha256"]) for d in u["datagrams"]]
        rep.expect(got == want, f"{label}: datagrams differ: captured {len(got)}, sent {len(want)}"
                   + (f" (first difference at #{next(j for j, (a, b) in enumerate(zip(got, want, strict=False)) if a != b)})"
                      if any(a != b for a, b in zip(got, want, strict=False)) else ""))
    return rep
