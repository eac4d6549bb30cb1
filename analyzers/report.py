"""A self-contained HTML report of one capture.

One file, nothing fetched when it is opened (no CDN, no web fonts, no network): a summary table of
the TCP connections and UDP conversations, the warnings, then each connection with its ladder
diagram (inline SVG from :mod:`analyzers.ladder`), handshake and teardown, payload previews, HTTP
messages, and the peers' summaries where the document has them (``doc["tcp"][i]["zeek"]``,
``doc["tcp"][i]["analysis"]``), then each UDP conversation datagram by datagram.

Rendered from the ``loopcap/1`` document only.  Every string from the capture is HTML-escaped.
A little inline JavaScript filters (also from the address: ``report.html#filter=9999``) and sorts
the summary table and, once the page is drawn, writes how many arrows it drew into
``<body data-arrows-drawn=...>`` (the browser test reads it).
"""

from __future__ import annotations

import json
import os
from html import escape
from typing import Any

from analyzers.ladder import (
    DEFAULT_MAX_CONTROL,
    PacketLog,
    endpoint_label,
    human_bytes,
    render_svg,
)
from analyzers.services import port_label

#: connections drawn as ladders at most (the summary table always lists every one)
MAX_LADDERS = 200
#: datagrams listed per UDP conversation at most
MAX_DATAGRAMS = 200
#: rows of a peer's summary table shown at most (per table)
MAX_PEER_ROWS = 40
#: packets kept at each end of a connection for the report's ladders
REPORT_HEAD = 10
REPORT_TAIL = 6

PEERS = (
    ("zeek", "Zeek conn.log"),
    ("analysis", "TCP analysis (Wireshark's tcp.analysis flags)"),
)

CSS = """
:root { --fg:#111827; --muted:#6b7280; --line:#e5e7eb; --bg:#ffffff; --soft:#f9fafb; --accent:#1d4ed8;
        --ok:#047857; --bad:#b91c1c; --warn:#b45309; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 64px; color: var(--fg); background: var(--bg);
       font: 14px/1.45 "DejaVu Sans", Helvetica, Arial, sans-serif; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
code, pre, .mono { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
pre { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px;
      white-space: pre-wrap; word-break: break-all; margin: 4px 0 10px; }
.meta { color: var(--muted); margin: 0 0 12px; }
nav a { margin-right: 16px; color: var(--accent); }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; cursor: pointer; user-select: none; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.hidden, section.hidden { display: none; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px; border: 1px solid; }
.ok { color: var(--ok); border-color: #a7f3d0; background: #ecfdf5; }
.bad { color: var(--bad); border-color: #fecaca; background: #fef2f2; }
.warn { color: var(--warn); border-color: #fde68a; background: #fffbeb; }
.neutral { color: var(--muted); border-color: var(--line); background: var(--soft); }
.warnings li { color: var(--warn); }
.ladder { overflow-x: auto; border: 1px solid var(--line); border-radius: 8px; padding: 8px; margin: 8px 0;
          background: #fff; }
.ladder svg { display: block; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 6px 0 12px; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
.toolbar { margin: 8px 0; display: flex; gap: 12px; align-items: center; }
.toolbar input { padding: 4px 8px; min-width: 280px; border: 1px solid #d1d5db; border-radius: 6px; }
#status { color: var(--muted); }
details > summary { cursor: pointer; color: var(--accent); margin: 4px 0; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
"""

