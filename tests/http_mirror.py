"""A real HTTP server on 127.0.0.1 serving a folder, with Range support and injectable faults.

Faults are queued per URL path and used up one request at a time:
  drop     send the headers and half the body, then close the connection
  status   answer with an HTTP error status (e.g. 500, 404)
  corrupt  flip bytes in the body
  stall    accept the request and say nothing for `delay_s`
  ignore_range  answer a Range request with the whole file (200)
A throttle (bytes per chunk, seconds between chunks) slows every response, so a test can kill a client
mid-download. Every request is logged when it arrives (so the log order is the order of arrival, even
for a response still being sent) and completed with its status and bytes sent.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class Fault:
    kind: str
    times: int = 1                 # requests it applies to; -1: every request
    status: int = 500
    delay_s: float = 5.0


@dataclass
class Request:
    path: str
    range_start: int
    status: int
    bytes_sent: int


@dataclass
class MirrorServer:
    root: Path
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    log: list[Request] = field(default_factory=list)
    throttle: tuple[int, float] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:   # quiet
                pass

            def do_GET(self) -> None:
                mirror._serve(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> MirrorServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def inject(self, path: str, kind: str, **kwargs: object) -> None:
        with self._lock:
            self.faults.setdefault("/" + path.lstrip("/"), []).append(Fault(kind, **kwargs))

    def requests(self, path: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.log if path is None or r.path == "/" + path.lstrip("/")]

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            queue = self.faults.get(path)
            if not queue:
                return None
            fault = queue[0]
            if fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    queue.pop(0)
            return fault

    def _arrived(self, path: str, start: int) -> Request:
        request = Request(path, start, 0, 0)
        with self._lock:
            self.log.append(request)
        return request

    def _record(self, request: Request, status: int, sent: int) -> None:
        with self._lock:
            request.status, request.bytes_sent = status, sent

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        path = unquote(urlsplit(handler.path).path)
        match = re.match(r"bytes=(\d+)-$", handler.headers.get("Range", ""))
        start = int(match.group(1)) if match else 0
        request = self._arrived(path, start)
        fault = self._take_fault(path)
        if fault and fault.kind == "stall":
            time.sleep(fault.delay_s)
            return
        if fault and fault.kind == "status":
            self._record(request, fault.status, 0)          # before answering: the client may act on it at once
            handler.send_error(fault.status)
            return
        file = (self.root / path.lstrip("/")).resolve()
        if not file.is_relative_to(self.root.resolve()) or not file.is_file():
            self._record(request, 404, 0)          # before answering: the client may act on it at once
            handler.send_error(404)
            return
        data = file.read_bytes()
        if fault and fault.kind == "ignore_range":
            start = 0
        if start >= len(data) and start > 0:
            self._record(request, 416, 0)          # before answering: the client may act on it at once
            handler.send_error(416)
            return
        body = bytearray(data[start:])
        if fault and fault.kind == "corrupt":
            for i in range(len(body) // 2, min(len(body), len(body) // 2 + 16)):
                body[i] ^= 0xFF
        status = 206 if start else 200
        self._record(request, status, 0)
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Accept-Ranges", "bytes")
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.end_headers()
        to_send = len(body) // 2 if fault and fault.kind == "drop" else len(body)
        sent = 0
        chunk, pause = self.throttle or (len(body) or 1, 0.0)
        try:
            while sent < to_send:
                piece = bytes(body[sent : min(sent + chunk, to_send)])
                sent += len(piece)
                self._record(request, status, sent)    # counted before the client can see the bytes
                handler.wfile.write(piece)
                handler.wfile.flush()
                if pause:
                    time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass
        handler.close_connection = True
