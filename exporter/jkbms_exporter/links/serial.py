"""Serial transport over pyserial: one port, one lock, request → whole reply frame.

It knows nothing of any BMS protocol. The caller passes the request bytes and a *framer*:
a pure function ``framer(buffer) -> (start, size)`` that says where a frame begins in the
bytes received so far and, once known, how long it is (``size`` ``None`` = not known yet).
The transport drops junk before ``start`` and returns as soon as ``size`` bytes are in —
there are no fixed sleeps.

URLs are anything :func:`serial.serial_for_url` accepts: ``/dev/ttyUSB0``,
``/dev/serial/by-id/…``, ``socket://host:port``, ``rfc2217://host:port``, ``spy://…``.
"""

from __future__ import annotations

import math
import os
import re
import sys
import threading
import time
from typing import Callable, List, Optional, Tuple

import serial

try:  # POSIX: termios calls on a vanished tty raise termios.error, which is no OSError
    from termios import error as _TermiosError
except ImportError:  # pragma: no cover - Windows
    class _TermiosError(Exception):  # type: ignore[no-redef]
        pass

from ..defaults import DEFAULT_BAUDRATE
from ..errors import IncompleteFrameError, ReadTimeout, TransportError



def _debug(message: str, *args: object, exc_info: bool = False) -> None:
    """A debug line. Only a program that has imported logging can have set a handler to
    debug level, so the line goes to logging only once something has imported it: a
    one-shot ``read`` writes its request first and loads logging while the BMS answers
    (at ``--log.level debug`` it sets logging up before opening the port)."""
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.getLogger(__name__).debug(message, *args, exc_info=exc_info)

Framer = Callable[[bytes], Tuple[int, Optional[int]]]

#: The JK vendor doc asks for at least 100 ms between packets on one port.
DEFAULT_MIN_GAP = 0.1
#: Longest a single blocking read may wait. Reads still return the moment the bytes asked
#: for have arrived; the slice only bounds how far a deadline can be overshot, and avoids
#: reconfiguring the port (costly on rfc2217://) for every read.
READ_SLICE = 0.05
#: Everything a driver raises when the device or the connection is gone or refuses us.
PORT_ERRORS = (serial.SerialException, OSError, _TermiosError)
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 5.0
#: Once a frame has started, a silence this long means the rest will not come (a BMS sends
#: a reply in one go; ESPHome gives up after 50 ms, USB adapters and TCP gateways add a few
#: tens of ms of jitter). Reported as an incomplete frame, not as a timeout.
DEFAULT_FRAME_IDLE_TIMEOUT = 0.3
#: Once a reply's length is known, the receive loop sleeps through the wire time of all
#: but this many of its missing bytes instead of waking for every chunk the adapter hands
#: over (a 16S reply arrives in ~10 chunks over 25 ms at 115200 Bd): fewer wake-ups, and
#: with many ports fewer threads contending for the interpreter while replies arrive. The
#: bytes cannot arrive sooner than their wire time, so the sleep delays nothing.
REPLY_TAIL_BYTES = 32
#: A request written ahead (:meth:`SerialTransport.send_ahead`, :meth:`~SerialTransport.
#: send_early`) is taken as the next exchange's own only this long after it was written;
#: later, the exchange writes it again (after emptying the input buffer).
AHEAD_LIFETIME = 1.0


#: pyserial's wrapping of the system's message ("could not open port X: [Errno 2] …");
#: compiled by ``re`` on first use (only an error needs it).
_PYSERIAL_PREFIX = (r"^(?:\[Errno -?\d+\] )?could not open port \S*: "
                    r"|^\[Errno -?\d+\] ")


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    while True:  # the reason, without pyserial's "could not open port …:" and errno wrappers
        shorter = re.sub(_PYSERIAL_PREFIX, "", text, count=1, flags=re.IGNORECASE)
        if shorter == text or not shorter:
            break
        text = shorter
    if "Inappropriate ioctl" in text:  # ENOTTY: a file or other device, not a tty
        text = "not a serial port (inappropriate ioctl for device)"
    if "Permission denied" in text or getattr(error, "errno", None) == 13:
        text += " (is the user in the 'dialout' group?)"
    return text


