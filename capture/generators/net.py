"""Loopback-only sockets: address checks, typed bind errors, socket tracking and byte-recording
streams with a timeout on every blocking call."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import struct
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Literal

from .errors import GeneratorError, NotLoopbackError, PortInUseError
from .manifest import Endpoint, Family, Side

POLL_INTERVAL = 0.05
"""Seconds between checks of a stop flag in accept/recvfrom loops."""

DEFAULT_IO_TIMEOUT = 5.0
"""Default timeout of every blocking socket call, in seconds."""

RECV_CHUNK = 65536

ACK_WAIT_LIMIT = 0.5
"""Upper bound on waiting for the peer's (possibly delayed, <= 200 ms) ACK before a FIN."""

_live_lock = threading.Lock()
_live: weakref.WeakSet[socket.socket] = weakref.WeakSet()


def track(sock: socket.socket) -> socket.socket:
    """Remember a socket the generators created, so tests can prove none is left open."""
    with _live_lock:
        _live.add(sock)
    return sock


def open_socket_count() -> int:
    """How many sockets created by the generators are still open (should be 0 between runs)."""
    with _live_lock:
        socks = list(_live)
    return sum(1 for s in socks if s.fileno() != -1)


def new_socket(family: socket.AddressFamily, kind: socket.SocketKind) -> socket.socket:
    return track(socket.socket(family, kind))


@dataclass(frozen=True)
class Target:
    """A checked host: an IP literal and its address family."""

    ip: str
    family: socket.AddressFamily

    @property
    def family_name(self) -> Family:
        return "ipv6" if self.family == socket.AF_INET6 else "ipv4"

    def sockaddr(self, port: int) -> tuple[str, int] | tuple[str, int, int, int]:
        if self.family == socket.AF_INET6:
            return (self.ip, port, 0, 0)
        return (self.ip, port)

    def endpoint(self, port: int) -> Endpoint:
        return Endpoint(self.ip, port)


