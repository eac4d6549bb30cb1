"""Loopback traffic generators: every scenario on IPv4 and IPv6, self-consistent manifests,
loopback-only safety, typed errors, and no leaked threads or sockets.

These tests only open loopback sockets; they need no privileges and no capture.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from analyzers.errors import LoopcapError
from capture.generators import (
    HEX_LIMIT,
    SCENARIOS,
    SCHEMA_VERSION,
    TEARDOWN_KINDS,
    Endpoint,
    GeneratorError,
    Manifest,
    NotLoopbackError,
    OptionInput,
    Payload,
    PortInUseError,
    ipv6_available,
    merge_parts,
    open_socket_count,
    run_client,
    run_scenario,
    serve,
    start_server,
)
from capture.generators.net import resolve_host

IPV6 = ipv6_available()
IPV6_SKIP = pytest.mark.skipif(not IPV6, reason="::1 cannot be bound here (IPv6 disabled on loopback)")
FAMILIES = [pytest.param("127.0.0.1", id="ipv4"), pytest.param("::1", id="ipv6", marks=IPV6_SKIP)]
FAMILY_NAME = {"127.0.0.1": "ipv4", "::1": "ipv6"}

TUTORIAL_ECHO_SENT = b"MichaelTracySarahexit"
TUTORIAL_ECHO_RECEIVED = b"Welcome!Hello, Michael!Hello, Tracy!Hello, Sarah!"
RUN_BOUND = 5.0
"""No single scenario run may take longer than this (seconds)."""


def _fd_count() -> int | None:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Every test must leave no thread, no open generator socket, no file descriptor and no
    ResourceWarning (an unclosed socket collected by the GC) behind."""
    threads_before = set(threading.enumerate())
    fds_before = _fd_count()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    leaked_threads = [t.name for t in threading.enumerate() if t not in threads_before]
    assert leaked_threads == [], f"leaked threads: {leaked_threads}"
    assert open_socket_count() == 0
    resource = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert resource == [], resource
    if fds_before is not None:
        assert _fd_count() == fds_before


def timed(fn: Callable[[], Manifest], bound: float = RUN_BOUND) -> Manifest:
    start = time.monotonic()
    manifest = fn()
    elapsed = time.monotonic() - start
    assert elapsed < bound, f"run took {elapsed:.2f} s"
    return manifest


def closed_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
    return port


def only_tcp(manifest: Manifest) -> tuple[bytes, bytes, bytes, bytes]:
    """(client_sent, client_received, server_sent, server_received) of the single connection."""
    assert len(manifest.tcp) == 1
    conn = manifest.tcp[0]
    assert conn.client_sent is not None and conn.client_received is not None
    assert conn.server_sent is not None and conn.server_received is not None
    return conn.client_sent.data, conn.client_received.data, conn.server_sent.data, conn.server_received.data


# -- registry -----------------------------------------------------------------------------------


def test_registry_lists_every_walkthrough_scenario_with_the_tutorial_ports() -> None:
    assert list(SCENARIOS) == ["tcp-echo", "tcp-welcome", "udp-echo", "http-get", "half-close", "rst-abort",
                               "refused", "concurrent", "bulk", "simultaneous-close"]
    assert SCENARIOS["tcp-echo"].default_port == 9999
    assert SCENARIOS["tcp-welcome"].default_port == 12345
    assert SCENARIOS["udp-echo"].default_port == 1060
    assert SCENARIOS["udp-echo"].transports == ("udp",)
    assert SCENARIOS["concurrent"].default_port == SCENARIOS["tcp-echo"].default_port
    assert SCENARIOS["refused"].default_port is None and not SCENARIOS["refused"].has_server
    assert SCENARIOS["concurrent"].default_options["clients"] == 5
    assert SCENARIOS["bulk"].default_options["size"] == 1024 * 1024
    for name, info in SCENARIOS.items():
        assert info.name == name and info.description and info.ipv6
        assert set(info.option_help) <= set(info.default_options)
        json.dumps(info.to_dict())


# -- every scenario, both families --------------------------------------------------------------