#: URL schemes pyserial (and the BLE link) know; a device path has none.
KNOWN_SCHEMES = ("socket", "rfc2217", "spy", "loop", "hwgrep", "alt", "cp2110", "ble",
                 "ble+sim")
#: Query options of the network schemes (pyserial's), with the values they take.
_NETWORK_OPTIONS = {
    "socket": {"logging": ("debug", "info", "warning", "error")},
    "rfc2217": {"logging": ("debug", "info", "warning", "error"), "ign_set_control": None,
                "poll_modem": None, "timeout": "seconds"},
}


def check_url(url: str) -> None:
    """ValueError saying what is wrong with a port URL, before pyserial's own messages
    (``'<=' not supported between 'int' and 'NoneType'`` for a missing port, the log levels
    for a port out of range) could leak through. Device paths are not checked here."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return
    scheme = scheme.lower()
    if scheme not in KNOWN_SCHEMES:
        raise ValueError("%s: unknown URL scheme %r (known: %s; a device is a path like "
                         "/dev/ttyUSB0)" % (url, scheme, ", ".join(s + "://" for s in
                                                                KNOWN_SCHEMES)))
    if scheme not in _NETWORK_OPTIONS:
        return
    from urllib.parse import parse_qs, urlsplit  # network URLs only: a device path never

    form = "%s://HOST:PORT" % scheme
    try:
        parts = urlsplit(url)
    except ValueError as error:
        raise ValueError("%s: not a valid URL (%s; %s)" % (url, str(error).lower(), form)) \
            from None
    try:
        port = parts.port
    except ValueError:
        text = parts.netloc.rpartition(":")[2]
        if text.isdigit():
            raise ValueError("%s: port %s is out of range 1-65535" % (url, text)) from None
        raise ValueError("%s: port %r is not a number (%s)" % (url, text, form)) from None
    if not parts.hostname:
        raise ValueError("%s: no host: write %s" % (url, form))
    if port is None:
        raise ValueError("%s: no port: write %s, e.g. %s://%s:8899" % (url, form, scheme,
                                                                     parts.netloc))
    if not 1 <= port <= 65535:
        raise ValueError("%s: port %d is out of range 1-65535" % (url, port))
    if parts.path not in ("", "/"):
        raise ValueError("%s: unexpected path %r after the port (%s)" % (url, parts.path, form))
    options = _NETWORK_OPTIONS[scheme]
    for option, values in parse_qs(parts.query, keep_blank_values=True).items():
        if option not in options:
            raise ValueError("%s: unknown option %r (known: %s)"
                             % (url, option, ", ".join(options)))
        allowed = options[option]
        if isinstance(allowed, tuple) and values[0] not in allowed:
            raise ValueError("%s: %s=%s: choose from %s" % (url, option, values[0],
                                                            ", ".join(allowed)))
        if allowed == "seconds":
            try:
                seconds = float(values[0])
            except ValueError:
                seconds = math.nan
            if not 0 < seconds <= 300:
                raise ValueError("%s: %s=%s: seconds above 0, at most 300"
                                 % (url, option, values[0]))


def _posix_reader(port: serial.SerialBase) -> Optional[Callable[[int, float], bytes]]:
    """For a local port on POSIX, ``read(wanted, left)``: whatever the port holds once it
    is readable, at least ``wanted`` bytes if there, waiting at most :data:`READ_SLICE`
    (and ``left``) seconds: one ``select`` and one ``read`` (pyserial's ``read`` loops
    until it has exactly ``wanted``, with a timeout object per call). Bytes past the frame
    are dropped with it; the next request empties the input buffer first anyway. None
    for other ports (network URLs, Windows): they are read with pyserial's ``read``."""
    fd = getattr(port, "fd", None)
    if not isinstance(port, serial.Serial) or not isinstance(fd, int) or sys.platform == "win32":
        return None
    import select

    def read(wanted: int, left: float) -> bytes:
        ready, _, _ = select.select((fd,), (), (), min(READ_SLICE, max(0.0, left)))
        return read_ready(fd, max(wanted, 4096)) if ready else b""

    return read


