"""Bluetooth LE: read JK boards that only have BLE, through the same Pack/collector path.

URLs (spec ``jk-02-frames.md`` §2 "BLE transport")::

    ble://C8:47:80:31:F6:43                  by address (stable; what ``scan --ble`` prints)
    ble://JK-B2A24S20P                       by advertised name (%-encode odd characters)
    ble://C8:47:80:31:F6:43?generation=JK02_32S&max_age=30
    ble+sim://demo?cells=16&scenario=normal  a simulated BMS on the fake radio (no bleak)

How it works:

* :class:`BleTransport` owns one background thread running one asyncio event loop, in
  which bleak does all its work. It keeps ONE connection to the BMS open between scrapes
  (connecting costs seconds), subscribes to the notifications of characteristic FFE1 in
  service FFE0 (new modules have two FFE1 handles, one to write and one that notifies:
  :func:`pick_characteristics`), writes the device-info command 0x97 and then 0x96 (one
  settings frame, then a stream of cell-info frames), and reassembles the notifications
  with :class:`~jkbms_exporter.protocols.jk02.FrameAssembler`. When the link drops it reconnects
  with capped exponential backoff; while it is down, reads fail with
  :class:`~jkbms_exporter.errors.TransportError` (reason ``io``).
* It only ever writes the read commands: every write goes through
  :meth:`BleTransport._write`, which refuses anything :func:`jk02.is_read_only_command`
  does not accept.
* :class:`Jk02BleProtocol` serves each scrape from the newest cell-info frame if it is at
  most ``max_age`` seconds old (default 30), never older: otherwise it waits until the
  scrape's deadline for a fresh one and then fails with
  :class:`~jkbms_exporter.errors.ReadTimeout`. The age goes into
  ``Reading.extra["reading_age_seconds"]``.

Seam for tests and demos: everything that touches the radio goes through a *backend*
(:class:`BleBackend`): :class:`BleakBackend` is the real one (bleak, imported lazily so
that this module imports without it); :mod:`jkbms_exporter.sim.ble_radio` has a fake radio
with fake JK boards. Pass ``backend=`` to :func:`build_ble_pack`, :func:`scan_ble` or
:class:`BleTransport`; ``None`` means :func:`default_backend` (bleak).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import (Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple,
                    Union)

try:
    from typing import Protocol
except ImportError:  # pragma: no cover - Python < 3.8
    Protocol = object  # type: ignore[assignment,misc]

from ..protocols import jk02
from ..errors import ConfigError, ReadTimeout, TransportError
from ..pack import Pack
from ..reading import READING_AGE_KEY, Reading

log = logging.getLogger(__name__)

SCHEME = "ble://"
#: A simulated BMS on the fake radio of :mod:`jkbms_exporter.sim.ble_radio` (demos, tests).
SIM_SCHEME = "ble+sim://"

SERVICE_UUID = "0000ffe0-0000-1000-8000-00805f9b34fb"
CHARACTERISTIC_UUID = "0000ffe1-0000-1000-8000-00805f9b34fb"
#: Bluetooth SIG company identifier in JK's advertisements (data: ``88 A0`` + the address).
JK_MANUFACTURER_ID = 0x0B65
#: Default names of JK boards (``JK-B2A24S20P``, ``JK_PB2A16S15P``, ``JK_B2A8S20P``); the
#: name is user-settable, so it is only a hint.
JK_NAME = re.compile(r"JK[-_]", re.IGNORECASE)

INSTALL_HINT = "pip install 'jkbms-exporter[ble]'"
MISSING_BLEAK = ("Bluetooth (ble://) needs the bleak package, which is not installed: %s"
                 % INSTALL_HINT)

DEFAULT_MAX_AGE = 30.0
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
#: Key of ``Reading.extra``: seconds between the BMS sending the cell-info frame and the read.
AGE_KEY = READING_AGE_KEY

_MAC = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}")
#: macOS (CoreBluetooth) has no addresses, only per-host UUIDs.
_CB_UUID = re.compile(r"[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}")

COMMAND_DEVICE_INFO = jk02.command_frame(jk02.COMMAND_DEVICE_INFO)
COMMAND_CELL_INFO = jk02.command_frame(jk02.COMMAND_CELL_INFO)


class BleakMissingError(TransportError):
    """bleak is not installed (the ``ble`` extra)."""

    def __init__(self) -> None:
        super().__init__(MISSING_BLEAK)


class NotAReadCommandError(AssertionError):
    """Something tried to write a frame that is not one of the JK02 read commands."""


class LinkError(Exception):
    """One connection attempt or connection ended (internal; never leaves the loop)."""


def _config_error(message: str) -> Exception:
    return ConfigError(message)


# ----------------------------------------------------------------------------- URLs


@dataclass(frozen=True)
class BleTarget:
    """A parsed ``ble://`` (or ``ble+sim://``) URL."""

    url: str
    #: Bluetooth address (upper case) or CoreBluetooth UUID; ``None`` when found by name.
    address: Optional[str]
    name: Optional[str]
    #: Configured frame layout; ``None``: from the device-info frame.
    generation: Optional[str] = None
    max_age: float = DEFAULT_MAX_AGE
    simulated: bool = False
    #: ``ble+sim://`` only: cells, scenario, interval of the simulated BMS.
    sim_options: Tuple[Tuple[str, str], ...] = ()

    @property
    def describe(self) -> str:
        return self.address if self.address else "name %r" % self.name