@pytest.mark.parametrize("host", FAMILIES)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_scenario_runs_on_loopback_with_a_self_consistent_manifest(name: str, host: str) -> None:
    manifest = timed(lambda: run_scenario(name, host=host, port=0))
    assert manifest.scenario == name and manifest.part == "both"
    assert manifest.family == FAMILY_NAME[host]
    assert manifest.server.ip == host and manifest.server.port != 0
    assert manifest.consistency_problems() == []
    assert manifest.started <= manifest.finished
    assert bool(manifest.tcp) == ("tcp" in SCENARIOS[name].transports)
    assert bool(manifest.udp) == ("udp" in SCENARIOS[name].transports)
    for conn in manifest.tcp:
        assert conn.client.ip == host and conn.server == manifest.server
        assert conn.client.port not in (0, manifest.server.port)
        assert conn.expected_teardown and set(conn.expected_teardown) <= set(TEARDOWN_KINDS)
        for payload in (conn.client_sent, conn.client_received, conn.server_sent, conn.server_received):
            assert payload is not None
        if not conn.refused:
            assert conn.client_sent is not None and conn.server_sent is not None
            assert conn.client_sent.size + conn.server_sent.size > 0
    for conv in manifest.udp:
        assert conv.client.ip == host and conv.client.port != 0 and conv.server == manifest.server
    assert json.loads(manifest.to_json()) == manifest.to_dict()


# -- tcp-echo, concurrent -----------------------------------------------------------------------


@pytest.mark.parametrize("host", FAMILIES)
def test_tcp_echo_exchanges_the_tutorial_messages_and_the_client_closes_first(host: str) -> None:
    manifest = run_scenario("tcp-echo", host=host)
    client_sent, client_received, server_sent, server_received = only_tcp(manifest)
    assert client_sent == server_received == TUTORIAL_ECHO_SENT
    assert client_received == server_sent == TUTORIAL_ECHO_RECEIVED
    conn = manifest.tcp[0]
    assert (conn.closes_first, conn.expected_teardown, conn.reset_by, conn.refused) == ("client", ["four-way"],
                                                                                         None, False)


def test_tcp_echo_sends_custom_messages() -> None:
    manifest = run_scenario("tcp-echo", messages=["Ann", "Bob"], close_delay=0.0)
    client_sent, client_received, _, _ = only_tcp(manifest)
    assert client_sent == b"AnnBobexit"
    assert client_received == b"Welcome!Hello, Ann!Hello, Bob!"


@pytest.mark.parametrize("name", ["tcp-echo", "tcp-welcome", "http-get", "bulk", "concurrent"])
def test_immediate_second_close_admits_three_way_or_four_way_teardown(name: str) -> None:
    options: dict[str, OptionInput] = {"close_delay": 0.0}
    if name == "bulk":
        options["size"] = 1000
    manifest = timed(lambda: run_scenario(name, options=options), bound=2.0)
    assert all(c.expected_teardown == ["three-way", "four-way"] for c in manifest.tcp)
    assert manifest.consistency_problems() == []


def test_concurrent_clients_each_get_their_own_connection_in_syn_order() -> None:
    manifest = timed(lambda: run_scenario("concurrent", clients=7))
    assert [c.index for c in manifest.tcp] == list(range(7))
    assert len({c.client.port for c in manifest.tcp}) == 7
    for conn in manifest.tcp:
        assert conn.client_sent is not None and conn.client_sent.data == TUTORIAL_ECHO_SENT
        assert conn.server_sent is not None and conn.server_sent.data == TUTORIAL_ECHO_RECEIVED
        assert conn.closes_first == "client"
    assert manifest.consistency_problems() == []


# -- tcp-welcome, http-get ----------------------------------------------------------------------


@pytest.mark.parametrize("host", FAMILIES)
def test_tcp_welcome_server_sends_its_line_and_closes_first(host: str) -> None:
    manifest = run_scenario("tcp-welcome", host=host)
    client_sent, client_received, server_sent, _ = only_tcp(manifest)
    assert client_sent == b""
    assert client_received == server_sent == b"welcome to python!"
    assert manifest.tcp[0].closes_first == "server"
    assert manifest.tcp[0].expected_teardown == ["four-way"]


@pytest.mark.parametrize("host", FAMILIES)
def test_http_get_sends_the_tutorial_request_and_splits_header_from_body(host: str) -> None:
    manifest = run_scenario("http-get", host=host)
    client_sent, client_received, _, server_received = only_tcp(manifest)
    authority = f"[{host}]" if ":" in host else host
    assert client_sent == server_received == (
        f"GET / HTTP/1.1\r\nHost: {authority}:{manifest.server.port}\r\nConnection: close\r\n\r\n".encode())
    header, _, body = client_received.partition(b"\r\n\r\n")
    assert header.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close" in header
    assert f"Content-Length: {len(body)}".encode() in header
    assert b"<html>" in body
    assert manifest.tcp[0].closes_first == "server"