JS = """
(function () {
  "use strict";
  var filter = document.getElementById("filter");
  function applyFilter() {
    var q = (filter && filter.value || "").toLowerCase().trim();
    var shown = 0;
    document.querySelectorAll("table.summary tbody tr").forEach(function (tr) {
      var hit = !q || tr.textContent.toLowerCase().indexOf(q) >= 0;
      tr.classList.toggle("hidden", !hit);
      var sec = document.getElementById(tr.getAttribute("data-target"));
      if (sec) { sec.classList.toggle("hidden", !hit); }
      if (hit) { shown += 1; }
    });
    var st = document.getElementById("status");
    if (st) { st.textContent = shown + " of " + document.querySelectorAll("table.summary tbody tr").length
                               + " connections and conversations shown"; }
  }
  if (filter) {
    filter.addEventListener("input", applyFilter);
    var m = /^#filter=(.*)$/.exec(window.location.hash || "");  /* a shareable filtered view */
    if (m) { filter.value = decodeURIComponent(m[1]); }
  }
  document.querySelectorAll("table.summary").forEach(function (table) {
    table.querySelectorAll("th").forEach(function (th, col) {
      th.addEventListener("click", function () {
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var asc = th.getAttribute("data-sort") !== "asc";
        table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("data-sort"); });
        th.setAttribute("data-sort", asc ? "asc" : "desc");
        rows.sort(function (a, b) {
          var x = a.cells[col].getAttribute("data-v") || a.cells[col].textContent;
          var y = b.cells[col].getAttribute("data-v") || b.cells[col].textContent;
          var nx = parseFloat(x), ny = parseFloat(y);
          var r = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
          return asc ? r : -r;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  applyFilter();
  var drawn = 0;
  document.querySelectorAll(".lc-arrow").forEach(function (a) {
    var b = a.getBBox();
    if (b.width > 0) { drawn += 1; }
  });
  document.body.setAttribute("data-arrows-drawn", String(drawn));
  document.body.setAttribute("data-ready", "1");
})();
"""


def _e(s: object) -> str:
    return escape(str(s), quote=True)


def _badge(text: str, cls: str) -> str:
    return f'<span class="badge {cls}">{_e(text)}</span>'


def _ep(e: dict[str, Any]) -> str:
    ip = f"[{e['ip']}]" if ":" in e["ip"] else e["ip"]
    return f"{ip}:{port_label(e['port'])}"


def _handshake_badge(hs: dict[str, Any]) -> str:
    if hs["complete"]:
        return _badge("complete", "ok") if hs["valid"] else _badge("INVALID", "bad")
    if hs.get("refused"):
        return _badge("refused", "bad")
    if hs["syn"] is None and hs["syn_ack"] is None:
        return _badge("not captured", "neutral")
    return _badge("incomplete", "warn")


def _teardown_badge(td: dict[str, Any]) -> str:
    kind = td["kind"]
    cls = {"reset": "bad", "none": "neutral", "one-sided": "warn"}.get(kind, "ok")
    return _badge(kind, cls)


def _facts(pairs: list[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in pairs) + "</dl>"


def _value_html(v: Any, depth: int = 0) -> str:
    if isinstance(v, dict):
        if depth >= 2 or not v:
            return f"<code>{_e(json.dumps(v, sort_keys=True))}</code>"
        items = list(v.items())
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_value_html(x, depth + 1)}</td></tr>"
                       for k, x in items[:MAX_PEER_ROWS])
        if len(items) > MAX_PEER_ROWS:
            rows += f'<tr><td colspan="2">... {len(items) - MAX_PEER_ROWS:,} more</td></tr>'
        return f'<table class="peer">{rows}</table>'
    if isinstance(v, list):
        if all(not isinstance(x, (dict, list)) for x in v):
            return _e(", ".join(str(x) for x in v[:50]) + (f" ... ({len(v)} in all)" if len(v) > 50 else ""))
        text = json.dumps(v[:20], sort_keys=True)
        return f"<code>{_e(text[:2000])}</code>"
    if v is None:
        return '<span class="neutral">-</span>'
    if isinstance(v, bool):
        return "yes" if v else "no"
    return _e(v)


def _peers(item: dict[str, Any]) -> str:
    out = []
    for key, name in PEERS:
        v = item.get(key)
        if v is None:
            continue
        out.append(f'<div class="peer-summary" data-peer="{_e(key)}"><h3>{_e(name)}</h3>{_value_html(v)}</div>')
    return "".join(out)


