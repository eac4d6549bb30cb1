"""The walkthrough scenarios (DESIGN.md section 2): each one's server side, client side, options
and the teardown an analyzer should find.

Teardown timing on Linux loopback: the side that receives the first FIN enters "ping-pong" mode
and delays its ACK (40-200 ms). If that side closes *within* the delay, its FIN carries the ACK
(three-way teardown); if it waits longer, a bare ACK goes first (four-way). Scenarios with an
orderly close therefore have a ``close_delay`` option: the second closer waits that long after
reading EOF before closing. The default 0.3 s (> the 200 ms maximum delayed ACK) makes the
teardown four-way every time; ``close_delay=0`` gives the tutorials' immediate close, usually
three-way but not guaranteed, and the manifest then accepts both.
"""

from __future__ import annotations

import abc
import random
import socket
import threading
import time
from dataclasses import dataclass, field

from .errors import GeneratorError
from .manifest import ClosesFirst, Datagram, Endpoint, Side, TeardownKind, UdpConversation
from .net import Stream, Target, closed_port, endpoint_of, new_socket
from .options import Opts, ScenarioInfo

FOUR_WAY_MIN_DELAY = 0.25
"""A ``close_delay`` at least this long (Linux's delayed ACK is at most 200 ms) makes the
teardown deterministically four-way."""

DEFAULT_CLOSE_DELAY = 0.3
MAX_CLOSE_DELAY = 5.0
MAX_MESSAGES = 100
MAX_MESSAGE_BYTES = 1000
MAX_CLIENTS = 1000
MAX_BULK_SIZE = 64 * 1024 * 1024
RECV_LIMIT = 1024 * 1024
"""Upper bound on what a side reads to EOF in the small scenarios (keeps every loop bounded)."""


# -- shared machinery ---------------------------------------------------------------------------


class Link:
    """Synchronises the client and the server when they run in the same process
    (:func:`run_scenario`); a no-op when they run apart (two terminals)."""

    def __init__(self, *, together: bool, timeout: float) -> None:
        self._barrier = threading.Barrier(2, timeout=timeout) if together else None

    @property
    def together(self) -> bool:
        return self._barrier is not None

    def sync(self, what: str) -> None:
        if self._barrier is None:
            return
        try:
            self._barrier.wait()
        except threading.BrokenBarrierError:
            raise GeneratorError(f"the other side failed or timed out before {what}") from None

    def abort(self) -> None:
        if self._barrier is not None:
            self._barrier.abort()


@dataclass(frozen=True)
class TcpExpectation:
    """What an analyzer should find for each connection of a scenario."""

    closes_first: ClosesFirst | None
    expected_teardown: tuple[TeardownKind, ...]
    reset_by: Side | None = None
    refused: bool = False


@dataclass
class RefusedAttempt:
    """A connect() that got RST/ACK back: the SYN left ``local`` for ``peer``."""

    local: Endpoint
    peer: Endpoint
    notes: list[str] = field(default_factory=list)


class Connector:
    """Makes the client's connections and remembers them in the order their SYNs were sent
    (each connect() returns after the handshake, so sequential calls give a definite order)."""

    def __init__(self, target: Target, port: int, *, io_timeout: float, label: str) -> None:
        self.target = target
        self.port = port
        self.io_timeout = io_timeout
        self.label = label
        self.records: list[Stream | RefusedAttempt] = []
        self.notes: list[str] = []
        self._lock = threading.Lock()

    @property
    def server(self) -> Endpoint:
        return self.target.endpoint(self.port)

    def connect(self) -> Stream:
        sock = new_socket(self.target.family, socket.SOCK_STREAM)
        sock.settimeout(self.io_timeout)
        try:
            sock.connect(self.target.sockaddr(self.port))
            local = endpoint_of(sock.getsockname())
        except ConnectionRefusedError as exc:
            sock.close()
            raise GeneratorError(
                f"{self.label}: connection to {self.server} refused: no server is listening",
                hint="start the server first (serve / `loopcap serve`) on the same host and port",
            ) from exc
        except TimeoutError as exc:
            sock.close()
            raise GeneratorError(
                f"{self.label}: connecting to {self.server} timed out after {self.io_timeout} s") from exc
        except OSError as exc:
            sock.close()
            raise GeneratorError(f"{self.label}: cannot connect to {self.server}: {exc}") from exc
        stream = Stream(sock, side="client", local=local, peer=self.server,
                        io_timeout=self.io_timeout, label=self.label)
        with self._lock:
            self.records.append(stream)
        return stream

    def connect_refused(self) -> RefusedAttempt:
        """Connect to a port where nothing listens and expect ECONNREFUSED (the RST/ACK).

        The socket is bound to port 0 first so the SYN's source port is known (after a refused
        connect Linux reports the local address as 0.0.0.0)."""
        sock = new_socket(self.target.family, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.io_timeout)
            sock.bind(self.target.sockaddr(0))
            local = endpoint_of(sock.getsockname())
            try:
                sock.connect(self.target.sockaddr(self.port))
            except ConnectionRefusedError:
                attempt = RefusedAttempt(local, self.server)
                with self._lock:
                    self.records.append(attempt)
                return attempt
            except TimeoutError as exc:
                raise GeneratorError(
                    f"{self.label}: no answer from {self.server} within {self.io_timeout} s "
                    "(a firewall dropping the SYN?); expected an immediate RST/ACK") from exc
            except OSError as exc:
                raise GeneratorError(f"{self.label}: connect to {self.server} failed: {exc}") from exc
            raise GeneratorError(
                f"{self.label}: something accepted the connection on {self.server}; "
                "the refused scenario needs a port where nothing listens",
                hint="use port=0: the generator then picks a closed port itself")
        finally:
            sock.close()