def resolve_host(host: str, *, allow_non_loopback: bool = False) -> Target:
    """Check that ``host`` is a loopback address and return it as a :class:`Target`.

    ``localhost`` means 127.0.0.1. Other names are not resolved (a DNS query is traffic that
    leaves loopback) unless ``allow_non_loopback=True``.
    """
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text.lower() == "localhost":
        text = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        if not allow_non_loopback:
            raise NotLoopbackError(
                f"host {host!r} is not a loopback IP address; the generators only use 127.0.0.0/8 and ::1",
                hint="use 127.0.0.1, ::1 or localhost (names are not resolved: that would be a DNS query), "
                "or pass allow_non_loopback=True explicitly",
            ) from None
        try:
            infos = socket.getaddrinfo(text, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise GeneratorError(f"cannot resolve host {host!r}: {exc.strerror}") from exc
        ip = ipaddress.ip_address(str(infos[0][4][0]).split("%", 1)[0])
    if not ip.is_loopback and not allow_non_loopback:
        hint = "use 127.0.0.1, ::1 or localhost, or pass allow_non_loopback=True explicitly"
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            hint = f"use the IPv4 address {ip.ipv4_mapped} itself, or ::1 for IPv6"
        raise NotLoopbackError(
            f"host {host!r} is not a loopback address; the generators only use 127.0.0.0/8 and ::1",
            hint=hint,
        )
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    return Target(ip.compressed, family)


def check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise GeneratorError(f"port must be an integer from 0 to 65535, not {port!r}")
    return port


def ipv6_available() -> bool:
    """Whether ::1 can be bound on this machine (IPv6 enabled on loopback)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def endpoint_of(sockaddr: object) -> Endpoint:
    """An :class:`Endpoint` from a socket address tuple (IPv4 or IPv6)."""
    if not isinstance(sockaddr, tuple) or len(sockaddr) < 2:
        raise GeneratorError(f"unexpected socket address {sockaddr!r}")
    host = str(sockaddr[0]).split("%", 1)[0]
    return Endpoint(ipaddress.ip_address(host).compressed, int(sockaddr[1]))


def bind_error(exc: OSError, target: Target, port: int, transport: Literal["tcp", "udp"]) -> GeneratorError:
    """Turn a failed bind/listen into a typed error that says what to do."""
    if exc.errno == errno.EADDRINUSE:
        return PortInUseError(target.ip, port, transport)
    if exc.errno == errno.EACCES:
        return GeneratorError(
            f"not allowed to bind {transport.upper()} port {port} on {target.ip}",
            hint="ports below 1024 need root or CAP_NET_BIND_SERVICE; pick another port or port=0",
        )
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return GeneratorError(
            f"cannot bind {target.ip}: the address is not available on this machine ({exc.strerror})",
            hint="is IPv6 disabled (sysctl net.ipv6.conf.lo.disable_ipv6)? use 127.0.0.1 instead"
            if target.family == socket.AF_INET6
            else None,
        )
    return GeneratorError(f"cannot bind {transport.upper()} {target.ip} port {port}: {exc.strerror or exc}")


def tcp_listener(target: Target, port: int, *, backlog: int) -> socket.socket:
    """A TCP socket bound to ``target:port`` and listening, with SO_REUSEADDR (so a port whose
    previous connections sit in TIME_WAIT can be reused; a port with a live listener still
    raises :class:`PortInUseError`)."""
    sock = new_socket(target.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(target.sockaddr(port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise bind_error(exc, target, port, "tcp") from exc
    return sock


def udp_bound(target: Target, port: int) -> socket.socket:
    """A UDP socket bound to ``target:port`` (no SO_REUSEADDR: on Linux that would let two UDP
    sockets share the port and hide a port-in-use error)."""
    sock = new_socket(target.family, socket.SOCK_DGRAM)
    try:
        sock.bind(target.sockaddr(port))
    except OSError as exc:
        sock.close()
        raise bind_error(exc, target, port, "udp") from exc
    return sock


def closed_port(target: Target) -> int:
    """A port on which nothing listens right now: bind port 0, note the port, close.

    (Another program could take the port between this call and the connect: very unlikely on
    a machine that is not running out of ephemeral ports.)"""
    probe = new_socket(target.family, socket.SOCK_STREAM)
    try:
        probe.bind(target.sockaddr(0))
        return endpoint_of(probe.getsockname()).port
    except OSError as exc:
        raise bind_error(exc, target, 0, "tcp") from exc
    finally:
        probe.close()


class Stream:
    """One side of a TCP connection that records every byte it sends and receives.

    Every blocking call is bounded by the socket timeout; timeouts and unexpected resets become
    :class:`GeneratorError` with the side and what it was waiting for.
    """

    def __init__(self, sock: socket.socket, *, side: Side, local: Endpoint, peer: Endpoint,
                 io_timeout: float, label: str, deadline: float | None = None) -> None:
        self.sock = sock
        #: time.monotonic() after which every call fails: a peer that trickles a byte now and then
        #: (each within io_timeout) cannot keep the connection, and its thread, forever
        self.deadline = deadline
        self.side: Side = side
        self.local = local
        self.peer = peer
        self.io_timeout = io_timeout
        self.label = label
        self.sent = bytearray()
        self.received = bytearray()
        self.reset_received = False
        self.eof_received = False
        self.aborted = False
        self.notes: list[str] = []
        sock.settimeout(io_timeout)
        if sock.type == socket.SOCK_STREAM:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _fail(self, what: str, exc: BaseException | None = None) -> GeneratorError:
        detail = f": {exc}" if exc is not None and str(exc) else ""
        return GeneratorError(f"{self.label}: {self.side} {self.local} {what}{detail}")

    def _timed_out(self, what: str) -> GeneratorError:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return self._fail(f"gave up on {self.peer}: the connection took longer than its time limit ({what})")
        return self._fail(f"timed out after {self.io_timeout} s {what}")

    def _bound(self, what: str) -> None:
        """Before a blocking call: time left until the connection's deadline, as the socket timeout."""
        if self.deadline is None:
            return
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self._fail(f"gave up on {self.peer}: the connection took longer than its time limit ({what})")
        self.sock.settimeout(min(self.io_timeout, left))

    def send(self, data: bytes) -> None:
        self._bound(f"sending {len(data)} bytes")
        try:
            self.sock.sendall(data)
        except TimeoutError as exc:
            raise self._timed_out(f"sending {len(data)} bytes") from exc
        except OSError as exc:
            raise self._fail(f"could not send {len(data)} bytes to {self.peer}", exc) from exc
        self.sent += data

    def recv_some(self, what: str, size: int = RECV_CHUNK) -> bytes:
        """One ``recv``: some bytes, or ``b""`` at EOF. A reset raises GeneratorError."""
        self._bound(f"waiting for {what}")
        try:
            data = self.sock.recv(size)
        except TimeoutError as exc:
            raise self._timed_out(f"waiting for {what}") from exc
        except ConnectionResetError as exc:
            self.reset_received = True
            raise self._fail(f"got a reset from {self.peer} while waiting for {what}") from exc
        except OSError as exc:
            raise self._fail(f"failed waiting for {what}", exc) from exc
        if data:
            self.received += data
        else:
            self.eof_received = True
        return data

    def recv_exact(self, size: int, what: str) -> bytes:
        """Exactly ``size`` bytes; EOF before that raises GeneratorError."""
        parts: list[bytes] = []
        got = 0
        while got < size:
            chunk = self.recv_some(what, min(RECV_CHUNK, size - got))
            if not chunk:
                raise self._fail(f"peer {self.peer} closed after {got} of {size} bytes of {what}")
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def recv_until(self, marker: bytes, what: str, limit: int) -> bytes:
        """Bytes up to and including the first ``marker`` (plus whatever came in the same read)."""
        buf = bytearray()
        while marker not in buf:
            if len(buf) > limit:
                raise self._fail(f"got more than {limit} bytes without {marker!r} while reading {what}")
            chunk = self.recv_some(what)
            if not chunk:
                raise self._fail(f"peer {self.peer} closed before {marker!r} while reading {what}")
            buf += chunk
        return bytes(buf)

    def recv_to_eof(self, what: str, limit: int) -> bytes:
        """Everything until the peer's FIN (bounded by ``limit`` bytes)."""
        buf = bytearray()
        while True:
            chunk = self.recv_some(what)
            if not chunk:
                return bytes(buf)
            buf += chunk
            if len(buf) > limit:
                raise self._fail(f"got more than {limit} bytes while reading {what} to EOF")

    def recv_reset(self, what: str) -> bool:
        """Wait for the peer's RST: True if it came, False if an orderly EOF came instead."""
        try:
            data = self.recv_some(what)
        except GeneratorError:
            if self.reset_received:
                return True
            raise
        if data:
            raise self._fail(f"expected a reset from {self.peer} but got {len(data)} more bytes")
        return False

    def unacked_bytes(self) -> int | None:
        """Bytes sent but not yet acknowledged by the peer (Linux SIOCOUTQ), None if unknown."""
        if not sys.platform.startswith("linux"):
            return None
        import fcntl
        import termios

        try:
            raw = fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        except OSError:
            return None
        return int(struct.unpack("i", raw)[0])

    def wait_acked(self, limit: float = ACK_WAIT_LIMIT) -> bool:
        """Wait (at most ``limit`` s) until the peer has acknowledged everything we sent.

        Called before sending the first FIN: with data *and* the FIN unacknowledged while the
        peer delays its ACK, Linux's tail loss probe retransmits the FIN after a few ms (a
        spurious retransmission in the capture). With only the FIN outstanding the probe waits
        for the delayed ACK. True if everything was acknowledged (False also when unknown)."""
        end = time.monotonic() + limit
        while True:
            pending = self.unacked_bytes()
            if pending is None:
                return False
            if pending == 0:
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(0.002)

    def shutdown_write(self) -> None:
        """Half-close: send our FIN, keep reading."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise self._fail("could not shut down its sending side", exc) from exc

    def abort(self) -> None:
        """Close with SO_LINGER (on, 0 s): the kernel sends RST instead of FIN."""
        self.aborted = True
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            self.sock.close()

    def force_shutdown(self) -> None:
        """Unblock a stuck reader when a server is stopped early."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()