def _payload(c: dict[str, Any]) -> str:
    out = ["<h3>Data exchanged</h3>"]
    for side, other in (("client", "server"), ("server", "client")):
        p = c["payload"][side]
        head = (f"{side} &gt; {other}: {p['bytes']:,} bytes in {p['segments']:,} segment"
                f"{'' if p['segments'] == 1 else 's'}")
        if not p["complete"]:
            head += " " + _badge("incomplete", "warn")
        out.append(f'<div class="payload" data-side="{side}"><div>{head}</div>')
        if p["bytes"]:
            out.append(f'<pre class="preview">{_e(p["preview"])}</pre>')
        for g in p["gaps"]:
            out.append(f'<div class="warn">gap: {g["length"]:,} bytes missing at offset {g["offset"]:,} '
                       f'(noticed at frame {g["frame"]})</div>')
        msgs = p.get("http") or []
        if msgs:
            out.append("<ul class='http'>")
            for m in msgs[:20]:
                if m["kind"] == "request":
                    what = f"{m['method']} {m['target']} {m['version']}"
                else:
                    what = f"{m['status']} {m['reason']}"
                out.append(f"<li>HTTP {m['kind']} #{m['frame']}: <code>{_e(what)}</code>; header "
                           f"{m['header_bytes']:,} B, body {m['body_bytes']:,} B ({_e(m['body_framing'])})</li>")
            if len(msgs) > 20:
                out.append(f"<li>... {len(msgs) - 20} more</li>")
            out.append("</ul>")
        out.append("</div>")
    return "".join(out)


def _tcp_section(c: dict[str, Any], with_ladder: bool) -> str:
    s = c["stream"]
    hs, td = c["handshake"], c["teardown"]
    ipv = "IPv6" if c["ip_version"] == 6 else "IPv4"
    title = f"TCP connection {s} (tcp.stream eq {s}), {ipv}: {_ep(c['client'])} &rarr; {_ep(c['server'])}"
    facts: list[tuple[str, str]] = [
        ("client", f"<code>{_e(endpoint_label(c['client']))}</code>"),
        ("server", f"<code>{_e(endpoint_label(c['server']))}</code>"),
        ("roles", _e(c["roles_by"]) + (" " + _badge("guessed", "warn") if c["roles_inferred"] else "")),
        ("frames", f"{c['frames']['first']}-{c['frames']['last']} ({c['frames']['count']:,} packets)"),
        ("duration", f"{c['time']['duration']:.6f} s"),
        ("handshake", _handshake_badge(hs) + (f" initial RTT {hs['rtt'] * 1000:.3f} ms" if hs["rtt"] is not None
                                               else "")),
    ]
    tdtext = _teardown_badge(td)
    if td["initiator"]:
        tdtext += f" initiated by the {_e(td['initiator'])}"
    if td["reset_by"]:
        tdtext += f"; RST by {_e(td['reset_by'])}"
    if td["time_wait"]:
        tdtext += f"; TIME_WAIT: {_e(', '.join(td['time_wait']))}"
    facts.append(("teardown", tdtext))
    final = c["states"]["final"]
    facts.append(("final states", f"client {_e(final['client'])}, server {_e(final['server'])}"))
    parts = [f'<section class="conn" id="tcp-{s}" data-stream="{s}" data-teardown="{_e(td["kind"])}">',
             f"<h2>{title}</h2>", _facts(facts)]
    if with_ladder:
        lg = c.get("ladder")
        note = ""
        if lg and lg["folded"]:
            note = f" ({lg['folded']:,} of {lg['packets']:,} packets folded)"
        elif not lg:
            note = " (handshake and teardown only: the packets were not logged)"
        parts.append(f'<h3>Ladder{_e(note)}</h3><div class="ladder">{render_svg(c, id_prefix=f"lc{s}")}</div>')
    parts.append(_payload(c))
    parts.append(_peers(c))
    parts.append("</section>")
    return "".join(parts)