_KEYS: Tuple[str, ...] = ("generation", "max_age")
_SIM_KEYS: Tuple[str, ...] = ("generation", "max_age", "cells", "scenario", "interval")


def parse_ble_url(url: str) -> BleTarget:
    """``ble://ADDRESS-or-NAME[?generation=…&max_age=…]`` → :class:`BleTarget`.

    Raises ``ValueError`` with a one-line reason.
    """
    lowered = url.lower()
    if lowered.startswith(SIM_SCHEME):
        scheme, simulated, keys = SIM_SCHEME, True, _SIM_KEYS
    elif lowered.startswith(SCHEME):
        scheme, simulated, keys = SCHEME, False, _KEYS
    else:
        raise ValueError("not a %s URL" % SCHEME)
    rest = url[len(scheme):]
    where, _, query = rest.partition("?")
    if where.endswith("/"):
        where = where[:-1]
    where = urllib.parse.unquote(where).strip()
    if not where:
        raise ValueError("no device: write ble://AA:BB:CC:DD:EE:FF or ble://<device name>")
    if any(ord(ch) < 32 for ch in where):
        raise ValueError("control characters in the device name")
    values: Dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if key not in keys:
            raise ValueError("unknown option %r (known: %s)" % (key, ", ".join(keys)))
        if key in values:
            raise ValueError("option %r is given twice" % key)
        values[key] = value
    generation = values.get("generation") or None
    if generation is not None:
        generation = generation.upper()
        if generation not in jk02.GENERATIONS:
            raise ValueError("generation=%s: choose from %s"
                             % (values["generation"], ", ".join(jk02.GENERATIONS)))
    max_age = DEFAULT_MAX_AGE
    if "max_age" in values:
        try:
            max_age = float(values["max_age"])
        except ValueError:
            raise ValueError("max_age=%s is not a number of seconds" % values["max_age"]) from None
        if not math.isfinite(max_age) or max_age <= 0:
            raise ValueError("max_age=%s: must be more than 0 seconds" % values["max_age"])
    address: Optional[str] = None
    name: Optional[str] = None
    if _MAC.fullmatch(where) or _CB_UUID.fullmatch(where):
        address = where.upper()
    else:
        name = where
    sim = tuple(sorted((k, v) for k, v in values.items() if k in ("cells", "scenario", "interval")))
    return BleTarget(url, address, name, generation, max_age, simulated, sim)


def is_ble_url(url: str) -> bool:
    """True for the URLs :func:`build_ble_pack` handles (``ble://``, ``ble+sim://``)."""
    lowered = url.lower()
    return lowered.startswith(SCHEME) or lowered.startswith(SIM_SCHEME)


