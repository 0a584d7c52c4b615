"""A configured pack: a name, the port it hangs on and the protocol it speaks.

This is the glue between a codec and a transport: build the request with the codec, let
the transport return one whole frame, decode it with the codec. It counts nothing and
logs nothing; the collector does that.

A *transport* is anything with a ``url``, a ``lock`` shared by every pack on it, and
``close()`` (:class:`~jkbms_exporter.links.serial.SerialTransport`, or the BLE transport).
A *protocol* is anything with a ``name`` and ``read(transport, deadline)`` returning
``(Reading, frame bytes)`` or raising a :class:`~jkbms_exporter.errors.JkbmsError`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

try:
    from typing import Protocol
except ImportError:  # pragma: no cover - Python < 3.8
    Protocol = object  # type: ignore[assignment,misc]

from .defaults import CHEMISTRIES, DEFAULT_CHEMISTRY, DEFAULT_MAX_GAP, DEFAULT_READ_TIMEOUT
from .protocols import jk_serial
from .errors import FrameError, JkbmsError, ReadTimeout, TransportError
from .reading import Reading
from .links.serial import Reception, SerialTransport

log = logging.getLogger(__name__)

# Also re-exported from .defaults: DEFAULT_READ_TIMEOUT; CHEMISTRIES, the cell chemistries a
# pack may be configured with (``chemistry:``), exported as ``jkbms_chemistry_info`` for the
# alert rules' fallback protection levels; DEFAULT_CHEMISTRY.


class ReadProtocol(Protocol):
    name: str

    def read(self, transport: Any, deadline: float) -> Tuple[Reading, bytes]:
        ...


class JkSerialProtocol:
    """The "4E 57" read-all exchange (one request, one reply with every register)."""

    name = jk_serial.PROTOCOL_NAME

    def __init__(self, verify_checksum: bool = True, retries: int = 1) -> None:
        self.verify_checksum = verify_checksum
        #: Extra attempts after a garbled reply (checksum/framing); never after a timeout.
        self.retries = retries
        self._request = jk_serial.read_all_request()

    def send_ahead(self, transport: SerialTransport) -> bool:
        """Write the read-all request now (:meth:`SerialTransport.send_ahead`), where the
        transport can (any transport with ``exchange`` carries this protocol)."""
        send_ahead = getattr(transport, "send_ahead", None)
        return send_ahead is not None and send_ahead(self._request)

    def ahead_reception(self, transport: SerialTransport, timeout: float) -> Optional[Reception]:
        """The reply to the request :meth:`send_ahead` wrote, for the caller to receive
        (:func:`~.links.serial_together.receive_together`), or None."""
        take = getattr(transport, "ahead_reception", None)
        return take(self._request, jk_serial.locate_frame, timeout) if take else None

    def decode(self, frame: bytes) -> Reading:
        """The reading in a whole reply frame (:class:`FrameError` if it is garbled)."""
        return jk_serial.decode_reply(frame, self.verify_checksum)

    def read(self, transport: SerialTransport, deadline: float) -> Tuple[Reading, bytes]:
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ReadTimeout("scrape time budget used up before the read")
            frame = transport.exchange(self._request, jk_serial.locate_frame, remaining)
            try:
                return self.decode(frame), frame
            except FrameError:
                attempt += 1
                if attempt > self.retries or deadline - time.monotonic() <= 0:
                    raise


class AutoProtocol:
    """``protocol: auto``: the first read tries the 4E57 read-all, then (when the pack has a
    bus address) a JK-PB trigger; whichever answers is used from then on."""

    name = "auto"

    def __init__(self, serial: JkSerialProtocol, bus: Optional[ReadProtocol]) -> None:
        self.candidates = [serial] + ([bus] if bus is not None else [])
        self.detected: Optional[ReadProtocol] = None

    def read(self, transport: Any, deadline: float) -> Tuple[Reading, bytes]:
        if self.detected is not None:
            return self.detected.read(transport, deadline)
        failures = []
        for index, candidate in enumerate(self.candidates):
            last = index == len(self.candidates) - 1
            own = deadline if last else min(deadline, time.monotonic() + DEFAULT_READ_TIMEOUT)
            try:
                result = candidate.read(transport, own)
            except JkbmsError as error:
                failures.append("%s: %s" % (candidate.name, error))
                if last:
                    raise type(error)("; ".join(failures)) if isinstance(error, ReadTimeout) \
                        else error
                continue
            self.detected = candidate
            log.info("%s speaks the %s protocol", getattr(transport, "url", "?"), candidate.name)
            return result
        raise ReadTimeout("no protocol to try")  # pragma: no cover - candidates is never empty

    def send_ahead(self, transport: Any) -> bool:
        """As the detected protocol does; nothing before one has answered."""
        send_ahead = getattr(self.detected, "send_ahead", None)
        return bool(send_ahead is not None and send_ahead(transport))

    def subscribe(self, transport: Any, on_record: Callable[[float, Reading], None],
                  on_break: Callable[[float], None]) -> None:
        """Records of whichever candidate streams (JK-PB): they only come once it answers."""
        for candidate in self.candidates:
            subscribe = getattr(candidate, "subscribe", None)
            if subscribe is not None:
                subscribe(transport, on_record, on_break)


@dataclass
class Pack:
    name: str
    transport: SerialTransport  # or any transport with url, lock and close()
    protocol: ReadProtocol
    read_timeout: float = DEFAULT_READ_TIMEOUT
    #: For a current sensor (shunt) wired the other way round: charging must be positive.
    invert_current: bool = False
    #: Extra labels of every series of this pack, e.g. ``(("site", "cabin"),)``.
    labels: Tuple[Tuple[str, str], ...] = ()
    #: Readings further apart are not integrated into the energy counters (seconds).
    energy_max_gap: float = DEFAULT_MAX_GAP
    chemistry: str = DEFAULT_CHEMISTRY

    @property
    def port(self) -> str:
        return self.transport.url

    def read(self, deadline: Optional[float] = None) -> Tuple[Reading, bytes]:
        """One reading, or :class:`~jkbms_exporter.errors.JkbmsError` saying why not.

        ``deadline`` (``time.monotonic()`` based) caps the read below ``read_timeout``.
        The caller must not hold the transport's lock.
        """
        own_deadline = time.monotonic() + self.read_timeout
        deadline = own_deadline if deadline is None else min(deadline, own_deadline)
        if not self.transport.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise ReadTimeout("port %s stayed busy past the deadline" % self.port)
        try:
            reading, frame = self.protocol.read(self.transport, deadline)
        finally:
            self.transport.lock.release()
        return self._oriented(reading), frame

    def send_ahead(self) -> bool:
        """Where the protocol is one request and one reply on a serial port (4E57), write
        the request now, if the port is free and that costs no wait: the next
        :meth:`read` then only waits for the reply. True if it was written."""
        send_ahead = getattr(self.protocol, "send_ahead", None)
        if send_ahead is None or not self.transport.lock.acquire(blocking=False):
            return False
        try:
            return bool(send_ahead(self.transport))
        finally:
            self.transport.lock.release()

    def start_read(self, deadline: float) -> Optional[Reception]:
        """Write the request now and hand its reply's :class:`Reception` to the caller,
        who receives it (:func:`~.links.serial_together.receive_together`) and then
        calls :meth:`finish_read` or :meth:`abandon_read`; the transport's lock is held
        until then. None (and nothing held) where the protocol, the port or the moment
        does not allow it: :meth:`read` then reads the pack as usual."""
        protocol = self.protocol
        take = getattr(protocol, "ahead_reception", None)
        if take is None or not self.transport.lock.acquire(blocking=False):
            return None
        reception = None
        try:
            timeout = min(deadline - time.monotonic(), self.read_timeout)
            if timeout > 0 and protocol.send_ahead(self.transport):  # type: ignore[attr-defined]
                reception = take(self.transport, timeout)
        finally:
            if reception is None:
                self.transport.lock.release()
        return reception

    def finish_read(self, frame: bytes) -> Reading:
        """The reading in the frame a :meth:`start_read` reception received (the lock is
        released; :class:`FrameError` if the frame is garbled)."""
        try:
            return self._oriented(self.protocol.decode(frame))  # type: ignore[attr-defined]
        finally:
            self.transport.lock.release()

    def abandon_read(self) -> None:
        """A :meth:`start_read` reception ended without a frame: the lock is released."""
        self.transport.lock.release()

    def subscribe(self, on_record: Callable[[float, Reading], None],
                  on_break: Callable[[float], None]) -> bool:
        """Where the protocol streams (BLE, a JK-PB bus), have it hand every record it
        receives to ``on_record(monotonic time, reading)`` (current oriented as by
        :meth:`read`) and call ``on_break(monotonic time)`` when records may have been lost.
        False when the protocol does not stream."""
        subscribe = getattr(self.protocol, "subscribe", None)
        if subscribe is None:
            return False
        subscribe(self.transport,
                  lambda at, reading: on_record(at, self._oriented(reading)), on_break)
        return True

    def _oriented(self, reading: Reading) -> Reading:
        if self.invert_current and reading.current_amperes:
            return dataclasses.replace(reading, current_amperes=-reading.current_amperes)
        return reading

    def close(self) -> None:
        self.transport.close()


__all__ = ["Pack", "JkSerialProtocol", "TransportError"]
