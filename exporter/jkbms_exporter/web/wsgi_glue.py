"""The few parts of HTTP/1.x and WSGI the server needs, on a plain socket.

:mod:`.server` reads the request head within its limits; this module parses it (request
line and header fields, as :mod:`http.server` does), builds the WSGI environ (as
:mod:`wsgiref` does) and writes the application's answer: one request per connection,
answered ``HTTP/1.0`` with ``Date`` and ``Server`` first, the body unless the request is
``HEAD``. It replaces :mod:`wsgiref` and :mod:`http.server`, which import
:mod:`http.client`, :mod:`email` and :mod:`ssl`: megabytes of a small exporter's memory.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from typing import Any, Callable, Iterable, List, Optional, Tuple
from urllib.parse import unquote

log = logging.getLogger(__name__)

SERVER_SOFTWARE = "jkbms-exporter"
#: What wsgiref answers when the application fails before sending anything.
ERROR_STATUS = "500 Internal Server Error"
ERROR_BODY = b"A server error occurred.  Please contact the administrator."

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

Headers = List[Tuple[str, str]]


class BadRequest(Exception):
    """The request head cannot be parsed: answer ``code`` with ``text``."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class RequestHead:
    """A parsed request line and header fields."""

    __slots__ = ("method", "target", "version", "headers")

    def __init__(self, method: str, target: str, version: str, headers: Headers) -> None:
        self.method = method
        self.target = target
        #: ``HTTP/1.1``, ``HTTP/1.0``, or ``HTTP/0.9`` for a request line without one.
        self.version = version
        #: (name as sent, value) in order; continuation lines folded in.
        self.headers = headers

    def get_all(self, name: str) -> List[str]:
        name = name.lower()
        return [value for key, value in self.headers if key.lower() == name]


def parse_request_line(line: bytes) -> Optional[Tuple[str, str, str]]:
    """(method, target, version) as :mod:`http.server` reads them; None for a blank line
    (answered with nothing); :class:`BadRequest` 400 or 505 for anything malformed."""
    text = str(line, "iso-8859-1").rstrip("\r\n")
    words = text.split()
    if not words:
        return None
    version = "HTTP/0.9"
    if len(words) >= 3:
        version = words[-1]
        try:
            if not version.startswith("HTTP/"):
                raise ValueError
            numbers = version.split("/", 1)[1].split(".")
            if len(numbers) != 2 or not all(n.isdigit() and len(n) <= 10 for n in numbers):
                raise ValueError
            major_minor = (int(numbers[0]), int(numbers[1]))
        except (ValueError, IndexError):
            raise BadRequest(400, "Bad request version (%r)" % version) from None
        if major_minor >= (2, 0):
            raise BadRequest(505, "Invalid HTTP version (%s)" % version.split("/", 1)[1])
    if not 2 <= len(words) <= 3:
        raise BadRequest(400, "Bad request syntax (%r)" % text)
    method, target = words[:2]
    if len(words) == 2 and method != "GET":
        raise BadRequest(400, "Bad HTTP/0.9 request type (%r)" % method)
    if target.startswith("//"):  # as http.server: never taken for a scheme-relative URL
        target = "/" + target.lstrip("/")
    return method, target, version


def parse_header_lines(block: bytes) -> Headers:
    """Header fields of the head (without the request line); 400 for a line that is not
    ``name: value`` (a name with spaces or without a colon), where :mod:`email`'s parser
    quietly dropped it and every line after it."""
    headers: Headers = []
    for raw in str(block, "iso-8859-1").split("\n"):
        line = raw.rstrip("\r")
        if not line:
            continue
        if line[0] in " \t":
            if not headers:
                raise BadRequest(400, "Bad header line.")
            name, value = headers[-1]
            headers[-1] = (name, (value + " " + line.strip()).strip())
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or " " in name:
            raise BadRequest(400, "Bad header line.")
        headers.append((name, value.strip()))
    return headers


def make_environ(head: RequestHead, body: bytes, server_name: str, server_port: int,
                 remote_address: str, https: bool) -> dict:
    """The WSGI environ of a request (wsgiref's keys, without a copy of ``os.environ``)."""
    path, _, query = head.target.partition("?")
    environ = {
        "SERVER_NAME": server_name,
        "SERVER_PORT": str(server_port),
        "SERVER_PROTOCOL": head.version,
        "SERVER_SOFTWARE": SERVER_SOFTWARE,
        "GATEWAY_INTERFACE": "CGI/1.1",
        "REQUEST_METHOD": head.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote(path, "iso-8859-1"),
        "QUERY_STRING": query,
        "REMOTE_ADDR": remote_address,
        "REMOTE_HOST": "",
        "CONTENT_TYPE": "text/plain",
        "CONTENT_LENGTH": "",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https" if https else "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if https:
        environ["HTTPS"] = "on"
    for name, value in head.headers:
        if "_" in name:  # X_Foo would pass for X-Foo: dropped, as newer wsgiref does
            continue
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value
            continue
        key = "HTTP_" + key
        environ[key] = environ[key] + "," + value if key in environ else value
    return environ


def http_date(seconds: Optional[float] = None) -> str:
    """RFC 9110 date, always in English (``Mon, 07 Dec 2026 00:30:00 GMT``)."""
    t = time.gmtime(seconds)
    return "%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _DAYS[t.tm_wday], t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year,
        t.tm_hour, t.tm_min, t.tm_sec)


class _Answer:
    """What the application passed to ``start_response`` and ``write``."""

    def __init__(self) -> None:
        self.status: Optional[str] = None
        self.headers: Headers = []
        self.chunks: List[bytes] = []

    def start_response(self, status: str, headers: Headers, exc_info: Any = None) -> Callable:
        if exc_info is None and self.status is not None:
            raise AssertionError("start_response called twice without exc_info")
        if not isinstance(status, str) or not status[:3].isdigit():
            raise AssertionError("status must be a string like '200 OK', not %r" % (status,))
        self.status, self.headers = status, list(headers)
        return self.chunks.append


def run_app(app: Callable, environ: dict, send: Callable[[bytes], Any]) -> str:
    """Call the WSGI application and send its whole answer with ``send``; returns the status.

    The body is gathered first (answers here are small), so ``Content-Length`` is always
    right and a failing application still gets a clean 500."""
    answer = _Answer()
    result: Optional[Iterable[bytes]] = None
    try:
        result = app(environ, answer.start_response)
        for chunk in result:
            if chunk:
                answer.chunks.append(chunk)
        if answer.status is None:
            raise AssertionError("the application returned without calling start_response")
    except Exception:
        log.error("error while answering %s %s", environ.get("REQUEST_METHOD"),
                  environ.get("PATH_INFO"), exc_info=True)
        answer.status, answer.chunks = ERROR_STATUS, [ERROR_BODY]
        answer.headers = [("Content-Type", "text/plain")]
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    body = b"".join(answer.chunks)
    head_only = environ["REQUEST_METHOD"] == "HEAD"
    if environ["SERVER_PROTOCOL"] == "HTTP/0.9":  # no status line nor headers then
        send(b"" if head_only else body)
        return answer.status
    headers = [("Date", http_date()), ("Server", SERVER_SOFTWARE)]
    names = {name.lower() for name, _ in answer.headers}
    headers = [h for h in headers if h[0].lower() not in names] + answer.headers
    if "content-length" not in names:  # HEAD: the length of the GET answer
        headers.append(("Content-Length", str(len(body))))
    lines = ["HTTP/1.0 " + answer.status] + ["%s: %s" % header for header in headers]
    payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    send(payload if head_only else payload + body)
    return answer.status