def _expect(stream: Stream, got: bytes, want: bytes, what: str) -> None:
    if got != want:
        raise GeneratorError(f"{stream.label}: {stream.side} expected {what} {want!r}, got {got!r}")


def close_orderly(stream: Stream) -> None:
    """Close (FIN) once the peer has acknowledged our data (bounded wait, see Stream.wait_acked)."""
    stream.wait_acked()
    stream.close()


def shutdown_orderly(stream: Stream) -> None:
    """shutdown(SHUT_WR) once the peer has acknowledged our data (bounded wait)."""
    stream.wait_acked()
    stream.shutdown_write()


def _orderly_teardown(close_delay: float) -> tuple[TeardownKind, ...]:
    if close_delay >= FOUR_WAY_MIN_DELAY:
        return ("four-way",)
    return ("three-way", "four-way")


def _close_delay_note(close_delay: float, second: Side) -> str:
    if close_delay >= FOUR_WAY_MIN_DELAY:
        return (f"the {second} closes {close_delay:g} s after reading EOF, after its delayed ACK of the "
                "first FIN went out: four-way teardown")
    return (f"the {second} closes {close_delay:g} s after reading EOF, usually before its delayed ACK "
            "of the first FIN: three-way teardown usually, four-way if the ACK timer fired first")


def _check_close_delay(opts: Opts) -> None:
    delay = opts.get_float("close_delay")
    opts.require(0.0 <= delay <= MAX_CLOSE_DELAY, "close_delay", f"must be between 0 and {MAX_CLOSE_DELAY} s")


def _check_messages(opts: Opts, *, forbid_exit: bool) -> None:
    messages = opts.get_strs("messages")
    opts.require(1 <= len(messages) <= MAX_MESSAGES, "messages", f"give 1 to {MAX_MESSAGES} messages")
    for m in messages:
        size = len(m.encode("utf-8"))
        opts.require(1 <= size <= MAX_MESSAGE_BYTES, "messages",
                     f"each message must be 1 to {MAX_MESSAGE_BYTES} bytes in UTF-8")
        if forbid_exit:
            opts.require(m != "exit", "messages", "'exit' ends the conversation; it is sent last anyway")


CLOSE_DELAY_HELP = ("seconds the second closer waits after reading the peer's FIN before closing; "
                    f">= {FOUR_WAY_MIN_DELAY} gives a four-way teardown every time, 0 usually three-way")


class TcpScenario(abc.ABC):
    """A TCP scenario: one handler per accepted connection, and a client script."""

    info: ScenarioInfo

    def validate(self, opts: Opts) -> None:  # noqa: B027 - optional hook, no checks by default
        """Raise GeneratorError if the options cannot work."""

    def server_connections(self, opts: Opts) -> int:
        """How many connections the server serves before it stops by itself."""
        return 1

    @abc.abstractmethod
    def expectation(self, opts: Opts) -> TcpExpectation: ...

    def notes(self, opts: Opts) -> list[str]:
        return []

    @abc.abstractmethod
    def handle(self, stream: Stream, opts: Opts, link: Link) -> None:
        """Serve one accepted connection (the runner closes the stream afterwards if needed)."""

    @abc.abstractmethod
    def client(self, connector: Connector, opts: Opts, link: Link) -> None:
        """Run the client side (the runner closes every stream afterwards if needed)."""


# -- tcp-echo and concurrent --------------------------------------------------------------------

WELCOME = b"Welcome!"
EXIT = b"exit"
TUTORIAL_NAMES = ("Michael", "Tracy", "Sarah")


def echo_reply(message: bytes) -> bytes:
    return b"Hello, " + message + b"!"