def test_http_get_of_an_unknown_path_is_a_404() -> None:
    manifest = run_scenario("http-get", path="/missing", close_delay=0.0)
    _, client_received, _, _ = only_tcp(manifest)
    assert client_received.startswith(b"HTTP/1.1 404 Not Found\r\n")


# -- half-close, rst-abort, refused, simultaneous-close ---------------------------------------------


@pytest.mark.parametrize("host", FAMILIES)
def test_half_close_server_keeps_sending_after_the_clients_fin(host: str) -> None:
    manifest = run_scenario("half-close", host=host, replies=4)
    client_sent, client_received, _, _ = only_tcp(manifest)
    lines = client_received.splitlines()
    assert len(lines) == 4
    assert all(f"you sent {len(client_sent)} bytes".encode() in line for line in lines)
    conn = manifest.tcp[0]
    assert (conn.closes_first, conn.expected_teardown) == ("client", ["half-close"])


@pytest.mark.parametrize("host", FAMILIES)
@pytest.mark.parametrize("aborter", ["client", "server"])
def test_rst_abort_resets_from_the_chosen_side(host: str, aborter: str) -> None:
    manifest = run_scenario("rst-abort", host=host, aborter=aborter)
    conn = manifest.tcp[0]
    assert conn.reset_by == aborter and conn.closes_first == aborter
    assert conn.expected_teardown == ["reset"]
    other = "server" if aborter == "client" else "client"
    assert any(f"{other} saw the {aborter}'s RST" in note for note in conn.notes)
    assert manifest.consistency_problems() == []


@pytest.mark.parametrize("host", FAMILIES)
def test_refused_connects_to_a_closed_port_and_records_it(host: str) -> None:
    manifest = timed(lambda: run_scenario("refused", host=host), bound=1.0)
    conn = manifest.tcp[0]
    assert conn.refused and conn.reset_by == "server" and conn.closes_first is None
    assert conn.expected_teardown == ["reset"]
    assert conn.server == manifest.server and manifest.server.port != 0
    assert conn.client.ip == host and conn.client.port != 0
    assert conn.client_sent == conn.server_sent == Payload(b"")
    assert any(f"closed port {manifest.server.port}" in note for note in manifest.notes)


def test_refused_to_a_port_where_something_listens_is_an_error() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with pytest.raises(GeneratorError, match="needs a port where nothing listens"):
            run_scenario("refused", port=listener.getsockname()[1])


@pytest.mark.parametrize("host", FAMILIES)
def test_simultaneous_close_manifest_is_honest_that_simultaneity_is_not_forced(host: str) -> None:
    manifest = run_scenario("simultaneous-close", host=host)
    conn = manifest.tcp[0]
    assert conn.closes_first == "both"
    assert conn.expected_teardown == ["simultaneous", "three-way", "four-way"]
    assert manifest.options["forced"] is False
    assert manifest.to_dict()["options"]["forced"] is False


def test_forcing_a_simultaneous_close_is_not_available_in_the_stdlib_version() -> None:
    with pytest.raises(GeneratorError, match="network namespace"):
        run_scenario("simultaneous-close", forced=True)


# -- bulk ---------------------------------------------------------------------------------------


def test_bulk_moves_a_mebibyte_each_way_deterministically() -> None:
    first = run_scenario("bulk")
    second = run_scenario("bulk", close_delay=0.0)
    client_sent, client_received, _, _ = only_tcp(first)
    header = b"BULK 1048576 0\n"
    assert client_sent.startswith(header) and len(client_sent) == len(header) + 1024 * 1024
    assert len(client_received) == 1024 * 1024
    assert client_sent[len(header):] != client_received
    assert only_tcp(second)[:2] == (client_sent, client_received)
    other_seed = run_scenario("bulk", size=4096, seed=1, close_delay=0.0)
    assert only_tcp(other_seed)[1] != client_received[:4096]


def test_bulk_json_carries_hex_only_for_payloads_up_to_the_limit() -> None:
    manifest = run_scenario("bulk", size=HEX_LIMIT, close_delay=0.0)
    conn = manifest.to_dict()["tcp"][0]
    assert conn["server_sent"]["bytes"] == HEX_LIMIT and "hex" in conn["server_sent"]
    assert conn["client_sent"]["bytes"] > HEX_LIMIT and "hex" not in conn["client_sent"]
    assert manifest.tcp[0].client_sent is not None
    assert len(manifest.tcp[0].client_sent.data) > HEX_LIMIT  # raw bytes stay on the dataclass


