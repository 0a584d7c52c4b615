"""A fake Bluetooth radio with fake JK boards (:mod:`.ble_board`): BLE tests and demos
without a radio or bleak.

Two ways in:

* :class:`FakeBleBackend` implements :class:`jkbms_exporter.links.ble.BleBackend` directly
  (bleak-like client and scanner objects); no bleak needed. ``ble+sim://`` URLs use it
  (:func:`simulated_backend`, wired by :func:`jkbms_exporter.config.build_ble_pack`).
* :func:`bleak_backend` plugs the same boards into the real ``bleak.BleakClient`` and
  ``bleak.BleakScanner`` through bleak's own ``backend=`` arguments (needs bleak ≥ 1.0).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any, Callable, List, Optional, Tuple

from ..protocols import jk02
from ..links.ble import BleTarget
from .bms import SimulatedBms
from .scenarios import SCENARIOS
# Re-exported: the boards are part of the fake radio (``ble_radio.FakeJkBms`` …).
from .ble_board import (  # noqa: F401
    BoardLink, DEFAULT_INTERVAL, FakeAdvertisement, FakeAdvertiser, FakeBleError,
    FakeCharacteristic, FakeDevice, FakeJkBms, FakeService, GENERATION_VERSIONS, read_command,
    READ_COMMANDS, ReplayFrames, SimulatedFrames, with_counter,
)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- our seam


class FakeBleClient:
    """The ``bleak.BleakClient`` surface :mod:`jkbms_exporter.links.ble` uses, on a fake board."""

    def __init__(self, board: FakeJkBms, disconnected_callback: Optional[Callable[..., None]]
                 = None) -> None:
        self.board = board
        self.address = board.address
        self._disconnected_callback = disconnected_callback
        self._link: Optional[BoardLink] = None

    @property
    def is_connected(self) -> bool:
        return self._link is not None and self._link.open

    @property
    def services(self) -> Tuple[FakeService, ...]:
        if not self.is_connected:
            raise FakeBleError("Service Discovery has not been performed yet")
        return self.board.services()

    def _lost(self) -> None:
        if self._disconnected_callback is not None:
            self._disconnected_callback(self)

    async def connect(self) -> None:
        link = BoardLink(asyncio.get_running_loop(), self._lost)
        await self.board.connect(link)
        self._link = link

    async def disconnect(self) -> None:
        self.board.disconnect(self._link)

    async def start_notify(self, characteristic: FakeCharacteristic,
                           callback: Callable[[Any, bytearray], None]) -> None:
        if self._link is None:
            raise FakeBleError("not connected")
        self.board.subscribe(self._link, characteristic.handle,
                             lambda data: callback(characteristic, data))

    async def write_gatt_char(self, characteristic: FakeCharacteristic, data: bytes,
                              response: bool = False) -> None:
        if self._link is None:
            raise FakeBleError("not connected")
        self.board.write(self._link, characteristic.handle, data)


class FakeBleBackend:
    """:class:`jkbms_exporter.links.ble.BleBackend` on a fake radio holding ``devices``."""

    def __init__(self, *devices: Any, advertising_interval: float = 0.01) -> None:
        self.devices = list(devices)
        self.advertising_interval = advertising_interval
        #: (start, end, found) of every find_device call.
        self.finds: List[Tuple[float, float, bool]] = []
        self.clients: List[FakeBleClient] = []

    def board(self, address: str) -> FakeJkBms:
        for device in self.devices:
            if isinstance(device, FakeJkBms) and device.address == address.upper():
                return device
        raise FakeBleError("no board %s on this fake radio" % address)

    def advertising(self) -> List[Any]:
        return [device for device in self.devices if device.advertising]

    async def find_device(self, address: Optional[str], name: Optional[str],
                          timeout: float) -> Optional[FakeDevice]:
        started = time.monotonic()
        deadline = started + timeout
        found: Optional[FakeDevice] = None
        while found is None:
            for device in self.advertising():
                if (address is not None and device.address == address.upper()) or (
                        address is None and device.name == name):
                    found = FakeDevice(device.address, device.name, device)
                    break
            else:
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(self.advertising_interval)
        self.finds.append((started, time.monotonic(), found is not None))
        return found

    def client(self, device: FakeDevice, disconnected_callback: Callable[..., None],
               timeout: float = 10.0) -> FakeBleClient:
        board = device.details if isinstance(device.details, FakeJkBms) else self.board(
            device.address)
        client = FakeBleClient(board, disconnected_callback)
        self.clients.append(client)
        return client

    async def scan(self, timeout: float, callback: Callable[[Any, Any], None]) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for device in self.advertising():
                callback(FakeDevice(device.address, device.name, device), device.advertisement())
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(self.advertising_interval)


# ----------------------------------------------------------------------------- ble+sim://


def _address_for(name: str) -> str:
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return ":".join("%02X" % b for b in (b"\xC8\x47\x80" + digest[:3]))


def simulated_backend(target: BleTarget) -> FakeBleBackend:
    """The fake radio behind a ``ble+sim://NAME?cells=16&scenario=normal&generation=…``
    URL: one :class:`SimulatedBms` on a board of that generation (JK02_32S by default),
    one cell-info frame per ``interval`` seconds (default 1). Raises ``ValueError``."""
    options = dict(target.sim_options)
    try:
        cells = int(options.get("cells", "16"))
    except ValueError:
        raise ValueError("cells=%s is not a whole number" % options["cells"]) from None
    scenario = options.get("scenario", "normal")
    if scenario not in SCENARIOS:
        raise ValueError("scenario=%s: choose from %s" % (scenario, ", ".join(SCENARIOS)))
    try:
        interval = float(options.get("interval", "1"))
    except ValueError:
        raise ValueError("interval=%s is not a number of seconds" % options["interval"]) from None
    if not 0.01 <= interval <= 60:
        raise ValueError("interval=%s: between 0.01 and 60 seconds" % options["interval"])
    generation = target.generation or jk02.JK02_32S
    if not 1 <= cells <= jk02.CELL_SLOTS[generation]:
        raise ValueError("cells=%d: a %s board has 1-%d" % (cells, generation,
                                                           jk02.CELL_SLOTS[generation]))
    address = target.address or _address_for(target.name or "sim")
    frames = SimulatedFrames(SimulatedBms(cells=cells, scenario=scenario), generation)
    board = FakeJkBms(frames, address, target.name or "JK-SIM", interval=interval,
                      seed=int(address.replace(":", ""), 16) & 0xFFFF)
    return FakeBleBackend(board)


# ----------------------------------------------------------------------------- real bleak


def bleak_backend(fake: FakeBleBackend, mtu: int = 247) -> Any:
    """A :class:`jkbms_exporter.links.ble.BleakBackend` whose ``bleak.BleakClient`` and
    ``bleak.BleakScanner`` run on ``fake``'s boards through bleak's ``backend=`` hook:
    the exporter's calls go through the real bleak classes (UUID resolution, callback
    wrapping, argument checks). Works with bleak 0.22 to 3.x (their backend base classes
    differ; the GATT objects are built the way the installed bleak builds them)."""
    import inspect

    from bleak.backends.characteristic import BleakGATTCharacteristic
    from bleak.backends.client import BaseBleakClient
    from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
    from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection

    from ..links.ble import BleakBackend

    if inspect.isabstract(BleakGATTCharacteristic):  # bleak < 1.0: only BlueZ's are concrete
        from bleak.backends.bluezdbus.characteristic import BleakGATTCharacteristicBlueZDBus
        from bleak.backends.bluezdbus.service import BleakGATTServiceBlueZDBus

        def make_service(service: FakeService) -> Any:
            path = "/org/bluez/hci0/dev_FAKE/service%04x" % service.handle
            return BleakGATTServiceBlueZDBus({"UUID": service.uuid}, path)

        def make_characteristic(char: FakeCharacteristic, service: Any) -> Any:
            return BleakGATTCharacteristicBlueZDBus(
                {"UUID": char.uuid, "Flags": list(char.properties)},
                "/org/bluez/hci0/dev_FAKE/service%04x/char%04x" % (service.handle, char.handle),
                service.uuid, service.handle, lambda: mtu - 3)
    else:
        def make_service(service: FakeService) -> Any:
            return BleakGATTService(None, service.handle, service.uuid)

        def make_characteristic(char: FakeCharacteristic, service: Any) -> Any:
            properties: Any = list(char.properties)
            return BleakGATTCharacteristic(None, char.handle, char.uuid, properties,
                                           lambda: mtu - 3, service)

    #: bleak ≥ 1.0 keys seen devices by a backend identifier as well as the address
    keyed = "key" in inspect.signature(BaseBleakScanner.create_or_update_device).parameters

    class Client(BaseBleakClient):  # type: ignore[misc,valid-type]
        def __init__(self, address_or_ble_device: Any, **kwargs: Any) -> None:
            super().__init__(address_or_ble_device,
                             disconnected_callback=kwargs.get("disconnected_callback"),
                             timeout=kwargs.get("timeout", 10.0))
            self._board = fake.board(self.address)
            self._link: Optional[BoardLink] = None

        @property
        def name(self) -> str:
            return self._board.name or self.address

        @property
        def mtu_size(self) -> int:
            return mtu

        @property
        def is_connected(self) -> bool:
            return self._link is not None and self._link.open

        def _lost(self) -> None:
            if self._disconnected_callback is not None:
                self._disconnected_callback()

        async def connect(self, pair: bool = False, **kwargs: Any) -> None:
            link = BoardLink(asyncio.get_running_loop(), self._lost)
            await self._board.connect(link)
            self._link = link
            collection = BleakGATTServiceCollection()
            for service in self._board.services():
                bleak_service = make_service(service)
                collection.add_service(bleak_service)
                for char in service.characteristics:
                    collection.add_characteristic(make_characteristic(char, bleak_service))
            self.services = collection

        async def get_services(self, **kwargs: Any) -> Any:  # abstract in bleak < 1.0
            return self.services

        async def disconnect(self) -> None:
            self._board.disconnect(self._link)

        async def pair(self, *args: Any, **kwargs: Any) -> None:
            raise NotImplementedError("JK boards do not pair")

        async def unpair(self) -> None:
            raise NotImplementedError("JK boards do not pair")

        async def read_gatt_char(self, characteristic: Any, **kwargs: Any) -> bytearray:
            raise FakeBleError("the exporter never reads characteristics")

        async def read_gatt_descriptor(self, descriptor: Any, **kwargs: Any) -> bytearray:
            raise FakeBleError("the exporter never reads descriptors")

        async def write_gatt_char(self, characteristic: Any, data: Any, response: bool) -> None:
            if self._link is None:
                raise FakeBleError("not connected")
            self._board.write(self._link, characteristic.handle, bytes(data))

        async def write_gatt_descriptor(self, descriptor: Any, data: Any) -> None:
            raise FakeBleError("the exporter never writes descriptors")

        async def start_notify(self, characteristic: Any, callback: Callable[[bytearray], None],
                               **kwargs: Any) -> None:
            if self._link is None:
                raise FakeBleError("not connected")
            self._board.subscribe(self._link, characteristic.handle, callback)

        async def stop_notify(self, characteristic: Any) -> None:
            if self._link is not None:
                self._link.notify = None

    class Scanner(BaseBleakScanner):  # type: ignore[misc,valid-type]
        def __init__(self, detection_callback: Any = None, service_uuids: Any = None,
                     scanning_mode: str = "active", **kwargs: Any) -> None:
            super().__init__(detection_callback, service_uuids)
            self.seen_devices = {}
            self._task: Optional["asyncio.Task[None]"] = None

        async def start(self) -> None:
            self.seen_devices = {}
            self._task = asyncio.ensure_future(self._advertise())

        async def stop(self) -> None:
            if self._task is not None:
                self._task.cancel()
                self._task = None

        def set_scanning_filter(self, **kwargs: Any) -> None:  # abstract in bleak < 1.0
            pass

        async def _advertise(self) -> None:
            while True:
                await asyncio.sleep(fake.advertising_interval)
                for device in fake.advertising():
                    advert = device.advertisement()
                    data = AdvertisementData(
                        local_name=advert.local_name,
                        manufacturer_data=advert.manufacturer_data,
                        service_data=advert.service_data,
                        service_uuids=advert.service_uuids,
                        tx_power=advert.tx_power,
                        rssi=advert.rssi,
                        platform_data=(),
                    )
                    if not self.is_allowed_uuid(data.service_uuids):
                        continue
                    args = (device.address, device.name, None, data)
                    found = self.create_or_update_device(
                        *((device.address,) + args if keyed else args))
                    self.call_detection_callbacks(found, data)

    return BleakBackend(client_backend=Client, scanner_backend=Scanner)
