"""loopcap's Zeek view against Zeek's own regression baselines (``../shared/zeek-conformance``).

Every (trace, baseline) pair of the manifest is run through :func:`analyzers.zeek.zeek_analyze` with
the options the manifest records for that Zeek run (bare mode's likely server ports, ``-C`` or
checksum validation, ``ignore_checksums_nets``, ``Site::local_nets``, ``report_gaps_for_partial``),
and every expected conn.log row is compared field by field: endpoints (orientation included),
``proto``, ``conn_state``, ``history``, ``duration``, ``orig_bytes``/``resp_bytes``, ``missed_bytes``,
packet and IP-byte counters, ``local_orig``/``local_resp``, ``ip_proto``, ``tunnel_parents``.

Not compared, for every row: ``service`` (Zeek's dynamic protocol detection; loopcap does not run
protocol analyzers) and ``orig_l2_addr``/``resp_l2_addr`` (mac-logging: loopcap's decoder does not keep
MAC addresses).  Rows are matched in baseline order by 4-tuple; a pair must produce no row the
baseline lacks.

Where loopcap deliberately differs, :data:`EXCEPTIONS` names the row, says why, and pins what loopcap
reports instead, so that a change in either direction is noticed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from analyzers.zeek import (
    DEFAULT_LIKELY_SERVER_PORTS,
    PACKET_PROTOCOL_PORTS,
    ZeekLog,
    ZeekOptions,
    zeek_analyze,
)

CONFORMANCE = Path(os.environ.get("LOOPCAP_ZEEK_CONFORMANCE", REPO.parent / "shared" / "zeek-conformance"))
ID_FIELDS = ("id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p")
#: columns never compared, and why
NOT_COMPARED = {
    "service": "Zeek's dynamic protocol detection (DPD / Spicy analyzers); loopcap runs no protocol analyzers",
    "orig_l2_addr": "mac-logging policy script; loopcap's decoder does not keep link-layer addresses",
    "resp_l2_addr": "mac-logging policy script; loopcap's decoder does not keep link-layer addresses",
}

#: (expected file, row index in the baseline) -> why loopcap differs, and what it reports instead
EXCEPTIONS: dict[tuple[str, int], dict[str, Any]] = {
    ("expected/ntp__misordered-ntp.pcap.json", 0): {
        "reason": "Zeek's NTP analyzer flips the connection after the fact (ntp-analyzer.pac: the first "
                  "packet is a server reply, mode 4), giving history 'D^' and - as an artefact of the late "
                  "flip - both packets counted on the originator.  loopcap runs no protocol analyzers: it "
                  "keeps the transport-level view (port 123 on both sides: no flip at creation), one packet "
                  "each way, SF 'Dd'.",
        "loopcap": {"id.orig_h": "17.253.4.253", "conn_state": "SF", "history": "Dd", "orig_pkts": 1,
                    "resp_pkts": 1, "orig_bytes": 48, "resp_bytes": 48},
    },
    ("expected/variants/tcp__retransmit-timeout.pcapng@timers-limited.json", 0): {
        "reason": "the test floods Zeek's timer queue (max_timer_expires, dummy timers) so that the TCP "
                  "inactivity timer cannot fire in time and the connection survives a 300.00001 s gap "
                  "('DaT').  loopcap expires every due timer, as Zeek does by default and as the primary "
                  "pair of the same trace (max_timer_expires=0) expects: two rows, 'Da' then 'D'.",
        "loopcap": {"history": "Da", "orig_pkts": 1, "duration": 1e-05},
        "extra_rows": 1,
    },
}


def _load_manifest() -> list[dict[str, Any]]:
    path = CONFORMANCE / "manifest.json"
    if not path.is_file():
        return []
    pairs: list[dict[str, Any]] = json.loads(path.read_text())["pairs"]
    return pairs


PAIRS = _load_manifest()


def need_conformance() -> None:
    if not PAIRS:
        if os.environ.get("CI"):
            pytest.fail(f"the Zeek conformance set is missing at {CONFORMANCE}")
        pytest.skip(f"Zeek conformance set not found at {CONFORMANCE}; set LOOPCAP_ZEEK_CONFORMANCE")


def _ports(items: list[str]) -> set[tuple[int, str]]:
    out = set()
    for item in items:
        num, proto = item.strip().split("/")
        out.add((int(num), proto))
    return out


def options_for(pair: dict[str, Any]) -> ZeekOptions:
    """The ZeekOptions equivalent to the Zeek command line and scripts the manifest records."""
    if pair["bare_mode"]:
        est = pair["likely_server_ports_estimate"]
        ports = frozenset(_ports(est)) if isinstance(est, list) else PACKET_PROTOCOL_PORTS
    else:
        ports = DEFAULT_LIKELY_SERVER_PORTS
    extra: set[tuple[int, str]] = set()
    local: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    gaps = False
    for redef in pair["script_redefs"]:
        m = re.search(r"likely_server_ports\s*\+=\s*\{([^}]*)\}", redef)
        if m:
            extra |= _ports([p for p in m.group(1).split(",") if p.strip()])
        m = re.search(r"Site::local_nets\s*=\s*\{([^}]*)\}", redef)
        if m:
            local.extend(ipaddress.ip_network(n.strip()) for n in m.group(1).split(",") if n.strip())
        if re.search(r"report_gaps_for_partial\s*=\s*T", redef):
            gaps = True
    ignore_nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    m = re.search(r"ignore_checksums_nets\s*\+=\s*\{([^}]*)\}", pair["cmdline_options"])
    if m:
        ignore_nets.extend(ipaddress.ip_network(n.strip()) for n in m.group(1).split(",") if n.strip())
    return ZeekOptions(likely_server_ports=frozenset(ports | extra),
                       checksums="ignore" if pair["checksums_ignored"] else "verify",
                       ignore_checksums_nets=tuple(ignore_nets), local_nets=tuple(local),
                       report_gaps_for_partial=gaps)


@cache
def run_pair(index: int) -> ZeekLog:
    pair = PAIRS[index]
    return zeek_analyze(CONFORMANCE / pair["trace_file"], options_for(pair))


def expected_rows(pair: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads((CONFORMANCE / pair["expected"]).read_text())
    return rows


def _same(field: str, want: object, got: object) -> bool:
    if field == "duration" and isinstance(want, float) and isinstance(got, float):
        return abs(want - got) <= 1e-6
    return want == got


def match_rows(expected: list[dict[str, Any]], got: list[dict[str, Any]]) -> list[int | None]:
    """For each expected row, the index of the loopcap row it is compared with (None: missing)."""
    used: set[int] = set()
    out: list[int | None] = []
    for e in expected:
        pick = None
        for i, g in enumerate(got):
            if i not in used and all(e.get(k) is None or g[k] == e[k] for k in ID_FIELDS):
                pick = i
                break
        if pick is None and all(e.get(k) is not None for k in ID_FIELDS):
            want = {(e["id.orig_h"], e["id.orig_p"]), (e["id.resp_h"], e["id.resp_p"])}
            for i, g in enumerate(got):
                if i not in used and {(g["id.orig_h"], g["id.orig_p"]), (g["id.resp_h"], g["id.resp_p"])} == want:
                    pick = i
                    break
        if pick is not None:
            used.add(pick)
        out.append(pick)
    return out


def compared_fields(row: dict[str, Any]) -> list[str]:
    return [k for k in row if not k.startswith("_") and k not in NOT_COMPARED]


def row_differences(e: dict[str, Any], g: dict[str, Any]) -> dict[str, tuple[object, object]]:
    return {k: (e[k], g.get(k)) for k in compared_fields(e) if not _same(k, e[k], g.get(k))}


def _pair_id(pair: dict[str, Any]) -> str:
    return str(pair["expected"]).removeprefix("expected/").removesuffix(".json")


@pytest.mark.parametrize("index", range(len(PAIRS)), ids=[_pair_id(p) for p in PAIRS])
def test_zeek_rows_match_the_baseline(index: int) -> None:
    need_conformance()
    pair = PAIRS[index]
    expected = expected_rows(pair)
    got = run_pair(index).rows
    matches = match_rows(expected, got)
    problems = []
    extra_allowed = 0
    for n, (e, gi) in enumerate(zip(expected, matches, strict=True)):
        exc = EXCEPTIONS.get((pair["expected"], n))
        if gi is None:
            problems.append(f"row {n} ({[e.get(k) for k in ID_FIELDS]}) not produced")
            continue
        g = got[gi]
        diffs = row_differences(e, g)
        if exc is not None:
            extra_allowed += int(exc.get("extra_rows", 0))
            assert diffs, f"row {n} now agrees with Zeek: remove it from EXCEPTIONS ({exc['reason']})"
            pinned = {k: (v, g.get(k)) for k, v in exc["loopcap"].items() if not _same(k, v, g.get(k))}
            assert not pinned, f"row {n}: the deliberate difference changed: {pinned}"
            continue
        if diffs:
            problems.append(f"row {n} {[e.get(k) for k in ID_FIELDS]}: " +
                            ", ".join(f"{k}: zeek {w!r} loopcap {v!r}" for k, (w, v) in diffs.items()))
    extra = [g for i, g in enumerate(got) if i not in set(matches)]
    if len(extra) > extra_allowed:
        problems.append("rows Zeek does not log: " + "; ".join(
            f"{g['id.orig_h']}:{g['id.orig_p']} > {g['id.resp_h']}:{g['id.resp_p']} {g['conn_state']} {g['history']}"
            for g in extra))
    assert not problems, "\n".join(problems)


def agreement_table() -> dict[str, tuple[int, int]]:
    """field -> (rows agreeing with Zeek, rows where Zeek's baseline has the field), over every pair."""
    table: dict[str, list[int]] = {}
    for index, pair in enumerate(PAIRS):
        expected = expected_rows(pair)
        got = run_pair(index).rows
        for e, gi in zip(expected, match_rows(expected, got), strict=True):
            for k in compared_fields(e):
                if k == "tunnel_parents":
                    continue
                key = "endpoints" if k in ID_FIELDS else k
                cell = table.setdefault(key, [0, 0])
                ok = gi is not None and _same(k, e[k], got[gi].get(k))
                if key == "endpoints" and k != "id.orig_h":
                    continue  # one count per row for the four id fields together
                if key == "endpoints":
                    ok = gi is not None and all(e.get(f) is None or got[gi][f] == e[f] for f in ID_FIELDS)
                cell[0] += ok
                cell[1] += 1
            table.setdefault("rows", [0, 0])
            table["rows"][1] += 1
            table["rows"][0] += gi is not None and not row_differences(e, got[gi])
    return {k: (v[0], v[1]) for k, v in table.items()}


def test_agreement_table_counts_only_the_named_exceptions() -> None:
    """The table of the closing note: per field, rows matched / rows with that field in Zeek's baselines
    (run ``pytest -s`` to see it).  Everything that disagrees is in EXCEPTIONS."""
    need_conformance()
    table = agreement_table()
    width = max(len(k) for k in table)
    print()
    for k, (ok, tot) in sorted(table.items()):
        print(f"  {k:<{width}}  {ok:>4} / {tot}")
    assert table["rows"][1] - table["rows"][0] == len(EXCEPTIONS)
    assert table["rows"][1] >= 159


def test_options_follow_the_manifest() -> None:
    need_conformance()
    by_trace = {(p["trace_file"], p["role"], p["expected"]): options_for(p) for p in PAIRS}
    bare = next(o for (t, _, _), o in by_trace.items() if t.endswith("tcp__single-rst.pcap"))
    assert (80, "tcp") not in bare.likely_server_ports and bare.checksums == "ignore"
    full = next(o for (t, _, _), o in by_trace.items() if t.endswith("wikipedia.pcap"))
    assert (80, "tcp") in full.likely_server_ports and (5353, "udp") in full.likely_server_ports
    ign = next(o for (_, _, e), o in by_trace.items() if "ignore-checksums" in e)
    assert ign.checksums == "verify" and ign.ignore_checksums_nets == (ipaddress.ip_network("192.168.0.0/16"),)
    bcast = next(o for (t, _, _), o in by_trace.items() if t.endswith("udp-broadcast.pcap"))
    assert (40190, "udp") in bcast.likely_server_ports
    gaps = next(o for (t, _, _), o in by_trace.items() if t.endswith("miss_end_data.pcap"))
    assert gaps.report_gaps_for_partial and gaps.checksums == "verify"


def test_loopback_checksum_default_matches_zeek_minus_c() -> None:
    """The default checksum policy ("auto": partial offloaded checksums accepted) gives, on the Zeek
    trace whose client packets carry offloaded checksums, exactly what Zeek gives with those
    checksums ignored - one SF connection - while "verify" reproduces Zeek's default split rows."""
    need_conformance()
    trace = CONFORMANCE / "traces" / "chksums__localhost-bad-chksum.pcap"
    base = next(p for p in PAIRS if p["trace_file"].endswith("localhost-bad-chksum.pcap") and p["role"] == "primary")
    auto = zeek_analyze(trace, ZeekOptions(likely_server_ports=options_for(base).likely_server_ports))
    assert [(r["conn_state"], r["history"]) for r in auto.rows] == [("SF", "ShADadFf")]
    assert auto.checksums.accepted_partial == 6 and auto.checksums.discarded == 0
    strict = zeek_analyze(trace, options_for(base))
    assert [(r["conn_state"], r["history"]) for r in strict.rows] == [("OTH", "C"), ("SH", "HcADF")]
    assert strict.checksums.discarded_partial == 6