def echo_conversation(stream: Stream, messages: tuple[str, ...]) -> None:
    """The tcp-echo client script: read the welcome, send each name and wait for its reply
    (so each message is its own segment), send ``exit`` and close."""
    _expect(stream, stream.recv_exact(len(WELCOME), "the welcome message"), WELCOME, "welcome")
    for message in messages:
        data = message.encode("utf-8")
        stream.send(data)
        want = echo_reply(data)
        _expect(stream, stream.recv_exact(len(want), f"the reply to {message!r}"), want, "reply")
    stream.send(EXIT)
    close_orderly(stream)


def echo_handler(stream: Stream, close_delay: float) -> None:
    """The threaded tcp-echo server, per connection: welcome, answer each message, stop at
    ``exit`` or EOF; after ``exit`` wait for the client's FIN, then close ``close_delay`` later."""
    stream.send(WELCOME)
    for _ in range(MAX_MESSAGES + 1):
        data = stream.recv_some("a message", 1024)
        if not data:
            break
        if data == EXIT:
            stream.recv_to_eof("the client's FIN after 'exit'", RECV_LIMIT)
            break
        stream.send(echo_reply(data))
    else:
        raise GeneratorError(f"{stream.label}: client sent more than {MAX_MESSAGES} messages")
    time.sleep(close_delay)
    close_orderly(stream)


class TcpEcho(TcpScenario):
    info = ScenarioInfo(
        name="tcp-echo",
        description="threaded server sends 'Welcome!', answers each message X with 'Hello, X!' until "
        "'exit'; client sends Michael, Tracy, Sarah, exit and closes first",
        default_port=9999,
        transports=("tcp",),
        ipv6=True,
        default_options={"messages": TUTORIAL_NAMES, "close_delay": DEFAULT_CLOSE_DELAY},
        option_help={"messages": "what the client sends before 'exit'", "close_delay": CLOSE_DELAY_HELP},
    )

    def validate(self, opts: Opts) -> None:
        _check_messages(opts, forbid_exit=True)
        _check_close_delay(opts)

    def expectation(self, opts: Opts) -> TcpExpectation:
        return TcpExpectation("client", _orderly_teardown(opts.get_float("close_delay")))

    def notes(self, opts: Opts) -> list[str]:
        return ["the client closes right after sending 'exit'; the server waits for its FIN",
                _close_delay_note(opts.get_float("close_delay"), "server")]

    def handle(self, stream: Stream, opts: Opts, link: Link) -> None:
        echo_handler(stream, opts.get_float("close_delay"))

    def client(self, connector: Connector, opts: Opts, link: Link) -> None:
        echo_conversation(connector.connect(), opts.get_strs("messages"))


class Concurrent(TcpEcho):
    info = ScenarioInfo(
        name="concurrent",
        description="N tcp-echo clients at once against the threaded server (connected one after "
        "the other, then talking in parallel threads)",
        default_port=9999,
        transports=("tcp",),
        ipv6=True,
        default_options={"clients": 5, "messages": TUTORIAL_NAMES, "close_delay": DEFAULT_CLOSE_DELAY},
        option_help={"clients": f"how many clients (1 to {MAX_CLIENTS})",
                     "messages": "what each client sends before 'exit'", "close_delay": CLOSE_DELAY_HELP},
    )

    def validate(self, opts: Opts) -> None:
        super().validate(opts)
        clients = opts.get_int("clients")
        opts.require(1 <= clients <= MAX_CLIENTS, "clients", f"must be 1 to {MAX_CLIENTS}")

    def server_connections(self, opts: Opts) -> int:
        return opts.get_int("clients")

    def notes(self, opts: Opts) -> list[str]:
        return [f"{opts.get_int('clients')} clients connect one after the other (definite SYN order), "
                "then all converse at the same time, each in its own thread", *super().notes(opts)]

    def client(self, connector: Connector, opts: Opts, link: Link) -> None:
        messages = opts.get_strs("messages")
        streams = [connector.connect() for _ in range(opts.get_int("clients"))]
        errors: list[BaseException] = []
        lock = threading.Lock()

        def talk(stream: Stream) -> None:
            try:
                echo_conversation(stream, messages)
            except BaseException as exc:
                with lock:
                    errors.append(exc)
                stream.force_shutdown()

        threads = [threading.Thread(target=talk, args=(s,), name=f"loopcap-concurrent-client-{i}", daemon=True)
                   for i, s in enumerate(streams)]
        for t in threads:
            t.start()
        bound = time.monotonic() + connector.io_timeout * (2 * len(messages) + 4)
        for t in threads:
            t.join(max(0.0, bound - time.monotonic()))
        if any(t.is_alive() for t in threads):
            raise GeneratorError(f"{connector.label}: a client thread did not finish in time")
        if errors:
            raise errors[0]