# -- udp-echo -----------------------------------------------------------------------------------


@pytest.mark.parametrize("host", FAMILIES)
def test_udp_echo_answers_each_datagram_with_its_size(host: str) -> None:
    manifest = run_scenario("udp-echo", host=host)
    conv = manifest.udp[0]
    assert [(d.sender, d.data) for d in conv.datagrams] == [
        ("client", b"Michael"), ("server", b"Your data was 7 bytes"),
        ("client", b"Tracy"), ("server", b"Your data was 5 bytes"),
        ("client", b"Sarah"), ("server", b"Your data was 5 bytes"),
    ]
    assert conv.dropped == [] and conv.retries == 0 and not conv.lossy


@pytest.mark.parametrize("host", FAMILIES)
def test_lossy_udp_drops_some_requests_and_the_client_retries(host: str) -> None:
    manifest = timed(lambda: run_scenario("udp-echo", host=host, lossy=True))
    conv = manifest.udp[0]
    assert conv.lossy and conv.dropped, "the default seed must drop at least one request"
    replies = conv.sent_by("server")
    assert len(replies) == 3, "every message is answered in the end"
    assert conv.retries == len(conv.dropped)
    for i in conv.dropped:  # each dropped request is sent again, unchanged
        assert conv.datagrams[i + 1].sender == "client" and conv.datagrams[i + 1].data == conv.datagrams[i].data
    as_json = manifest.to_dict()["udp"][0]
    assert as_json["dropped"] == conv.dropped
    assert [d["from"] for d in as_json["datagrams"]] == [d.sender for d in conv.datagrams]
    assert manifest.consistency_problems() == []


def test_lossy_udp_is_reproducible_for_a_seed() -> None:
    def pattern(seed: int) -> list[tuple[str, bool]]:
        manifest = run_scenario("udp-echo", lossy=True, seed=seed, timeout_initial=0.02)
        return [(d.sender, d.dropped) for d in manifest.udp[0].datagrams]

    assert pattern(7) == pattern(7)


def test_udp_client_gives_up_once_the_doubled_timeout_passes_the_limit() -> None:
    start = time.monotonic()
    with pytest.raises(GeneratorError, match="after 3 tries; I think the server is down"):
        run_scenario("udp-echo", lossy=True, drop_rate=1.0, max_consecutive_drops=100,
                     timeout_initial=0.02, timeout_max=0.1)
    assert time.monotonic() - start < 2.0  # 0.02 + 0.04 + 0.08 s of waiting, then it gives up


# -- apart: serve / run_client / merge_parts ----------------------------------------------------


@pytest.mark.parametrize("name", ["tcp-echo", "udp-echo", "simultaneous-close"])
def test_serve_and_run_client_apart_merge_into_one_consistent_manifest(name: str) -> None:
    ready = threading.Event()
    address: list[Endpoint] = []
    parts: list[Manifest] = []

    def on_ready(endpoint: Endpoint) -> None:
        address.append(endpoint)
        ready.set()

    server = threading.Thread(target=lambda: parts.append(serve(name, "127.0.0.1", 0, ready=on_ready,
                                                                duration=5.0)))
    server.start()
    try:
        assert ready.wait(5.0)
        client_part = run_client(name, "127.0.0.1", address[0].port)
    finally:
        server.join(10.0)
    server_part = parts[0]
    assert (client_part.part, server_part.part) == ("client", "server")
    if server_part.tcp:
        assert server_part.tcp[0].client_sent is None and server_part.tcp[0].server_sent is not None
        assert client_part.tcp[0].server_sent is None and client_part.tcp[0].client_sent is not None
    merged = merge_parts(client_part, server_part)
    assert merged.part == "both" and merged.consistency_problems() == []
    assert merged.server == address[0]


def test_start_server_gives_the_bound_port_before_any_client() -> None:
    with start_server("tcp-welcome", port=0, close_delay=0.0) as server:
        assert server.address.port != 0 and server.family == "ipv4"
        client_part = run_client("tcp-welcome", port=server.address.port, close_delay=0.0)
        assert server.wait(5.0)
        server_part = server.close()
    assert merge_parts(client_part, server_part).consistency_problems() == []


