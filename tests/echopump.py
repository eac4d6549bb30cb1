"""Background TCP echo traffic on loopback for the live-capture tests: a server and a client thread
exchanging ``size`` bytes per connection, ``pause`` seconds apart, from :meth:`EchoPump.start` until
:meth:`EchoPump.stop` (or the ``with`` block's end), bounded by ``seconds`` and ``limit`` exchanges."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class EchoPump:
    def __init__(self, host: str = "127.0.0.1", *, size: int = 4, pause: float = 0.0, seconds: float = 15.0,
                 limit: int = 100) -> None:
        self.host = host
        self.listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind((host, 0))
        self.listener.listen(64)
        self.listener.settimeout(0.1)
        self.port: int = self.listener.getsockname()[1]
        self.limit, self.seconds, self.size, self.pause = limit, seconds, size, pause
        #: exchanges completed so far
        self.done = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._serve, daemon=True),
                         threading.Thread(target=self._client, daemon=True)]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            with conn, contextlib.suppress(OSError):
                conn.settimeout(2)
                while data := conn.recv(65536):
                    conn.sendall(data)

    def _client(self) -> None:
        end = time.monotonic() + self.seconds
        while not self._stop.is_set() and self.done < self.limit and time.monotonic() < end:
            try:
                with socket.create_connection((self.host, self.port), timeout=2) as c:
                    c.sendall(b"p" * self.size)
                    got = 0
                    while got < self.size:
                        chunk = c.recv(65536)
                        if not chunk:
                            break
                        got += len(chunk)
            except OSError:
                time.sleep(0.01)
                continue
            self.done += 1
            if self.pause:
                self._stop.wait(self.pause)

    def start(self) -> EchoPump:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            if t.is_alive():
                t.join(5)
        self.listener.close()

    def __enter__(self) -> EchoPump:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
