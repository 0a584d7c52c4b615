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
that this package imports without it); :mod:`jkbms_exporter.sim.ble_radio` has a fake radio
with fake JK boards. Pass ``backend=`` to :func:`build_ble_pack`, :func:`scan_ble` or
:class:`BleTransport`; ``None`` means :func:`default_backend` (bleak). This package never
imports the simulator: ``ble+sim://`` is wired by the composition root
(:func:`jkbms_exporter.config.build_ble_pack`).

Rooms: :mod:`.url` (URLs), :mod:`.backend` (the radio seam, bleak, GATT), :mod:`.link`
(:class:`BleTransport`), :mod:`.protocol` (readings and the ``Pack``), :mod:`.scan`
(``scan --ble``).
"""

# The package's public names: ``from jkbms_exporter.links import ble; ble.X`` names every
# part of the BLE link. They are loaded on first use (PEP 562): asyncio and the GATT code
# cost a one-shot command that never touches Bluetooth more than its whole serial read.
_PUBLIC = {
    "url": ("BleTarget", "DEFAULT_MAX_AGE", "parse_ble_url"),
    "backend": ("BleakBackend", "BleakMissingError", "BleBackend", "BleClient",
                "CHARACTERISTIC_UUID", "default_backend", "INSTALL_HINT", "JK_MANUFACTURER_ID",
                "LinkError", "MISSING_BLEAK", "normalize_uuid", "pick_characteristics",
                "SERVICE_UUID"),
    "link": ("BACKOFF_INITIAL", "BACKOFF_MAX", "BleFrames", "BleStatus", "BleTransport",
             "COMMAND_CELL_INFO", "COMMAND_DEVICE_INFO", "DEFAULT_CLOSE_TIMEOUT",
             "DEFAULT_CONNECT_TIMEOUT", "DEFAULT_DEVICE_INFO_WAIT", "DEFAULT_REQUEST_INTERVAL",
             "DEFAULT_SCAN_TIMEOUT", "DEFAULT_STALL_TIMEOUT", "NotAReadCommandError"),
    "protocol": ("AGE_KEY", "build_ble_pack", "Jk02BleProtocol", "reading_age"),
    "scan": ("format_scan_results", "jk_evidence", "JK_NAME", "scan_ble", "ScanResult"),
}
_ROOM_OF = {name: room for room, names in _PUBLIC.items() for name in names}
__all__ = sorted(list(_ROOM_OF) + ["SCHEME", "SIM_SCHEME", "is_ble_url"])

# What every pack's configuration asks of a URL is answered here, without loading any room.
SCHEME = "ble://"
#: A simulated BMS on the fake radio of :mod:`jkbms_exporter.sim.ble_radio` (demos, tests).
SIM_SCHEME = "ble+sim://"


def is_ble_url(url: str) -> bool:
    """True for the URLs :func:`build_ble_pack` handles (``ble://``, ``ble+sim://``)."""
    lowered = url.lower()
    return lowered.startswith(SCHEME) or lowered.startswith(SIM_SCHEME)


def __getattr__(name: str) -> object:
    room = _ROOM_OF.get(name)
    if room is None:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    import importlib

    value = getattr(importlib.import_module("%s.%s" % (__name__, room)), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_ROOM_OF))