def test_serve_stops_when_the_stop_event_is_set() -> None:
    stop = threading.Event()
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    start = time.monotonic()
    manifest = serve("tcp-echo", "127.0.0.1", 0, stop=stop)
    timer.join()
    assert time.monotonic() - start < 1.0
    assert manifest.tcp == [] and any("stopped before its limit" in n for n in manifest.notes)


def test_serve_stops_after_its_duration() -> None:
    manifest = timed(lambda: serve("udp-echo", "127.0.0.1", 0, duration=0.2), bound=1.0)
    assert manifest.udp == []


def test_run_client_without_a_server_says_so() -> None:
    with pytest.raises(GeneratorError, match="refused: no server is listening"):
        run_client("tcp-echo", port=closed_port())
    with pytest.raises(GeneratorError, match="no server is listening"):
        run_client("udp-echo", port=closed_port(), timeout_initial=0.05)


def test_run_client_needs_a_real_port() -> None:
    with pytest.raises(GeneratorError, match="needs the server's port"):
        run_client("tcp-echo", port=0)


def test_merge_parts_rejects_parts_that_do_not_belong_together() -> None:
    manifest = run_scenario("tcp-welcome", close_delay=0.0)
    with pytest.raises(GeneratorError, match="client part and a server part"):
        merge_parts(manifest, manifest)


def test_a_client_that_does_not_follow_the_script_fails_without_leaking() -> None:
    with start_server("tcp-welcome", port=0) as server:
        with pytest.raises(GeneratorError, match="expected welcome"):
            run_client("tcp-echo", port=server.address.port)
        server.close()


def test_io_timeout_bounds_a_silent_peer() -> None:
    with socket.socket() as silent:  # listens (the handshake completes) but never says anything
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        start = time.monotonic()
        with pytest.raises(GeneratorError, match=r"timed out after 0\.2 s waiting for the welcome"):
            run_client("tcp-echo", port=silent.getsockname()[1], io_timeout=0.2)
        assert time.monotonic() - start < 1.0


# -- readiness hook -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tcp-echo", "udp-echo", "refused"])
def test_before_client_runs_once_after_the_server_is_bound_and_before_the_client(name: str) -> None:
    calls: list[int] = []
    options: dict[str, OptionInput] = {"close_delay": 0.0} if name == "tcp-echo" else {}
    manifest = run_scenario(name, before_client=lambda: calls.append(open_socket_count()), options=options)
    expected_open = 0 if name == "refused" else 1  # only the server's socket, no client yet
    assert calls == [expected_open]
    assert manifest.consistency_problems() == []


def test_a_failing_before_client_hook_stops_the_server_cleanly() -> None:
    def boom() -> None:
        raise RuntimeError("capture failed to start")

    with pytest.raises(RuntimeError, match="capture failed to start"):
        run_scenario("tcp-echo", before_client=boom)


# -- safety: loopback only, typed errors --------------------------------------------------------


@pytest.mark.parametrize("host", ["192.0.2.1", "0.0.0.0", "::", "2001:db8::1", "::ffff:127.0.0.1",
                                  "example.com", "10.0.0.1"])
def test_non_loopback_hosts_are_refused_before_any_socket_or_dns_lookup(
        host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: object, **kwargs: object) -> object:
        raise AssertionError("a DNS lookup was attempted")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    for attempt in (lambda: run_scenario("tcp-echo", host=host), lambda: run_client("tcp-echo", host),
                    lambda: serve("udp-echo", host, 0, duration=0.1), lambda: start_server("tcp-echo", host, 0)):
        with pytest.raises(NotLoopbackError, match="loopback") as info:
            attempt()
        assert isinstance(info.value, GeneratorError) and isinstance(info.value, LoopcapError)
        assert info.value.hint is not None


def test_loopback_spellings_are_accepted() -> None:
    assert resolve_host("localhost").ip == "127.0.0.1"
    assert resolve_host("127.0.0.53").ip == "127.0.0.53"
    assert resolve_host("[::1]").ip == "::1"
    assert resolve_host("0:0:0:0:0:0:0:1").ip == "::1"
    assert resolve_host("192.0.2.1", allow_non_loopback=True).ip == "192.0.2.1"


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_port_in_use_raises_a_typed_error_naming_the_port(kind: str) -> None:
    sock_type = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, sock_type) as holder:
        holder.bind(("127.0.0.1", 0))
        if kind == "tcp":
            holder.listen()
        port = holder.getsockname()[1]
        name = "tcp-echo" if kind == "tcp" else "udp-echo"
        with pytest.raises(PortInUseError) as info:
            run_scenario(name, port=port)
    assert f"port {port} on 127.0.0.1 is already in use" in str(info.value)
    assert info.value.port == port and info.value.transport == kind
    assert info.value.hint is not None and "port=0" in info.value.hint