def read_ready(fd: int, most: int = 4096) -> bytes:
    """Up to ``most`` bytes of a local port that ``select`` found readable (its fd is
    non-blocking: pyserial's); b"" if they went after all. Readable with nothing to read
    is a tty that has gone (a USB unplug, a pty hangup): :class:`serial.SerialException`,
    in pyserial's words."""
    try:
        data = os.read(fd, most)
    except BlockingIOError:
        return b""
    if not data:
        raise serial.SerialException(
            "device reports readiness to read but returned no data "
            "(device disconnected or multiple access on port?)")
    return data


class Reception:
    """One reply on its way in: the bytes so far, the frame in them once the framer has
    found it, and the checks that give up on it. :meth:`SerialTransport.exchange` runs
    one on its own; :func:`~.serial_together.receive_together` runs many on one thread."""

    __slots__ = ("transport", "framer", "timeout", "deadline", "last_byte", "buffer", "size")

    def __init__(self, transport: "SerialTransport", framer: Framer, timeout: float) -> None:
        self.transport = transport
        self.framer = framer
        self.timeout = timeout
        now = transport._clock()
        self.deadline = now + timeout
        self.last_byte = now
        self.buffer = bytearray()
        #: The frame's length once the framer knows it.
        self.size: Optional[int] = None

    @property
    def wanted(self) -> int:
        """Bytes still missing (of the frame's header, before its length is known)."""
        if self.size is None:
            return max(1, 4 - len(self.buffer))
        return self.size - len(self.buffer)

    def add(self, chunk: bytes) -> Optional[bytes]:
        """Take ``chunk``; the whole frame once it is in (junk before it dropped)."""
        buffer = self.buffer
        buffer += chunk
        self.last_byte = self.transport._clock()
        size = self.size
        if size is None or len(buffer) >= size:  # a known frame at the start: no new look
            start, size = self.framer(bytes(buffer))
            if start:
                del buffer[:start]
            self.size = size
        if size is not None and len(buffer) >= size:
            self.transport._on_success()
            return bytes(buffer[:size])
        return None

    def check(self, now: float) -> None:
        """:class:`IncompleteFrameError` once a started frame has stalled for the
        transport's idle timeout; :class:`ReadTimeout` past the deadline."""
        if len(self.buffer) > 1 and now - self.last_byte >= self.transport.frame_idle_timeout:
            raise IncompleteFrameError(
                "reply from %s stopped after %d of %s bytes"
                % (self.transport.url, len(self.buffer),
                   self.size if self.size is not None else "?"))
        if now >= self.deadline:
            raise ReadTimeout(
                "no complete reply from %s within %.2f s (%d bytes received)"
                % (self.transport.url, self.timeout, len(self.buffer)),
                received=len(self.buffer),
            )


