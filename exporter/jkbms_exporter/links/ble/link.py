"""The BLE link to one JK board: :class:`BleTransport` keeps one connection open in a
background thread of its own (one asyncio loop, in which bleak does all its work), writes only
the read commands 0x97 and 0x96, reassembles the notifications into frames and reconnects with
capped backoff. See the package docstring for the whole story.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from ...protocols import jk02
from ...errors import ReadTimeout, TransportError
from .url import BleTarget, parse_ble_url
from .backend import (
    BleBackend, BleClient, default_backend, _describe, LinkError, pick_characteristics,
    _write_with_response,
)

log = logging.getLogger(__package__)  # one logger for the whole BLE link


#: How long one attempt looks for the BMS's advertisement before connecting.
DEFAULT_SCAN_TIMEOUT = 15.0
DEFAULT_CONNECT_TIMEOUT = 20.0
BACKOFF_INITIAL = 2.0
BACKOFF_MAX = 60.0
#: While connected and no cell-info frame came for this long, 0x96 is written again.
DEFAULT_REQUEST_INTERVAL = 5.0
#: Connected but no cell-info frame for this long: the link is dead, reconnect.
DEFAULT_STALL_TIMEOUT = 20.0
#: After 0x97, how long to wait for the device-info frame before sending 0x96 anyway.
DEFAULT_DEVICE_INFO_WAIT = 1.0
DEFAULT_CLOSE_TIMEOUT = 5.0

COMMAND_DEVICE_INFO = jk02.command_frame(jk02.COMMAND_DEVICE_INFO)
COMMAND_CELL_INFO = jk02.command_frame(jk02.COMMAND_CELL_INFO)

class NotAReadCommandError(AssertionError):
    """Something tried to write a frame that is not one of the JK02 read commands."""


# ----------------------------------------------------------------------------- transport


@dataclass(frozen=True)
class BleFrames:
    """The frames a read is built from; the cell-info frame is never older than asked."""

    cell_info: bytes
    cell_info_age: float
    settings: Optional[bytes]
    device_info: Optional[bytes]


@dataclass(frozen=True)
class BleStatus:
    """What the link is doing, for logs, the landing page and tests."""

    state: str  # idle, scanning, connecting, connected, waiting, closed
    connected: bool
    attempts: int
    connections: int
    drops: int
    last_error: str
    #: Seconds until the next connection attempt while ``waiting``.
    next_attempt_in: Optional[float]
    notifications: int
    frames: int
    assembler: jk02.AssemblerStats
    #: Every command written to the BMS, oldest first (bounded).
    written: Tuple[bytes, ...]


#: ``on_cell_info(frames, monotonic time)`` and ``on_break(monotonic time)`` of a subscriber.
FrameListener = Tuple[Callable[[BleFrames, float], None], Callable[[float], None]]

_KEEP_WRITES = 200
#: States in which a connection attempt is under way (a read may wait for it).
_ATTEMPTING = ("starting", "scanning", "connecting")


class BleTransport:
    """One BMS over BLE: one connection kept open, reconnected with capped backoff.

    Same surface as :class:`~jkbms_exporter.links.serial.SerialTransport` for
    :class:`~jkbms_exporter.pack.Pack`: ``url``, ``lock``, ``is_open``, ``close()``.
    The connection runs in a thread of its own, started by :meth:`start` (or the first
    read) and stopped by :meth:`close`; a read after ``close()`` starts it again.
    """

    def __init__(
        self,
        target: Union[BleTarget, str],
        backend: Optional[BleBackend] = None,
        *,
        scan_timeout: float = DEFAULT_SCAN_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
        request_interval: float = DEFAULT_REQUEST_INTERVAL,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        device_info_wait: float = DEFAULT_DEVICE_INFO_WAIT,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        self.target = parse_ble_url(target) if isinstance(target, str) else target
        self.url = self.target.url
        self.backend = backend if backend is not None else default_backend()
        self.lock = threading.Lock()
        self.scan_timeout = scan_timeout
        self.connect_timeout = connect_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.request_interval = request_interval
        self.stall_timeout = stall_timeout
        self.device_info_wait = device_info_wait
        self.close_timeout = close_timeout
        self._clock = time.monotonic  # the same clock as the deadlines
        # shared between the loop thread and readers, guarded by _cond
        self._cond = threading.Condition()
        self._frames: Dict[int, Tuple[bytes, float]] = {}
        self._connected = False
        self._state = "idle"
        self._last_error = "not connected yet"
        self._retry_at: Optional[float] = None
        self._attempts = 0
        self._connections = 0
        self._drops = 0
        self._notifications = 0
        self._frame_count = 0
        self._written: List[bytes] = []
        self._listeners: List[FrameListener] = []
        #: One for the transport's life (its stats add up); flushed when a link drops.
        self._assembler = jk02.FrameAssembler(restart_on_header=True)
        # the loop thread
        self._thread_lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop: Optional[asyncio.Event] = None
        self._closing = False
        # per connection, loop thread only
        self._session_frames = 0
        self._session_cell_info: Optional[float] = None
        self._device_info_event: Optional[asyncio.Event] = None
        self._failures_logged = 0

    # ----------------------------------------------------------------- surface

    @property
    def is_open(self) -> bool:
        """True while the BLE link is up and subscribed."""
        return self._connected

    def start(self) -> "BleTransport":
        """Start connecting in the background (idempotent)."""
        with self._thread_lock:
            if self._thread is not None and self._thread.is_alive():
                return self
            self._closing = False
            with self._cond:
                self._state = "starting"
            self._thread = threading.Thread(target=self._thread_main, daemon=True,
                                            name="jkbms-ble-%s" % self.target.describe)
            self._thread.start()
        return self

    def close(self) -> None:
        """Disconnect and stop the background thread (waits up to ``close_timeout``)."""
        with self._thread_lock:
            thread, self._thread = self._thread, None
            self._closing = True
            loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop already closed
                pass
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.close_timeout)
            if thread.is_alive():
                log.warning("BLE %s: the Bluetooth stack did not let go within %.0f s",
                            self.url, self.close_timeout)
        with self._cond:
            self._set_disconnected_locked("closed")
            self._state = "closed"
            self._cond.notify_all()

    def status(self) -> BleStatus:
        with self._cond:
            wait = None
            if self._state == "waiting" and self._retry_at is not None:
                wait = max(0.0, self._retry_at - self._clock())
            return BleStatus(self._state, self._connected, self._attempts, self._connections,
                             self._drops, self._last_error, wait, self._notifications,
                             self._frame_count, self._assembler.stats, tuple(self._written))

    def subscribe(self, on_cell_info: Callable[[BleFrames, float], None],
                  on_break: Callable[[float], None]) -> None:
        """Hand every cell-info frame (with the newest settings and device-info frames) to
        ``on_cell_info(frames, monotonic time received)``, and a lost link or a garbled frame
        (a record may be lost) to ``on_break``; both run in the link's thread."""
        with self._cond:
            self._listeners.append((on_cell_info, on_break))

    def wait_for_cell_info(self, max_age: float, deadline: float) -> BleFrames:
        """The newest frames, with a cell-info frame at most ``max_age`` seconds old.

        Waits (until ``deadline``, ``time.monotonic()`` based like the clock) for a fresh
        cell-info frame. Raises :class:`TransportError` while the link is down — at once
        while it waits for the next attempt, at the deadline while an attempt is under
        way — and :class:`ReadTimeout` when connected but no fresh frame came in time.
        """
        self.start()
        with self._cond:
            while True:
                now = self._clock()
                if not self._connected:
                    if now >= deadline or self._state not in _ATTEMPTING:
                        raise TransportError(self._down_message_locked(now))
                    self._cond.wait(deadline - now)
                    continue
                entry = self._frames.get(jk02.FRAME_CELL_INFO)
                if entry is not None and now - entry[1] <= max_age:
                    settings = self._frames.get(jk02.FRAME_SETTINGS)
                    device = self._frames.get(jk02.FRAME_DEVICE_INFO)
                    return BleFrames(entry[0], max(0.0, now - entry[1]),
                                     settings[0] if settings else None,
                                     device[0] if device else None)
                if now >= deadline:
                    if entry is None:
                        raise ReadTimeout("BLE %s is connected but sent no cell-info frame yet"
                                          % self.url)
                    raise ReadTimeout(
                        "BLE %s: newest cell-info frame is %.1f s old, more than max_age %g s"
                        % (self.url, now - entry[1], max_age))
                self._cond.wait(deadline - now)

    def _down_message_locked(self, now: float) -> str:
        if self._state == "closed":
            return "BLE %s is closed" % self.url
        text = "BLE link to %s is down (%s)" % (self.url, self._last_error)
        if self._state == "waiting" and self._retry_at is not None:
            text += "; next attempt in %.1f s" % max(0.0, self._retry_at - now)
        elif self._state in ("scanning", "connecting", "starting"):
            text += "; %s now" % self._state
        return text

    # ----------------------------------------------------------------- loop thread

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            stop = asyncio.Event()
            with self._thread_lock:
                self._loop, self._stop = loop, stop
                closing = self._closing
            if not closing:
                loop.run_until_complete(self._main(stop))
        except Exception:  # never seen; keep the reason in the log, reads report io
            log.exception("BLE %s: connection thread failed", self.url)
            with self._cond:
                self._last_error = "connection thread failed (see the log)"
        finally:
            with self._thread_lock:
                self._loop = self._stop = None
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    async def _pause(self, stop: asyncio.Event, seconds: float) -> None:
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, seconds))
        except asyncio.TimeoutError:
            pass

    async def _main(self, stop: asyncio.Event) -> None:
        backoff = 0.0
        while not (self._closing or stop.is_set()):
            self._session_frames = 0
            try:
                await self._session(stop)
                reason = "link closed"
            except asyncio.CancelledError:
                raise
            except Exception as error:  # bleak, D-Bus, OS and our LinkError alike
                reason = _describe(error)
            if self._closing or stop.is_set():
                break
            if self._session_frames:
                backoff = 0.0  # a link that worked: try again soon
            backoff = min(self.backoff_max, backoff * 2 or self.backoff_initial)
            self._on_link_down(reason, backoff)
            await self._pause(stop, backoff)

    def _on_link_down(self, reason: str, backoff: float) -> None:
        with self._cond:
            was_connected = self._connected
            self._set_disconnected_locked(reason)
            self._state = "waiting"
            self._retry_at = self._clock() + backoff
            self._cond.notify_all()
        if was_connected or self._session_frames:
            log.warning("BLE %s: link lost (%s); reconnecting in %.1f s", self.url, reason, backoff)
            self._failures_logged = 0
        elif self._failures_logged == 0:
            log.warning("BLE %s: cannot connect (%s); retrying with backoff up to %g s",
                        self.url, reason, self.backoff_max)
            self._failures_logged = 1
        else:
            self._failures_logged += 1
            log.debug("BLE %s: attempt failed (%s); next in %.1f s", self.url, reason, backoff)

    def _set_disconnected_locked(self, reason: str) -> None:
        if self._connected:
            self._drops += 1
            for _, on_break in self._listeners:  # records may be lost until it is back
                on_break(self._clock())
        self._connected = False
        self._last_error = reason
        # never serve a frame of an earlier connection; settings and device info stay
        self._frames.pop(jk02.FRAME_CELL_INFO, None)

    def _set_state(self, state: str) -> None:
        with self._cond:
            self._state = state
            self._cond.notify_all()

    async def _session(self, stop: asyncio.Event) -> None:
        """One connection, from looking for the device to the link going down."""
        loop = asyncio.get_running_loop()
        with self._cond:
            self._attempts += 1
            self._state = "scanning"
        target = self.target
        device = await asyncio.wait_for(
            self.backend.find_device(target.address, target.name, self.scan_timeout),
            self.scan_timeout + 5.0)
        if device is None:
            raise LinkError("no advertisement from %s within %.0f s (out of range, or "
                            "connected to something else such as the JK app?)"
                            % (target.describe, self.scan_timeout))
        if stop.is_set():
            return
        disconnected = asyncio.Event()

        def on_disconnect(*_: Any) -> None:  # bleak calls it in the loop; be safe anyway
            try:
                loop.call_soon_threadsafe(disconnected.set)
            except RuntimeError:
                pass

        client = self.backend.client(device, on_disconnect, self.connect_timeout)
        self._set_state("connecting")
        try:
            await asyncio.wait_for(client.connect(), self.connect_timeout)
            notify_char, write_char = pick_characteristics(client.services)
            self._device_info_event = asyncio.Event()
            self._session_cell_info = None
            await client.start_notify(notify_char, self._on_notification)
            connected_at = self._clock()
            with self._cond:
                self._connected = True
                self._connections += 1
                self._state = "connected"
                self._retry_at = None
                self._last_error = ""
                self._cond.notify_all()
            if self._failures_logged:
                log.info("BLE %s: connected after %d failed attempt(s)", self.url,
                         self._failures_logged)
            else:
                log.info("BLE %s: connected", self.url)
            self._failures_logged = 0
            await self._write(client, write_char, COMMAND_DEVICE_INFO)
            try:
                await asyncio.wait_for(self._device_info_event.wait(), self.device_info_wait)
            except asyncio.TimeoutError:
                pass
            await self._write(client, write_char, COMMAND_CELL_INFO)
            last_request = self._clock()
            tick = max(0.01, min(self.request_interval, self.stall_timeout) / 4.0)
            while not (stop.is_set() or self._closing):
                if disconnected.is_set() or not client.is_connected:
                    raise LinkError("disconnected by the peer")
                now = self._clock()
                newest = self._session_cell_info
                if now - (newest if newest is not None else connected_at) >= self.stall_timeout:
                    raise LinkError("no cell-info frame for %.0f s" % self.stall_timeout)
                if ((newest is None or now - newest >= self.request_interval)
                        and now - last_request >= self.request_interval):
                    if not self._device_info_event.is_set():
                        await self._write(client, write_char, COMMAND_DEVICE_INFO)
                    await self._write(client, write_char, COMMAND_CELL_INFO)
                    last_request = now
                await self._wait_any((stop, disconnected), tick)
        finally:
            with self._cond:
                self._set_disconnected_locked(self._last_error or "disconnected")
                self._state = "disconnecting"
                self._assembler.flush()
                self._cond.notify_all()
            try:
                await asyncio.wait_for(client.disconnect(), self.connect_timeout)
            except asyncio.CancelledError:
                raise
            except Exception:  # the link is gone either way
                log.debug("BLE %s: error while disconnecting", self.url, exc_info=True)

    @staticmethod
    async def _wait_any(events: Sequence[asyncio.Event], timeout: float) -> None:
        waiters = [asyncio.ensure_future(event.wait()) for event in events]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _write(self, client: BleClient, characteristic: Any, frame: bytes) -> None:
        """The only way anything is written to a BMS: JK02 read commands, nothing else."""
        if not jk02.is_read_only_command(frame):
            raise NotAReadCommandError("refusing to write %s: not a JK02 read command"
                                       % bytes(frame).hex(" "))
        with self._cond:
            self._written.append(bytes(frame))
            del self._written[:-_KEEP_WRITES]
        await client.write_gatt_char(characteristic, bytes(frame),
                                     response=_write_with_response(characteristic))

    def _on_notification(self, _sender: Any, data: Union[bytes, bytearray]) -> None:
        """bleak's notification callback (runs in the loop thread)."""
        now = self._clock()
        records: List[BleFrames] = []
        with self._cond:
            self._notifications += 1
            garbled = self._assembler.stats.checksum_errors
            frames = self._assembler.feed(bytes(data))
            for frame in frames:
                self._frame_count += 1
                frame_type = frame[jk02.TYPE_OFFSET]
                if frame_type not in (jk02.FRAME_CELL_INFO, jk02.FRAME_SETTINGS,
                                      jk02.FRAME_DEVICE_INFO):
                    continue  # logbook and unknown types are not part of a reading
                self._frames[frame_type] = (frame, now)
                self._session_frames += 1
                if frame_type == jk02.FRAME_CELL_INFO:
                    self._session_cell_info = now
                    if self._listeners:
                        settings = self._frames.get(jk02.FRAME_SETTINGS)
                        device = self._frames.get(jk02.FRAME_DEVICE_INFO)
                        records.append(BleFrames(frame, 0.0, settings and settings[0],
                                                 device and device[0]))
                elif frame_type == jk02.FRAME_DEVICE_INFO and self._device_info_event:
                    self._device_info_event.set()
            if frames:
                self._cond.notify_all()
            garbled = self._assembler.stats.checksum_errors > garbled
            listeners = list(self._listeners)
        for on_cell_info, on_break in listeners:
            if garbled:
                on_break(now)
            for record in records:
                on_cell_info(record, now)