def _udp_section(u: dict[str, Any]) -> str:
    s = u["stream"]
    ipv = "IPv6" if u["ip_version"] == 6 else "IPv4"
    n = len(u["datagrams"])
    rows = []
    for d in u["datagrams"][:MAX_DATAGRAMS]:
        arrow = "client &rarr; server" if d["from"] == "client" else "server &rarr; client"
        rows.append(f'<tr><td class="num">{d["frame"]}</td><td>{arrow}</td><td class="num">{d["len"]:,}</td>'
                    f'<td><code>{_e(d["preview"])}</code></td></tr>')
    more = f"<p>... {n - MAX_DATAGRAMS:,} more datagrams</p>" if n > MAX_DATAGRAMS else ""
    return (f'<section class="udp" id="udp-{s}" data-stream="{s}"><h2>UDP conversation {s} '
            f"(udp.stream eq {s}), {ipv}: {_ep(u['client'])} &rarr; {_ep(u['server'])}</h2>"
            + _facts([("datagrams", f"{n:,}: client {u['packets']['client']:,} "
                       f"({human_bytes(u['payload_bytes']['client'])}), server {u['packets']['server']:,} "
                       f"({human_bytes(u['payload_bytes']['server'])})"),
                      ("duration", f"{u['time']['duration']:.6f} s")])
            + '<table class="datagrams"><thead><tr><th class="num">frame</th><th>direction</th>'
              '<th class="num">bytes</th><th>preview</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>" + more + _peers(u) + "</section>")


def _summary_table(doc: dict[str, Any]) -> str:
    rows = []
    for c in doc["tcp"]:
        s = c["stream"]
        pc, ps = c["payload"]["client"], c["payload"]["server"]
        rows.append(
            f'<tr data-target="tcp-{s}" data-kind="tcp"><td class="num" data-v="{s}"><a href="#tcp-{s}">tcp {s}</a></td>'
            f"<td><code>{_e(endpoint_label(c['client']))}</code></td>"
            f"<td><code>{_e(endpoint_label(c['server']))}</code></td>"
            f'<td class="num">{c["frames"]["count"]:,}</td>'
            f'<td class="num" data-v="{pc["bytes"]}">{human_bytes(pc["bytes"])}</td>'
            f'<td class="num" data-v="{ps["bytes"]}">{human_bytes(ps["bytes"])}</td>'
            f"<td>{_handshake_badge(c['handshake'])}</td><td>{_teardown_badge(c['teardown'])}</td>"
            f"<td>{_e(c['teardown']['initiator'] or '-')}</td>"
            f'<td class="num" data-v="{c["time"]["duration"]}">{c["time"]["duration"]:.6f}</td></tr>')
    for u in doc["udp"]:
        s = u["stream"]
        rows.append(
            f'<tr data-target="udp-{s}" data-kind="udp"><td class="num" data-v="{100000000 + s}">'
            f'<a href="#udp-{s}">udp {s}</a></td>'
            f"<td><code>{_e(endpoint_label(u['client']))}</code></td>"
            f"<td><code>{_e(endpoint_label(u['server']))}</code></td>"
            f'<td class="num">{len(u["datagrams"]):,}</td>'
            f'<td class="num" data-v="{u["payload_bytes"]["client"]}">{human_bytes(u["payload_bytes"]["client"])}</td>'
            f'<td class="num" data-v="{u["payload_bytes"]["server"]}">{human_bytes(u["payload_bytes"]["server"])}</td>'
            f"<td>{_badge('UDP', 'neutral')}</td><td>-</td><td>-</td>"
            f'<td class="num" data-v="{u["time"]["duration"]}">{u["time"]["duration"]:.6f}</td></tr>')
    head = ("<tr><th class='num'>stream</th><th>client</th><th>server</th><th class='num'>packets</th>"
            "<th class='num'>client sent</th><th class='num'>server sent</th><th>handshake</th><th>teardown</th>"
            "<th>closed first</th><th class='num'>duration (s)</th></tr>")
    return f'<table class="summary" id="summary-table"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def render_report(doc: dict[str, Any], *, title: str | None = None, max_ladders: int = MAX_LADDERS) -> str:
    """The HTML report of a ``loopcap/1`` document (best with ``ladder`` rows from a PacketLog)."""
    from loopcap import __version__

    name = os.path.basename(doc["file"]) if doc.get("file") else "capture"
    title = title or f"loopcap report: {name}"
    t = doc["time"]
    dur = (t["last"] - t["first"]) if t["first"] is not None and t["last"] is not None else 0.0
    lts = ", ".join(x["name"] for x in doc.get("link_types", [])) or "no link type"
    ntcp, nudp = len(doc["tcp"]), len(doc["udp"])
    meta = (f"{_e(doc.get('file') or '')} &middot; {_e(doc.get('format') or '')} capture, {_e(lts)} &middot; "
            f"{doc['packets']:,} packets over {dur:.6f} s &middot; {ntcp:,} TCP connection"
            f"{'' if ntcp == 1 else 's'}, {nudp:,} UDP conversation{'' if nudp == 1 else 's'}")
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             # nothing may be fetched: the page is complete as it is
             "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
             "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">",
             f"<title>{_e(title)}</title><style>{CSS}</style></head>",
             f'<body data-schema="{_e(doc.get("schema", ""))}" data-tcp="{ntcp}" data-udp="{nudp}">',
             f"<header><h1>{_e(title)}</h1><p class='meta'>{meta}</p>",
             '<nav><a href="#summary">Summary</a>'
             + ('<a href="#warnings">Warnings</a>' if doc["warnings"] else "")
             + ('<a href="#connections">TCP connections</a>' if ntcp else "")
             + ('<a href="#conversations">UDP conversations</a>' if nudp else "") + "</nav></header>",
             '<section id="summary"><h2>Summary</h2>']
    if ntcp or nudp:
        parts.append('<div class="toolbar"><input id="filter" type="search" '
                     'placeholder="filter: port, address, teardown kind..." aria-label="filter">'
                     '<span id="status"></span></div>')
        parts.append(_summary_table(doc))
    else:
        parts.append("<p>No TCP connections or UDP conversations in this capture.</p>")
    parts.append("</section>")
    if doc["warnings"]:
        parts.append('<section id="warnings"><h2>Warnings</h2><ul class="warnings">'
                     + "".join(f"<li>{_e(w)}</li>" for w in doc["warnings"]) + "</ul></section>")
    if ntcp:
        parts.append('<div id="connections">')
        for i, c in enumerate(doc["tcp"]):
            parts.append(_tcp_section(c, with_ladder=i < max_ladders))
        if ntcp > max_ladders:
            parts.append(f"<p>Ladders are drawn for the first {max_ladders:,} connections only.</p>")
        parts.append("</div>")
    if nudp:
        parts.append('<div id="conversations">')
        parts.extend(_udp_section(u) for u in doc["udp"])
        parts.append("</div>")
    parts.append(f"<footer>Made by loopcap {_e(__version__)} from the loopcap/1 analysis; "
                 "self-contained: opening it needs no network.</footer>")
    parts.append(f"<script>{JS}</script></body></html>")
    return "\n".join(parts) + "\n"


def report_observers(max_ladders: int = MAX_LADDERS) -> list[PacketLog]:
    """The observers the report needs: a packet log of the first ``max_ladders`` connections."""
    return [PacketLog(lambda s: s < max_ladders, head=REPORT_HEAD, tail=REPORT_TAIL,
                      max_control=DEFAULT_MAX_CONTROL)]


def build_report(path: str | os.PathLike[str], *, title: str | None = None,
                 server_ports: frozenset[int] = frozenset()) -> str:
    """Analyze a capture and return its HTML report."""
    from analyzers.analysis import AnalysisOptions, analyze_file

    res = analyze_file(path, AnalysisOptions(server_ports=server_ports, observers=list(report_observers())))
    return render_report(res.to_dict(), title=title)