# ----------------------------------------------------------------------------- backend seam


class BleClient(Protocol):
    """The part of ``bleak.BleakClient`` this module uses."""

    @property
    def is_connected(self) -> bool: ...

    @property
    def services(self) -> Iterable[Any]: ...  # services with .uuid and .characteristics

    async def connect(self) -> None: ...

    async def disconnect(self) -> None: ...

    async def start_notify(self, characteristic: Any,
                           callback: Callable[[Any, bytearray], None]) -> None: ...

    async def write_gatt_char(self, characteristic: Any, data: bytes,
                              response: bool) -> None: ...


class BleBackend(Protocol):
    """What the transport and the scanner need from a Bluetooth stack.

    ``find_device`` returns whatever ``client`` accepts (bleak: a ``BLEDevice``) or
    ``None`` when nothing matching advertised within ``timeout``. ``scan`` calls
    ``callback(device, advertisement)`` for every advertisement heard during ``timeout``
    seconds (``device.address``, ``device.name``; ``advertisement.local_name``, ``.rssi``,
    ``.service_uuids``, ``.manufacturer_data`` as in bleak). All three run in the caller's
    event loop.
    """

    async def find_device(self, address: Optional[str], name: Optional[str],
                          timeout: float) -> Optional[Any]: ...

    def client(self, device: Any, disconnected_callback: Callable[..., None],
               timeout: float) -> BleClient: ...

    async def scan(self, timeout: float, callback: Callable[[Any, Any], None]) -> None: ...


class BleakBackend:
    """The real backend: bleak (BlueZ over D-Bus on Linux).

    ``client_backend`` / ``scanner_backend`` are handed to bleak's own ``backend=``
    arguments (a ``BaseBleakClient`` / ``BaseBleakScanner`` subclass); ``None`` is the
    platform's. The tests use them to run this code through the real bleak classes.
    """

    def __init__(self, client_backend: Optional[type] = None,
                 scanner_backend: Optional[type] = None) -> None:
        try:
            import bleak
        except ImportError:
            raise BleakMissingError() from None
        self._bleak = bleak
        self._client_kwargs: Dict[str, Any] = (
            {} if client_backend is None else {"backend": client_backend})
        self._scanner_kwargs: Dict[str, Any] = (
            {} if scanner_backend is None else {"backend": scanner_backend})

    async def find_device(self, address: Optional[str], name: Optional[str],
                          timeout: float) -> Optional[Any]:
        scanner = self._bleak.BleakScanner
        if address is not None:
            return await scanner.find_device_by_address(address, timeout=timeout,
                                                        **self._scanner_kwargs)
        return await scanner.find_device_by_name(name or "", timeout=timeout,
                                                 **self._scanner_kwargs)

    def client(self, device: Any, disconnected_callback: Callable[..., None],
               timeout: float) -> BleClient:
        return self._bleak.BleakClient(  # type: ignore[no-any-return,return-value]
            device, disconnected_callback=disconnected_callback, timeout=timeout,
            **self._client_kwargs)

    async def scan(self, timeout: float, callback: Callable[[Any, Any], None]) -> None:
        async with self._bleak.BleakScanner(detection_callback=callback, **self._scanner_kwargs):
            await asyncio.sleep(timeout)


def default_backend() -> BleBackend:
    """The backend used when none is given: bleak (raises :class:`BleakMissingError`)."""
    return BleakBackend()


# ----------------------------------------------------------------------------- GATT


def normalize_uuid(value: Any) -> str:
    """``FFE1``, ``0xffe1``, ``0000ffe1``, or the 128-bit form → 128-bit lower case."""
    text = str(value).lower()
    if text.startswith("0x"):
        text = text[2:]
    if len(text) == 4:
        return "0000%s-0000-1000-8000-00805f9b34fb" % text
    if len(text) == 8:
        return "%s-0000-1000-8000-00805f9b34fb" % text
    return text


