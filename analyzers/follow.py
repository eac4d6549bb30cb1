"""Follow TCP/UDP Stream: a connection's reassembled payload, chunk by chunk, like Wireshark.

Formats: ``ascii`` (non-printable bytes as dots; server chunks indented with a tab, as tshark's
``-z follow,tcp,ascii``), ``hex`` (a hexdump per chunk), ``raw`` (one hex string per chunk, as
tshark's ``raw``) and ``binary`` (the bytes themselves, for redirecting to a file).  Gaps are shown as
``[N bytes missing in capture file]`` lines, never filled with zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

from analyzers.decode import format_ip
from analyzers.tcp import TcpConnection
from analyzers.udp import UdpConversation


@dataclass
class Chunk:
    side: str  # "client" or "server"
    frame: int
    data: bytes
    gap: int = 0  # > 0: a gap marker of this many bytes instead of data


def tcp_chunks(c: TcpConnection) -> list[Chunk]:
    cd = c.client_dir if c.client_dir is not None else 0
    items: list[tuple[int, int, Chunk]] = []
    for d in (0, 1):
        side = "client" if d == cd else "server"
        asm = c.assembler[d]
        data = bytes(asm.kept)
        gaps = sorted(asm.gaps, key=lambda g: g.offset)
        gi = 0
        pos = 0
        for frame, length in asm.chunks:
            while gi < len(gaps) and gaps[gi].offset <= pos:
                items.append((gaps[gi].frame, 0, Chunk(side, gaps[gi].frame, b"", gaps[gi].length)))
                gi += 1
            items.append((frame, 1, Chunk(side, frame, data[pos:pos + length])))
            pos += length
        for g in gaps[gi:]:
            items.append((g.frame, 0, Chunk(side, g.frame, b"", g.length)))
    items.sort(key=lambda x: (x[0], x[1]))
    # merge consecutive chunks of one frame and side
    out: list[Chunk] = []
    for _, _, ch in items:
        if out and not ch.gap and not out[-1].gap and out[-1].side == ch.side and out[-1].frame == ch.frame:
            out[-1].data += ch.data
        else:
            out.append(ch)
    return out


def udp_chunks(u: UdpConversation) -> list[Chunk]:
    return [Chunk("client" if r.direction == 0 else "server", r.frame, r.payload or b"") for r in u.datagrams]


def _ascii(data: bytes) -> str:
    return "".join(chr(b) if 0x20 <= b < 0x7F or b in (0x0A, 0x0D, 0x09) else "." for b in data)


def _hexdump(data: bytes, start: int) -> list[str]:
    lines = []
    for i in range(0, len(data), 16):
        row = data[i:i + 16]
        hx = " ".join(f"{b:02x}" for b in row)
        if len(row) > 8:
            hx = hx[:23] + " " + hx[23:]
        lines.append(f"{start + i:08X}  {hx:<49} {''.join(chr(b) if 0x20 <= b < 0x7F else '.' for b in row)}")
    return lines


def render_follow(chunks: list[Chunk], fmt: str, *, proto: str, stream: int, nodes: tuple[str, str],
                  direction: str | None = None) -> str | bytes:
    chunks = [c for c in chunks if direction is None or c.side == direction]
    if fmt == "binary":
        return b"".join(c.data for c in chunks)
    out = ["=" * 67, f"Follow: {proto},{fmt}", f"Filter: {proto}.stream eq {stream}",
           f"Node 0: {nodes[0]}", f"Node 1: {nodes[1]}"]
    offs = {"client": 0, "server": 0}
    for c in chunks:
        ind = "\t" if c.side == "server" else ""
        if c.gap:
            out.append(f"{ind}[{c.gap} bytes missing in capture file]")
            continue
        if fmt == "ascii":
            out.append(f"{ind}{len(c.data)}")
            text = _ascii(c.data)
            out.extend(ind + ln for ln in text.split("\n"))
        elif fmt == "hex":
            out.extend(ind + ln for ln in _hexdump(c.data, offs[c.side]))
        else:  # raw
            out.append(ind + c.data.hex())
        offs[c.side] += len(c.data)
    out.append("=" * 67)
    return "\n".join(out) + "\n"


def node(ep: tuple[bytes, int]) -> str:
    ip = format_ip(ep[0])
    return f"[{ip}]:{ep[1]}" if ":" in ip else f"{ip}:{ep[1]}"
