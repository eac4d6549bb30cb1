"""The three analysis loops (blocks of records, records one at a time, the reference) give the same
documents, streamed or not, on interleaved traffic that mixes every path a segment can take: HTTP
keep-alive on both sides, bulk data with lost and resent segments, retransmissions, keep-alive
probes, reordering, a reused 4-tuple, UDP and ICMP errors in between, idle gaps, expiry points and
block boundaries anywhere."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest
from pcapbuild import Frame, addr, ethernet, icmp_error, ip_packet, pcap_file, tcp_packet, udp_packet

import analyzers.analysis as analysis
import analyzers.pcapfile as pcapfile
from analyzers import blockloop
from analyzers.analysis import AnalysisOptions, analyze_file
from analyzers.decode import Decoder
from analyzers.streaming import analyze_file_to_json

pytestmark = pytest.mark.skipif(not blockloop.HAVE_NUMPY, reason="numpy is not installed: the block loop is off")

SEC = 1_000_000_000


def _connection(rng: random.Random, host: str, port: int, server_port: int) -> list[tuple[int, bytes]]:
    """One connection's packets, with the pause before each (ns), in its own order."""
    cli, srv = (host, port), (host, server_port)
    isn_c, isn_s = rng.randrange(2**32), rng.randrange(2**32)
    sc, ss = 1, 1  # next relative sequence numbers
    out: list[tuple[int, bytes]] = []

    def seg(from_client: bool, flags: str, data: bytes = b"", *, seq_off: int = 0, pause: int = 1000) -> None:
        s, d = (cli, srv) if from_client else (srv, cli)
        seq = (isn_c + sc if from_client else isn_s + ss) + seq_off
        ack = (isn_s + ss if from_client else isn_c + sc) if "A" in flags else 0
        out.append((pause, ethernet(tcp_packet(s[0], s[1], d[0], d[1], seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags,
                                               payload=data))))

    out.append((1000, ethernet(tcp_packet(cli[0], cli[1], srv[0], srv[1], isn_c, 0, "S"))))
    out.append((1000, ethernet(tcp_packet(srv[0], srv[1], cli[0], cli[1], isn_s, isn_c + 1, "SA"))))
    seg(True, "A")
    style = rng.choice(["http", "bulk", "echo", "sleepy"])
    for _ in range(rng.randrange(1, 6)):
        if style == "http":
            method = rng.choice([b"GET", b"HEAD", b"GET"])
            req = method + b" /x HTTP/1.1\r\nHost: h\r\n\r\n"
            for part in (req[:10], req[10:]) if rng.random() < 0.3 else (req,):
                seg(True, "PA", part)
                sc += len(part)
            body = b"" if method == b"HEAD" else rng.randbytes(rng.randrange(0, 3000))
            resp = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(body) if method != b"HEAD" else 77) + body
            for i in range(0, len(resp), 1000):
                seg(False, "PA" if i + 1000 >= len(resp) else "A", resp[i:i + 1000])
                ss += len(resp[i:i + 1000])
            seg(True, "A")
        elif style == "bulk":
            lost: list[tuple[int, bytes]] = []
            for j in range(rng.randrange(5, 40)):
                data = rng.randbytes(rng.choice([1, 100, 1448]))
                seg(True, "A", data)
                sc += len(data)
                if not lost and rng.random() < 0.15:
                    lost.append(out.pop())  # lost on the way: sent again two segments later
                elif lost and j % 3 == 0:
                    out.append(lost.pop())
                if rng.random() < 0.5:
                    seg(False, "A")
            out += lost
        else:
            data = rng.randbytes(rng.randrange(1, 50))
            seg(True, "PA", data, pause=700 * SEC if style == "sleepy" and rng.random() < 0.3 else 1000)
            sc += len(data)
            seg(False, "PA", data)
            ss += len(data)
        r = rng.random()  # a disturbance now and then
        if r < 0.1:
            seg(True, "A", seq_off=-1)  # a keep-alive probe
        elif r < 0.2 and len(out) > 4:
            out.append(out[-2])  # a retransmission
        elif r < 0.25 and len(out) > 5:
            out[-1], out[-2] = out[-2], out[-1]  # reordered
    ending = rng.choice(["four-way", "three-way", "rst", "open"])
    if ending == "rst":
        seg(rng.random() < 0.5, "RA")
    elif ending != "open":
        seg(True, "FA")
        sc += 1
        if ending == "four-way":
            seg(False, "A")
        seg(False, "FA")
        ss += 1
        seg(True, "A")
    return out