def _properties(characteristic: Any) -> Tuple[str, ...]:
    return tuple(str(p).lower() for p in getattr(characteristic, "properties", ()) or ())


def pick_characteristics(services: Iterable[Any]) -> Tuple[Any, Any]:
    """The (notify, write) characteristics among a GATT table's FFE1 characteristics.

    Old modules have one FFE1 that does both; new ones expose two handles with the same
    UUID (ESPHome's notes: write handle 0x03, notify handle 0x05), so a UUID alone is
    ambiguous (bleak refuses it). FFE1 outside service FFE0 is only used when FFE0 has
    none. Raises :class:`LinkError` when nothing fits.
    """
    in_ffe0: List[Any] = []
    elsewhere: List[Any] = []
    for service in services:
        is_ffe0 = normalize_uuid(getattr(service, "uuid", "")) == SERVICE_UUID
        for characteristic in getattr(service, "characteristics", ()) or ():
            if normalize_uuid(getattr(characteristic, "uuid", "")) == CHARACTERISTIC_UUID:
                (in_ffe0 if is_ffe0 else elsewhere).append(characteristic)
    candidates = in_ffe0 or elsewhere
    if not candidates:
        raise LinkError("no characteristic FFE1 in service FFE0: is this a JK BMS?")
    notify = [c for c in candidates if {"notify", "indicate"} & set(_properties(c))]
    write = [c for c in candidates if {"write", "write-without-response"} & set(_properties(c))]
    if not notify:
        raise LinkError("characteristic FFE1 does not notify")
    if not write:
        raise LinkError("characteristic FFE1 cannot be written")
    # a dedicated write handle if there is one (two-handle modules), else the shared one
    dedicated = [c for c in write if not {"notify", "indicate"} & set(_properties(c))]
    return notify[0], (dedicated or write)[0]


def _write_with_response(characteristic: Any) -> bool:
    """Commands are tiny and resent when nothing comes back: without response if allowed."""
    return "write-without-response" not in _properties(characteristic)


def _describe(error: BaseException) -> str:
    if isinstance(error, asyncio.TimeoutError):
        return "timed out"
    if isinstance(error, (FileNotFoundError, ConnectionRefusedError)):
        # bleak on Linux talks to BlueZ over the D-Bus system bus socket
        return ("cannot reach BlueZ over D-Bus (%s): is bluetoothd running? In a container, "
                "mount /run/dbus" % (error.strerror or error))
    text = str(error).strip() or type(error).__name__
    text = text.splitlines()[0]
    if "NotReady" in text or "Powered" in text or "No Bluetooth adapters" in text:
        text += " (is the Bluetooth adapter on? bluetoothctl power on)"
    elif "AccessDenied" in text or "NotPermitted" in text or "not authorized" in text.lower():
        text += " (may this user use BlueZ? add it to the 'bluetooth' group)"
    elif "InProgress" in text:
        text += " (BlueZ is still busy with an earlier attempt)"
    return text


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
        with self._cond:
            self._notifications += 1
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
                elif frame_type == jk02.FRAME_DEVICE_INFO and self._device_info_event:
                    self._device_info_event.set()
            if frames:
                self._cond.notify_all()


# ----------------------------------------------------------------------------- protocol