class SerialTransport:
    """One physical port (or TCP gateway). All packs on it share this object and its lock."""

    def __init__(
        self,
        url: str,
        baudrate: int = DEFAULT_BAUDRATE,
        min_gap: float = DEFAULT_MIN_GAP,
        exclusive: bool = True,
        frame_idle_timeout: float = DEFAULT_FRAME_IDLE_TIMEOUT,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.baudrate = baudrate
        self.min_gap = min_gap
        self.frame_idle_timeout = frame_idle_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.exclusive = exclusive
        self.lock = threading.Lock()
        self._clock = clock
        self._port: Optional[serial.SerialBase] = None
        self._last_activity = float("-inf")
        self._backoff = 0.0
        self._retry_at = float("-inf")
        self._last_open_error = ""
        #: Every request written to the device, in order (the read-only guarantee is
        #: checked against this in the tests).
        self.sent: List[bytes] = []
        self.record_sent = False
        #: Called after each request is written, before waiting for the reply: a one-shot
        #: ``read`` imports what prints the answer while the BMS takes its time to answer.
        self.after_write: Optional[Callable[[], None]] = None
        #: Written by :meth:`send_early` or :meth:`send_ahead` at ``_early_at``, its reply
        #: not yet asked for.
        self._early_request: Optional[bytes] = None
        self._early_at = float("-inf")

    # ----------------------------------------------------------------- connection

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def _open(self) -> serial.SerialBase:
        now = self._clock()
        if now < self._retry_at:
            raise TransportError(
                "%s unavailable (%s); next attempt in %.1f s"
                % (self.url, self._last_open_error, self._retry_at - now)
            )
        try:
            port = serial.serial_for_url(
                self.url,
                baudrate=self.baudrate,
                bytesize=serial.EIGHTBITS,
                parity=serial.PARITY_NONE,
                stopbits=serial.STOPBITS_ONE,
                timeout=READ_SLICE,
                write_timeout=1.0,
                exclusive=self.exclusive,
                do_not_open=True,
            )
            port.open()
        except PORT_ERRORS + (ValueError,) as error:
            self._schedule_retry(_describe(error))
            raise TransportError("cannot open %s: %s" % (self.url, _describe(error))) from error
        _debug("opened %s", self.url)
        self._port = port
        return port

    def _schedule_retry(self, reason: str) -> None:
        self._backoff = min(self.backoff_max, self._backoff * 2 or self.backoff_initial)
        self._retry_at = self._clock() + self._backoff
        self._last_open_error = reason

    def close(self) -> None:
        port, self._port = self._port, None
        self._early_request = None
        if port is not None:
            try:
                port.close()
            except Exception:  # closing a vanished device may fail; it is gone either way
                _debug("error closing %s", self.url, exc_info=True)

    def _fail(self, error: BaseException, what: str) -> TransportError:
        self.close()
        self._schedule_retry(_describe(error))
        return TransportError("%s %s failed: %s" % (what, self.url, _describe(error)))

    # ----------------------------------------------------------------- exchange

    def exchange(self, request: bytes, framer: Framer, timeout: float) -> bytes:
        """Send ``request`` and return the first complete frame of the reply.

        Raises :class:`ReadTimeout` when no whole frame arrived within ``timeout`` seconds
        of sending, :class:`IncompleteFrameError` when a frame started but its bytes stopped
        for :attr:`frame_idle_timeout`, :class:`TransportError` on any device or socket
        error (the port is then closed and reopened on a later call, with capped backoff).
        Callers must hold :attr:`lock`.
        """
        port = self._port or self._open()
        if not self._take_early(request):
            self._write(port, request)
            if self.after_write is not None:
                self.after_write()
        try:
            return self._receive(port, framer, self._clock() + timeout, timeout)
        except (ReadTimeout, IncompleteFrameError):
            self.gave_up()
            raise
        except PORT_ERRORS as error:
            raise self._fail(error, "reading from") from error

    def gave_up(self) -> None:
        """A reply was given up on (timeout, stalled frame): the next request keeps the
        gap from now."""
        self._last_activity = self._clock()

    def read_failed(self, error: BaseException) -> TransportError:
        """The error to report for ``error`` raised while reading; the port is closed."""
        return self._fail(error, "reading from")

    def ahead_reception(self, request: bytes, framer: Framer, timeout: float
                        ) -> Optional[Reception]:
        """The reply to ``request``, written by :meth:`send_ahead`, as a
        :class:`Reception` for a caller that reads :meth:`fileno` itself; None if no
        such request is pending. Callers must hold :attr:`lock` until it is done."""
        port = self._port
        if not isinstance(port, serial.Serial) or not isinstance(port.fd, int):
            return None
        return Reception(self, framer, timeout) if self._take_early(request) else None

    def _take_early(self, request: bytes) -> bool:
        """Whether ``request`` was written ahead, recently enough to take its reply as the
        answer (:data:`AHEAD_LIFETIME`); either way it is no longer pending."""
        early, self._early_request = self._early_request, None
        return early == request and self._clock() - self._early_at <= AHEAD_LIFETIME

    def fileno(self) -> int:
        """The open local port's file descriptor (non-blocking)."""
        return self._port.fd  # type: ignore[union-attr,return-value]

    def send_early(self, request: bytes) -> None:
        """Open the port and write ``request`` now, ahead of the :meth:`exchange` that
        asks for it: that exchange then only waits for the reply. A one-shot ``read``
        sends its request this way before it loads the codec and what prints the answer,
        which then load while the BMS takes its time to answer. Raises
        :class:`TransportError` as :meth:`exchange` would. Callers must hold :attr:`lock`
        (or be the port's only user)."""
        port = self._port or self._open()
        self._write(port, request)
        self._early_request = bytes(request)
        self._early_at = self._clock()

    def send_ahead(self, request: bytes) -> bool:
        """Write ``request`` now if that costs no wait: the port is open, the gap since its
        last exchange has passed and the write is accepted at once; the next
        :meth:`exchange` of the same request then only waits for the reply. False (and
        nothing written) otherwise; an error closes the port, and the exchange reports it.

        A scrape writes the first request of every port this way from one thread, so
        that all of them are on the wire within a fraction of a millisecond instead of
        one port thread after another. Unlike :meth:`exchange`, it does not wait for the
        request to leave the UART (``tcdrain``): on a real adapter that is ~2 ms per
        port. Callers must hold :attr:`lock`."""
        port = self._port
        if (not isinstance(port, serial.Serial) or port.fd is None
                or self._clock() < self._last_activity + self.min_gap):
            return False  # closed, a network port, or too soon after the last exchange
        try:
            port.reset_input_buffer()
            written = os.write(port.fd, request)  # the fd is non-blocking (pyserial's)
            if written < len(request):  # a full output buffer: rare, finish as usual
                port.write(request[written:])
        except BlockingIOError:
            return False  # a full output buffer: the exchange writes it
        except PORT_ERRORS as error:
            self._fail(error, "writing to")
            return False
        if self.record_sent:
            self.sent.append(bytes(request))
        self._early_request = bytes(request)
        self._early_at = self._clock()
        return True

    def _write(self, port: serial.SerialBase, request: bytes) -> None:
        gap = self._last_activity + self.min_gap - self._clock()
        if gap > 0:
            time.sleep(gap)
        try:
            port.reset_input_buffer()
            if self.record_sent:
                self.sent.append(bytes(request))
            port.write(request)
            port.flush()
        except PORT_ERRORS as error:
            raise self._fail(error, "writing to") from error

    def _receive(self, port: serial.SerialBase, framer: Framer, deadline: float,
                 timeout: float) -> bytes:
        reception = Reception(self, framer, timeout)
        reception.deadline = deadline
        read = _posix_reader(port)
        while True:
            now = self._clock()
            reception.check(now)
            wanted = reception.wanted
            if reception.size is not None and wanted > REPLY_TAIL_BYTES:
                self._sleep_through_wire_time(port, wanted, deadline - now)
            chunk = read(wanted, deadline - now) if read is not None else port.read(wanted)
            if chunk:
                frame = reception.add(chunk)
                if frame is not None:
                    return frame

    def _sleep_through_wire_time(self, port: serial.SerialBase, missing: int,
                                 left: float) -> None:
        """Sleep while ``missing`` bytes of a reply, less those the port already holds
        and :data:`REPLY_TAIL_BYTES`, are still on the wire at :attr:`baudrate` (8N1: ten
        bit times a byte); never past the deadline (``left`` seconds away) nor half the
        idle timeout. Only local serial ports count their buffered bytes exactly (a TCP
        gateway's socket does not): others are read as they arrive."""
        if not isinstance(port, serial.Serial):
            return
        try:
            on_wire = missing - port.in_waiting - REPLY_TAIL_BYTES
        except PORT_ERRORS:
            return  # the read that follows reports it
        wire_time = on_wire * 10.0 / self.baudrate
        if wire_time > 0.001:
            time.sleep(min(wire_time, left, self.frame_idle_timeout / 2))

    def listen(self, duration: float, on_chunk: Callable[[bytes], bool]) -> None:
        """Receive without sending for up to ``duration`` seconds (a bus owned by another
        master, or a check that the bus is quiet). ``on_chunk`` gets every chunk as it
        arrives and returns True to stop early. Callers must hold :attr:`lock`."""
        port = self._port or self._open()
        deadline = self._clock() + duration
        try:
            while self._clock() < deadline:
                chunk = port.read(max(1, min(4096, port.in_waiting or 1)))
                if chunk:
                    self._last_activity = self._clock()
                    if on_chunk(bytes(chunk)):
                        return
        except PORT_ERRORS as error:
            raise self._fail(error, "listening on") from error
        self._backoff = 0.0

    def _on_success(self) -> None:
        self._last_activity = self._clock()
        self._backoff = 0.0
        self._retry_at = float("-inf")