def traffic(seed: int) -> bytes:
    """Connections (IPv4 and IPv6, one 4-tuple used twice) interleaved, with UDP datagrams and ICMP
    errors quoting a connection's header in between."""
    rng = random.Random(seed)
    flows = []
    servers = [rng.choice([80, 8080, 9000]) for _ in range(10)]
    for c in range(10):
        host = "::1" if c % 3 == 2 else "127.0.0.1"
        flows.append(_connection(rng, host, 40000 + c, servers[c]))
    flows.append(_connection(rng, "127.0.0.1", 40000, servers[0]))  # flow 0's 4-tuple again, after it
    frames: list[Frame] = []
    t = SEC
    cursors = [0] * len(flows)
    while True:
        live = [i for i, f in enumerate(flows) if cursors[i] < len(f) and (i < len(flows) - 1 or cursors[0] >= len(
            flows[0]))]
        if not live:
            break
        i = rng.choice(live)
        pause, pkt = flows[i][cursors[i]]
        cursors[i] += 1
        t += pause
        frames.append(Frame(t, pkt))
        r = rng.random()
        if r < 0.05:
            t += 1000
            frames.append(Frame(t, ethernet(udp_packet("127.0.0.1", 5353, "127.0.0.1", 5354, b"q"))))
        elif r < 0.07:
            quoted = ip_packet("127.0.0.1", "127.0.0.1", 6, pkt[34:54]) if pkt[12:14] == b"\x08\x00" else None
            if quoted is not None:
                t += 1000
                frames.append(Frame(t, ethernet(ip_packet("127.0.0.1", "127.0.0.1", 1, icmp_error(
                    3, 3, quoted, src=addr("127.0.0.1"), dst=addr("127.0.0.1"))))))
    return pcap_file(frames)


def documents(path: Path, streamed: bool) -> list[str]:
    """The document from the block loop, the record-at-a-time fast loop and the reference loop."""
    def one(options: AnalysisOptions) -> str:
        if streamed:
            out = io.StringIO()
            analyze_file_to_json(path, out, options)
            return out.getvalue()
        return repr(analyze_file(path, options).to_dict())

    docs = [one(AnalysisOptions())]
    mp = pytest.MonkeyPatch()
    with mp.context() as m:
        m.setenv("LOOPCAP_NO_NUMPY", "1")
        docs.append(one(AnalysisOptions()))
    docs.append(one(AnalysisOptions(decoder_factory=Decoder)))
    return docs


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("streamed", [False, True])
def test_the_three_loops_give_the_same_documents_on_interleaved_mixed_traffic(
        seed: int, streamed: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "t.pcap"
    f.write_bytes(traffic(seed))
    monkeypatch.setattr(pcapfile, "BLOCK_READ_BYTES", [3000, 20000, 1 << 20][seed % 3])
    monkeypatch.setattr(analysis, "EXPIRE_EVERY", [7, 64, 4096][seed % 3])
    blocks, records, reference = documents(f, streamed)
    assert blocks == reference
    assert records == reference


def test_a_segment_left_for_its_own_turn_starts_its_new_stream_after_the_streams_begun_before_it(
        tmp_path: Path) -> None:
    """Two stray ACKs of a closed connection, 61 s apart (past its linger), with another
    connection's SYN between them: the second ACK starts a new stream, numbered after that SYN's."""
    h = "127.0.0.1"
    b = (h, 80)

    def pkt(fwd: bool, seq: int, ack: int, flags: str, sport: int = 40001) -> bytes:
        s, d = ((h, sport), b) if fwd else (b, (h, sport))
        return ethernet(tcp_packet(s[0], s[1], d[0], d[1], seq, ack, flags))

    pkts = [(0, pkt(True, 100, 0, "S")), (1, pkt(False, 500, 101, "SA")), (2, pkt(True, 101, 501, "A")),
            (3, pkt(True, 101, 501, "FA")), (4, pkt(False, 501, 102, "FA")), (5, pkt(True, 102, 502, "A")),
            (6, pkt(True, 102, 502, "A")), (7, pkt(True, 7000, 0, "S", sport=40002)),
            (6 + 61 * SEC, pkt(True, 102, 502, "A"))]
    f = tmp_path / "t.pcap"
    f.write_bytes(pcap_file(Frame(SEC + t, p) for t, p in pkts))
    docs = documents(f, streamed=True)
    assert docs[0] == docs[2] and docs[1] == docs[2]
    firsts = [(c["stream"], c["frames"]["first"]) for c in json.loads(docs[0])["tcp"]]
    assert firsts == [(0, 1), (1, 8), (2, 9)]