class Jk02BleProtocol:
    """Readings from the frames a :class:`BleTransport` keeps (no request per scrape).

    The generation comes from ``generation`` (the URL) or the device-info frame; when a
    BMS sent no device-info frame, :func:`jk02.guess_generation` decides (logged once).
    """

    name = jk02.PROTOCOL_NAME

    def __init__(self, generation: Optional[str] = None, max_age: float = DEFAULT_MAX_AGE) -> None:
        if generation is not None:
            generation = jk02.select_generation(generation)
        if not max_age > 0:
            raise ValueError("max_age must be more than 0 seconds")
        self.generation = generation
        self.max_age = max_age
        self._guess_logged = False

    def read(self, transport: BleTransport, deadline: float) -> Tuple[Reading, bytes]:
        frames = transport.wait_for_cell_info(self.max_age, deadline)
        if self.generation is not None or frames.device_info is not None:
            generation = jk02.select_generation(self.generation, frames.device_info)
        else:
            generation = jk02.guess_generation(frames.cell_info)
            if not self._guess_logged:
                self._guess_logged = True
                log.warning("BLE %s sent no device-info frame: guessing generation %s from "
                            "the cell-info frame; add ?generation=… to the URL to be sure",
                            transport.url, generation)
        reading = jk02.reading_from_frames(
            jk02.decode_frame(frames.cell_info, generation),
            None if frames.settings is None else jk02.decode_frame(frames.settings, generation),
            None if frames.device_info is None else jk02.decode_frame(frames.device_info,
                                                                      generation),
        )
        extra = dict(reading.extra)
        extra[AGE_KEY] = round(frames.cell_info_age, 3)
        return dataclasses.replace(reading, extra=extra), frames.cell_info


def reading_age(reading: Reading) -> Optional[float]:
    """Seconds the data of a BLE reading was old when read; ``None`` for other protocols."""
    value = reading.extra.get(AGE_KEY)
    return None if value is None else float(value)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- packs


def _labels(labels: Any) -> Tuple[Tuple[str, str], ...]:
    if not labels:
        return ()
    if isinstance(labels, Mapping):
        return tuple(sorted((str(k), str(v)) for k, v in labels.items()))
    return tuple((str(k), str(v)) for k, v in labels)


def build_ble_pack(name: str, url: str, read_timeout: float, invert_current: bool,
                   labels: Any = (), *, backend: Optional[BleBackend] = None,
                   start: bool = True, **transport_options: Any) -> Pack:
    """A :class:`Pack` reading a BMS over BLE (``ble://``) or the simulated one
    (``ble+sim://``).

    Raises :class:`~jkbms_exporter.config.ConfigError` (one line) on a bad URL or when
    bleak is missing. ``start`` begins connecting at once (the first scrape then has a
    chance); ``transport_options`` go to :class:`BleTransport`.
    """
    try:
        target = parse_ble_url(url)
    except ValueError as error:
        raise _config_error("pack %s: bad BLE URL %r: %s" % (name, url, error)) from None
    if target.simulated:
        from ..sim import ble_radio as ble_fake

        try:
            backend = ble_fake.simulated_backend(target)
        except ValueError as error:
            raise _config_error("pack %s: bad BLE URL %r: %s" % (name, url, error)) from None
        transport_options.setdefault("backoff_initial", 0.5)
        transport_options.setdefault("backoff_max", 5.0)
    elif backend is None:
        try:
            backend = default_backend()
        except BleakMissingError:
            raise _config_error("pack %s (%s): %s" % (name, url, MISSING_BLEAK)) from None
    transport = BleTransport(target, backend, **transport_options)
    protocol = Jk02BleProtocol(None if target.simulated else target.generation, target.max_age)
    pack = Pack(name=name, transport=transport,  # type: ignore[arg-type]
                protocol=protocol, read_timeout=read_timeout,
                invert_current=invert_current, labels=_labels(labels))
    if start:
        transport.start()
    return pack


# ----------------------------------------------------------------------------- scanning


@dataclass(frozen=True)
class ScanResult:
    name: str
    address: str
    rssi: Optional[int]
    #: Why it is taken for a JK BMS: ``manufacturer-id``, ``name``, or ``ffe0-only``.
    evidence: str


def jk_evidence(name: str, service_uuids: Iterable[str],
                manufacturer_data: Mapping[int, bytes]) -> Optional[str]:
    """Why an advertisement looks like a JK board, or ``None``.

    JK modules advertise service FFE0 and manufacturer data under company ID 0x0B65
    (``88 A0`` + address); their name is user-settable (default ``JK-…``/``JK_…``, some
    boards use the serial number). FFE0 alone is common (HM-10 clones, other BMS brands).
    """
    has_ffe0 = any(normalize_uuid(u) == SERVICE_UUID for u in service_uuids or ())
    if JK_MANUFACTURER_ID in (manufacturer_data or {}):
        return "manufacturer-id"
    if has_ffe0 and JK_NAME.match(name or ""):
        return "name"
    if has_ffe0:
        return "ffe0-only"
    return None