def test_a_fixed_port_can_be_reused_while_the_last_run_is_in_time_wait() -> None:
    port = closed_port()
    # tcp-welcome: the server closes first, so the server's side of the port ends in TIME_WAIT
    for _ in range(2):
        manifest = run_scenario("tcp-welcome", port=port, close_delay=0.0)
        assert manifest.server.port == port


# -- options ------------------------------------------------------------------------------------


def test_unknown_scenario_lists_the_known_ones() -> None:
    with pytest.raises(GeneratorError) as info:
        run_scenario("tcp-ech0")
    assert info.value.hint is not None and "tcp-echo" in info.value.hint


@pytest.mark.parametrize(("name", "options", "message"), [
    ("tcp-echo", {"colour": "red"}, "has no option 'colour'"),
    ("concurrent", {"clients": "5"}, "must be a int"),
    ("concurrent", {"clients": 0}, "must be 1 to"),
    ("tcp-echo", {"messages": "Michael"}, "must be a list of strings"),
    ("tcp-echo", {"messages": ["exit"]}, "'exit' ends the conversation"),
    ("tcp-echo", {"close_delay": -1.0}, "close_delay"),
    ("rst-abort", {"aborter": "both"}, "'client' or 'server'"),
    ("udp-echo", {"drop_rate": 1.5}, "between 0 and 1"),
    ("bulk", {"size": 0}, "must be 1 to"),
    ("http-get", {"path": "no-slash"}, "must start with '/'"),
])
def test_bad_options_are_typed_errors(name: str, options: dict[str, OptionInput], message: str) -> None:
    with pytest.raises(GeneratorError, match=message):
        run_scenario(name, options=options)


def test_options_can_be_a_mapping_or_keywords_but_not_both_for_one_key() -> None:
    manifest = run_scenario("tcp-echo", options={"messages": ["Ann"]}, close_delay=0.0)
    assert manifest.options == {"messages": ("Ann",), "close_delay": 0.0}
    with pytest.raises(GeneratorError, match="given twice"):
        run_scenario("tcp-echo", options={"close_delay": 0.0}, close_delay=0.0)


def test_refused_has_no_server_to_serve() -> None:
    with pytest.raises(GeneratorError, match="has no server"):
        serve("refused", "127.0.0.1", 0, duration=0.1)


# -- manifest -----------------------------------------------------------------------------------


def test_manifest_writes_the_documented_json_shape(tmp_path: Path) -> None:
    manifest = run_scenario("tcp-echo", close_delay=0.0)
    path = tmp_path / "tcp-echo.manifest.json"
    manifest.write(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data == manifest.to_dict()
    assert data["schema"] == SCHEMA_VERSION
    assert set(data) == {"schema", "scenario", "part", "family", "server", "options", "timestamps", "notes",
                         "problems", "tcp", "udp"}
    assert set(data["timestamps"]) == {"started", "finished", "started_iso", "finished_iso"}
    conn = data["tcp"][0]
    assert set(conn) == {"index", "client", "server", "closes_first", "expected_teardown", "reset_by", "refused",
                         "client_sent", "client_received", "server_sent", "server_received", "notes"}
    assert conn["client_sent"] == {"bytes": len(TUTORIAL_ECHO_SENT),
                                   "sha256": Payload(TUTORIAL_ECHO_SENT).sha256,
                                   "hex": TUTORIAL_ECHO_SENT.hex()}
    assert data["options"]["messages"] == ["Michael", "Tracy", "Sarah"]


def test_payload_hex_limit() -> None:
    assert "hex" in Payload(b"x" * HEX_LIMIT).to_dict()
    assert "hex" not in Payload(b"x" * (HEX_LIMIT + 1)).to_dict()
    assert Payload(b"").to_dict() == {"bytes": 0, "sha256": Payload(b"").sha256, "hex": ""}


def test_consistency_check_catches_a_mismatch() -> None:
    manifest = run_scenario("tcp-welcome", close_delay=0.0)
    manifest.tcp[0].client_received = Payload(b"something else")
    assert any("server_sent" in p and "client_received" in p for p in manifest.consistency_problems())
