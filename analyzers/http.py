"""Streaming HTTP/1.x message splitter.

Fed with one direction's reassembled bytes, it names each request and response (method, path,
status, header and body sizes) the way the socket tutorials split header from body, keeping only
the header block being parsed (bounded) and never the bodies.  Bodies are delimited as RFC 9112
says: ``Content-Length``, ``Transfer-Encoding: chunked``, no body for HEAD responses, 1xx, 204 and
304, and otherwise (responses only) until the connection closes.

A chunked body (RFC 9112 section 7.1) is ``chunk-size [; extensions] CRLF chunk-data CRLF``
repeated, then the last chunk ``0 [; extensions] CRLF``, a trailer section of zero or more field lines
and a final CRLF; the message ends right after that CRLF.  Bare LF is accepted for CRLF.  Anything
else (a size that is not hex, chunk data not followed by a line end, a chunk-size line longer than
:data:`MAX_CHUNK_LINE_BYTES`, a trailer section longer than :data:`MAX_HEADER_BYTES`) stops the
splitter for that direction (``state == "off"``) rather than guessing where the next message starts.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

METHODS: Final = (b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE")
#: how an HTTP/1.x message starts: a status line or a request line's method and space
_STARTS: Final = (b"HTTP/1.", *(m + b" " for m in METHODS))
_LONGEST_START: Final = max(map(len, _STARTS))

MAX_HEADER_BYTES: Final = 64 * 1024
MAX_MESSAGES: Final = 10_000
#: longest chunk-size line (size, extensions, CR) accepted before its LF
MAX_CHUNK_LINE_BYTES: Final = 1024
_HEX_DIGITS: Final = b"0123456789abcdefABCDEF"


def looks_like_http(probe: bytes) -> bool:
    """Whether the first bytes of a message (``probe``) start, or could still start, a status line
    or a request line."""
    return probe.startswith(_STARTS) or (len(probe) < _LONGEST_START and any(s.startswith(probe) for s in _STARTS))


def _content_length(value: str) -> int | None:
    """A Content-Length value as a number, or None when it is not one.  ASCII digits only: ``str.isdigit``
    also accepts ``'\u00b9'`` and other digits that ``int`` refuses, and ``int`` refuses more than 4300
    digits (the header comes from the capture, so both must be handled)."""
    v = value.strip()
    if not v.isascii() or not v.isdigit():
        return None
    try:
        return int(v)
    except ValueError:  # more digits than int() converts
        return None


@dataclass
class HttpMessage:
    kind: str  #: "request" or "response"
    frame: int  #: frame where the message starts
    start_line: str
    method: str | None = None
    target: str | None = None
    version: str = ""
    status: int | None = None
    reason: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    header_bytes: int = 0  #: start line + headers + the blank line
    body_bytes: int = 0
    body_framing: str = "none"  #: content-length, chunked, until-close, none
    complete: bool = False

    def header(self, name: str) -> str | None:
        low = name.lower()
        for k, v in self.headers:
            if k.lower() == low:
                return v
        return None

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"kind": self.kind, "frame": self.frame, "start_line": self.start_line,
                                "version": self.version}
        if self.kind == "request":
            d["method"] = self.method
            d["target"] = self.target
        else:
            d["status"] = self.status
            d["reason"] = self.reason
        d.update(header_bytes=self.header_bytes, body_bytes=self.body_bytes, body_framing=self.body_framing,
                 complete=self.complete, content_type=self.header("Content-Type"),
                 host=self.header("Host"))
        return d


class HttpSplitter:
    """Split one direction of a connection into HTTP/1.x messages (sans-I/O)."""

    def __init__(self) -> None:
        self.messages: list[HttpMessage] = []
        self.state = "detect"  # detect, headers, body, chunk-size, chunk-data, chunk-crlf, trailers, close, off
        self._buf = bytearray()
        self._remaining = 0
        self._cur: HttpMessage | None = None
        self._frame = 0
        self._msg_frame = 0  #: frame of the first byte of the message whose header block is being read
        self._trailer_bytes = 0  #: size of the trailer section read so far (bounded by MAX_HEADER_BYTES)
        #: request methods seen on the peer direction (to know that a HEAD response has no body)
        #: (made on the first request: most connections never carry HTTP, and an empty deque is 600 bytes)
        self.peer_requests: deque[str] | None = None
        self.peer: HttpSplitter | None = None

    @property
    def active(self) -> bool:
        return self.state != "off"

    def feed(self, data: bytes, frame: int) -> bool:
        """Split ``data`` (the stream's next bytes, from ``frame``); False once this direction is
        known not to be HTTP/1.x, so that the caller can stop feeding it."""
        if self.state == "off" or not data:
            return self.state != "off"
        self._frame = frame
        mv = memoryview(data)
        pos = 0
        n = len(data)
        guard = 0
        while pos < n and self.state != "off":
            guard += 1
            if guard > 1_000_000:
                self.state = "off"
                break
            st = self.state
            if st in ("detect", "headers"):
                pos = self._take_header_bytes(mv, pos, frame)
            elif st == "body":
                take = min(self._remaining, n - pos)
                assert self._cur is not None
                self._cur.body_bytes += take
                self._remaining -= take
                pos += take
                if self._remaining == 0:
                    self._done()
            elif st == "close":
                assert self._cur is not None
                self._cur.body_bytes += n - pos
                pos = n
            elif st == "chunk-size":
                line, pos = self._take_line(data, pos, MAX_CHUNK_LINE_BYTES)
                if line is None:
                    continue
                # chunk-size [; chunk-ext] -- extensions are skipped, whitespace around the size tolerated
                size_txt = line.split(b";", 1)[0].strip()
                # hex digits only: int(x, 16) also takes "-5" (a negative size moved ``pos`` backwards,
                # replaying the same bytes until the 1M-iteration guard: ~2 s per segment), "+5", "0x5"
                if not size_txt or size_txt.translate(None, _HEX_DIGITS):
                    self.state = "off"
                    continue
                size = int(size_txt, 16)  # at most MAX_CHUNK_LINE_BYTES digits, and base 16 has no digit limit
                if size == 0:  # last-chunk: a trailer section and the final CRLF follow
                    self.state = "trailers"
                    self._trailer_bytes = 0
                else:
                    self._remaining = size
                    self.state = "chunk-data"
            elif st == "chunk-data":
                take = min(self._remaining, n - pos)
                assert self._cur is not None
                self._cur.body_bytes += take
                self._remaining -= take
                pos += take
                if self._remaining == 0:
                    self.state = "chunk-crlf"
                    self._remaining = 2  # 2: CR or LF expected, 1: CR seen, LF expected
            elif st == "chunk-crlf":
                # the CRLF after chunk-data (bare LF tolerated); anything else is not a chunked body
                c = data[pos]
                pos += 1
                if c == 0x0A:
                    self.state = "chunk-size"
                elif c == 0x0D and self._remaining == 2:
                    self._remaining = 1
                else:
                    self.state = "off"
            elif st == "trailers":
                line, pos = self._take_line(data, pos, MAX_HEADER_BYTES - self._trailer_bytes)
                if line is None:
                    continue
                self._trailer_bytes += len(line) + 1
                if line in (b"", b"\r"):  # the CRLF that ends the trailer section and the message
                    self._done()
                elif b":" not in line and line[:1] not in (b" ", b"\t"):  # neither a field line nor obs-fold
                    self.state = "off"
            else:  # pragma: no cover - defensive
                self.state = "off"
        return self.state != "off"

    def _take_line(self, data: bytes, pos: int, limit: int) -> tuple[bytes | None, int]:
        """The next line of ``data`` from ``pos`` (without its LF, after whatever an earlier feed left
        in ``_buf``) and the position after it; ``None`` and ``len(data)`` when the line is not
        complete yet (it is kept in ``_buf``).  A line longer than ``limit`` turns the splitter off."""
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl
        if len(self._buf) + end - pos > limit:
            self._buf.clear()
            self.state = "off"
            return None, len(data)
        if nl < 0:
            self._buf += data[pos:]
            return None, len(data)
        line = bytes(self._buf) + data[pos:nl]
        self._buf.clear()
        return line, nl + 1

    def _take_header_bytes(self, mv: memoryview, pos: int, frame: int) -> int:
        data = mv.obj if isinstance(mv.obj, bytes) else bytes(mv)
        if not self._buf:  # the first byte of a message (the first one or the next on a keep-alive)
            self._msg_frame = frame
        if self.state == "detect":
            probe = bytes(self._buf[:8]) + bytes(mv[pos:pos + 8])
            if len(probe) >= 4 and not looks_like_http(probe):
                self.state = "off"
                return len(data)
        # find the end of the header block: \r\n\r\n or \n\n, possibly spanning feeds
        start_len = len(self._buf)
        self._buf += mv[pos:]
        end = self._buf.find(b"\r\n\r\n", max(0, start_len - 3))
        sep = 4
        if end < 0:
            end = self._buf.find(b"\n\n", max(0, start_len - 1))
            sep = 2
        if end < 0:
            if len(self._buf) > MAX_HEADER_BYTES:
                self.state = "off"
            return len(data)
        block_len = end + sep
        consumed = block_len - start_len
        block = bytes(self._buf[:end])
        self._buf.clear()
        self._start_message(block, block_len)
        return pos + consumed

    def _start_message(self, block: bytes, block_len: int) -> None:
        lines = block.replace(b"\r\n", b"\n").split(b"\n")
        start = lines[0].decode("latin-1")
        headers: list[tuple[str, str]] = []
        for ln in lines[1:]:
            if b":" in ln:
                k, v = ln.split(b":", 1)
                headers.append((k.decode("latin-1").strip(), v.decode("latin-1").strip()))
        frame = self._msg_frame
        parts = start.split(" ", 2)
        if start.startswith("HTTP/"):
            msg = HttpMessage("response", frame, start, version=parts[0])
            try:
                msg.status = int(parts[1]) if len(parts) > 1 else None
            except ValueError:
                msg.status = None
            msg.reason = parts[2] if len(parts) > 2 else ""
        elif len(parts) == 3 and parts[2].startswith("HTTP/"):
            msg = HttpMessage("request", frame, start, method=parts[0], target=parts[1], version=parts[2])
        else:
            self.state = "off"
            return
        msg.headers = headers[:200]
        msg.header_bytes = block_len
        if len(self.messages) < MAX_MESSAGES:
            self.messages.append(msg)
        if msg.kind == "request" and self.peer is not None:
            if self.peer.peer_requests is None:
                self.peer.peer_requests = deque(maxlen=1024)
            self.peer.peer_requests.append(msg.method or "")
        self._cur = msg
        te = (msg.header("Transfer-Encoding") or "").lower()
        cl = msg.header("Content-Length")
        no_body = False
        if msg.kind == "response":
            req = self.peer_requests.popleft() if self.peer_requests else None
            st = msg.status or 0
            if 100 <= st < 200 or st in (204, 304) or req == "HEAD":
                no_body = True
        if no_body:
            msg.body_framing = "none"
            self._done()
        elif "chunked" in te:
            msg.body_framing = "chunked"
            self.state = "chunk-size"
        elif cl is not None and _content_length(cl) is not None:
            msg.body_framing = "content-length"
            self._remaining = _content_length(cl) or 0
            if self._remaining == 0:
                self._done()
            else:
                self.state = "body"
        elif msg.kind == "response":
            msg.body_framing = "until-close"
            self.state = "close"
        else:
            msg.body_framing = "none"
            self._done()

    def _done(self) -> None:
        if self._cur is not None:
            self._cur.complete = True
        self._cur = None
        self.state = "headers"

    def finish(self) -> None:
        """End of stream: a body delimited by the close is complete now."""
        if self.state == "close" and self._cur is not None:
            self._cur.complete = True