# -- tcp-welcome --------------------------------------------------------------------------------

WELCOME_PYTHON = b"welcome to python!"


class TcpWelcome(TcpScenario):
    info = ScenarioInfo(
        name="tcp-welcome",
        description="server sends 'welcome to python!' and closes at once (server closes first); "
        "the client reads to EOF and closes",
        default_port=12345,
        transports=("tcp",),
        ipv6=True,
        default_options={"close_delay": DEFAULT_CLOSE_DELAY},
        option_help={"close_delay": CLOSE_DELAY_HELP},
    )

    def validate(self, opts: Opts) -> None:
        _check_close_delay(opts)

    def expectation(self, opts: Opts) -> TcpExpectation:
        return TcpExpectation("server", _orderly_teardown(opts.get_float("close_delay")))

    def notes(self, opts: Opts) -> list[str]:
        return [_close_delay_note(opts.get_float("close_delay"), "client")]

    def handle(self, stream: Stream, opts: Opts, link: Link) -> None:
        stream.send(WELCOME_PYTHON)
        close_orderly(stream)

    def client(self, connector: Connector, opts: Opts, link: Link) -> None:
        stream = connector.connect()
        got = stream.recv_to_eof("the welcome message", RECV_LIMIT)
        _expect(stream, got, WELCOME_PYTHON, "welcome")
        time.sleep(opts.get_float("close_delay"))
        close_orderly(stream)


# -- http-get -----------------------------------------------------------------------------------

HTTP_BODY = (b"<!DOCTYPE html>\n<html><head><title>loopcap</title></head>\n"
             b"<body><h1>Hello from loopcap</h1><p>Served over loopback.</p></body></html>\n")
HTTP_NOT_FOUND = b"not found\n"
HTTP_SERVER_NAME = b"loopcap-http/1"


