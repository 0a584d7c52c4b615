"""HTTP side: ``/metrics`` (or the configured path), the landing page at ``/`` (with its
pack cards at ``/-/packs``), the health checks ``/-/healthy`` and ``/-/ready``, 404 elsewhere.

Metrics come from :func:`..exposition.make_metrics_app` (no prometheus_client at run time).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import OrderedDict
from socketserver import BaseRequestHandler, TCPServer
from typing import TYPE_CHECKING, Any, Callable, Iterable, List, Optional, Tuple

from ..collector import Poller
from ..exposition import FamilySource, make_metrics_app
from .landing import current_snapshot, landing_page, pack_cards
from .address import DEFAULT_LISTEN_ADDRESS, DEFAULT_PORT, parse_listen_address  # noqa: F401
from .workers import WorkerPool
from .wsgi_glue import BadRequest, RequestHead, make_environ, parse_header_lines, \
    parse_request_line, run_app

if TYPE_CHECKING:  # ssl maps OpenSSL (megabytes): loaded only by a web config with TLS
    import ssl

    from .webconfig import WebConfig

log = logging.getLogger(__name__)

#: Largest request body we accept at all (scrapes have none).
MAX_REQUEST_BODY = 8192

StartResponse = Callable[..., object]


class ExporterApp:
    """The WSGI application."""

    def __init__(self, collector: FamilySource, poller: Poller,
                 telemetry_path: str = "/metrics") -> None:
        """``collector``: the :class:`~..collector.JkbmsCollector` (or a prometheus_client
        registry holding it) whose families ``telemetry_path`` serves."""
        self.telemetry_path = telemetry_path
        self.poller = poller
        self._metrics_app = make_metrics_app(collector)

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/") or "/"
        if method not in ("GET", "HEAD"):
            return _plain(start_response, "405 Method Not Allowed", "Only GET and HEAD.\n",
                          [("Allow", "GET, HEAD")])
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_REQUEST_BODY:
            return _plain(start_response, "413 Payload Too Large", "Request body too large.\n")
        if path == self.telemetry_path:
            if method == "HEAD":
                # scrape as for GET; the server
                # (make_http_server) sends the headers, Content-Length included, no body.
                return self._metrics_app(dict(environ, REQUEST_METHOD="GET"), start_response)
            return self._metrics_app(environ, start_response)
        if path == "/":
            page = landing_page(self.poller, self.telemetry_path, current_snapshot(self.poller))
            return _html(start_response, method, page)
        if path == "/-/packs":
            return _html(start_response, method,
                         pack_cards(self.poller, current_snapshot(self.poller)))
        if path == "/-/healthy":
            return _plain(start_response, "200 OK", "jkbms-exporter is Healthy.\n")
        if path == "/-/ready":
            return self._ready(start_response)
        return _plain(start_response, "404 Not Found", "Not found. Metrics are at %s\n"
                      % self.telemetry_path)

    def _ready(self, start_response: StartResponse) -> Iterable[bytes]:
        """200 once every pack has been read successfully at least once; never reads."""
        unread = [name for name, status in self.poller.status.items()
                  if status.last_success_time is None]
        if unread:
            return _plain(start_response, "503 Service Unavailable",
                          "jkbms-exporter is not ready: no good read yet of %s.\n"
                          % ", ".join(unread))
        return _plain(start_response, "200 OK", "jkbms-exporter is Ready.\n")


def _html(start_response: StartResponse, method: str, page: str) -> Iterable[bytes]:
    body = page.encode("utf-8")
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(body))),
                              ("Cache-Control", "no-store")])
    return [b"" if method == "HEAD" else body]


def _plain(start_response: StartResponse, status: str, text: str,
           headers: Optional[List[Tuple[str, str]]] = None) -> Iterable[bytes]:
    body = text.encode("utf-8")
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))] + (headers or []))
    return [body]


# ------------------------------------------------------------------------------ server
#
# The handler below reads the request head itself: bounded in size and against
# one deadline for the whole head (a client dribbling a byte every few seconds is cut off
# like one that sends nothing), and the TLS handshake happens in the connection's worker
# thread, never in the accept loop.

#: Longest request line (method, target, version): 414 beyond it.
MAX_REQUEST_LINE = 8192
#: Request line and header lines together: 431 beyond it.
MAX_HEADER_BYTES = 16384
#: Number of header lines: 431 beyond it.
MAX_HEADERS = 64
#: Seconds a client has for the TLS handshake.
HANDSHAKE_TIMEOUT = 10.0
#: Seconds a client has to send the whole request (head and body) once connected.
REQUEST_TIMEOUT = 10.0
#: Seconds any single write of the response may block on a client that does not read.
WRITE_TIMEOUT = 30.0
#: Connections served at once. When all are taken, a new connection closes the oldest one
#: still sending its request (slow or idle clients); if every one is being answered, the
#: new one is closed at once. Either is logged.
MAX_CONNECTIONS = 64
#: Seconds the accept loop waits for a shed connection's slot to come free.
SHED_WAIT = 2.0

_REASONS = {400: "Bad Request", 405: "Method Not Allowed", 408: "Request Timeout",
            411: "Length Required", 413: "Payload Too Large", 414: "URI Too Long",
            431: "Request Header Fields Too Large", 505: "HTTP Version Not Supported"}


class _Reject(Exception):
    """A request refused before the application sees it."""

    def __init__(self, code: int, text: str, headers: Optional[List[Tuple[str, str]]] = None,
                 unread_input: bool = True) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.headers = headers or []
        self.unread_input = unread_input


class _ClientGone(Exception):
    """The client closed the connection before sending a request."""


def _recv_until(connection: socket.socket, deadline: float) -> bytes:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise socket.timeout("request deadline passed")
    connection.settimeout(remaining)
    return connection.recv(8192)


def read_request_head(connection: socket.socket, deadline: float,
                      max_line: int = MAX_REQUEST_LINE,
                      max_head: int = MAX_HEADER_BYTES) -> Tuple[bytes, bytes, bytes]:
    """Read up to the blank line ending the head: (request line, header lines, rest).

    Raises ``_Reject`` (414, 431, 400, 408) or ``_ClientGone``.
    """
    buffer = b""
    while True:
        stripped = buffer.lstrip(b"\r\n")  # RFC 9112: ignore empty lines before the request
        if len(buffer) - len(stripped) > max_head:
            raise _Reject(400, "Bad request.\n")
        line_end = stripped.find(b"\n")
        if (line_end < 0 and len(stripped) > max_line) or line_end > max_line:
            raise _Reject(414, "Request line too long.\n")
        if line_end >= 0:
            ends = [i + len(t) for t in (b"\n\n", b"\n\r\n")
                    for i in (stripped.find(t, line_end),) if i >= 0]
            end = min(ends) if ends else -1
            if (end < 0 and len(stripped) > max_head) or end > max_head:
                raise _Reject(431, "Request header fields too large.\n")
            if end >= 0:
                return (stripped[: line_end + 1], stripped[line_end + 1 : end], stripped[end:])
        try:
            data = _recv_until(connection, deadline)
        except socket.timeout:
            if not stripped:
                raise _ClientGone() from None
            raise _Reject(408, "Request timeout.\n") from None
        if not data:
            if not stripped:
                raise _ClientGone()
            raise _Reject(400, "Incomplete request.\n", unread_input=False)
        buffer += data


class _Handler(BaseRequestHandler):
    """One request per connection (HTTP/1.0 style), with bounded reading."""

    server: "ThreadingServer"

    def handle(self) -> None:
        connection = self.request
        self.method: Optional[str] = None
        self.request_line = b""
        deadline = time.monotonic() + self.server.request_timeout
        try:
            try:
                line, head, rest = read_request_head(connection, deadline)
                self.request_line = line
                request, body = self._read_request(line, head, rest, deadline)
            except _Reject as reject:
                self._reply(reject.code, reject.text, reject.headers)
                if reject.unread_input:
                    self._linger()
                return
            except _ClientGone:
                return
            self.server.request_received()
            connection.settimeout(self.server.write_timeout)
            environ = make_environ(request, body, self.server.server_name,
                                   self.server.server_port, self.client_address[0],
                                   https=self.server.ssl_context is not None)
            status = run_app(self.server.app, environ, connection.sendall)
            log.debug("%s - \"%s\" %s", self.client_address[0],
                      line.rstrip(b"\r\n")[:200].decode("iso-8859-1"), status.split(" ", 1)[0])
        except (OSError, ValueError) as error:  # reset, timeout, TLS error mid-request
            log.debug("connection from %s ended: %s", self.client_address[0], error)

    def _read_request(self, line: bytes, head: bytes, rest: bytes,
                      deadline: float) -> Tuple[RequestHead, bytes]:
        try:
            parsed = parse_request_line(line)
            if parsed is None:  # a blank request line: no answer, as http.server
                raise _ClientGone()
            self.method = parsed[0]
            request = RequestHead(*parsed, parse_header_lines(head))
        except BadRequest as bad:
            raise _Reject(bad.code, bad.text + "\n") from None
        if len(request.headers) > MAX_HEADERS:
            raise _Reject(431, "Too many header fields.\n")
        if request.method not in ("GET", "HEAD"):
            raise _Reject(405, "Only GET and HEAD.\n", [("Allow", "GET, HEAD")])
        if request.get_all("Transfer-Encoding"):
            raise _Reject(411, "A request body needs a Content-Length.\n")
        lengths = {v.strip() for v in request.get_all("Content-Length")}
        if not lengths:
            return request, b""
        if len(lengths) > 1 or not all(v.isdigit() for v in lengths):
            raise _Reject(400, "Bad Content-Length.\n")
        length = int(lengths.pop())
        if length > MAX_REQUEST_BODY:
            raise _Reject(413, "Request body too large.\n")
        body = rest[:length]
        while len(body) < length:
            try:
                data = _recv_until(self.request, deadline)
            except socket.timeout:
                raise _Reject(408, "Request timeout.\n") from None
            if not data:
                raise _Reject(400, "Incomplete request body.\n", unread_input=False)
            body += data
        return request, body[:length]

    def _reply(self, code: int, text: str, headers: Optional[List[Tuple[str, str]]] = None) -> None:
        body = text.encode("utf-8")
        lines = ["HTTP/1.0 %d %s" % (code, _REASONS.get(code, "Error")),
                 "Content-Type: text/plain; charset=utf-8",
                 "Content-Length: %d" % len(body),
                 "Connection: close"]
        lines += ["%s: %s" % header for header in (headers or []) + self.server.extra_headers]
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if self.method != "HEAD":
            payload += body
        log.debug("%s - %d for %r", self.client_address[0], code, self.request_line[:200])
        try:
            self.request.settimeout(self.server.write_timeout)
            self.request.sendall(payload)
        except OSError:
            pass

    def _linger(self) -> None:
        """Read (and drop) what the client still sends, briefly, after an early answer,
        so that closing with unread input does not reset the connection before the client
        has read the answer."""
        connection = self.request
        try:
            connection.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + 1.0
            for _ in range(64):
                if not _recv_until(connection, deadline):
                    break
        except (OSError, ValueError):
            pass


class ThreadingServer(TCPServer):
    """A WSGI server serving each connection in one of a pool of threads, TLS in that
    thread, a bound on connections and deadlines on reading requests."""

    daemon_threads = True
    block_on_close = False  # shutting down does not wait for stalled clients
    #: Workers kept waiting for connections however long they wait; more than these end
    #: after waiting ``worker_idle_timeout`` seconds.
    workers_kept = 4
    worker_idle_timeout = 60.0
    allow_reuse_address = True
    request_queue_size = 128

    app: Callable
    ssl_context: Optional["ssl.SSLContext"] = None
    web_config: Optional["WebConfig"] = None
    extra_headers: List[Tuple[str, str]] = []
    handshake_timeout = HANDSHAKE_TIMEOUT
    request_timeout = REQUEST_TIMEOUT
    write_timeout = WRITE_TIMEOUT
    max_connections = MAX_CONNECTIONS

    def server_bind(self) -> None:
        super().server_bind()
        host, self.server_port = self.server_address[:2]
        self.server_name = socket.gethostname() if host in ("0.0.0.0", "::") else host

    def server_activate(self) -> None:
        super().server_activate()
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self._last_full_warning = 0.0
        # Connections still sending their request (or TLS handshake), oldest first:
        # id of the accepted socket → its file descriptor. When every slot is taken,
        # the oldest of these makes room for a new connection.
        self._waiting: "OrderedDict[int, int]" = OrderedDict()
        self._waiting_lock = threading.Lock()
        self._this_connection = threading.local()
        self._workers = WorkerPool(self.process_request_thread, self._connection_done,
                                   "jkbms-http", daemon=self.daemon_threads,
                                   keep_idle=self.workers_kept,
                                   idle_timeout=self.worker_idle_timeout)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            shed = self._shed_oldest_waiting()
            if shed is None or not self._slots.acquire(timeout=SHED_WAIT):
                self._warn_full(client_address, "refusing new ones until some end")
                self.shutdown_request(request)
                return
            self._warn_full(client_address, "closing the oldest still sending its request")
        with self._waiting_lock:
            self._waiting[id(request)] = request.fileno()
        try:
            self._workers.submit(request, client_address)
        except BaseException:
            self._forget(request)
            self._slots.release()
            raise

    def _warn_full(self, client_address: Any, action: str) -> None:
        now = time.monotonic()
        if now - self._last_full_warning > 60:
            self._last_full_warning = now
            log.warning("%d connections open (new one from %s): %s", self.max_connections,
                        client_address[0], action)

    def _shed_oldest_waiting(self) -> Optional[int]:
        """Shut down the oldest connection that has not sent a whole request yet; its
        thread then ends and frees its slot. None if every connection is being answered."""
        with self._waiting_lock:  # held until done: the fd cannot be closed and reused
            if not self._waiting:
                return None
            _, fd = self._waiting.popitem(last=False)
            try:
                victim = socket.socket(fileno=fd)
            except OSError:
                return fd
            try:
                victim.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            finally:
                victim.detach()
        return fd

    def request_received(self) -> None:
        """Called by the handler once this thread's connection has sent its whole request:
        from then on it is being answered and is never shed."""
        key = getattr(self._this_connection, "key", None)
        if key is not None:
            with self._waiting_lock:
                self._waiting.pop(key, None)

    def _forget(self, request: Any) -> None:
        with self._waiting_lock:
            self._waiting.pop(id(request), None)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """In a worker thread: serve the connection (the pool then calls
        ``_connection_done``)."""
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)

    def _connection_done(self, request: Any, client_address: Any) -> None:
        try:
            self.shutdown_request(request)
        finally:
            self._slots.release()

    def server_close(self) -> None:
        super().server_close()
        workers = getattr(self, "_workers", None)  # absent if binding failed
        if workers is not None:
            workers.close(wait_for_busy=self.block_on_close)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.error("error while serving %s", client_address[0], exc_info=True)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """In the connection's own thread: TLS handshake (bounded in time), then the request."""
        self._this_connection.key = id(request)
        connection = request
        try:
            if self.ssl_context is not None:
                request.settimeout(self.handshake_timeout)
                connection = self.ssl_context.wrap_socket(request, server_side=True,
                                                          do_handshake_on_connect=False)
                try:
                    connection.do_handshake()
                except (OSError, ValueError) as error:  # ssl.SSLError, timeouts: OSErrors
                    log.debug("TLS handshake with %s failed: %s", client_address[0], error)
                    return
                problem = self.web_config.check_peer(connection) if self.web_config else None
                if problem:
                    log.info("refused TLS client %s: %s", client_address[0], problem)
                    return
            self.RequestHandlerClass(connection, client_address, self)
        finally:
            # forgotten before the socket is closed, so a shed never hits a reused fd
            self._forget(request)
            self._this_connection.key = None
            if connection is not request:
                try:
                    connection.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                connection.close()


