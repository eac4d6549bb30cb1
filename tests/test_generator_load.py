"""The traffic generators under load and against clients that misbehave.

* The ``concurrent`` scenario with 500 clients completes, every connection's bytes verified on
  both sides (and, live, captured and checked against the analysis of the capture).
* A client that connects and says nothing, sends garbage, trickles bytes, or disconnects in the
  middle of a message cannot hang or crash a server: it fails alone (a typed GeneratorError naming
  it at ``close()``), within ``io_timeout`` / ``connection_timeout``, while well-behaved clients are
  served at the same time; at most ``max_active`` connections are handled at once.
* A UDP server keeps answering through garbage, empty and maximum-size datagrams, and clients that
  are gone before their reply arrives (ICMP port unreachable).

All traffic is on 127.0.0.1, every loop bounded.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from capture.generators import (
    SCENARIOS,
    GeneratorError,
    Manifest,
    ServerHandle,
    open_socket_count,
    run_client,
    run_scenario,
    start_server,
)
from capture.generators import runner as runner_module
from capture.live import privileges

TUTORIAL_ECHO_SENT = b"MichaelTracySarahexit"
TUTORIAL_ECHO_RECEIVED = b"Welcome!Hello, Michael!Hello, Tracy!Hello, Sarah!"
SERVER_SCENARIOS = [name for name, info in SCENARIOS.items() if info.has_server]
TCP_SERVERS = [name for name in SERVER_SCENARIOS if "tcp" in SCENARIOS[name].transports]


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = [t for t in threading.enumerate() if t not in before and t.name.startswith("loopcap-")]
        if not left and open_socket_count() == 0:
            break
        time.sleep(0.05)
    assert [t.name for t in threading.enumerate() if t not in before and t.name.startswith("loopcap-")] == []
    assert open_socket_count() == 0


def assert_echo_connections_verified(manifest: Manifest, n: int) -> None:
    assert manifest.consistency_problems() == []
    assert [c.index for c in manifest.tcp] == list(range(n))
    assert len({c.client.port for c in manifest.tcp}) == n
    for c in manifest.tcp:
        assert c.client_sent is not None and c.server_received is not None
        assert c.client_sent.data == c.server_received.data == TUTORIAL_ECHO_SENT
        assert c.server_sent is not None and c.client_received is not None
        assert c.server_sent.data == c.client_received.data == TUTORIAL_ECHO_RECEIVED


# ---------------------------------------------------------------------------------------------
# load


def test_concurrent_scenario_with_500_clients_verifies_every_connection() -> None:
    t0 = time.monotonic()
    manifest = run_scenario("concurrent", clients=500)
    assert time.monotonic() - t0 < 30
    assert_echo_connections_verified(manifest, 500)


def test_concurrent_scenario_accepts_up_to_1000_clients_and_no_more() -> None:
    with pytest.raises(GeneratorError, match="must be 1 to 1000"):
        run_scenario("concurrent", clients=1001)


@pytest.mark.live
@pytest.mark.skipif(not privileges.has_cap_net_raw(), reason="live capture needs root or CAP_NET_RAW")
@pytest.mark.parametrize("backend", ["scapy", pytest.param("pyshark", marks=pytest.mark.skipif(
    not os.environ.get("LOOPCAP_LOAD_FULL"), reason="35 s (pyshark reads 9000 packets back); LOOPCAP_LOAD_FULL=1"))])
def test_500_concurrent_clients_captured_live_match_the_analysis_connection_by_connection(
        backend: str, tmp_path: Path) -> None:
    from capture.lab import capture_scenario

    run = capture_scenario("concurrent", output=tmp_path / "c500.pcapng", backend=backend, options={"clients": 500})
    assert run.check.ok, run.check.failures[:5]
    assert len(run.analysis.tcp) == 500 and run.stats.packets_dropped == 0
    assert_echo_connections_verified(run.manifest, 500)


# ---------------------------------------------------------------------------------------------
# misbehaving clients


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def silent(port: int) -> None:
    """Connects, says nothing, and waits until the server gives up on it."""
    with connect(port) as s, contextlib.suppress(OSError):
        while s.recv(65536):
            pass


def garbage(port: int) -> None:
    rng = random.Random(port)
    with connect(port) as s, contextlib.suppress(OSError):
        s.sendall(bytes(rng.randrange(256) for _ in range(3000)) + b"\r\n\r\n\n")
        s.settimeout(3)
        while s.recv(65536):
            pass


def mid_message_close(port: int) -> None:
    """Sends the start of a message (a BULK line announcing 1 MB, a partial request...) and closes."""
    with connect(port) as s:
        s.sendall(b"BULK 1000000 0\nGET / HTTP/1.1\r\nHost: a")
        time.sleep(0.05)


def mid_message_reset(port: int) -> None:
    with connect(port) as s:
        s.sendall(b"BULK 1000000 0\nhalf of it")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def trickle(port: int, seconds: float = 4.0) -> None:
    """One byte every 0.1 s: each within io_timeout, forever unless the server sets a limit."""
    end = time.monotonic() + seconds
    with connect(port) as s, contextlib.suppress(OSError):
        s.sendall(b"BULK 1000000 0\n")
        while time.monotonic() < end:
            s.sendall(b"x")
            time.sleep(0.1)


BAD_CLIENTS: dict[str, Callable[[int], None]] = {
    "silent": silent, "garbage": garbage, "mid-message-close": mid_message_close,
    "mid-message-reset": mid_message_reset,
}


def in_threads(*calls: Callable[[], object]) -> list[BaseException]:
    errors: list[BaseException] = []

    def run(fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(fn,)) for fn in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "a client thread hung"
    return errors


def close_server(server: ServerHandle, bound: float) -> tuple[Manifest | None, GeneratorError | None]:
    t0 = time.monotonic()
    try:
        manifest, error = server.close(), None
    except GeneratorError as exc:
        manifest, error = None, exc
    assert time.monotonic() - t0 < bound, "closing the server took too long"
    return manifest, error


#: servers that never read from their client (so a bad client may go unnoticed)
NEVER_READS = frozenset({"tcp-welcome"})


@pytest.mark.parametrize("name", TCP_SERVERS)
def test_bad_clients_fail_alone_and_good_clients_are_served_meanwhile(name: str) -> None:
    options = {"close_delay": 0.0} if "close_delay" in SCENARIOS[name].default_options else {}
    server = start_server(name, port=0, max_connections=0, io_timeout=0.5, connection_timeout=3.0,
                          options=options)
    port = server.address.port
    t0 = time.monotonic()
    good: list[Manifest] = []
    simultaneous = name == "simultaneous-close"  # its server waits on a barrier shared with its own client
    calls: list[Callable[[], object]] = [lambda f=fn: f(port) for fn in BAD_CLIENTS.values()]  # type: ignore[misc]
    if not simultaneous:
        calls += [lambda: good.append(run_client(name, port=port, options=options)) for _ in range(5)]
    errors = in_threads(*calls)
    assert errors == [], errors
    assert time.monotonic() - t0 < 10
    # the server is still there for a client that comes after the bad ones
    if not simultaneous:
        good.append(run_client(name, port=port, options=options))
    manifest, error = close_server(server, bound=8)
    if error is None:
        # tcp-welcome's server sends its line and closes without reading: it only notices a bad client
        # whose reset arrives before its send, which is a race (lost once in a CI run); the others read
        assert name in NEVER_READS, "the bad clients' connections were not reported"
    else:
        assert "server side failed" in error.message
    if not simultaneous:
        assert len(good) == 6 and all(not m.problems for m in good)
    del manifest


def test_a_trickling_client_is_cut_off_at_the_connection_time_limit() -> None:
    server = start_server("bulk", port=0, max_connections=1, io_timeout=0.5, connection_timeout=1.0)
    t0 = time.monotonic()
    errors = in_threads(lambda: trickle(server.address.port, seconds=4.0))
    _, error = close_server(server, bound=8)
    assert errors == []
    assert error is not None and "took longer than its time limit" in error.message
    assert time.monotonic() - t0 < 6


def test_at_most_max_active_connections_are_handled_at_once() -> None:
    server = start_server("tcp-echo", port=0, max_connections=0, io_timeout=0.6, max_active=3)
    port = server.address.port
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, server._runner.running)  # type: ignore[union-attr]  # handlers running now
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        t0 = time.monotonic()
        errors = in_threads(*[lambda: silent(port) for _ in range(7)])
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        watcher.join(5)
    _, error = close_server(server, bound=8)
    assert errors == [] and error is not None
    assert peak == 3
    assert elapsed >= 3 * 0.6 * 0.9  # 7 silent clients, 3 at a time: three rounds of io_timeout


def test_server_limits_are_checked() -> None:
    with pytest.raises(GeneratorError, match="connection_timeout"):
        start_server("tcp-echo", port=0, connection_timeout=0)
    with pytest.raises(GeneratorError, match="max_active"):
        start_server("tcp-echo", port=0, max_active=0)


# ---------------------------------------------------------------------------------------------
# UDP


def test_udp_server_keeps_answering_through_garbage_and_vanished_clients() -> None:
    server = start_server("udp-echo", port=0, max_connections=0, duration=20)
    addr = ("127.0.0.1", server.address.port)
    try:
        for payload in (b"", b"\x00" * 65507, bytes(range(256)) * 4):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(2)
                s.sendto(payload, addr)
                assert s.recv(100) == f"Your data was {len(payload)} bytes".encode()
        for _ in range(50):  # clients gone before the reply: ICMP port unreachable comes back
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"gone", addr)
        manifest = run_client("udp-echo", port=addr[1])
        assert manifest.consistency_problems() == []
    finally:
        server.stop()
    part, error = close_server(server, bound=5)
    assert error is None and part is not None
    # every datagram was recorded: 3 + 50 + the client's. Counted per datagram, not per conversation:
    # two of the 54 short-lived sockets can get the same ephemeral port (a birthday collision in the
    # ~28k-port range, ~5% of runs), which makes them one conversation
    received = sum(1 for conv in part.udp for d in conv.datagrams if d.sender == "client")
    assert received >= 54, received


def test_udp_server_stops_recording_a_flood(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "MAX_UDP_RECORDS", 40)
    server = start_server("udp-echo", port=0, max_connections=0, duration=20)
    addr = ("127.0.0.1", server.address.port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        for _ in range(20):
            s.sendto(b"flood", addr)
            s.recv(100)
        for _ in range(30):
            s.sendto(b"flood", addr)
        with pytest.raises(TimeoutError):
            s.settimeout(0.3)
            s.recv(100)
    server.stop()
    part, error = close_server(server, bound=5)
    assert error is None and part is not None
    assert sum(len(c.datagrams) for c in part.udp) == 40
    assert any("neither answered nor recorded" in n for n in part.notes)