def scan_ble(timeout: float, progress: Callable[[str], None] = lambda _: None, *,
             backend: Optional[BleBackend] = None, include_ffe0: bool = False) -> List[ScanResult]:
    """Nearby JK BMSs, strongest signal first.

    Listens for ``timeout`` seconds and calls ``progress`` with a line for each new JK
    board (and at start and end). ``include_ffe0`` also lists other FFE0 advertisers.
    A BMS that is connected (to this exporter or the JK app) does not advertise.
    Raises :class:`BleakMissingError` without bleak.
    """
    backend = backend if backend is not None else default_backend()
    found: Dict[str, ScanResult] = {}
    accepted = ("manufacturer-id", "name", "ffe0-only") if include_ffe0 else ("manufacturer-id",
                                                                              "name")

    def on_advertisement(device: Any, advertisement: Any) -> None:
        address = str(getattr(device, "address", "") or "")
        name = (getattr(advertisement, "local_name", None) or getattr(device, "name", None)
                or "")
        evidence = jk_evidence(name, getattr(advertisement, "service_uuids", None) or (),
                               getattr(advertisement, "manufacturer_data", None) or {})
        if not address or evidence is None or evidence not in accepted:
            return
        rssi: Optional[int] = getattr(advertisement, "rssi", None)
        previous = found.get(address)
        if previous is not None:
            name = name or previous.name
            rssi = rssi if rssi is not None else previous.rssi
        found[address] = ScanResult(name, address, rssi, evidence)
        if previous is None:
            progress("found %s %s%s" % (address, name or "(no name)",
                                        "" if rssi is None else ", RSSI %d dBm" % rssi))

    async def run() -> None:
        await backend.scan(timeout, on_advertisement)  # type: ignore[union-attr]

    progress("scanning for JK BMSs over Bluetooth for %g s…" % timeout)
    try:
        asyncio.run(run())
    except BleakMissingError:
        raise
    except Exception as error:
        raise TransportError("Bluetooth scan failed: %s" % _describe(error)) from error
    results = sorted(found.values(), key=lambda r: (-(r.rssi if r.rssi is not None else -999),
                                                    r.address))
    progress("%d JK BMS found" % len(results))
    return results


_PACK_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


def _pack_name(result: ScanResult, taken: Dict[str, int]) -> str:
    base = _PACK_NAME_CHARS.sub("-", result.name).strip("-.").lower()
    if not base or not re.match(r"[a-z0-9_]", base):
        base = "jk-" + result.address.replace(":", "")[-4:].lower()
    base = base[:56]
    count = taken.get(base, 0) + 1
    taken[base] = count
    return base if count == 1 else "%s-%d" % (base, count)


def format_scan_results(results: Sequence[ScanResult]) -> str:
    """A ready-to-paste ``--config.file`` snippet (``packs:`` with ``name`` and ``url``)."""
    if not results:
        return ("# no JK BMS heard. Is it in range and powered, and is the JK app (or another\n"
                "# exporter) disconnected from it? A connected BMS does not advertise.\n")
    lines = ["# %d JK BMS found by `jkbms-exporter scan --ble`, strongest signal first."
             % len(results),
             "# Rename the packs as you like; the address is what identifies the BMS.",
             "packs:"]
    taken: Dict[str, int] = {}
    for result in results:
        comment = "%s, RSSI %s dBm" % (result.name or "no name",
                                       "?" if result.rssi is None else result.rssi)
        if result.evidence == "ffe0-only":
            comment += ", FFE0 only: may not be a JK BMS"
        lines.append("  - name: %s    # %s" % (_pack_name(result, taken),
                                               comment.replace("\n", " ")))
        lines.append('    url: "%s%s"' % (SCHEME, result.address))
    return "\n".join(lines) + "\n"
