"""Fake JK boards for the fake Bluetooth radio of :mod:`.ble_radio`.

:class:`FakeJkBms` behaves like a JK board's BLE module as the spec (§2 "BLE transport")
and field reports describe it: it advertises service FFE0 and manufacturer data 0x0B65
(and stops advertising while connected), accepts one connection at a time, has the FFE1
characteristic once or as two handles (write 0x03, notify 0x05), answers the read
commands 0x97 (device info) and 0x96 (settings, then a stream of cell-info frames) — and
nothing else — and delivers frames as notifications of 20–244 bytes, optionally padded to
320 bytes, with garbage fragments, cut-off frames and corrupt frames in between. Links can
be dropped, the board made unreachable, or its connection taken by "the JK app".

Frames come from a :class:`ReplayFrames` (real captured frames, e.g.
``shared/protocol/vectors/jk02.json``) or a :class:`SimulatedFrames` (a live
:class:`~jkbms_exporter.sim.bms.SimulatedBms` encoded with the jk02 encoders).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ..protocols import jk02
from ..links.ble import CHARACTERISTIC_UUID, JK_MANUFACTURER_ID, SERVICE_UUID
from ..reading import Reading
from .bms import SimulatedBms

log = logging.getLogger(__name__)


#: Hardware/software versions that make the device-info frame name each generation.
GENERATION_VERSIONS = {
    jk02.JK02_24S: ("10.XG", "10.07"),
    jk02.JK02_32S: ("11.XW", "11.26"),
    jk02.JK04: ("3.0", "3.3.0"),
}
READ_COMMANDS = (0x96, 0x97, 0xA1)
DEFAULT_INTERVAL = 0.05


class FakeBleError(Exception):
    """What the fake radio raises where bleak would raise ``BleakError``."""


def with_counter(frame: bytes, counter: int) -> bytes:
    """``frame`` with another frame counter (byte 5) and a checksum to match."""
    out = bytearray(frame[: jk02.FRAME_SIZE])
    out[jk02.COUNTER_OFFSET] = counter & 0xFF
    out[jk02.CHECKSUM_OFFSET] = jk02.checksum(out)
    return bytes(out)


def read_command(data: bytes) -> Optional[int]:
    """The command byte of a JK02 *read* command, else ``None`` (a register write, noise).

    Deliberately written apart from :func:`jk02.is_read_only_command`: the board checks
    what the exporter sends with its own rules (header, sum, no value, read opcode).
    """
    data = bytes(data)
    if len(data) != 20 or data[:4] != b"\xAA\x55\x90\xEB":
        return None
    if sum(data[:19]) & 0xFF != data[19] or any(data[5:19]):
        return None
    return data[4] if data[4] in READ_COMMANDS else None


# ----------------------------------------------------------------------------- frame sources


class ReplayFrames:
    """Recorded frames: the cell-info frames in turn (with a running counter)."""

    def __init__(self, cell_info: Sequence[bytes], settings: Optional[bytes] = None,
                 device_info: Optional[bytes] = None, logbook: Optional[bytes] = None) -> None:
        if not cell_info:
            raise ValueError("ReplayFrames needs at least one cell-info frame")
        self._cell_info = [bytes(f[: jk02.FRAME_SIZE]) for f in cell_info]
        self._settings = settings
        self._device_info = device_info
        self._logbook = logbook
        self._next = 0
        self._lock = threading.Lock()

    def device_info(self) -> Optional[bytes]:
        return self._device_info

    def settings(self) -> Optional[bytes]:
        return self._settings

    def logbook(self) -> Optional[bytes]:
        return self._logbook

    def cell_info(self) -> bytes:
        with self._lock:
            index, self._next = self._next, self._next + 1
        frame = self._cell_info[index % len(self._cell_info)]
        return with_counter(frame, frame[jk02.COUNTER_OFFSET] + index)


class SimulatedFrames:
    """A live :class:`SimulatedBms` as a JK board of ``generation`` would send it."""

    def __init__(self, bms: SimulatedBms, generation: str = jk02.JK02_32S) -> None:
        self.bms = bms
        self.generation = jk02.select_generation(generation)
        if bms.cells > jk02.CELL_SLOTS[self.generation]:
            raise ValueError("%d cells do not fit a %s board" % (bms.cells, self.generation))
        self._counter = 0
        self._lock = threading.Lock()
        #: The reading behind the last cell-info frame (what the exporter must show).
        self.last_reading: Optional[Reading] = None

    def _reading(self) -> Reading:
        reading = self.bms.reading()
        hardware, software = GENERATION_VERSIONS[self.generation]
        device = dataclasses.replace(reading.device, hardware_version=hardware,
                                     software_version=software)
        return dataclasses.replace(reading, device=device)

    def _count(self) -> int:
        with self._lock:
            self._counter = (self._counter + 1) & 0xFF
            return self._counter

    def device_info(self) -> Optional[bytes]:
        return jk02.encode_device_info(self._reading(), self.generation, self._count())

    def settings(self) -> Optional[bytes]:
        return jk02.encode_settings(self._reading(), self.generation, self._count())

    def logbook(self) -> Optional[bytes]:
        return None

    def cell_info(self) -> bytes:
        reading = self._reading()
        self.last_reading = reading
        return jk02.encode_cell_info(reading, self.generation, self._count())


# ----------------------------------------------------------------------------- GATT, adverts


@dataclass(frozen=True)
class FakeCharacteristic:
    uuid: str
    handle: int
    properties: Tuple[str, ...]
    service_uuid: str = SERVICE_UUID


@dataclass(frozen=True)
class FakeService:
    uuid: str
    handle: int
    characteristics: Tuple[FakeCharacteristic, ...]


@dataclass
class FakeDevice:
    """What a scan finds (bleak's ``BLEDevice``: address, name, details)."""

    address: str
    name: Optional[str]
    details: Any = None


class FakeAdvertisement(NamedTuple):
    """bleak's ``AdvertisementData`` fields."""

    local_name: Optional[str]
    manufacturer_data: Dict[int, bytes]
    service_data: Dict[str, bytes]
    service_uuids: List[str]
    tx_power: Optional[int]
    rssi: int
    platform_data: Tuple[Any, ...] = ()


@dataclass
class FakeAdvertiser:
    """Something else on the air (a phone, an HM-10 module, another brand's BMS)."""

    address: str
    name: Optional[str]
    service_uuids: Tuple[str, ...] = ()
    manufacturer_data: Dict[int, bytes] = dataclasses.field(default_factory=dict)
    rssi: int = -70

    @property
    def advertising(self) -> bool:
        return True

    def advertisement(self) -> FakeAdvertisement:
        return FakeAdvertisement(self.name, dict(self.manufacturer_data), {},
                                 list(self.service_uuids), None, self.rssi)


# ----------------------------------------------------------------------------- the board


class BoardLink:
    """One connection between a central (a client) and the board."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_lost: Callable[[], None]) -> None:
        self.loop = loop
        self.on_lost = on_lost
        self.open = True
        self.notify: Optional[Callable[[bytearray], None]] = None
        self.queue: "asyncio.Queue[bytes]" = asyncio.Queue()
        self.tasks: List["asyncio.Task[None]"] = []
        self.streaming = False

    def close(self) -> None:
        self.open = False
        for task in self.tasks:
            task.cancel()


class FakeJkBms:
    """A JK board's BLE module with a BMS behind it (see the module doc).

    Control methods (:meth:`drop`, :meth:`set_reachable`, :meth:`occupy`,
    :meth:`pause_stream` …) may be called from any thread.
    """

    WRITE_HANDLE = 0x03
    NOTIFY_HANDLE = 0x05
    SHARED_HANDLE = 0x03

    def __init__(
        self,
        frames: Any,
        address: str = "C8:47:80:00:00:01",
        name: Optional[str] = "JK-B2A24S20P",
        *,
        rssi: int = -60,
        two_handles: bool = True,
        fragment: Tuple[int, int] = (20, 244),
        pad_to_320: bool = False,
        garbage: float = 0.0,
        truncated: float = 0.0,
        corrupt: float = 0.0,
        interval: float = DEFAULT_INTERVAL,
        connect_delay: float = 0.0,
        seed: int = 0,
        advertise_manufacturer: bool = True,
    ) -> None:
        self.frames = frames
        self.address = address.upper()
        self.name = name
        self.rssi = rssi
        self.two_handles = two_handles
        self.fragment = fragment
        self.pad_to_320 = pad_to_320
        self.garbage = garbage
        self.truncated = truncated
        self.corrupt = corrupt
        self.interval = interval
        self.connect_delay = connect_delay
        self.advertise_manufacturer = advertise_manufacturer
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._link: Optional[BoardLink] = None
        self._reachable = True
        self._occupied = False
        self._paused = False
        #: (start, end, succeeded) of every connection attempt, time.monotonic().
        self.connect_attempts: List[Tuple[float, float, bool]] = []
        self.connections = 0
        #: Every write as (handle, bytes), in order.
        self.writes: List[Tuple[int, bytes]] = []
        #: Writes that were not read commands (never answered; must stay empty).
        self.non_read_writes: List[bytes] = []
        self.frames_sent: Dict[str, int] = {"device_info": 0, "settings": 0, "cell_info": 0,
                                            "corrupt": 0, "truncated": 0, "garbage": 0}
        self.fragment_sizes: List[int] = []

    # ----------------------------------------------------------------- air

    @property
    def connected(self) -> bool:
        return self._link is not None

    @property
    def advertising(self) -> bool:
        """JK modules advertise only while nobody is connected."""
        return self._reachable and not self._occupied and self._link is None

    def advertisement(self) -> FakeAdvertisement:
        manufacturer = {}
        if self.advertise_manufacturer:
            manufacturer[JK_MANUFACTURER_ID] = b"\x88\xa0" + bytes.fromhex(
                self.address.replace(":", ""))
        return FakeAdvertisement(self.name, manufacturer, {}, [SERVICE_UUID], None, self.rssi)

    def services(self) -> Tuple[FakeService, ...]:
        characteristics: Tuple[FakeCharacteristic, ...]
        if self.two_handles:
            characteristics = (
                FakeCharacteristic(CHARACTERISTIC_UUID, self.WRITE_HANDLE,
                                   ("write-without-response", "write")),
                FakeCharacteristic(CHARACTERISTIC_UUID, self.NOTIFY_HANDLE, ("notify",)),
            )
        else:
            characteristics = (
                FakeCharacteristic(CHARACTERISTIC_UUID, self.SHARED_HANDLE,
                                   ("read", "write-without-response", "notify")),
            )
        generic = FakeService("00001800-0000-1000-8000-00805f9b34fb", 0x01, ())
        return (generic, FakeService(SERVICE_UUID, 0x02, characteristics))

    # ----------------------------------------------------------------- control

    def drop(self) -> None:
        """The radio link breaks (out of range, interference, BlueZ hiccup)."""
        link = self._link
        if link is not None:
            try:
                link.loop.call_soon_threadsafe(self._lose, link)
            except RuntimeError:  # that loop is gone already
                self._lose(link)

    def set_reachable(self, reachable: bool) -> None:
        """Unreachable: not advertising, connections fail, and the current one drops."""
        self._reachable = reachable
        if not reachable:
            self.drop()

    def occupy(self) -> None:
        """Another central (the JK app) takes the board's only connection."""
        self._occupied = True
        self.drop()

    def release(self) -> None:
        self._occupied = False

    def pause_stream(self) -> None:
        """Stay connected but send no more cell-info frames (a stalled BMS)."""
        self._paused = True

    def resume_stream(self) -> None:
        self._paused = False

    # ----------------------------------------------------------------- called by clients

    async def connect(self, link: BoardLink) -> None:
        started = time.monotonic()
        ok = False
        try:
            if self.connect_delay:
                await asyncio.sleep(self.connect_delay)
            with self._lock:
                if not self._reachable:
                    raise FakeBleError("device %s not found / connection failed" % self.address)
                if self._occupied or self._link is not None:
                    raise FakeBleError("device %s is connected to another central" % self.address)
                self._link = link
                self.connections += 1
            link.tasks.append(link.loop.create_task(self._sender(link)))
            ok = True
        finally:
            self.connect_attempts.append((started, time.monotonic(), ok))

    def disconnect(self, link: Optional[BoardLink]) -> None:
        if link is None:
            return
        with self._lock:
            if self._link is link:
                self._link = None
        link.close()

    def _lose(self, link: BoardLink) -> None:
        if not link.open:
            return
        self.disconnect(link)
        link.on_lost()

    def _characteristic(self, handle: int) -> FakeCharacteristic:
        for service in self.services():
            for characteristic in service.characteristics:
                if characteristic.handle == handle:
                    return characteristic
        raise FakeBleError("no characteristic with handle %d" % handle)

    def subscribe(self, link: BoardLink, handle: int, callback: Callable[[bytearray], None]) -> None:
        if not link.open:
            raise FakeBleError("not connected")
        if "notify" not in self._characteristic(handle).properties:
            raise FakeBleError("characteristic %d does not notify" % handle)
        link.notify = callback

    def write(self, link: BoardLink, handle: int, data: bytes) -> None:
        if not link.open:
            raise FakeBleError("not connected")
        properties = self._characteristic(handle).properties
        if not {"write", "write-without-response"} & set(properties):
            raise FakeBleError("characteristic %d is not writable" % handle)
        data = bytes(data)
        self.writes.append((handle, data))
        command = read_command(data)
        if command is None:
            self.non_read_writes.append(data)
            log.warning("fake JK board %s ignores a write that is not a read command: %s",
                        self.address, data.hex(" "))
            return
        if command == 0x97:
            self._queue(link, "device_info", self.frames.device_info())
        elif command == 0x96:
            self._queue(link, "settings", self.frames.settings())
            if not link.streaming:
                link.streaming = True
                link.tasks.append(link.loop.create_task(self._stream(link)))
        elif command == 0xA1:
            self._queue(link, "logbook", self.frames.logbook())

    # ----------------------------------------------------------------- sending

    def _queue(self, link: BoardLink, kind: str, frame: Optional[bytes]) -> None:
        if frame is not None:
            link.queue.put_nowait(frame)
            if kind in self.frames_sent:
                self.frames_sent[kind] += 1

    async def _stream(self, link: BoardLink) -> None:
        while link.open:
            if not self._paused:
                self._queue(link, "cell_info", self.frames.cell_info())
            await asyncio.sleep(self.interval)

    async def _sender(self, link: BoardLink) -> None:
        while link.open:
            frame = await link.queue.get()
            rng = self._random
            if self.garbage and rng.random() < self.garbage:
                self.frames_sent["garbage"] += 1
                junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
                await self._deliver(link, junk.replace(jk02.HEADER[:1], b"\x00"))
            if self.truncated and rng.random() < self.truncated:
                self.frames_sent["truncated"] += 1
                await self._deliver_fragmented(link, frame[: rng.randint(8, 280)])
            if self.corrupt and rng.random() < self.corrupt:
                self.frames_sent["corrupt"] += 1
                bad = bytearray(frame)
                spot = rng.randint(6, jk02.CHECKSUM_OFFSET - 1)
                bad[spot] ^= 0x5A  # the checksum no longer matches
                await self._deliver_fragmented(link, bytes(bad))
                continue  # the good frame is lost, as on a noisy link
            if self.pad_to_320:
                frame = bytes(frame) + bytes(rng.randrange(256) for _ in range(20))
            await self._deliver_fragmented(link, frame)

    async def _deliver_fragmented(self, link: BoardLink, data: bytes) -> None:
        low, high = self.fragment
        position = 0
        while position < len(data) and link.open:
            size = self._random.randint(low, high)
            await self._deliver(link, data[position : position + size])
            position += size

    async def _deliver(self, link: BoardLink, chunk: bytes) -> None:
        if link.open and link.notify is not None and chunk:
            self.fragment_sizes.append(len(chunk))
            link.notify(bytearray(chunk))
        await asyncio.sleep(0)
