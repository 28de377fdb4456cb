"""A real local HTTP "archive" for tests and benchmarks, with fault injection.

:class:`ArchiveServer` is a small HTTP/1.1 server (keep-alive, one daemon thread
per connection) that serves registered bodies over GET and HEAD with the headers
a real archive sends: ``Content-Length``, ``Content-Type``, ``ETag``,
``Last-Modified`` and ``Accept-Ranges``. It answers conditional requests
(``If-None-Match``, ``If-Modified-Since``) with 304 and single byte ranges with
206/416, and it can be told to misbehave: a queue of faults per path, each
consumed by one request, in order.

Fault strings accepted by :meth:`ArchiveServer.fault`:

``"NNN"``
    respond with status NNN (200-599) and a short text body.
``"NNN:S"``
    the same with ``Retry-After: S`` (e.g. ``"429:1"``, ``"503:0"``).
``"reset"``
    close the socket abruptly without any response (the client sees a reset).
``"truncate"``
    send the headers with the full ``Content-Length``, half the body, then close.
``"truncate_after:N"``
    the same after N bytes of body.
``"stall:S"``
    send the headers and the first part of the body (1 KiB or half, whichever
    is smaller), go silent for S seconds, then close.
``"stall_after:N:S"``
    the same, after N bytes of body.
``"delay:S"``
    wait S seconds, then respond normally.
``"html"``
    respond 200 with an HTML login page instead of the body.
``"corrupt"``
    respond normally but with every body byte flipped (same length).

Bodies are streamed in 64 KiB chunks; bodies given as ``generator=(size,
make_chunks)`` are produced on the fly for each request and never held whole,
so a 1 GiB body costs a few chunks of memory.

Run ``python -m astroingest._archive_server --dir DIR`` to serve a directory; the
first line on stdout is the base URL.

Example::

    with ArchiveServer() as archive:
        url = archive.add("data/x.fits", b"SIMPLE  =")
        archive.fault("data/x.fits", "503:1", "truncate")
        ...
        assert archive.count("data/x.fits") == 3
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import enum
import hashlib
import http.server
import json
import mimetypes
import re
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Final, Literal
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["ArchiveServer", "RequestRecord", "main"]

CHUNK_SIZE: Final = 64 * 1024
"""Bodies are written in pieces of at most this many bytes."""

DEFAULT_LAST_MODIFIED: Final = datetime(2024, 1, 1, tzinfo=UTC)
"""Last-Modified of bodies added without one: fixed, so runs are reproducible."""

LOGIN_PAGE: Final = (
    b"<!DOCTYPE html>\n"
    b"<html><head><title>Login</title></head>\n"
    b"<body><h1>Archive login</h1>\n"
    b'<form method="post" action="/login">'
    b'<input name="username"><input name="password" type="password">'
    b'<button type="submit">Sign in</button></form>\n'
    b"</body></html>\n"
)
"""What the ``"html"`` fault and a missing required header serve."""

_STALL_PREFIX: Final = 1024
_FLIP: Final = bytes(b ^ 0xFF for b in range(256))
_DISCONNECTS: Final = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)
_ETAG_RE: Final = re.compile(r'\*|(?:W/)?"[^"]*"')
_RANGE_RE: Final = re.compile(r"(\d*)-(\d*)")


class _Auto(enum.Enum):
    AUTO = enum.auto()


_AUTO: Final = _Auto.AUTO

_Chunks = Iterator[bytes | memoryview]


@dataclass(frozen=True)
class RequestRecord:
    """One request the server received.

    ``headers`` has lower-cased names. ``status`` is the status sent, or None when
    the connection was reset without a response. ``time`` is ``time.time()`` when
    the response began (it is recorded before any byte of the response is sent,
    so a client that has seen the response always finds its record).
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    status: int | None
    time: float


