"""HTTP side: ``/metrics`` (or the configured path), a landing page at ``/``, 404 elsewhere.

prometheus_client's own WSGI app answers metrics on *every* path, so it is wrapped.
"""

from __future__ import annotations

import html
import logging
import socket
import threading
import time
from socketserver import ThreadingMixIn
from typing import Callable, Iterable, List, Optional, Tuple
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from . import __version__
from .collector import Poller

log = logging.getLogger(__name__)

DEFAULT_PORT = 10025
DEFAULT_LISTEN_ADDRESS = ":%d" % DEFAULT_PORT
#: Largest request body we accept at all (scrapes have none).
MAX_REQUEST_BODY = 8192

StartResponse = Callable[..., object]


def parse_listen_address(text: str) -> Tuple[str, int]:
    """``:10025``, ``0.0.0.0:10025``, ``[::1]:10025``, ``localhost:10025`` → (host, port).

    An empty host means every interface (IPv6 and IPv4 where the system allows it).
    """
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError("listen address %r must look like HOST:PORT or :PORT" % text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError("listen address %r has no valid port number" % text) from None
    if not 0 <= port <= 65535:
        raise ValueError("port %d in %r is out of range" % (port, text))
    return host, port


def _age(seconds: Optional[float]) -> str:
    if seconds is None:
        return "never"
    return "%.1f s ago" % seconds


def landing_page(poller: Poller, telemetry_path: str) -> str:
    rows: List[str] = []
    snapshot = poller.snapshot
    results = {r.name: r for r in snapshot.results} if snapshot else {}
    now = time.time()
    for pack in poller.packs:
        status = poller.status[pack.name]
        result = results.get(pack.name)
        if result is None:
            state = '<span class="unk">not read yet</span>'
        elif result.up:
            state = '<span class="up">up</span>'
        else:
            state = '<span class="down">down</span>: %s (%s)' % (
                html.escape(result.error), html.escape(result.reason))
        age = None if status.last_success_time is None else now - status.last_success_time
        reading = status.last_reading
        cells = ""
        if reading is not None and reading.cells:
            low, high = reading.cell_voltage_min_volts, reading.cell_voltage_max_volts
            cells = " ".join(
                '<span class="%s">%.3f</span>' % (
                    "max" if v == high and high != low else "min" if v == low and high != low else "",
                    v,
                )
                for v in reading.cell_voltages_volts
            ) + " V (spread %.0f mV)" % (reading.cell_voltage_spread_volts * 1000)
        rows.append(
            "<tr><td>%s</td><td><code>%s</code></td><td>%s</td><td>%s</td><td>%s</td></tr>"
            % (html.escape(pack.name), html.escape(pack.port), state, _age(age), cells)
        )
    return """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>JK BMS exporter</title>
<style>body{font-family:sans-serif;margin:2em}td,th{padding:.2em .8em;text-align:left}
.up{color:#1a7f37;font-weight:bold}.down{color:#cf222e;font-weight:bold}.unk{color:#888}
.min{color:#0969da;font-weight:bold}.max{color:#cf222e;font-weight:bold}</style></head>
<body><h1>JK BMS exporter</h1>
<p>Version %s. Metrics: <a href="%s">%s</a></p>
<table><tr><th>Pack</th><th>Port</th><th>State</th><th>Last good read</th><th>Cells</th></tr>
%s
</table></body></html>
""" % (
        html.escape(__version__),
        html.escape(telemetry_path),
        html.escape(telemetry_path),
        "\n".join(rows),
    )


class ExporterApp:
    """The WSGI application."""

    def __init__(self, registry: CollectorRegistry, poller: Poller,
                 telemetry_path: str = "/metrics") -> None:
        self.telemetry_path = telemetry_path
        self.poller = poller
        self._metrics_app = make_wsgi_app(registry)

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
            if method == "HEAD":  # prometheus_client answers HEAD with 405: scrape, drop the body
                for _ in self._metrics_app(dict(environ, REQUEST_METHOD="GET"), start_response):
                    pass
                return [b""]
            return self._metrics_app(environ, start_response)
        if path == "/":
            body = landing_page(self.poller, self.telemetry_path).encode("utf-8")
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                      ("Content-Length", str(len(body)))])
            return [b"" if method == "HEAD" else body]
        return _plain(start_response, "404 Not Found", "Not found. Metrics are at %s\n"
                      % self.telemetry_path)


def _plain(start_response: StartResponse, status: str, text: str,
           headers: Optional[List[Tuple[str, str]]] = None) -> Iterable[bytes]:
    body = text.encode("utf-8")
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))] + (headers or []))
    return [body]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.debug("%s - %s", self.address_string(), format % args)


class ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


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


def make_http_server(app: Callable, listen_address: str) -> WSGIServer:
    """Bind the server (raises ``OSError`` if the address is taken)."""
    host, port = parse_listen_address(listen_address)
    server_class = _server_class(host)
    bind_host = host or ("::" if server_class is DualStackServer else "0.0.0.0")
    try:
        return make_server(bind_host, port, app, server_class=server_class,
                           handler_class=_QuietHandler)
    except OSError:
        if server_class is DualStackServer:  # IPv6 disabled on this host
            return make_server("0.0.0.0", port, app, server_class=ThreadingServer,
                               handler_class=_QuietHandler)
        raise


def serve_in_thread(server: WSGIServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="jkbms-http", daemon=True)
    thread.start()
    return thread
