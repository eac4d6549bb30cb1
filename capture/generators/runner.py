"""Run scenarios: server and client together (:func:`run_scenario`) or apart, like the tutorials'
two terminals (:func:`serve` / :func:`start_server` and :func:`run_client`, joined afterwards by
:func:`merge_parts`).

Every blocking call has a timeout, every loop a bound, every thread is joined before these
functions return and every socket is closed (see :func:`capture.generators.net.open_socket_count`).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import TracebackType
from typing import Any

from .errors import GeneratorError
from .manifest import Datagram, Endpoint, Family, Manifest, Payload, TcpConnection, UdpConversation
from .net import (
    DEFAULT_IO_TIMEOUT,
    POLL_INTERVAL,
    Stream,
    Target,
    check_port,
    endpoint_of,
    resolve_host,
    tcp_listener,
    track,
    udp_bound,
)
from .options import OptionInput, Opts, resolve_options
from .scenarios import (
    IMPLEMENTATIONS,
    MAX_CLOSE_DELAY,
    SCENARIOS,
    Connector,
    Link,
    RefusedAttempt,
    TcpScenario,
    UdpEcho,
    udp_reply,
)

DEFAULT_DURATION = 60.0
"""How long a server started by :func:`serve` / :func:`start_server` waits for its clients."""

DEFAULT_CONNECTION_TIMEOUT = 60.0
"""How long one TCP connection may last on a server, however its peer trickles bytes (each
blocking call is bounded by ``io_timeout`` as well)."""

MAX_ACTIVE_CONNECTIONS = 1024
"""TCP connections a server handles at once (one thread each); more wait in the listen backlog."""

MAX_UDP_RECORDS = 100_000
"""Datagrams a UDP server records; later ones are neither answered nor recorded (a note says so)."""

Impl = TcpScenario | UdpEcho


def _lookup(name: str) -> Impl:
    try:
        return IMPLEMENTATIONS[name]
    except KeyError:
        raise GeneratorError(f"unknown scenario {name!r}",
                             hint=f"known scenarios: {', '.join(SCENARIOS)}") from None


def _gather(options: Mapping[str, OptionInput] | None, more: Mapping[str, OptionInput]) -> dict[str, OptionInput]:
    """Scenario options given as a mapping (``options=``), as keywords, or both."""
    out = dict(options or {})
    for key, value in more.items():
        if key in out:
            raise GeneratorError(f"option {key!r} given twice (in options= and as a keyword)")
        out[key] = value
    return out


def _prepare(name: str, options: dict[str, OptionInput]) -> tuple[Impl, Opts]:
    impl = _lookup(name)
    opts = Opts(name, resolve_options(impl.info, options))
    impl.validate(opts)
    return impl, opts


def _target(impl: Impl, host: str, allow_non_loopback: bool) -> Target:
    target = resolve_host(host, allow_non_loopback=allow_non_loopback)
    if target.family_name == "ipv6" and not impl.info.ipv6:
        raise GeneratorError(f"scenario {impl.info.name!r} does not run on IPv6")
    return target


def _port(impl: Impl, port: int | None) -> int:
    if port is None:
        return impl.info.default_port or 0
    return check_port(port)


def _label(name: str, target: Target) -> str:
    return f"{name} on {target.ip}"


def _check_timeout(io_timeout: float) -> None:
    if not 0 < io_timeout <= 300:
        raise GeneratorError(f"io_timeout must be between 0 and 300 seconds, not {io_timeout!r}")


# -- servers ------------------------------------------------------------------------------------


class _Runner:
    """Common state of the TCP and UDP server loops."""

    def __init__(self, *, max_connections: int, duration: float, stop: threading.Event | None,
                 label: str) -> None:
        self.max_connections = max_connections
        self.deadline = time.monotonic() + duration
        self.user_stop = stop
        self.label = label
        self.stop_flag = threading.Event()
        self.errors: list[BaseException] = []
        self.notes: list[str] = []
        self.lock = threading.Lock()

    def should_stop(self) -> bool:
        if self.stop_flag.is_set() or time.monotonic() >= self.deadline:
            return True
        return self.user_stop is not None and self.user_stop.is_set()

    def limit_reached(self, count: int) -> bool:
        return self.max_connections > 0 and count >= self.max_connections


class _TcpRunner(_Runner):
    def __init__(self, impl: TcpScenario, opts: Opts, target: Target, port: int, *, max_connections: int,
                 duration: float, stop: threading.Event | None, io_timeout: float, link: Link,
                 label: str, connection_timeout: float = DEFAULT_CONNECTION_TIMEOUT,
                 max_active: int = MAX_ACTIVE_CONNECTIONS) -> None:
        super().__init__(max_connections=max_connections, duration=duration, stop=stop, label=label)
        self.impl = impl
        self.opts = opts
        self.io_timeout = io_timeout
        self.connection_timeout = connection_timeout
        self.max_active = max_active
        self.running = 0  # handler threads started and not finished
        self.link = link
        self.listener = tcp_listener(target, port, backlog=max(128, max_connections))
        self.listener.settimeout(POLL_INTERVAL)
        self.address = endpoint_of(self.listener.getsockname())
        self.accepted = 0
        self.handlers: list[threading.Thread] = []
        self.active: list[Stream] = []
        self.finished: list[tuple[int, Stream]] = []
        self.thread = threading.Thread(target=self._accept_loop, name=f"loopcap-{impl.info.name}-accept",
                                       daemon=True)

    def start(self) -> None:
        try:
            self.thread.start()
        except BaseException:
            self.listener.close()
            raise

    def _accept_loop(self) -> None:
        try:
            while not self.limit_reached(self.accepted) and not self.should_stop():
                with self.lock:
                    busy = self.running >= self.max_active
                if busy:  # the connection limit: the next clients wait in the backlog
                    self.stop_flag.wait(POLL_INTERVAL)
                    continue
                try:
                    sock, addr = self.listener.accept()
                except TimeoutError:
                    continue
                track(sock)
                index = self.accepted
                self.accepted += 1
                thread = threading.Thread(target=self._serve_one, args=(sock, addr, index),
                                          name=f"loopcap-{self.impl.info.name}-conn-{index}", daemon=True)
                with self.lock:
                    self.handlers.append(thread)
                    self.running += 1
                try:
                    thread.start()
                except BaseException:
                    with self.lock:
                        self.running -= 1
                    sock.close()
                    raise
        except BaseException as exc:
            with self.lock:
                self.errors.append(GeneratorError(f"{self.label}: accept loop failed: {exc}"))
        finally:
            self.listener.close()

    def _serve_one(self, sock: socket.socket, addr: Any, index: int) -> None:
        try:
            self._serve_stream(sock, addr, index)
        finally:
            with self.lock:
                self.running -= 1

    def _serve_stream(self, sock: socket.socket, addr: Any, index: int) -> None:
        try:
            stream = Stream(sock, side="server", local=endpoint_of(sock.getsockname()), peer=endpoint_of(addr),
                            io_timeout=self.io_timeout, label=f"{self.label} connection {index}",
                            deadline=time.monotonic() + self.connection_timeout)
        except BaseException as exc:
            sock.close()
            with self.lock:
                self.errors.append(exc)
            return
        with self.lock:
            self.active.append(stream)
        try:
            self.impl.handle(stream, self.opts, self.link)
        except BaseException as exc:
            self.link.abort()
            with self.lock:
                self.errors.append(exc)
        finally:
            stream.close()
            with self.lock:
                self.active.remove(stream)
                self.finished.append((index, stream))

    def threads(self) -> list[threading.Thread]:
        with self.lock:
            return [self.thread, *self.handlers]

    def force(self) -> None:
        with self.lock:
            active = list(self.active)
        for stream in active:
            stream.force_shutdown()

    def records(self) -> tuple[list[TcpConnection], list[UdpConversation]]:
        exp = self.impl.expectation(self.opts)
        conns = []
        for index, stream in sorted(self.finished, key=lambda item: item[0]):
            conns.append(TcpConnection(
                index=index, client=stream.peer, server=stream.local, closes_first=exp.closes_first,
                expected_teardown=list(exp.expected_teardown), reset_by=exp.reset_by, refused=False,
                server_sent=Payload(bytes(stream.sent)), server_received=Payload(bytes(stream.received)),
                notes=list(stream.notes)))
        return conns, []

    def summary(self) -> str:
        return f"{self.accepted} connection(s) served"


class _UdpRunner(_Runner):
    def __init__(self, impl: UdpEcho, opts: Opts, target: Target, port: int, *, max_connections: int,
                 duration: float, stop: threading.Event | None, label: str) -> None:
        super().__init__(max_connections=max_connections, duration=duration, stop=stop, label=label)
        self.impl = impl
        self.policy = impl.drop_policy(opts)
        self.needed = impl.answers_per_client(opts)
        self.sock = udp_bound(target, port)
        self.sock.settimeout(POLL_INTERVAL)
        self.address = endpoint_of(self.sock.getsockname())
        self.conversations: dict[Endpoint, UdpConversation] = {}
        self.answered: dict[Endpoint, int] = {}
        self.completed = 0
        self.recorded = 0
        self.flooded = False
        self.thread = threading.Thread(target=self._loop, name="loopcap-udp-echo-server", daemon=True)

    def start(self) -> None:
        try:
            self.thread.start()
        except BaseException:
            self.sock.close()
            raise

    def _conversation(self, client: Endpoint) -> UdpConversation:
        conv = self.conversations.get(client)
        if conv is None:
            conv = UdpConversation(len(self.conversations), client, self.address, lossy=self.policy.lossy)
            self.conversations[client] = conv
        return conv

    def _loop(self) -> None:
        try:
            while not self.limit_reached(self.completed) and not self.should_stop():
                try:
                    data, addr = self.sock.recvfrom(65535)
                except (TimeoutError, ConnectionRefusedError):
                    continue
                self._answer(data, endpoint_of(addr), addr)
            self._drain()
        except BaseException as exc:
            with self.lock:
                self.errors.append(GeneratorError(f"{self.label}: server loop failed: {exc}"))
        finally:
            self.sock.close()

    def _answer(self, data: bytes, client: Endpoint, addr: Any) -> None:
        if self.recorded >= MAX_UDP_RECORDS:  # a flood: stop answering rather than grow without bound
            if not self.flooded:
                self.flooded = True
                self.notes.append(f"more than {MAX_UDP_RECORDS} datagrams: later ones were neither answered "
                                  "nor recorded")
            return
        conv = self._conversation(client)
        self.recorded += 2
        if self.policy.drop(client):
            conv.datagrams.append(Datagram("client", data, dropped=True))
            return
        conv.datagrams.append(Datagram("client", data))
        reply = udp_reply(data)
        try:
            self.sock.sendto(reply, addr)
        except OSError as exc:  # one client's trouble (a pending ICMP error, no buffer) ends no server loop
            conv.notes.append(f"reply to datagram {len(conv.datagrams) - 1} not sent: {exc}")
            return
        conv.datagrams.append(Datagram("server", reply))
        self.answered[client] = self.answered.get(client, 0) + 1
        if self.answered[client] == self.needed:
            self.completed += 1

    def _drain(self) -> None:
        """Record (without answering) datagrams still queued when the server stops."""
        self.sock.setblocking(False)
        for _ in range(1000):
            try:
                data, addr = self.sock.recvfrom(65535)
            except (BlockingIOError, ConnectionRefusedError):
                return
            conv = self._conversation(endpoint_of(addr))
            conv.datagrams.append(Datagram("client", data))
            conv.notes.append(f"datagram {len(conv.datagrams) - 1} arrived after the server stopped; not answered")

    def threads(self) -> list[threading.Thread]:
        return [self.thread]

    def force(self) -> None:
        self.stop_flag.set()

    def records(self) -> tuple[list[TcpConnection], list[UdpConversation]]:
        return [], sorted(self.conversations.values(), key=lambda c: c.index)

    def summary(self) -> str:
        return f"{len(self.conversations)} client(s) seen, {self.completed} fully answered"


class ServerHandle:
    """A scenario server bound on loopback (listening, for TCP) and running in background threads.

    Get one from :func:`start_server`; ``address`` is the bound endpoint (the real port when
    port 0 was asked). Use it as a context manager, or call :meth:`close` to get the server's
    manifest part.
    """

    def __init__(self, name: str, impl: Impl, opts: Opts, target: Target, runner: _TcpRunner | _UdpRunner,
                 started: float, io_timeout: float) -> None:
        self.scenario = name
        self.family: Family = target.family_name
        self.address: Endpoint = runner.address
        self._impl = impl
        self._opts = opts
        self._runner = runner
        self._started = started
        self._io_timeout = io_timeout
        self._manifest: Manifest | None = None
        self._closed = False

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the server stops by itself (its connection limit reached and every
        connection handled, or stopped, or its duration over). True if it did."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            alive = [t for t in self._runner.threads() if t.is_alive()]
            if not alive:
                return True
            for thread in alive:  # a handler may start while we wait: look again afterwards
                thread.join(None if end is None else max(0.0, end - time.monotonic()))
                if thread.is_alive():
                    return False

    def stop(self) -> None:
        """Stop accepting (TCP) or receiving (UDP); connections in progress finish by themselves."""
        self._runner.stop_flag.set()

    def _shutdown(self, grace: float) -> list[BaseException]:
        self.stop()
        if not self.wait(grace):
            self._runner.force()
            if not self.wait(self._io_timeout + 1.0):
                with self._runner.lock:
                    self._runner.errors.append(
                        GeneratorError(f"{self._runner.label}: server threads did not finish"))
        self._closed = True
        with self._runner.lock:
            return list(self._runner.errors)

    def close(self, grace: float | None = None) -> Manifest:
        """Stop the server, let connections in progress finish (up to ``grace`` seconds, then
        shut their sockets down), join every thread and return the server's manifest part.

        Raises GeneratorError if a connection handler failed."""
        if self._manifest is not None:
            return self._manifest
        if grace is None:
            grace = self._io_timeout + MAX_CLOSE_DELAY
        errors = self._shutdown(grace)
        if errors:
            raise _combine("server", errors)
        tcp, udp = self._runner.records()
        notes = list(self._impl.notes(self._opts)) + list(self._runner.notes)
        if self._runner.max_connections > 0 and not self._runner.limit_reached(
                self._runner.accepted if isinstance(self._runner, _TcpRunner) else self._runner.completed):
            notes.append(f"server stopped before its limit of {self._runner.max_connections}: "
                         f"{self._runner.summary()}")
        self._manifest = Manifest(
            scenario=self.scenario, part="server", family=self.family, server=self.address,
            options=dict(self._opts.values), started=self._started, finished=time.time(),
            tcp=tcp, udp=udp, notes=notes)
        return self._manifest

    def abandon(self) -> list[BaseException]:
        """Stop and clean up after a failure elsewhere; return the server's own errors."""
        if self._closed:
            with self._runner.lock:
                return list(self._runner.errors)
        return self._shutdown(0.5)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.abandon()
        elif not self._closed:
            self.close()