@dataclass(frozen=True)
class ArchiveRequest:
    """What a route handler sees: one request, its body read whole (API calls are small)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    @property
    def params(self) -> dict[str, str]:
        """Query parameters, last value wins."""
        return {k: v[-1] for k, v in parse_qs(self.query, keep_blank_values=True).items()}

    def form(self) -> dict[str, str]:
        """An ``application/x-www-form-urlencoded`` body, last value wins."""
        pairs = parse_qs(self.body.decode("utf-8"), keep_blank_values=True)
        return {k: v[-1] for k, v in pairs.items()}

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass(frozen=True)
class Reply:
    """What a route handler answers."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/octet-stream"
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of_json(
        cls, obj: object, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Reply:
        body = json.dumps(obj).encode()
        return cls(status, body, "application/json", dict(headers or {}))


RouteHandler = Callable[[ArchiveRequest], Reply]


@dataclass(frozen=True)
class _Fault:
    kind: Literal["status", "reset", "truncate", "stall", "delay", "html", "corrupt"]
    status: int = 0
    retry_after: int | None = None
    limit: int | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class _Resource:
    size: int
    content_type: str
    etag: str | None
    last_modified: str | None
    last_modified_dt: datetime | None
    headers: tuple[tuple[str, str], ...]
    # (start, stop) -> the bytes [start, stop) in pieces; called per request.
    source: Callable[[int, int], _Chunks]


_PLAIN_FAULTS: Final[dict[str, _Fault]] = {
    "reset": _Fault("reset"),
    "truncate": _Fault("truncate"),
    "html": _Fault("html"),
    "corrupt": _Fault("corrupt"),
}


def _parse_fault(text: str) -> _Fault:
    name, sep, arg = text.partition(":")
    try:
        if re.fullmatch(r"\d{3}", name):
            status = int(name)
            if not 200 <= status <= 599:
                raise ValueError
            retry_after = int(arg) if sep else None
            if retry_after is not None and retry_after < 0:
                raise ValueError
            return _Fault("status", status=status, retry_after=retry_after)
        if not sep and name in _PLAIN_FAULTS:
            return _PLAIN_FAULTS[name]
        elif name == "truncate_after" and int(arg) >= 0:
            return _Fault("truncate", limit=int(arg))
        elif name == "stall" and float(arg) >= 0:
            return _Fault("stall", seconds=float(arg))
        elif name == "stall_after":
            count, _, seconds = arg.partition(":")
            if int(count) >= 0 and float(seconds) >= 0:
                return _Fault("stall", limit=int(count), seconds=float(seconds))
        elif name == "delay" and float(arg) >= 0:
            return _Fault("delay", seconds=float(arg))
    except ValueError:
        pass
    raise ValueError(f"unknown fault {text!r}")


def _quote_etag(etag: str) -> str:
    if etag.startswith(('"', 'W/"')):
        return etag
    return f'"{etag}"'


def _opaque(etag: str) -> str:
    return etag.removeprefix("W/")


def _parse_http_date(value: str) -> datetime | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _bytes_source(body: bytes) -> Callable[[int, int], _Chunks]:
    view = memoryview(body)

    def source(start: int, stop: int) -> _Chunks:
        for pos in range(start, stop, CHUNK_SIZE):
            yield view[pos : min(pos + CHUNK_SIZE, stop)]

    return source


def _generator_source(
    size: int, make_chunks: Callable[[int], Iterator[bytes]]
) -> Callable[[int, int], _Chunks]:
    def source(start: int, stop: int) -> _Chunks:
        # The body only exists as a stream, so a range skips from the start rather
        # than buffering; memory stays at one chunk either way.
        pos = 0
        chunks = make_chunks(size)
        try:
            for chunk in chunks:
                end = pos + len(chunk)
                if end > start:
                    yield memoryview(chunk)[max(start - pos, 0) : min(stop - pos, len(chunk))]
                pos = end
                if pos >= stop:
                    return
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    return source


def _file_source(file: Path) -> Callable[[int, int], _Chunks]:
    def source(start: int, stop: int) -> _Chunks:
        with file.open("rb") as fh:
            fh.seek(start)
            pos = start
            while pos < stop:
                chunk = fh.read(min(CHUNK_SIZE, stop - pos))
                if not chunk:
                    return
                pos += len(chunk)
                yield chunk

    return source


class _Unsatisfiable(Exception):
    pass


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """Return [start, stop) for a Range header, None to ignore it, or raise _Unsatisfiable."""
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes":
        # RFC 9110: a range unit the server does not know is ignored, not refused.
        return None
    match = _RANGE_RE.fullmatch(spec.strip())
    if match is None:
        # Malformed and multi-range specs both land here: this server serves one range.
        raise _Unsatisfiable
    first, last = match.groups()
    if first:
        start = int(first)
        stop = min(int(last) + 1, size) if last else size
        if start >= size or (last and int(last) < start):
            raise _Unsatisfiable
        return start, stop
    if last:
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise _Unsatisfiable
        return max(size - suffix, 0), size
    raise _Unsatisfiable


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # Otherwise server_close() joins every handler thread, daemon or not, so a
    # client holding a keep-alive connection open would block stop().
    block_on_close = False
    allow_reuse_address = True
    # Benchmarks open hundreds of connections at once; the default backlog of 5
    # would turn that into SYN retries and multi-second stalls.
    request_queue_size = 1024
    # handle_request() is only called once the socket is readable; the timeout
    # bounds the wait should the pending connection vanish before accept().
    timeout = 0.05

    def __init__(self, address: tuple[str, int], archive: ArchiveServer) -> None:
        self.archive = archive
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        # Disconnects are the point of half the faults; anything else is a bug
        # worth a traceback.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    # Idle keep-alive connections hold a thread each; let them go eventually.
    timeout = 60
    # Headers and body go out in separate writes; with Nagle on, the body waits
    # for the client's delayed ACK (~40 ms) on every keep-alive response.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.server.archive._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.archive._track(self.connection, add=False)
        with contextlib.suppress(OSError):
            super().finish()

    def handle(self) -> None:
        try:
            super().handle()
        except _DISCONNECTS:
            self.close_connection = True

    def do_GET(self) -> None:
        if not self._route():
            self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_POST(self) -> None:
        self._route_or_405()

    def do_PUT(self) -> None:
        self._route_or_405()

    def do_DELETE(self) -> None:
        self._route_or_405()

    def do_PATCH(self) -> None:
        self._route_or_405()

    # -- programmable routes (API endpoints: POST a job, poll it, delete it) ----------

    def _route_or_405(self) -> None:
        if not self._route():
            split = urlsplit(self.path)
            headers = {name.lower(): value for name, value in self.headers.items()}
            self._read_body(headers)
            text = b"405 Method Not Allowed\n"
            record = (unquote(split.path), split.query, headers)
            self._simple(False, *record, 405, text, "text/plain; charset=utf-8", [])

    def _read_body(self, headers: Mapping[str, str]) -> bytes:
        length = int(headers.get("content-length", "0") or 0)
        return self.rfile.read(length) if length else b""

    def _route(self) -> bool:
        """Answer from a registered route if one matches; False to fall back to files."""
        archive = self.server.archive
        split = urlsplit(self.path)
        path = unquote(split.path)
        handler = archive._route_for(self.command, path, split.query)
        if handler is None:
            return False
        headers = {name.lower(): value for name, value in self.headers.items()}
        body = self._read_body(headers)
        record = (path, split.query, headers)
        archive._sleep(archive.latency)
        if not archive._authorized(headers):
            extra = [("WWW-Authenticate", 'Bearer realm="archive"')]
            self._simple(False, *record, 401, LOGIN_PAGE, "text/html; charset=utf-8", extra)
            return True
        _, _, fault = archive._lookup(path, split.query)
        if fault is not None and fault.kind == "delay":
            archive._sleep(fault.seconds)
        elif fault is not None and fault.kind == "reset":
            self._reset(record)
            return True
        elif fault is not None and fault.kind == "status":
            extra = [] if fault.retry_after is None else [("Retry-After", str(fault.retry_after))]
            text = f"{fault.status} {_phrase(fault.status)}\n".encode()
            self._simple(False, *record, fault.status, text, "text/plain; charset=utf-8", extra)
            return True
        elif fault is not None and fault.kind == "html":
            self._simple(False, *record, 200, LOGIN_PAGE, "text/html; charset=utf-8", [])
            return True
        request = ArchiveRequest(self.command, path, split.query, headers, body)
        try:
            reply = handler(request)
        except Exception as error:  # a broken test handler shows up as a 500, not a hang
            text = f"500 handler failed: {type(error).__name__}: {error}\n".encode()
            self._simple(False, *record, 500, text, "text/plain; charset=utf-8", [])
            return True
        self._simple(
            False,
            *record,
            reply.status,
            reply.body,
            reply.content_type,
            list(reply.headers.items()),
        )
        return True

    # -- responding ---------------------------------------------------------

    def _serve(self, *, head: bool) -> None:
        archive = self.server.archive
        split = urlsplit(self.path)
        path = unquote(split.path)
        headers = {name.lower(): value for name, value in self.headers.items()}

        record = (path, split.query, headers)

        archive._sleep(archive.latency)
        if not archive._authorized(headers):
            # Checked before faults, as a gateway would; the fault queue is untouched.
            extra = [("WWW-Authenticate", 'Bearer realm="archive"')]
            self._simple(head, *record, 401, LOGIN_PAGE, "text/html; charset=utf-8", extra)
            return
        key, resource, fault = archive._lookup(path, split.query)

        if fault is not None:
            if fault.kind == "delay":
                archive._sleep(fault.seconds)
                fault = None
            elif fault.kind == "reset":
                self._reset(record)
                return
            elif fault.kind == "status":
                extra = (
                    [] if fault.retry_after is None else [("Retry-After", str(fault.retry_after))]
                )
                text = f"{fault.status} {_phrase(fault.status)}\n".encode()
                self._simple(head, *record, fault.status, text, "text/plain; charset=utf-8", extra)
                return
            elif fault.kind == "html":
                self._simple(head, *record, 200, LOGIN_PAGE, "text/html; charset=utf-8", [])
                return

        if resource is None:
            text = f"404 Not Found: {key}\n".encode()
            self._simple(head, *record, 404, text, "text/plain; charset=utf-8", [])
            return

        base = self._resource_headers(resource)
        if self._not_modified(resource, headers):
            self._begin(record, 304, base)
            return

        start, stop = 0, resource.size
        status = 200
        if "range" in headers and self._if_range_ok(resource, headers.get("if-range")):
            try:
                span = _parse_range(headers["range"], resource.size)
            except _Unsatisfiable:
                text = b"416 Range Not Satisfiable\n"
                extra = [("Content-Range", f"bytes */{resource.size}")]
                self._simple(head, *record, 416, text, "text/plain; charset=utf-8", extra)
                return
            if span is not None:
                start, stop = span
                status = 206
                base.append(("Content-Range", f"bytes {start}-{stop - 1}/{resource.size}"))

        length = stop - start
        self._begin(record, status, [("Content-Length", str(length)), *base])
        if head and (fault is None or fault.kind not in ("stall", "truncate")):
            return

        limit: int | None = None
        if fault is not None and fault.kind == "truncate":
            limit = fault.limit if fault.limit is not None else length // 2
        elif fault is not None and fault.kind == "stall":
            limit = fault.limit if fault.limit is not None else min(_STALL_PREFIX, length // 2)
        corrupt = fault is not None and fault.kind == "corrupt"

        sent = 0 if head else self._write(resource.source(start, stop), length, limit, corrupt)
        if fault is not None and fault.kind == "stall":
            archive._sleep(fault.seconds)
        if sent < length:
            # The client is still owed bytes; only closing ends its wait.
            self.close_connection = True

    def _resource_headers(self, resource: _Resource) -> list[tuple[str, str]]:
        result = [("Content-Type", resource.content_type), ("Accept-Ranges", "bytes")]
        if resource.etag is not None:
            result.append(("ETag", resource.etag))
        if resource.last_modified is not None:
            result.append(("Last-Modified", resource.last_modified))
        overridden = {name.lower() for name, _ in resource.headers}
        result = [(name, value) for name, value in result if name.lower() not in overridden]
        result.extend(resource.headers)
        return result

    def _not_modified(self, resource: _Resource, headers: Mapping[str, str]) -> bool:
        if_none_match = headers.get("if-none-match")
        if if_none_match is not None:
            # RFC 9110 13.1.2: If-None-Match wins over If-Modified-Since, weak comparison.
            tags = _ETAG_RE.findall(if_none_match)
            if "*" in tags:
                return True
            if resource.etag is None:
                return False
            mine = _opaque(resource.etag)
            return any(_opaque(tag) == mine for tag in tags)
        if_modified_since = headers.get("if-modified-since")
        if if_modified_since is None or resource.last_modified_dt is None:
            return False
        since = _parse_http_date(if_modified_since)
        modified = resource.last_modified_dt.replace(microsecond=0)
        return since is not None and since >= modified

    def _if_range_ok(self, resource: _Resource, if_range: str | None) -> bool:
        if if_range is None:
            return True
        if_range = if_range.strip()
        if if_range.startswith(('"', "W/")):
            # Strong comparison: a weak validator never matches If-Range.
            return (
                resource.etag is not None
                and not resource.etag.startswith("W/")
                and if_range == resource.etag
            )
        return resource.last_modified is not None and if_range == resource.last_modified

    def _simple(
        self,
        head: bool,
        path: str,
        query: str,
        headers: dict[str, str],
        status: int,
        body: bytes,
        content_type: str,
        extra: list[tuple[str, str]],
    ) -> None:
        no_body = status in (204, 304)
        fields = [] if no_body else [("Content-Length", str(len(body)))]
        fields += [("Content-Type", content_type), *extra]
        self._begin((path, query, headers), status, fields)
        if not head and not no_body:
            self.wfile.write(body)

    def _begin(
        self,
        record: tuple[str, str, dict[str, str]],
        status: int,
        fields: list[tuple[str, str]],
    ) -> None:
        self.server.archive._record(self.command, *record, status)
        self.send_response(status)
        for name, value in fields:
            self.send_header(name, value)
        self.end_headers()

    def _write(self, chunks: _Chunks, length: int, limit: int | None, corrupt: bool) -> int:
        budget = length if limit is None else min(limit, length)
        sent = 0
        try:
            for chunk in chunks:
                if sent >= budget:
                    break
                piece = memoryview(chunk)
                if len(piece) > budget - sent:
                    piece = piece[: budget - sent]
                # A generator may hand over one big piece; write it in bounded slices.
                for pos in range(0, len(piece), CHUNK_SIZE):
                    part = piece[pos : pos + CHUNK_SIZE]
                    self.wfile.write(bytes(part).translate(_FLIP) if corrupt else part)
                    sent += len(part)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        return sent

    def _reset(self, record: tuple[str, str, dict[str, str]]) -> None:
        self.server.archive._record(self.command, *record, None)
        self.close_connection = True
        # Linger 0 makes close() send RST instead of FIN; the makefile reference
        # must go first or close() would only drop a refcount.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()
        self.connection.close()


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status"


class ArchiveServer:
    """A local HTTP archive serving registered bodies, with per-path fault queues.

    The listening socket is bound on construction, so :attr:`base_url` and the
    URLs returned by :meth:`add` are known before :meth:`start`. Call
    :meth:`stop` (or use ``with``) to release it. All methods are thread-safe.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0) -> None:
        """Bind to ``host:port`` (port 0 picks a free one); every response waits ``latency`` s."""
        self._lock = threading.Lock()
        self._resources: dict[str, _Resource] = {}
        self._faults: dict[str, deque[_Fault]] = {}
        self._log: list[RequestRecord] = []
        self._required: dict[str, str] = {}
        self._routes: dict[tuple[str, str], RouteHandler] = {}
        self._connections: set[socket.socket] = set()
        self._latency = float(latency)
        self._stopping = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._server = _HTTPServer((host, port), self)
        bound_host, bound_port = self._server.server_address[:2]
        shown = bound_host if isinstance(bound_host, str) else bound_host.decode()
        self._base_url = f"http://{f'[{shown}]' if ':' in shown else shown}:{bound_port}"

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> ArchiveServer:
        """Serve in a background daemon thread; return self."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("a stopped ArchiveServer cannot be restarted")
            if self._thread is not None:
                return self
            self._thread = threading.Thread(
                target=self._serve_forever,
                name=f"ArchiveServer{self._base_url[6:]}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the socket and open connections, join the thread. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            thread = self._thread
        # Wakes handlers sleeping on latency, delay or stall so they end promptly.
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if thread is not None:
            thread.join(timeout=5)
        with self._lock:
            connections = list(self._connections)
        # Idle keep-alive handlers would otherwise sit in readline until the client
        # hangs up; shutting their sockets down hands them EOF now.
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        self._wake_r.close()
        self._wake_w.close()

    def _serve_forever(self) -> None:
        # socketserver's serve_forever notices shutdown() only at its next poll,
        # which made every stop() cost the poll interval; a wake-up socket makes
        # stopping immediate without polling.
        server = self._server
        with selectors.DefaultSelector() as selector:
            selector.register(server.socket, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is server.socket and not self._stopping.is_set():
                        server.handle_request()

    def __enter__(self) -> ArchiveServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses --------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` without a trailing slash."""
        return self._base_url

    def url(self, path: str) -> str:
        """The URL of ``path`` on this server."""
        return f"{self._base_url}/{path.lstrip('/')}"

    # -- content ------------------------------------------------------------------

    def add(
        self,
        path: str,
        body: bytes | None = None,
        *,
        content_type: str = "application/octet-stream",
        etag: str | _Auto | None = _AUTO,
        last_modified: datetime | str | _Auto | None = _AUTO,
        generator: tuple[int, Callable[[int], Iterator[bytes]]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Serve ``body`` (or a generated body) at ``path``; return its URL.

        ``generator=(size, make_chunks)`` serves ``size`` bytes produced by
        ``make_chunks(size)`` afresh for each request, never held whole. ``etag``
        defaults to a quoted sha256 prefix of the body (``"gen-SIZE"`` for
        generated bodies) and is quoted if given bare; None sends no ETag.
        ``last_modified`` defaults to :data:`DEFAULT_LAST_MODIFIED`; a string is
        sent verbatim; None sends no Last-Modified. ``headers`` are added to (and
        override) the defaults. Adding a path again replaces it.
        """
        if (body is None) == (generator is None):
            raise ValueError("give exactly one of body and generator")
        if generator is not None:
            size, make_chunks = generator
            if size < 0:
                raise ValueError("generator size must be >= 0")
            source = _generator_source(size, make_chunks)
            auto_etag = f'"gen-{size}"'
        else:
            assert body is not None
            size = len(body)
            source = _bytes_source(bytes(body))
            auto_etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
        return self._add(path, size, source, content_type, etag, auto_etag, last_modified, headers)

    def add_json(self, path: str, obj: object) -> str:
        """Serve ``obj`` as JSON (``application/json``) at ``path``; return its URL."""
        return self.add(path, json.dumps(obj).encode(), content_type="application/json")

    def add_file(
        self,
        path: str,
        file: str | Path,
        *,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Serve the file ``file`` at ``path``, read from disk per request; return its URL.

        Size, ETag and Last-Modified come from the file's stat at this call; the
        content type is guessed from its name when not given.
        """
        file = Path(file)
        stat = file.stat()
        if content_type is None:
            content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        modified = datetime.fromtimestamp(int(stat.st_mtime), tz=UTC)
        etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
        source = _file_source(file)
        return self._add(path, stat.st_size, source, content_type, etag, etag, modified, headers)

    def _add(
        self,
        path: str,
        size: int,
        source: Callable[[int, int], _Chunks],
        content_type: str,
        etag: str | _Auto | None,
        auto_etag: str,
        last_modified: datetime | str | _Auto | None,
        headers: Mapping[str, str] | None,
    ) -> str:
        tag = auto_etag if etag is _AUTO else etag
        if tag is not None:
            tag = _quote_etag(tag)
        if last_modified is _AUTO:
            last_modified = DEFAULT_LAST_MODIFIED
        header: str | None = None
        moment: datetime | None = None
        if isinstance(last_modified, datetime):
            moment = last_modified if last_modified.tzinfo else last_modified.replace(tzinfo=UTC)
            moment = moment.astimezone(UTC)
            header = email.utils.format_datetime(moment, usegmt=True)
        elif isinstance(last_modified, str):
            # Sent verbatim; an unparseable date just never satisfies If-Modified-Since.
            header = last_modified
            moment = _parse_http_date(last_modified)
        resource = _Resource(
            size=size,
            content_type=content_type,
            etag=tag,
            last_modified=header,
            last_modified_dt=moment,
            headers=tuple((headers or {}).items()),
            source=source,
        )
        with self._lock:
            self._resources[_key(path)] = resource
        return self.url(path)

    # -- faults, auth, latency -----------------------------------------------------

    def route(
        self,
        path: str,
        handler: RouteHandler,
        *,
        methods: Iterable[str] = ("GET", "POST", "PUT", "DELETE", "PATCH"),
    ) -> str:
        """Answer ``path`` (optionally with its query string) by calling ``handler``.

        For API flows a static body cannot play: submit a job with POST, poll its status,
        DELETE it, exchange credentials for a token. Routes win over :meth:`add` bodies
        for the methods given; faults queued for the path apply first. Returns the URL.
        """
        with self._lock:
            for method in methods:
                self._routes[(method.upper(), _key(path))] = handler
        return self.url(path)

    def fault(self, path: str, *faults: str) -> None:
        """Queue faults for ``path``; each request to it consumes the next one.

        Raises ValueError for an unknown fault string (none are queued then).
        """
        parsed = [_parse_fault(text) for text in faults]
        with self._lock:
            self._faults.setdefault(_key(path), deque()).extend(parsed)

    def require_header(self, name: str, value: str) -> None:
        """Answer every request lacking ``name: value`` with 401 and an HTML page."""
        with self._lock:
            self._required[name.lower()] = value

    def set_latency(self, seconds: float) -> None:
        """Make every later response wait ``seconds`` before its headers."""
        with self._lock:
            self._latency = float(seconds)

    @property
    def latency(self) -> float:
        """Seconds each response waits before its headers."""
        with self._lock:
            return self._latency

    # -- inspection ------------------------------------------------------------------

    def requests(self, path: str | None = None) -> list[RequestRecord]:
        """Requests received so far, oldest first; only those to ``path`` if given.

        ``path`` matches a record's path, or its path with query when it has one.
        """
        with self._lock:
            log = list(self._log)
        if path is None:
            return log
        key = _key(path)
        return [r for r in log if r.path == key or (r.query and f"{r.path}?{r.query}" == key)]

    def count(self, path: str) -> int:
        """How many requests ``path`` received."""
        return len(self.requests(path))

    # -- used by the handler -----------------------------------------------------------

    def _lookup(self, path: str, query: str) -> tuple[str, _Resource | None, _Fault | None]:
        # A path registered with its query string (an API endpoint) wins over the bare path.
        keys = [f"{path}?{query}", path] if query else [path]
        with self._lock:
            key = next((k for k in keys if k in self._resources), None)
            if key is None:
                key = next((k for k in keys if self._faults.get(k)), keys[-1])
            queue = self._faults.get(key)
            fault = queue.popleft() if queue else None
            return key, self._resources.get(key), fault

    def _route_for(self, method: str, path: str, query: str) -> RouteHandler | None:
        keys = [f"{path}?{query}", path] if query else [path]
        with self._lock:
            return next(
                (self._routes[(method, k)] for k in keys if (method, k) in self._routes), None
            )

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        with self._lock:
            required = list(self._required.items())
        return all(headers.get(name) == value for name, value in required)

    def _record(
        self, method: str, path: str, query: str, headers: dict[str, str], status: int | None
    ) -> None:
        record = RequestRecord(method, path, query, headers, status, time.time())
        with self._lock:
            self._log.append(record)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


def _key(path: str) -> str:
    return "/" + path.lstrip("/")


# -- command line ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Serve a directory until SIGTERM or SIGINT; print the base URL first."""
    parser = argparse.ArgumentParser(
        prog="python -m astroingest._archive_server",
        description="Serve the files of a directory as a local test archive.",
    )
    parser.add_argument("--dir", required=True, type=Path, help="directory to serve")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each response")
    args = parser.parse_args(argv)
    root: Path = args.dir
    if not root.is_dir():
        parser.error(f"not a directory: {root}")

    server = ArchiveServer(args.host, args.port, args.latency)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        server.add_file(file.relative_to(root).as_posix(), file)

    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with server:
            print(server.base_url, flush=True)
            # A timed wait keeps the main thread returning to the interpreter, where
            # the signal handler runs.
            while not done.wait(0.25):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
