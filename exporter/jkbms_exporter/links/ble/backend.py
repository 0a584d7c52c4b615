"""The seam to the radio: what the link and the scanner need from a Bluetooth stack
(:class:`BleBackend`), the real one (:class:`BleakBackend`, bleak imported lazily so the
package imports without it), and picking the JK characteristics out of the GATT services.
The fake radio for tests and demos lives in :mod:`jkbms_exporter.sim.ble_radio`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

try:
    from typing import Protocol
except ImportError:  # pragma: no cover - Python < 3.8
    Protocol = object  # type: ignore[assignment,misc]

from ...errors import TransportError
from ...install import install_command


SERVICE_UUID = "0000ffe0-0000-1000-8000-00805f9b34fb"
CHARACTERISTIC_UUID = "0000ffe1-0000-1000-8000-00805f9b34fb"
#: Bluetooth SIG company identifier in JK's advertisements (data: ``88 A0`` + the address).
JK_MANUFACTURER_ID = 0x0B65


def missing_bleak() -> str:
    """The one line for a missing bleak, naming the command for this installation."""
    return ("Bluetooth (ble://) needs the bleak package, which is not installed: %s"
            % install_command("ble"))


class LinkError(Exception):
    """One connection attempt or connection ended (internal; never leaves the loop)."""


class BleakMissingError(TransportError):
    """bleak is not installed (the ``ble`` extra)."""

    def __init__(self) -> None:
        super().__init__(missing_bleak())


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