def _combine(side: str, errors: list[BaseException]) -> GeneratorError:
    first = errors[0]
    text = "; ".join(str(e) for e in errors[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    err = GeneratorError(f"{side} side failed: {text}{more}",
                         hint=first.hint if isinstance(first, GeneratorError) else None)
    err.__cause__ = first
    return err


def _start(name: str, impl: Impl, opts: Opts, target: Target, port: int, *, max_connections: int,
           duration: float, stop: threading.Event | None, io_timeout: float, link: Link,
           connection_timeout: float = DEFAULT_CONNECTION_TIMEOUT,
           max_active: int = MAX_ACTIVE_CONNECTIONS) -> ServerHandle:
    if not impl.info.has_server:
        raise GeneratorError(f"scenario {name!r} has no server",
                             hint="run only its client (run_client / run_scenario)")
    if duration <= 0:
        raise GeneratorError(f"duration must be positive, not {duration!r}")
    if max_connections < 0:
        raise GeneratorError(f"max_connections must be >= 0, not {max_connections!r}")
    if not connection_timeout > 0:
        raise GeneratorError(f"connection_timeout must be positive, not {connection_timeout!r}")
    if isinstance(max_active, bool) or not isinstance(max_active, int) or max_active < 1:
        raise GeneratorError(f"max_active must be a whole number >= 1, not {max_active!r}")
    started = time.time()
    label = _label(name, target)
    runner: _TcpRunner | _UdpRunner
    if isinstance(impl, UdpEcho):
        runner = _UdpRunner(impl, opts, target, port, max_connections=max_connections, duration=duration,
                            stop=stop, label=label)
    else:
        runner = _TcpRunner(impl, opts, target, port, max_connections=max_connections, duration=duration,
                            stop=stop, io_timeout=io_timeout, link=link, label=label,
                            connection_timeout=connection_timeout, max_active=max_active)
    runner.start()
    return ServerHandle(name, impl, opts, target, runner, started, io_timeout)


def _default_connections(impl: Impl, opts: Opts) -> int:
    return impl.server_connections(opts) if isinstance(impl, TcpScenario) else 1


def start_server(name: str, host: str = "127.0.0.1", port: int | None = None, *,
                 stop: threading.Event | None = None, max_connections: int | None = None,
                 duration: float = DEFAULT_DURATION, allow_non_loopback: bool = False,
                 io_timeout: float = DEFAULT_IO_TIMEOUT, options: Mapping[str, OptionInput] | None = None,
                 connection_timeout: float = DEFAULT_CONNECTION_TIMEOUT, max_active: int = MAX_ACTIVE_CONNECTIONS,
                 **more: OptionInput) -> ServerHandle:
    """Bind (and for TCP listen) the scenario's server and run it in background threads.

    Returns once the server is ready for clients. ``port=None`` is the tutorial's port, 0 an
    ephemeral one (see ``handle.address``). The server stops by itself after
    ``max_connections`` connections (None: the scenario's own number, e.g. 1 or ``clients``;
    0: no limit; for UDP, a connection is a client whose every message was answered), after
    ``duration`` seconds, or when ``stop`` is set.

    Scenario options (see ``SCENARIOS[name].default_options``) are keywords, or a mapping
    passed as ``options=`` (handy for a CLI), or both.

    Misbehaving clients cannot hang it: every blocking call waits ``io_timeout`` at most, a TCP
    connection lasts ``connection_timeout`` at most, at most ``max_active`` connections are handled
    at once (the others wait in the listen backlog), and a UDP server records at most
    ``MAX_UDP_RECORDS`` datagrams. A connection that fails is recorded and ends only itself; ``close()``
    then raises GeneratorError naming it.

    Raises PortInUseError, NotLoopbackError or GeneratorError.
    """
    _check_timeout(io_timeout)
    impl, opts = _prepare(name, _gather(options, more))
    target = _target(impl, host, allow_non_loopback)
    limit = _default_connections(impl, opts) if max_connections is None else max_connections
    return _start(name, impl, opts, target, _port(impl, port), max_connections=limit, duration=duration,
                  stop=stop, io_timeout=io_timeout, link=Link(together=False, timeout=io_timeout),
                  connection_timeout=connection_timeout, max_active=max_active)


def serve(name: str, host: str = "127.0.0.1", port: int | None = None, *,
          stop: threading.Event | None = None, max_connections: int | None = None,
          duration: float = DEFAULT_DURATION, ready: Callable[[Endpoint], None] | None = None,
          allow_non_loopback: bool = False, io_timeout: float = DEFAULT_IO_TIMEOUT,
          options: Mapping[str, OptionInput] | None = None, connection_timeout: float = DEFAULT_CONNECTION_TIMEOUT,
          max_active: int = MAX_ACTIVE_CONNECTIONS, **more: OptionInput) -> Manifest:
    """Run the scenario's server in the foreground (the tutorials' first terminal) and return
    its manifest part once it stops (see :func:`start_server` for when). ``ready`` is called with
    the bound endpoint as soon as clients can connect."""
    handle = start_server(name, host, port, stop=stop, max_connections=max_connections, duration=duration,
                          allow_non_loopback=allow_non_loopback, io_timeout=io_timeout,
                          options=_gather(options, more), connection_timeout=connection_timeout,
                          max_active=max_active)
    with handle:
        if ready is not None:
            ready(handle.address)
        handle.wait(duration + 1.0)
        return handle.close()


# -- clients ------------------------------------------------------------------------------------


def _client_part(name: str, impl: Impl, opts: Opts, target: Target, port: int, *, link: Link,
                 io_timeout: float) -> Manifest:
    started = time.time()
    label = _label(name, target)
    notes = list(impl.notes(opts))
    if isinstance(impl, UdpEcho):
        conv = impl.client(target, port, opts, io_timeout, label)
        return Manifest(scenario=name, part="client", family=target.family_name, server=target.endpoint(port),
                        options=dict(opts.values), started=started, finished=time.time(), udp=[conv], notes=notes)
    connector = Connector(target, port, io_timeout=io_timeout, label=label)
    try:
        impl.client(connector, opts, link)
    except BaseException:
        link.abort()
        raise
    finally:
        for record in connector.records:
            if isinstance(record, Stream):
                record.close()
    exp = impl.expectation(opts)
    no_server = not impl.info.has_server
    conns: list[TcpConnection] = []
    for index, record in enumerate(connector.records):
        if isinstance(record, RefusedAttempt):
            empty = Payload()
            conns.append(TcpConnection(
                index=index, client=record.local, server=record.peer, closes_first=exp.closes_first,
                expected_teardown=list(exp.expected_teardown), reset_by=exp.reset_by, refused=True,
                client_sent=empty, client_received=empty, server_sent=empty, server_received=empty,
                notes=list(record.notes)))
        else:
            conns.append(TcpConnection(
                index=index, client=record.local, server=record.peer, closes_first=exp.closes_first,
                expected_teardown=list(exp.expected_teardown), reset_by=exp.reset_by, refused=exp.refused,
                client_sent=Payload(bytes(record.sent)), client_received=Payload(bytes(record.received)),
                notes=list(record.notes)))
    return Manifest(scenario=name, part="both" if no_server else "client", family=target.family_name,
                    server=connector.server, options=dict(opts.values), started=started, finished=time.time(),
                    tcp=conns, notes=notes + connector.notes)


def run_client(name: str, host: str = "127.0.0.1", port: int | None = None, *,
               allow_non_loopback: bool = False, io_timeout: float = DEFAULT_IO_TIMEOUT,
               options: Mapping[str, OptionInput] | None = None, **more: OptionInput) -> Manifest:
    """Run the scenario's client against a server started elsewhere (the tutorials' second
    terminal) and return the client's manifest part (``part="client"``; for ``refused``, which
    has no server, the whole manifest, ``part="both"``)."""
    _check_timeout(io_timeout)
    impl, opts = _prepare(name, _gather(options, more))
    target = _target(impl, host, allow_non_loopback)
    port_ = _port(impl, port)
    if port_ == 0 and impl.info.has_server:
        raise GeneratorError(f"run_client({name!r}) needs the server's port, not 0",
                             hint="port 0 (ephemeral) only works with run_scenario or start_server().address")
    return _client_part(name, impl, opts, target, port_, link=Link(together=False, timeout=io_timeout),
                        io_timeout=io_timeout)


# -- together -----------------------------------------------------------------------------------


def _merge_notes(*lists: list[str]) -> list[str]:
    out: list[str] = []
    for notes in lists:
        out.extend(n for n in notes if n not in out)
    return out


def merge_parts(client: Manifest, server: Manifest) -> Manifest:
    """Join a client part and a server part of the same scenario into one ``part="both"``
    manifest: TCP connections matched by the client's endpoint and kept in the client's SYN
    order, UDP conversations taken from the server (which knows the order and the drops) and
    checked against what the client saw. Disagreements are listed in ``problems``."""
    if client.part != "client" or server.part != "server":
        raise GeneratorError(f"merge_parts needs a client part and a server part, got {client.part!r} "
                             f"and {server.part!r}")
    if client.scenario != server.scenario:
        raise GeneratorError(f"cannot merge parts of different scenarios ({client.scenario!r}, {server.scenario!r})")
    problems: list[str] = []
    notes: list[str] = []
    if client.options != server.options:
        notes.append(f"client and server options differ: client {client.options}, server {server.options}")

    by_client = {c.client: c for c in server.tcp}
    tcp: list[TcpConnection] = []
    for conn in client.tcp:
        peer = by_client.pop(conn.client, None)
        index = len(tcp)
        if peer is None:
            if not conn.refused:
                problems.append(f"tcp connection {index}: the server part has no connection from {conn.client}")
            tcp.append(replace(conn, index=index))
            continue
        tcp.append(replace(conn, index=index, server=peer.server, server_sent=peer.server_sent,
                           server_received=peer.server_received, notes=_merge_notes(conn.notes, peer.notes)))
    for extra in by_client.values():
        notes.append(f"the server also served {extra.client}, which is not this client")
        tcp.append(replace(extra, index=len(tcp)))

    by_udp_client = {c.client: c for c in server.udp}
    udp: list[UdpConversation] = []
    for conv in client.udp:
        peer_conv = by_udp_client.pop(conv.client, None)
        index = len(udp)
        if peer_conv is None:
            problems.append(f"udp conversation {index}: the server part has no datagram from {conv.client}")
            udp.append(replace(conv, index=index))
            continue
        where = f"udp conversation {index} ({conv.client} -> {peer_conv.server})"
        if conv.sent_by("client") != peer_conv.sent_by("client"):
            problems.append(f"{where}: the client sent {len(conv.sent_by('client'))} datagrams, the server "
                            f"got {len(peer_conv.sent_by('client'))} different or in another order")
        if conv.sent_by("server") != peer_conv.sent_by("server"):
            problems.append(f"{where}: the server sent {len(peer_conv.sent_by('server'))} replies, the client "
                            f"got {len(conv.sent_by('server'))} different or in another order")
        udp.append(replace(peer_conv, index=index, retries=conv.retries,
                           notes=_merge_notes(conv.notes, peer_conv.notes)))
    for extra_conv in by_udp_client.values():
        notes.append(f"the server also heard from {extra_conv.client}, which is not this client")
        udp.append(replace(extra_conv, index=len(udp)))

    merged = Manifest(
        scenario=client.scenario, part="both", family=server.family, server=server.server,
        options=dict(client.options), started=min(client.started, server.started),
        finished=max(client.finished, server.finished), tcp=tcp, udp=udp,
        notes=_merge_notes(client.notes, server.notes, notes), problems=client.problems + server.problems + problems)
    merged.problems.extend(p for p in merged.consistency_problems() if p not in merged.problems)
    return merged


def run_scenario(name: str, host: str = "127.0.0.1", port: int | None = 0, *,
                 before_client: Callable[[], None] | None = None, allow_non_loopback: bool = False,
                 io_timeout: float = DEFAULT_IO_TIMEOUT, options: Mapping[str, OptionInput] | None = None,
                 **more: OptionInput) -> Manifest:
    """Run a scenario's server and client together and return the merged manifest.

    The server is bound and listening before ``before_client`` is called (start a capture
    there), and the client starts only after it returns. ``port=0`` (the default) is an
    ephemeral port, ``None`` the tutorial's. Client and server share a barrier where the
    scenario needs one (simultaneous-close).

    Raises GeneratorError (or its subclasses PortInUseError, NotLoopbackError) when the run
    cannot be made; the manifest's ``problems`` list anything inconsistent that was observed.
    """
    _check_timeout(io_timeout)
    impl, opts = _prepare(name, _gather(options, more))
    target = _target(impl, host, allow_non_loopback)
    port_ = _port(impl, port)
    if not impl.info.has_server:
        if before_client is not None:
            before_client()
        whole = _client_part(name, impl, opts, target, port_, link=Link(together=False, timeout=io_timeout),
                             io_timeout=io_timeout)
        whole.problems = whole.consistency_problems()
        return whole
    link = Link(together=True, timeout=io_timeout)
    udp = isinstance(impl, UdpEcho)
    handle = _start(name, impl, opts, target, port_, max_connections=0 if udp else _default_connections(impl, opts),
                    duration=DEFAULT_DURATION, stop=None, io_timeout=io_timeout, link=link)
    try:
        if before_client is not None:
            before_client()
        client_part = _client_part(name, impl, opts, target, handle.address.port, link=link, io_timeout=io_timeout)
    except BaseException as exc:
        link.abort()
        server_errors = handle.abandon()
        if server_errors and isinstance(exc, GeneratorError):
            raise GeneratorError(f"{exc.message}; server side: {'; '.join(str(e) for e in server_errors[:3])}",
                                 hint=exc.hint) from exc
        raise
    if not udp:
        handle.wait(io_timeout + MAX_CLOSE_DELAY + 1.0)
    server_part = handle.close()
    return merge_parts(client_part, server_part)