class DualStackServer(ThreadingServer):
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        try:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        except (AttributeError, OSError):
            pass
        super().server_bind()


def _server_class(host: str) -> type:
    if host == "":
        return DualStackServer if socket.has_ipv6 else ThreadingServer
    if ":" in host:
        return type("IPv6Server", (ThreadingServer,), {"address_family": socket.AF_INET6})
    return ThreadingServer


def make_http_server(app: Callable, listen_address: str,
                     web_config: Optional["WebConfig"] = None, *,
                     request_timeout: float = REQUEST_TIMEOUT,
                     handshake_timeout: float = HANDSHAKE_TIMEOUT,
                     write_timeout: float = WRITE_TIMEOUT,
                     max_connections: int = MAX_CONNECTIONS) -> ThreadingServer:
    """Bind the server (raises ``OSError`` if the address is taken).

    ``web_config`` (from :func:`~jkbms_exporter.web.webconfig.load_web_config`) adds TLS,
    client certificates, basic auth and response headers.
    """
    host, port = parse_listen_address(listen_address)
    server_class = _server_class(host)
    if web_config is not None:
        app = web_config.wrap_app(app)
        log.info("web config %s: %s", web_config.path, web_config.describe())
    settings = dict(
        app=staticmethod(app),
        web_config=web_config,
        ssl_context=web_config.ssl_context if web_config else None,
        extra_headers=list(web_config.headers) if web_config else [],
        request_timeout=request_timeout, handshake_timeout=handshake_timeout,
        write_timeout=write_timeout, max_connections=max_connections,
    )
    bind_host = host or ("::" if server_class is DualStackServer else "0.0.0.0")
    try:
        server = type(server_class.__name__, (server_class,), settings)((bind_host, port), _Handler)
    except OSError:
        if server_class is not DualStackServer:
            raise
        # IPv6 disabled on this host
        server = type("ThreadingServer", (ThreadingServer,), settings)(("0.0.0.0", port), _Handler)
    return server


def serve_in_thread(server: ThreadingServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="jkbms-http", daemon=True)
    thread.start()
    return thread
