"""The HTTP server under abuse: wrong methods, oversize requests, slow and stalled clients.

Raw sockets against an in-process ``make_http_server`` (short timeouts, so the deadline
cases are quick), and the real ``serve`` subprocess for the exporter as shipped.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator, List, Optional, Tuple

import pytest

from jkbms_exporter.web.server import MAX_REQUEST_BODY, make_http_server

BODY = b"jkbms_up 1\n"


class CountingApp:
    def __init__(self) -> None:
        self.calls: List[Tuple[str, str, bytes]] = []

    def __call__(self, environ: dict, start_response) -> List[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        self.calls.append((environ["REQUEST_METHOD"], environ["PATH_INFO"],
                           environ["wsgi.input"].read(length)))
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(BODY)))])
        return [BODY]


@contextmanager
def serving(app=None, **options) -> Iterator[Tuple[int, CountingApp]]:
    app = app or CountingApp()
    server = make_http_server(app, "127.0.0.1:0", **options)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1], app
    finally:
        server.shutdown()
        server.server_close()


def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1."), answer[:200]
    return int(answer.split(b" ", 2)[1])


def header(answer: bytes, name: str) -> Optional[str]:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def get(port: int, path: str = "/metrics", timeout: float = 5.0) -> Tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# ---------------------------------------------------------------------------------- methods


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
                                    "CONNECT", "BREW"])
def test_only_get_and_head(method: str) -> None:
    with serving() as (port, app):
        answer = exchange(port, b"%s /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                          % method.encode())
        assert status_of(answer) == 405
        assert header(answer, "Allow") == "GET, HEAD"
        assert app.calls == []


def test_head_has_the_get_headers_and_no_body() -> None:
    with serving() as (port, app):
        answer = exchange(port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(answer) == 200
        assert header(answer, "Content-Length") == str(len(BODY))
        assert answer.endswith(b"\r\n\r\n")  # nothing after the head
        assert app.calls == [("HEAD", "/metrics", b"")]


def test_get_answers_and_hides_the_python_version() -> None:
    with serving() as (port, _):
        answer = exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(answer) == 200 and answer.endswith(BODY)
        assert header(answer, "Server") == "jkbms-exporter"


# ------------------------------------------------------------------------------ size limits


def test_oversize_header_is_431() -> None:
    with serving() as (port, app):
        big = exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        assert status_of(big) == 431
        many = exchange(port, b"GET / HTTP/1.1\r\n" + b"".join(
            b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n")
        assert status_of(many) == 431
        # Just under the limits is fine.
        fine = exchange(port, b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 8000 + b"\r\n" + b"".join(
            b"X-%d: y\r\n" % i for i in range(40)) + b"\r\n")
        assert status_of(fine) == 200
        assert len(app.calls) == 1


def test_endless_header_stream_is_cut_off_at_the_limit() -> None:
    """A client that keeps sending header bytes gets 431 once past the limit, while it
    is still sending (not only when it stops)."""
    with serving() as (port, app):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\n")
            answer = b""
            for i in range(10000):
                try:
                    sock.sendall(b"X-Filler-%05d: %s\r\n" % (i, b"z" * 40))
                except (BrokenPipeError, ConnectionResetError):
                    break
                if i % 50 == 0:
                    sock.settimeout(0.01)
                    try:
                        answer += sock.recv(4096)
                    except (socket.timeout, BlockingIOError):
                        pass
                    except ConnectionResetError:
                        break
                    sock.settimeout(5)
                    if answer:
                        break
            sock.settimeout(2)
            try:
                while True:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
            except (OSError, socket.timeout):
                pass
        assert answer, "no answer before the client gave up"
        assert status_of(answer) == 431
        # cut off while still sending (the limit is ~300 lines of these; a loaded machine
        # answers a few hundred lines late), not only once the 10000 lines are through
        assert i < 5000
        assert app.calls == []


def test_long_request_line_is_414() -> None:
    with serving() as (port, app):
        assert status_of(exchange(port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n")) == 414
        assert app.calls == []


def test_request_body_limits() -> None:
    with serving() as (port, app):
        too_big = exchange(port, b"GET / HTTP/1.1\r\nContent-Length: %d\r\n\r\n"
                           % (MAX_REQUEST_BODY + 1) + b"x" * (MAX_REQUEST_BODY + 1))
        assert status_of(too_big) == 413  # and readable: the server did not reset it away
        huge = exchange(port, b"GET / HTTP/1.1\r\nContent-Length: 100000000\r\n\r\n" + b"x" * 65536)
        assert status_of(huge) == 413
        chunked = exchange(port, b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"3\r\nabc\r\n0\r\n\r\n")
        assert status_of(chunked) == 411
        for bad in (b"abc", b"-1", b"1, 2"):
            answer = exchange(port, b"GET / HTTP/1.1\r\nContent-Length: " + bad + b"\r\n\r\n")
            assert status_of(answer) == 400, bad
        twice = exchange(port, b"GET / HTTP/1.1\r\nContent-Length: 1\r\n"
                         b"Content-Length: 2\r\n\r\nab")
        assert status_of(twice) == 400
        assert app.calls == []
        small = exchange(port, b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
        assert status_of(small) == 200
        assert app.calls == [("GET", "/", b"hello")]


def test_malformed_requests_are_400_or_505() -> None:
    with serving() as (port, app):
        assert status_of(exchange(port, b"NONSENSE\r\n\r\n")) == 400
        assert status_of(exchange(port, b"GET / HTTP/x.y\r\n\r\n")) == 400
        assert status_of(exchange(port, b"GET / HTTP/2.0\r\n\r\n")) == 505
        assert status_of(exchange(port, b"GET / HTTP/1.1\r\nbroken header line\r\n\r\n")
                         ) in (200, 400)  # Python's header parser tolerates it; no crash
        # Empty lines before the request line are ignored (RFC 9112 2.2).
        assert status_of(exchange(port, b"\r\n\r\nGET / HTTP/1.0\r\n\r\n")) == 200


# ------------------------------------------------------------------------ slow and stalled


def test_slowloris_does_not_delay_a_scrape_and_is_cut_off_at_the_deadline() -> None:
    deadline = 2.0
    ended: List[float] = []

    def dribble(port: int) -> None:
        start = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            try:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                for _ in range(60):  # one byte every 0.1 s: would take 6 s
                    sock.sendall(b"a")
                    time.sleep(0.1)
            except OSError:
                pass  # cut off
            try:
                sock.settimeout(5)
                while sock.recv(4096):
                    pass
            except OSError:
                pass
        ended.append(time.perf_counter() - start)

    with serving(request_timeout=deadline) as (port, app):
        slow = [threading.Thread(target=dribble, args=(port,)) for _ in range(8)]
        for thread in slow:
            thread.start()
        time.sleep(0.3)
        start = time.perf_counter()
        status, body = get(port)
        elapsed = time.perf_counter() - start
        for thread in slow:
            thread.join(15)
    print("scrape beside 8 slowloris clients: %.1f ms; slow clients cut off after %.2f-%.2f s"
          % (elapsed * 1e3, min(ended), max(ended)))
    assert (status, body) == (200, BODY)
    assert elapsed < 1.0
    assert len(ended) == 8
    assert all(deadline - 0.2 < t < deadline + 2.5 for t in ended), ended
    assert len(app.calls) == 1


def test_silent_client_is_dropped_after_the_deadline() -> None:
    with serving(request_timeout=1.0) as (port, _):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            start = time.perf_counter()
            assert sock.recv(100) == b""
            elapsed = time.perf_counter() - start
        assert 0.8 < elapsed < 3.0
        # A client that sent half a request gets a 408.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            answer = sock.recv(4096)
        assert status_of(answer) == 408


def test_body_that_never_arrives_is_408() -> None:
    with serving(request_timeout=1.0) as (port, app):
        answer = exchange(port, b"GET / HTTP/1.1\r\nContent-Length: 100\r\n\r\nonly a bit")
        assert status_of(answer) == 408
        assert app.calls == []


def test_slow_client_flood_does_not_keep_a_scrape_out() -> None:
    """64 slow clients (the cap) and more arriving: each new connection closes the oldest
    one still sending its request, so a well-behaved scrape is answered at once."""
    flood: List[socket.socket] = []
    with serving(request_timeout=30) as (port, app):
        try:
            for index in range(80):  # 16 more than the cap
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                if index % 2:
                    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # dribbler
                flood.append(sock)
            time.sleep(0.3)
            start = time.perf_counter()
            assert get(port) == (200, BODY)
            elapsed = time.perf_counter() - start
            # the oldest slow clients were the ones closed, the newest still wait
            shed = []
            for sock in flood:
                sock.settimeout(0.05)
                try:
                    shed.append(sock.recv(100) == b"")
                except socket.timeout:
                    shed.append(False)
                except ConnectionResetError:
                    shed.append(True)
            closed = sum(shed)
            assert shed == [True] * closed + [False] * (len(flood) - closed)  # oldest first
        finally:
            for sock in flood:
                sock.close()
    print("scrape beside 80 slow clients (cap 64): %.1f ms; %d slow clients shed"
          % (elapsed * 1e3, closed))
    assert elapsed < 1.0
    assert 17 <= closed <= 20  # the 16 beyond the cap and room for the scrape
    assert [call[1] for call in app.calls] == ["/metrics"]


def test_connection_cap_keeps_connections_being_answered() -> None:
    """When every slot is answering a request, a new connection is closed at once; the
    slots come back once those answers are done."""
    release = threading.Event()

    def app(environ: dict, start_response) -> List[bytes]:
        release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [BODY]

    with serving(app=app, max_connections=3, request_timeout=30) as (port, _):
        busy = [threading.Thread(target=get, args=(port,)) for _ in range(3)]
        for thread in busy:
            thread.start()
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
            start = time.perf_counter()
            try:
                data = extra.recv(100)
            except ConnectionResetError:
                data = b""
            assert data == b"" and time.perf_counter() - start < 3.0
        release.set()
        for thread in busy:
            thread.join(5)
        assert get(port, timeout=2) == (200, BODY)


def test_a_slow_app_does_not_block_other_requests() -> None:
    """Each connection has its own thread: a stuck scrape leaves others alone."""
    release = threading.Event()

    def app(environ: dict, start_response) -> List[bytes]:
        if environ["PATH_INFO"] == "/stuck":
            release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [BODY]

    with serving(app=app) as (port, _):
        stuck = threading.Thread(target=get, args=(port, "/stuck"))
        stuck.start()
        time.sleep(0.2)
        start = time.perf_counter()
        assert get(port, "/fast") == (200, BODY)
        assert time.perf_counter() - start < 1.0
        release.set()
        stuck.join(5)


# ----------------------------------------------------------------------- the real exporter


def test_exporter_process_hardening(start_exporter) -> None:
    exporter = start_exporter("--simulate")
    port = exporter.port
    answer = exchange(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    assert status_of(answer) == 405 and header(answer, "Allow") == "GET, HEAD"
    answer = exchange(port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(answer) == 200 and answer.endswith(b"\r\n\r\n")
    assert int(header(answer, "Content-Length") or 0) > 1000
    assert status_of(exchange(port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000
                              + b"\r\n\r\n")) == 431
    assert status_of(exchange(port, b"GET /metrics HTTP/1.1\r\nContent-Length: 99999\r\n\r\n")
                     ) == 413
    status, body = get(port)
    assert status == 200 and b'jkbms_up{pack="sim"} 1.0' in body
    assert get(port, "/")[0] == 200
    assert get(port, "/nothing")[0] == 404
    # A flood of idle clients beyond the cap (64) does not keep a scrape out.
    flood = [socket.create_connection(("127.0.0.1", port)) for _ in range(70)]
    try:
        time.sleep(0.3)
        assert get(port)[0] == 200
    finally:
        for sock in flood:
            sock.close()
    # A stalled client does not hold up a scrape of the real exporter either.
    with socket.create_connection(("127.0.0.1", port)) as stalled:
        stalled.sendall(b"GET /metrics HTTP/1.1\r\n")
        start = time.perf_counter()
        assert get(port)[0] == 200
        assert time.perf_counter() - start < 5.0