def http_response(status: bytes, body: bytes, content_type: bytes) -> bytes:
    head = [
        b"HTTP/1.1 " + status,
        b"Server: " + HTTP_SERVER_NAME,
        b"Content-Type: " + content_type,
        b"Content-Length: " + str(len(body)).encode("ascii"),
        b"Connection: close",
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def http_request(path: str, host_header: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n\r\n").encode("ascii")


class HttpGet(TcpScenario):
    info = ScenarioInfo(
        name="http-get",
        description="small HTTP/1.1 server; the client sends 'GET / HTTP/1.1', Host, 'Connection: "
        "close', reads to EOF and splits header from body; the server closes first",
        default_port=8000,
        transports=("tcp",),
        ipv6=True,
        default_options={"path": "/", "close_delay": DEFAULT_CLOSE_DELAY},
        option_help={"path": "the request target (the server answers 200 for '/' and 404 otherwise)",
                     "close_delay": CLOSE_DELAY_HELP},
    )

    def validate(self, opts: Opts) -> None:
        path = opts.get_str("path")
        opts.require(path.startswith("/") and path.isascii() and path.isprintable() and " " not in path
                     and len(path) <= 1000, "path", "must start with '/' and be printable ASCII without spaces")
        _check_close_delay(opts)

    def expectation(self, opts: Opts) -> TcpExpectation:
        return TcpExpectation("server", _orderly_teardown(opts.get_float("close_delay")))

    def notes(self, opts: Opts) -> list[str]:
        return ["the server answers one request with 'Connection: close' and closes first",
                _close_delay_note(opts.get_float("close_delay"), "client")]

    def handle(self, stream: Stream, opts: Opts, link: Link) -> None:
        head = stream.recv_until(b"\r\n\r\n", "the request header", 65536)
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            response = http_response(b"400 Bad Request", b"bad request\n", b"text/plain; charset=utf-8")
        elif parts[0] != b"GET":
            response = http_response(b"405 Method Not Allowed", b"only GET\n", b"text/plain; charset=utf-8")
        elif parts[1] == b"/":
            response = http_response(b"200 OK", HTTP_BODY, b"text/html; charset=utf-8")
        else:
            response = http_response(b"404 Not Found", HTTP_NOT_FOUND, b"text/plain; charset=utf-8")
        request_line = head.split(b"\r\n", 1)[0]
        stream.notes.append(f"request line {request_line!r}")
        stream.send(response)
        close_orderly(stream)

    def client(self, connector: Connector, opts: Opts, link: Link) -> None:
        server = connector.server
        stream = connector.connect()
        stream.send(http_request(opts.get_str("path"), str(server)))
        raw = stream.recv_to_eof("the HTTP response", RECV_LIMIT)
        header, sep, body = raw.partition(b"\r\n\r\n")
        if not sep:
            raise GeneratorError(f"{stream.label}: the response has no end of header (CRLF CRLF)")
        lines = header.split(b"\r\n")
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if length is not None and length != len(body):
            raise GeneratorError(f"{stream.label}: Content-Length {length} but the body has {len(body)} bytes")
        stream.notes.append(f"status line {lines[0].decode('latin-1')!r}, header {len(header) + 4} bytes, "
                            f"body {len(body)} bytes")
        time.sleep(opts.get_float("close_delay"))
        close_orderly(stream)


# -- half-close ---------------------------------------------------------------------------------

HALF_CLOSE_REQUEST = b"Here is all my data. I am done sending: SHUT_WR.\n"


def half_close_reply(i: int, n: int, received: int) -> bytes:
    return f"reply {i} of {n}: you sent {received} bytes and closed your side\n".encode("ascii")


class HalfClose(TcpScenario):
    info = ScenarioInfo(
        name="half-close",
        description="client sends data then shutdown(SHUT_WR); the server reads to EOF, keeps sending "
        "after it, then closes; the client reads to EOF",
        default_port=9100,
        transports=("tcp",),
        ipv6=True,
        default_options={"replies": 3},
        option_help={"replies": "how many messages the server sends after the client's FIN (1 to 100)"},
    )

    def validate(self, opts: Opts) -> None:
        replies = opts.get_int("replies")
        opts.require(1 <= replies <= MAX_MESSAGES, "replies", f"must be 1 to {MAX_MESSAGES}")

    def expectation(self, opts: Opts) -> TcpExpectation:
        return TcpExpectation("client", ("half-close",))

    def notes(self, opts: Opts) -> list[str]:
        return ["the server sends only after reading the client's FIN, so data always flows after the "
                "first FIN: half-close; the client ends in TIME_WAIT"]

    def handle(self, stream: Stream, opts: Opts, link: Link) -> None:
        received = stream.recv_to_eof("the client's data and FIN", RECV_LIMIT)
        n = opts.get_int("replies")
        for i in range(1, n + 1):
            stream.send(half_close_reply(i, n, len(received)))
        close_orderly(stream)

    def client(self, connector: Connector, opts: Opts, link: Link) -> None:
        stream = connector.connect()
        stream.send(HALF_CLOSE_REQUEST)
        shutdown_orderly(stream)
        got = stream.recv_to_eof("the server's replies", RECV_LIMIT)
        n = opts.get_int("replies")
        want = b"".join(half_close_reply(i, n, len(HALF_CLOSE_REQUEST)) for i in range(1, n + 1))
        _expect(stream, got, want, "replies")
        close_orderly(stream)


# -- rst-abort ----------------------------------------------------------------------------------

ABORT_REQUEST = b"Hello, I will not say goodbye"
ABORT_REPLY = b"OK, suit yourself"
ABORT_LAST_WORD = b"Got it"


class RstAbort(TcpScenario):
    info = ScenarioInfo(
        name="rst-abort",
        description="after one request and reply, one side sets SO_LINGER (on, 0 s) and closes: "
        "RST instead of FIN (the client by default; aborter='server' for the other way)",
        default_port=9101,
        transports=("tcp",),
        ipv6=True,
        default_options={"aborter": "client"},
        option_help={"aborter": "who resets: 'client' (default) or 'server'"},
    )

    def validate(self, opts: Opts) -> None:
        opts.require(opts.get_str("aborter") in ("client", "server"), "aborter", "must be 'client' or 'server'")

    def _aborter(self, opts: Opts) -> Side:
        return "server" if opts.get_str("aborter") == "server" else "client"

    def expectation(self, opts: Opts) -> TcpExpectation:
        side = self._aborter(opts)
        return TcpExpectation(side, ("reset",), reset_by=side)

    def notes(self, opts: Opts) -> list[str]:
        side = self._aborter(opts)
        other = "server" if side == "client" else "client"
        return [f"the {side} aborts only after the {other}'s last bytes were read, so no data is in flight; "
                f"its kernel sends RST, the {other} gets ECONNRESET; nobody ends in TIME_WAIT"]

    def handle(self, stream: Stream, opts: Opts, link: Link) -> None:
        _expect(stream, stream.recv_exact(len(ABORT_REQUEST), "the request"), ABORT_REQUEST, "request")
        stream.send(ABORT_REPLY)
        if self._aborter(opts) == "server":
            _expect(stream, stream.recv_exact(len(ABORT_LAST_WORD), "the last word"), ABORT_LAST_WORD, "last word")
            stream.abort()
            return
        if not stream.recv_reset("the client's RST"):
            raise GeneratorError(f"{stream.label}: server got an orderly FIN, expected the client's RST")
        stream.notes.append("server saw the client's RST (ECONNRESET)")
        stream.close()

    def client(self, connector: Connector, opts: Opts, link: Link) -> None:
        stream = connector.connect()
        stream.send(ABORT_REQUEST)
        _expect(stream, stream.recv_exact(len(ABORT_REPLY), "the reply"), ABORT_REPLY, "reply")
        if self._aborter(opts) == "client":
            stream.abort()
            return
        stream.send(ABORT_LAST_WORD)
        if not stream.recv_reset("the server's RST"):
            raise GeneratorError(f"{stream.label}: client got an orderly FIN, expected the server's RST")
        stream.notes.append("client saw the server's RST (ECONNRESET)")
        stream.close()


# -- refused ------------------------------------------------------------------------------------


class Refused(TcpScenario):
    info = ScenarioInfo(
        name="refused",
        description="SYN to a closed loopback port, RST/ACK back (ECONNREFUSED); no server. Port 0 "
        "means: bind port 0, note the port, close it, then connect to it",
        default_port=None,
        transports=("tcp",),
        ipv6=True,
        default_options={},
        has_server=False,
    )

    def expectation(self, opts: Opts) -> TcpExpectation:
        return TcpExpectation(None, ("reset",), reset_by="server", refused=True)

    def handle(self, stream: Stream, opts: Opts, link: Link) -> None:
        raise GeneratorError("scenario 'refused' has no server")

    def client(self, connector: Connector, opts: Opts, link: Link) -> None:
        if connector.port == 0:
            connector.port = closed_port(connector.target)
            connector.notes.append(f"closed port {connector.port} chosen by binding port 0 and closing it")
        connector.connect_refused()


# -- bulk ---------------------------------------------------------------------------------------


def bulk_bytes(size: int, seed: int, direction: str) -> bytes:
    """Deterministic pseudo-random bytes (the same for a given size, seed and direction)."""
    return random.Random(f"loopcap-bulk-{seed}-{direction}").randbytes(size)


def bulk_header(size: int, seed: int) -> bytes:
    return f"BULK {size} {seed}\n".encode("ascii")


class Bulk(TcpScenario):
    info = ScenarioInfo(
        name="bulk",
        description="MB-sized transfer both ways: the client sends a 'BULK <size> <seed>' line and "
        "<size> pseudo-random bytes, the server answers with <size> other ones; the client closes first",
        default_port=9102,
        transports=("tcp",),
        ipv6=True,
        default_options={"size": 1024 * 1024, "seed": 0, "close_delay": DEFAULT_CLOSE_DELAY},
        option_help={"size": f"bytes each way (1 to {MAX_BULK_SIZE})",
                     "seed": "seed of the deterministic pseudo-random bytes", "close_delay": CLOSE_DELAY_HELP},
    )

    def validate(self, opts: Opts) -> None:
        size = opts.get_int("size")
        opts.require(1 <= size <= MAX_BULK_SIZE, "size", f"must be 1 to {MAX_BULK_SIZE}")
        _check_close_delay(opts)

    def expectation(self, opts: Opts) -> TcpExpectation:
        return TcpExpectation("client", _orderly_teardown(opts.get_float("close_delay")))

    def notes(self, opts: Opts) -> list[str]:
        return ["one direction at a time: the server answers after it has read everything",
                _close_delay_note(opts.get_float("close_delay"), "server")]

    def handle(self, stream: Stream, opts: Opts, link: Link) -> None:
        head = stream.recv_until(b"\n", "the BULK line", 64)
        line, _, rest = head.partition(b"\n")
        fields = line.split()
        if len(fields) != 3 or fields[0] != b"BULK" or not fields[1].isdigit() or not fields[2].isdigit():
            raise GeneratorError(f"{stream.label}: bad BULK line {line!r}")
        size, seed = int(fields[1]), int(fields[2])
        if not 1 <= size <= MAX_BULK_SIZE:
            raise GeneratorError(f"{stream.label}: BULK size {size} out of range")
        if len(rest) < size:
            stream.recv_exact(size - len(rest), "the client's bulk data")
        stream.send(bulk_bytes(size, seed, "down"))
        stream.recv_to_eof("the client's FIN", RECV_LIMIT)
        time.sleep(opts.get_float("close_delay"))
        close_orderly(stream)

    def client(self, connector: Connector, opts: Opts, link: Link) -> None:
        size, seed = opts.get_int("size"), opts.get_int("seed")
        stream = connector.connect()
        stream.send(bulk_header(size, seed))
        stream.send(bulk_bytes(size, seed, "up"))
        got = stream.recv_exact(size, "the server's bulk data")
        if got != bulk_bytes(size, seed, "down"):
            raise GeneratorError(f"{stream.label}: the server's {size} bytes are not the expected ones")
        close_orderly(stream)


# -- simultaneous-close -------------------------------------------------------------------------

SIM_REQUEST = b"Let's close together"
SIM_REPLY = b"On three: one, two, three"


class SimultaneousClose(TcpScenario):
    info = ScenarioInfo(
        name="simultaneous-close",
        description="after one exchange both sides shutdown(SHUT_WR) at once (a barrier when run "
        "together); on plain loopback the first FIN usually arrives before the second is sent",
        default_port=9103,
        transports=("tcp",),
        ipv6=True,
        default_options={"forced": False},
        option_help={"forced": "force true simultaneity: `loopcap capture` runs the scenario in a private "
                               "network namespace whose loopback drops the first FIN on input (root, ip, "
                               "nft); the default there is to force it when possible"},
    )

    def validate(self, opts: Opts) -> None:
        # forced=True is only honest inside the namespace capture/netns.py prepares, where the first
        # FIN is held back so the FINs really cross
        from capture.netns import inside

        opts.require(not opts.get_bool("forced") or inside(), "forced",
                     "forcing a simultaneous close needs the private network namespace that "
                     "`loopcap capture --scenario simultaneous-close` sets up (root, ip, nft)")

    def expectation(self, opts: Opts) -> TcpExpectation:
        if opts.get_bool("forced"):
            return TcpExpectation("both", ("simultaneous",))
        return TcpExpectation("both", ("simultaneous", "three-way", "four-way"))

    def notes(self, opts: Opts) -> list[str]:
        if opts.get_bool("forced"):
            return ["simultaneity forced: inside a private network namespace the first FIN is dropped on "
                    "the receiver's input hook (after the capture saw it), so the peer's FIN leaves "
                    "before the first one arrives; the first FIN is then retransmitted and acknowledged"]
        return ["simultaneity not forced: the FINs cross only if both leave before either arrives; "
                "otherwise the later FIN carries the ACK (three-way) or follows a bare ACK (four-way)"]

    def handle(self, stream: Stream, opts: Opts, link: Link) -> None:
        _expect(stream, stream.recv_exact(len(SIM_REQUEST), "the request"), SIM_REQUEST, "request")
        stream.send(SIM_REPLY)
        stream.wait_acked()
        link.sync("the simultaneous close")
        shutdown_orderly(stream)
        stream.recv_to_eof("the client's FIN", RECV_LIMIT)
        close_orderly(stream)

    def client(self, connector: Connector, opts: Opts, link: Link) -> None:
        stream = connector.connect()
        stream.send(SIM_REQUEST)
        _expect(stream, stream.recv_exact(len(SIM_REPLY), "the reply"), SIM_REPLY, "reply")
        stream.wait_acked()
        link.sync("the simultaneous close")
        shutdown_orderly(stream)
        stream.recv_to_eof("the server's FIN", RECV_LIMIT)
        close_orderly(stream)


# -- udp-echo -----------------------------------------------------------------------------------

UDP_DEFAULT_SEED = 1060
"""Default drop seed. With the default messages and drop_rate it drops some requests and answers
others (pinned by tests)."""


def udp_reply(data: bytes) -> bytes:
    return f"Your data was {len(data)} bytes".encode("ascii")


class DropPolicy:
    """Decides which requests a lossy server drops: a seeded RNG (reproducible runs), never more
    than ``max_consecutive`` drops in a row per client (so the client's retries can succeed)."""

    def __init__(self, *, lossy: bool, seed: int, rate: float, max_consecutive: int) -> None:
        self.lossy = lossy
        self.rate = rate
        self.max_consecutive = max_consecutive
        self._rng = random.Random(seed)
        self._streak: dict[Endpoint, int] = {}

    def drop(self, client: Endpoint) -> bool:
        if not self.lossy:
            return False
        streak = self._streak.get(client, 0)
        dropped = self._rng.random() < self.rate and streak < self.max_consecutive
        self._streak[client] = streak + 1 if dropped else 0
        return dropped


class UdpEcho:
    """udp-echo: the server answers each datagram with its size; lossy variant drops some."""

    info = ScenarioInfo(
        name="udp-echo",
        description="server answers each datagram with 'Your data was N bytes'; lossy=True drops "
        "about half the requests (seeded) and the client retries with a doubling timeout "
        "(0.1 s, 0.2 s, ... giving up past 2 s)",
        default_port=1060,
        transports=("udp",),
        ipv6=True,
        default_options={
            "messages": TUTORIAL_NAMES,
            "lossy": False,
            "seed": UDP_DEFAULT_SEED,
            "drop_rate": 0.5,
            "max_consecutive_drops": 3,
            "timeout_initial": 0.1,
            "timeout_max": 2.0,
        },
        option_help={
            "messages": "the datagrams the client sends, one at a time",
            "lossy": "the server drops requests on purpose",
            "seed": "seed of the server's drop decisions",
            "drop_rate": "probability of dropping a request (lossy only)",
            "max_consecutive_drops": "the server never drops more requests in a row from one client",
            "timeout_initial": "the client's first reply timeout in seconds (doubles on each retry)",
            "timeout_max": "the client gives up once the doubled timeout exceeds this",
        },
    )

    def validate(self, opts: Opts) -> None:
        _check_messages(opts, forbid_exit=False)
        rate = opts.get_float("drop_rate")
        opts.require(0.0 <= rate <= 1.0, "drop_rate", "must be between 0 and 1")
        opts.require(opts.get_int("max_consecutive_drops") >= 0, "max_consecutive_drops", "must be >= 0")
        first, limit = opts.get_float("timeout_initial"), opts.get_float("timeout_max")
        opts.require(0.001 <= first <= 10.0, "timeout_initial", "must be 0.001 to 10 s")
        opts.require(first <= limit <= 60.0, "timeout_max", "must be >= timeout_initial and <= 60 s")

    def answers_per_client(self, opts: Opts) -> int:
        return len(opts.get_strs("messages"))

    def drop_policy(self, opts: Opts) -> DropPolicy:
        return DropPolicy(lossy=opts.get_bool("lossy"), seed=opts.get_int("seed"),
                          rate=opts.get_float("drop_rate"), max_consecutive=opts.get_int("max_consecutive_drops"))

    def notes(self, opts: Opts) -> list[str]:
        if not opts.get_bool("lossy"):
            return []
        return [f"lossy: the server drops requests with probability {opts.get_float('drop_rate'):g} "
                f"(seed {opts.get_int('seed')}, at most {opts.get_int('max_consecutive_drops')} in a row)"]

    def client(self, target: Target, port: int, opts: Opts, io_timeout: float,
               label: str) -> UdpConversation:
        """The tutorial's client: send, wait ``timeout_initial``, resend with the timeout doubled,
        give up once it exceeds ``timeout_max``."""
        server = target.endpoint(port)
        sock = new_socket(target.family, socket.SOCK_DGRAM)
        try:
            sock.settimeout(io_timeout)
            sock.connect(target.sockaddr(port))
            conv = UdpConversation(0, endpoint_of(sock.getsockname()), server, lossy=opts.get_bool("lossy"),
                                   retries=0)
            for message in opts.get_strs("messages"):
                self._exchange(sock, conv, message.encode("utf-8"), opts, label)
            return conv
        finally:
            sock.close()

    def _exchange(self, sock: socket.socket, conv: UdpConversation, data: bytes, opts: Opts,
                  label: str) -> None:
        want = udp_reply(data)
        delay = opts.get_float("timeout_initial")
        limit = opts.get_float("timeout_max")
        attempts = 0
        while True:
            sock.send(data)
            conv.datagrams.append(Datagram("client", data))
            attempts += 1
            deadline = time.monotonic() + delay
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                sock.settimeout(remaining)
                try:
                    reply = sock.recv(65535)
                except TimeoutError:
                    break
                except ConnectionRefusedError as exc:
                    raise GeneratorError(
                        f"{label}: {conv.server} is unreachable (ICMP port unreachable): no server is listening",
                        hint="start the server first (serve / `loopcap serve`) on the same host and port",
                    ) from exc
                conv.datagrams.append(Datagram("server", reply))
                if reply == want:
                    return
                conv.notes.append(f"late or unexpected reply {reply!r} while waiting for {want!r}")
            delay *= 2
            if delay > limit:
                raise GeneratorError(
                    f"{label}: no reply to {data!r} after {attempts} tries; I think the server is down",
                    hint="is the server running on that port? (a lossy server never drops more than "
                    "max_consecutive_drops in a row)")
            assert conv.retries is not None
            conv.retries += 1


TCP_SCENARIOS: tuple[TcpScenario, ...] = (
    TcpEcho(),
    TcpWelcome(),
    HttpGet(),
    HalfClose(),
    RstAbort(),
    Refused(),
    Concurrent(),
    Bulk(),
    SimultaneousClose(),
)
UDP_ECHO = UdpEcho()

_ORDERED: tuple[TcpScenario | UdpEcho, ...] = (TCP_SCENARIOS[0], TCP_SCENARIOS[1], UDP_ECHO, *TCP_SCENARIOS[2:])
IMPLEMENTATIONS: dict[str, TcpScenario | UdpEcho] = {s.info.name: s for s in _ORDERED}

SCENARIOS: dict[str, ScenarioInfo] = {name: impl.info for name, impl in IMPLEMENTATIONS.items()}
"""Every scenario by name, in the order DESIGN.md lists them."""
