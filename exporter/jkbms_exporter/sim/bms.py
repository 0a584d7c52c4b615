"""A simulated JK-B BMS that answers on the real "4E 57" wire protocol.

:class:`SimulatedBms` models a live LiFePO4 pack (cells with small individual offsets that
follow the current, a state of charge that moves, temperatures). Its replies are built by
the codec's encoder. :class:`PtySimulator` serves it on a pseudo-terminal and
:class:`TcpSimulator` as a transparent TCP serial gateway, both with a BMS-like answer
latency (~90 ms) and optional pacing at the baud rate.

Scenarios (``SCENARIOS``) are what the alert rules are tested with.
"""

from __future__ import annotations

import logging
import math
import os
import random
import select
import socket
import struct
import threading
import time
from collections import deque
from typing import Callable, Deque, Dict, List, Optional, Tuple

from ..protocols import jk02, jk_pb, jk_serial
from ..errors import FrameError
from ..reading import COULOMBS_PER_AMPERE_HOUR, DeviceInfo, Reading, Setting

log = logging.getLogger(__name__)

SCENARIOS: Dict[str, str] = {
    "normal": "healthy 16S LiFePO4 pack, current slowly alternating between charge and discharge",
    "cell-overvoltage": "cell 05 climbs past 3.65 V while charging",
    "cell-undervoltage": "cell 03 falls below 2.50 V while discharging",
    "imbalance": "cells spread by about 150 mV",
    "cold-charge": "battery sensors at about -5 °C while charging at 10 A",
    "alarms": "BMS alarm bits cell_overvoltage and battery_undertemperature set, charge MOSFET off",
}

DEFAULT_LATENCY = 0.09
_KEEP_REQUESTS = 100
DEFAULT_BAUDRATE = 115200

#: (state of charge, open-circuit cell voltage) for LiFePO4.
_LFP_OCV = (
    (0.00, 2.80), (0.05, 3.10), (0.10, 3.20), (0.30, 3.27), (0.60, 3.30),
    (0.90, 3.33), (0.97, 3.40), (1.00, 3.45),
)
_CELL_RESISTANCE = 0.0006  # ohms, for the voltage rise/sag with current

_SETTINGS = (
    ("pack_overvoltage_protection", "volts", 3.65),  # per cell; scaled by cell count below
    ("pack_undervoltage_protection", "volts", 2.50),
    ("cell_overvoltage_protection", "volts", 3.65),
    ("cell_overvoltage_recovery", "volts", 3.55),
    ("cell_overvoltage_protection_delay", "seconds", 5),
    ("cell_undervoltage_protection", "volts", 2.50),
    ("cell_undervoltage_recovery", "volts", 2.80),
    ("cell_undervoltage_protection_delay", "seconds", 5),
    ("cell_voltage_difference_protection", "volts", 0.3),
    ("discharge_overcurrent_protection", "amperes", 150),
    ("discharge_overcurrent_protection_delay", "seconds", 300),
    ("charge_overcurrent_protection", "amperes", 100),
    ("charge_overcurrent_protection_delay", "seconds", 30),
    ("balance_start", "volts", 3.40),
    ("balance_trigger_voltage_difference", "volts", 0.01),
    ("mosfet_overtemperature_protection", "celsius", 80),
    ("mosfet_overtemperature_recovery", "celsius", 70),
    ("battery_box_overtemperature_protection", "celsius", 60),
    ("battery_box_overtemperature_recovery", "celsius", 55),
    ("battery_temperature_difference_protection", "celsius", 20),
    ("charge_overtemperature_protection", "celsius", 55),
    ("discharge_overtemperature_protection", "celsius", 60),
    # a common field mistake the cold-charge alert exists for: -20 °C instead of 0 °C
    ("charge_undertemperature_protection", "celsius", -20),
    ("charge_undertemperature_recovery", "celsius", -10),
    ("discharge_undertemperature_protection", "celsius", -20),
    ("discharge_undertemperature_recovery", "celsius", -10),
    ("current_calibration", "amperes", 1.0),
    ("sleep_wait", "seconds", 10),
    ("low_capacity_alarm", "ratio", 0.2),
)


_JK_B_DEVICE = DeviceInfo(
    protocol=jk_serial.PROTOCOL_NAME,
    protocol_version="1",
    model="JK_B2A24S20P",
    hardware_version="11.XW",
    software_version="11.26",
    device_id="SimBMS01",
    manufacture_date="2024-05",
    battery_type="lifepo4",
)


def jk_pb_device(address: int) -> DeviceInfo:
    """The identity of a simulated JK-PB pack at DIP ``address``."""
    return DeviceInfo(
        protocol=jk_pb.PROTOCOL_NAME,
        model="JK_PB2A16S20P",
        hardware_version="19A",
        software_version="19.09",
        device_id="SimPB%02d" % address,
        manufacture_date="2025-03",
        serial_number="5100%06d" % (424242 + address),
    )


def _ocv(soc: float) -> float:
    soc = min(1.0, max(0.0, soc))
    for (s0, v0), (s1, v1) in zip(_LFP_OCV, _LFP_OCV[1:]):
        if soc <= s1:
            return v0 + (v1 - v0) * (soc - s0) / (s1 - s0)
    return _LFP_OCV[-1][1]


class SimulatedBms:
    """The state of one simulated BMS, advanced on every reading from the clock."""

    def __init__(
        self,
        cells: int = 16,
        scenario: str = "normal",
        capacity_ah: float = 280.0,
        seed: Optional[int] = None,
        clock: Callable[[], float] = time.monotonic,
        device: Optional[DeviceInfo] = None,
    ) -> None:
        if scenario not in SCENARIOS:
            raise ValueError("unknown scenario %r (choose from %s)" % (scenario, ", ".join(SCENARIOS)))
        if not 1 <= cells <= 32:
            raise ValueError("cells must be 1…32, got %d" % cells)
        self.cells = cells
        self.scenario = scenario
        self.device = device or _JK_B_DEVICE
        self.capacity_ah = capacity_ah
        self._clock = clock
        self._random = random.Random(seed)
        self._offsets = [self._random.uniform(-0.008, 0.008) for _ in range(cells)]
        if scenario == "imbalance":
            self._offsets = [0.075 - 0.150 * i / max(1, cells - 1) for i in range(cells)]
        self._start = clock()
        self._last = self._start
        self.soc = {"cell-overvoltage": 0.99, "cell-undervoltage": 0.04}.get(scenario, 0.62)
        self._throughput_ah = 12345.0
        #: The most recent requests (bounded: a simulator may run for months).
        self.requests: Deque[jk_serial.Request] = deque(maxlen=_KEEP_REQUESTS)
        self.ignored_requests: Deque[bytes] = deque(maxlen=_KEEP_REQUESTS)
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- model

    def _current(self, elapsed: float) -> float:
        if self.scenario == "cell-overvoltage":
            return 15.0
        if self.scenario == "cell-undervoltage":
            return -20.0
        if self.scenario == "cold-charge":
            return 10.0
        return round(20.0 * math.sin(2 * math.pi * elapsed / 600.0) + 2.0, 2)

    def _cell_voltage(self, index: int, elapsed: float, current: float) -> float:
        if self.scenario == "cell-overvoltage" and index == 5:
            return min(3.72, 3.55 + 0.01 * elapsed)
        if self.scenario == "cell-undervoltage" and index == 3:
            return max(2.40, 2.65 - 0.01 * elapsed)
        noise = self._random.uniform(-0.001, 0.001)
        return _ocv(self.soc) + current * _CELL_RESISTANCE + self._offsets[index - 1] + noise

    def reading(self) -> Reading:
        with self._lock:
            now = self._clock()
            elapsed = now - self._start
            current = self._current(elapsed)
            dt = now - self._last
            self._last = now
            if self.scenario not in ("cell-overvoltage", "cell-undervoltage"):
                self.soc = min(1.0, max(0.0, self.soc + current * dt / 3600.0 / self.capacity_ah))
            self._throughput_ah += abs(current) * dt / 3600.0
            cells = tuple(
                round(self._cell_voltage(i, elapsed, current), 3) for i in range(1, self.cells + 1)
            )
            return self._reading(cells, current, elapsed)

    def _reading(self, cells: Tuple[float, ...], current: float, elapsed: float) -> Reading:
        cold = self.scenario == "cold-charge"
        battery = -5.0 if cold else round(22.0 + 2.0 * math.sin(elapsed / 900.0))
        temperatures = {
            "mosfet": 2.0 if cold else round(25.0 + abs(current) * 0.15),
            "battery1": battery,
            "battery2": battery - (0.0 if cold else 1.0),
        }
        alarm_bits = 0
        charge_on = True
        if self.scenario == "alarms":
            alarm_bits = 1 << jk_serial.ALARM_BITS.index("cell_overvoltage")
            alarm_bits |= 1 << jk_serial.ALARM_BITS.index("battery_undertemperature")
            charge_on = False
            current = min(current, 0.0)
        spread = max(cells) - min(cells)
        balancing = max(cells) >= 3.40 and spread >= 0.01
        status = (
            (jk_serial.STATUS_CHARGE_MOSFET if charge_on else 0)
            | jk_serial.STATUS_DISCHARGE_MOSFET
            | (jk_serial.STATUS_BALANCING if balancing else 0)
        )
        settings = tuple(
            Setting(name, unit, round(value * self.cells, 2) if name.startswith("pack_") else value)
            for name, unit, value in _SETTINGS
        )
        return Reading(
            cell_voltages_volts=cells,
            pack_voltage_volts=round(sum(cells), 2),
            current_amperes=round(current, 2),
            state_of_charge_ratio=round(self.soc, 2),
            temperatures_celsius=temperatures,
            charge_cycles=int(self._throughput_ah // (2 * self.capacity_ah)),
            cycle_capacity_coulombs=float(int(self._throughput_ah)) * COULOMBS_PER_AMPERE_HOUR,
            runtime_seconds=60.0 * (123456 + int(elapsed // 60)),
            nominal_capacity_coulombs=self.capacity_ah * COULOMBS_PER_AMPERE_HOUR,
            actual_capacity_coulombs=self.capacity_ah * COULOMBS_PER_AMPERE_HOUR,
            charge_mosfet_on=charge_on,
            discharge_mosfet_on=True,
            balancing=balancing,
            switches_enabled={"charge": True, "discharge": True, "balancer": True,
                              "dedicated_charger": False},
            alarm_bitmask=alarm_bits,
            alarms={name: bool(alarm_bits >> bit & 1) for bit, name in enumerate(jk_serial.ALARM_BITS)},
            status_bitmask=status,
            settings=settings,
            device=self.device,
            # what only JK02 frames carry (the 4E57 encoder has no register for them)
            cell_resistances_ohms=tuple(round(0.055 + abs(o) * 2, 3) for o in self._offsets),
            balance_current_amperes=(0.4 if cells.index(max(cells)) % 2 else -0.4)
            if balancing else 0.0,
            remaining_capacity_coulombs=round(self.soc * self.capacity_ah, 1)
            * COULOMBS_PER_AMPERE_HOUR,
            state_of_health_ratio=0.97,
        )

    # ---------------------------------------------------------------- protocol

    #: Where the next request frame is in the bytes received (the stream server's framing).
    locate = staticmethod(jk_serial.locate_frame)

    def handle(self, frame: bytes) -> Optional[bytes]:
        """The reply to one request frame, or ``None`` when a real BMS would stay silent."""
        try:
            request = jk_serial.parse_request(frame)
        except FrameError as error:
            log.debug("simulator ignores a bad request frame: %s", error)
            self.ignored_requests.append(bytes(frame))
            return None
        self.requests.append(request)
        if request.command not in jk_serial.READ_COMMANDS:
            # write, password, activate...: a read-only exporter never sends them
            log.warning("simulator ignores non-read command 0x%02X", request.command)
            self.ignored_requests.append(bytes(frame))
            return None
        registers = jk_serial.reading_to_registers(self.reading())
        if request.command == jk_serial.COMMAND_READ_REGISTER and request.register:
            if request.register not in registers:
                return None
            registers = {request.register: registers[request.register]}
        return jk_serial.encode_reply(registers, command=request.command)


class ReplayBms:
    """A BMS that answers every read request with recorded reply frames, in turn.

    Used to put real captured frames (``shared/protocol/vectors``) on a real link.
    """

    def __init__(self, frames: List[bytes]) -> None:
        if not frames:
            raise ValueError("ReplayBms needs at least one frame")
        self.frames = [bytes(frame) for frame in frames]
        self._next = 0
        self.requests: Deque[jk_serial.Request] = deque(maxlen=_KEEP_REQUESTS)

    locate = staticmethod(jk_serial.locate_frame)

    def handle(self, frame: bytes) -> Optional[bytes]:
        try:
            request = jk_serial.parse_request(frame)
        except FrameError:
            return None
        self.requests.append(request)
        if request.command not in jk_serial.READ_COMMANDS:
            return None
        reply = self.frames[self._next % len(self.frames)]
        self._next += 1
        return reply


def locate_modbus_request(buffer: bytes) -> Tuple[int, Optional[int]]:
    """Where the next CRC-valid FC 0x03 (8 bytes) or FC 0x10 trigger-sized (11 bytes) Modbus
    request starts in ``buffer``, like a slave's receiver hunting for its frames."""
    sizes = {jk_pb.FUNCTION_READ_HOLDING: jk_pb.READ_REQUEST_SIZE,
             jk_pb.FUNCTION_WRITE_MULTIPLE: jk_pb.TRIGGER_REQUEST_SIZE}
    for start in range(len(buffer)):
        if start + 1 >= len(buffer):
            return start, None
        size = sizes.get(buffer[start + 1])
        if size is None:
            continue
        if len(buffer) - start < size:
            return start, None
        if jk_pb.crc_ok(buffer[start : start + size]):
            return start, size
    return len(buffer), None


class PbBusBms:
    """JK-PB packs daisy-chained on one RS-485 bus, each at its DIP address.

    They answer FC 0x10 triggers with their 55AA frame plus acknowledgement and FC 0x03
    block reads, as in the captures; addresses with no pack stay silent. With ``master``,
    a pack at DIP 0 owns the bus: it answers nobody and :meth:`master_traffic` produces
    what it puts on the wire (its triggers, the packs' replies, its own broadcasts).
    """

    locate = staticmethod(locate_modbus_request)

    def __init__(self, packs: Dict[int, SimulatedBms], padded: bool = False,
                 master: bool = False, answer_fc03: bool = True,
                 answer_triggers: bool = True) -> None:
        for address in packs:
            if not jk_pb.MIN_SLAVE_ADDRESS <= address <= jk_pb.MAX_SLAVE_ADDRESS:
                raise ValueError("DIP address %d: packs answer at 1-15" % address)
        self.packs = dict(packs)
        self.padded = padded
        self.master = master
        self.answer_fc03 = answer_fc03
        self.answer_triggers = answer_triggers
        self.requests: Deque[jk_pb.ModbusRequest] = deque(maxlen=_KEEP_REQUESTS)
        self._counter = 0
        self.master_bms = SimulatedBms(cells=16, seed=0, device=jk_pb_device(0))

    def _frame(self, bms: SimulatedBms, frame_type: int) -> bytes:
        self._counter = (self._counter + 1) & 0xFF
        encode = {jk02.FRAME_CELL_INFO: jk02.encode_cell_info,
                  jk02.FRAME_SETTINGS: jk02.encode_settings,
                  jk02.FRAME_DEVICE_INFO: jk02.encode_device_info}[frame_type]
        return encode(bms.reading(), jk_pb.GENERATION, self._counter)

    def handle(self, frame: bytes) -> Optional[bytes]:
        try:
            request = jk_pb.parse_request(frame)
        except FrameError:
            return None
        self.requests.append(request)
        bms = self.packs.get(request.address)
        if bms is None or self.master:
            return None  # absent, or the master owns the bus and the slaves answer only it
        if request.trigger_frame_type is not None:
            if not self.answer_triggers:
                return None
            reply = self._frame(bms, request.trigger_frame_type)
            return jk_pb.encode_trigger_reply(request.address, reply, self.padded)
        if request.function == jk_pb.FUNCTION_READ_HOLDING and self.answer_fc03:
            for block, frame_type in jk_pb.FRAME_TYPE_BY_BLOCK.items():
                offset = request.register - block
                if 0 <= offset < 0x200:
                    _, data = jk_pb.frame_to_block(self._frame(bms, frame_type))
                    data = data.ljust(offset + 2 * request.count, b"\x00")
                    return jk_pb.encode_read_response(
                        request.address, data[offset : offset + 2 * request.count])
        return None  # a write, or a register nobody has: a real pack ignores it too

    def master_traffic(self) -> List[Tuple[bytes, float]]:
        """One polling cycle of a DIP-0 master: (bytes on the wire, pause after them)."""
        pieces: List[Tuple[bytes, float]] = []
        for address in range(1, jk_pb.MAX_SLAVE_ADDRESS + 1):
            request = jk_pb.trigger_request(address, jk02.FRAME_CELL_INFO)
            bms = self.packs.get(address)
            if bms is None:
                pieces.append((request, 0.02))  # probed, nobody answers
                continue
            pieces.append((request, 0.03))
            pieces.append((jk_pb.encode_trigger_reply(
                address, self._frame(bms, jk02.FRAME_CELL_INFO), self.padded), 0.05))
            settings = jk_pb.trigger_request(address, jk02.FRAME_SETTINGS)
            pieces.append((settings, 0.03))
            pieces.append((jk_pb.encode_trigger_reply(
                address, self._frame(bms, jk02.FRAME_SETTINGS), self.padded), 0.05))
        own = self._frame(self.master_bms, jk02.FRAME_CELL_INFO)
        pieces.append((own + jk_pb.encode_ack(jk_pb.MASTER_ADDRESS, jk_pb.TRIGGER_CELL_INFO), 0.2))
        return pieces


# -------------------------------------------------------------------- faults

#: Transmission faults a simulated link can show (independent of the scenario, which is
#: what the BMS measures). Each is what users see on real links.
FAULTS: Dict[str, str] = {
    "none": "answer every request correctly",
    "silent": "no answer at all (wrong wiring, sleeping BMS)",
    "partial": "the first part of the reply, then silence",
    "junk-before": "line noise before the reply",
    "bad-checksum": "a reply whose checksum does not match",
    "bad-length": "a reply whose length field is wrong",
    "chunked": "the reply in tiny chunks with pauses (USB latency timers, TCP gateways)",
    "trailing-junk": "extra bytes after the reply",
    "trickle": "the reply a few bytes at a time, too slowly to finish before a deadline",
}

#: Where every request frame a simulator receives is appended in hex (one per line), when
#: the environment names a file: the test suite checks that only read requests were sent.
REQUEST_LOG_ENV = "JKBMS_SIMULATOR_REQUEST_LOG"


def _log_request(frame: bytes) -> None:
    path = os.environ.get(REQUEST_LOG_ENV)
    if path:
        with open(path, "a") as handle:
            handle.write(frame.hex() + "\n")


def apply_fault(fault: str, reply: bytes, rng: random.Random) -> List[Tuple[bytes, float]]:
    """The reply as (bytes, pause after them) pieces with ``fault`` applied."""
    if fault not in FAULTS:
        raise ValueError("unknown fault %r (choose from %s)" % (fault, ", ".join(FAULTS)))
    if fault == "silent":
        return []
    if fault == "partial":
        return [(reply[: len(reply) // 2], 0.0)]
    if fault == "junk-before":
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(3, 40))).replace(b"N", b"n")
        return [(junk + reply, 0.0)]
    if fault == "bad-checksum":
        return [(reply[:-1] + bytes(((reply[-1] + 1) & 0xFF,)), 0.0)]
    if fault == "bad-length":
        size = int.from_bytes(reply[2:4], "big") + 7
        return [(reply[:2] + size.to_bytes(2, "big") + reply[4:], 0.0)]
    if fault == "chunked":
        pieces: List[Tuple[bytes, float]] = []
        position = 0
        while position < len(reply):
            step = rng.randint(1, 7)
            pieces.append((reply[position : position + step], rng.uniform(0.001, 0.02)))
            position += step
        return pieces
    if fault == "trailing-junk":
        return [(reply + bytes(rng.randrange(256) for _ in range(rng.randint(1, 30))), 0.0)]
    if fault == "trickle":
        return [(reply[i : i + 4], 0.05) for i in range(0, len(reply), 4)]
    return [(reply, 0.0)]


# -------------------------------------------------------------------- servers


class _StreamServer:
    """Answers request frames found in a byte stream, like a BMS on a UART.

    :attr:`fault` may be changed at any time, from any thread.
    """

    def __init__(self, bms: "SimulatedBms | ReplayBms | PbBusBms", latency: float = DEFAULT_LATENCY,
                 baudrate: Optional[int] = DEFAULT_BAUDRATE, fault: str = "none",
                 seed: Optional[int] = None) -> None:
        self.bms = bms
        self.latency = latency
        #: ``None`` sends replies at once; a baud rate paces them like a real UART.
        self.baudrate = baudrate
        if fault not in FAULTS:
            raise ValueError("unknown fault %r (choose from %s)" % (fault, ", ".join(FAULTS)))
        self.fault = fault
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        #: Requests seen and replies sent, for tests and benchmarks.
        self.requests_received = 0
        self.replies_sent = 0

    def _answer(self, buffer: bytearray, write: Callable[[bytes], None]) -> None:
        while True:
            start, size = self.bms.locate(bytes(buffer))
            del buffer[:start]
            if size is None or len(buffer) < size:
                return
            frame = bytes(buffer[:size])
            del buffer[:size]
            self.requests_received += 1
            _log_request(frame)
            reply = self.bms.handle(frame)
            if reply is None:
                continue
            fault = self.fault
            if self.latency:
                time.sleep(self.latency)
            for piece, pause in apply_fault(fault, reply, self._random):
                self._send(piece, write)
                if pause:
                    time.sleep(pause)
            if fault != "silent":
                self.replies_sent += 1

    def _send(self, data: bytes, write: Callable[[bytes], None]) -> None:
        if not self.baudrate:
            write(data)
            return
        chunk = 32
        byte_time = 10.0 / self.baudrate  # 8N1: ten bit times per byte
        for i in range(0, len(data), chunk):
            piece = data[i : i + chunk]
            write(piece)
            time.sleep(len(piece) * byte_time)

    def _start_master(self) -> None:
        """A bus master in the simulated device puts its own traffic on the line (it may
        join or leave at run time through ``bms.master``)."""
        if hasattr(self.bms, "master_traffic"):
            self._spawn(self._run_master)

    def _run_master(self) -> None:
        while not self._stop.is_set():
            if not self.bms.master:  # type: ignore[union-attr]  # the master left the bus
                time.sleep(0.05)
                continue
            for data, pause in self.bms.master_traffic():  # type: ignore[union-attr]
                if self._stop.is_set():
                    return
                self._send(data, self._broadcast)
                time.sleep(pause)

    def _broadcast(self, data: bytes) -> None:
        raise NotImplementedError

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="jkbms-sim")
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2)

    def __enter__(self) -> "_StreamServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PtySimulator(_StreamServer):
    """The simulated BMS behind a pseudo-terminal.

    :attr:`path` is the device to open. With ``link`` it is that symlink to the current
    pseudo-terminal, like ``/dev/serial/by-id/…``: :meth:`unplug` closes the terminal and
    removes the link (the adapter vanished), :meth:`replug` creates a new terminal behind
    the same link (the adapter is back).
    """

    def __init__(self, bms: "SimulatedBms | ReplayBms | PbBusBms", link: Optional[str] = None,
                 **kwargs: object) -> None:
        super().__init__(bms, **kwargs)  # type: ignore[arg-type]
        self._link = link
        self._fds_lock = threading.Lock()
        self._master = self._slave = -1
        self._plugged = threading.Event()
        self._open_pty()

    def _open_pty(self) -> None:
        import tty

        master, slave = os.openpty()
        tty.setraw(slave)
        with self._fds_lock:
            self._master, self._slave = master, slave
        self.tty_path = os.ttyname(slave)
        if self._link:
            temporary = self._link + ".new"
            if os.path.lexists(temporary):
                os.unlink(temporary)
            os.symlink(self.tty_path, temporary)
            os.replace(temporary, self._link)
        self._plugged.set()

    @property
    def path(self) -> str:
        return self._link or self.tty_path

    def start(self) -> "PtySimulator":
        self._spawn(self._run)
        self._start_master()
        return self

    def _broadcast(self, data: bytes) -> None:
        if self._plugged.is_set():
            self._write(data)

    def unplug(self) -> None:
        """The adapter vanishes: the terminal closes (readers get an error) and the path goes."""
        self._plugged.clear()
        if self._link and os.path.lexists(self._link):
            os.unlink(self._link)
        self._close_fds()

    def replug(self) -> None:
        self._open_pty()

    def _close_fds(self) -> None:
        with self._fds_lock:
            fds, (self._master, self._slave) = (self._master, self._slave), (-1, -1)
        for fd in fds:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._master, view)
            except OSError:
                return  # unplugged mid-reply
            view = view[written:]

    def _run(self) -> None:
        buffer = bytearray()
        try:
            while not self._stop.is_set():
                if not self._plugged.wait(0.1):
                    buffer.clear()
                    continue
                master = self._master
                try:
                    ready, _, _ = select.select([master], [], [], 0.1)
                except (OSError, ValueError):
                    continue  # closed under us by unplug()
                if not ready:
                    continue
                try:
                    data = os.read(master, 4096)
                except OSError:
                    time.sleep(0.05)  # no client has the slave open right now
                    continue
                buffer += data
                self._answer(buffer, self._write)
        finally:
            self._close_fds()
            if self._link and os.path.lexists(self._link):
                os.unlink(self._link)


class TcpSimulator(_StreamServer):
    """The simulated BMS behind a transparent TCP serial gateway (``socket://host:port``).

    ``max_clients=1`` behaves like the many gateways that serve one TCP client at a time:
    a second connection is closed at once. :meth:`reset` drops every connection and stops
    listening (gateway rebooting); :meth:`restore` listens on the same port again.
    """

    def __init__(self, bms: "SimulatedBms | ReplayBms | PbBusBms", host: str = "127.0.0.1",
                 port: int = 0,
                 max_clients: Optional[int] = None, **kwargs: object) -> None:
        super().__init__(bms, **kwargs)  # type: ignore[arg-type]
        self.max_clients = max_clients
        self._clients: List[socket.socket] = []
        self._clients_lock = threading.Lock()
        self._server = self._listen(host, port)
        self.host, self.port = self._server.getsockname()[:2]
        self.rejected_clients = 0

    @staticmethod
    def _listen(host: str, port: int) -> socket.socket:
        server = socket.create_server((host, port), reuse_port=False)
        server.settimeout(0.1)
        return server

    @property
    def url(self) -> str:
        return "socket://%s:%d" % (self.host, self.port)

    def start(self) -> "TcpSimulator":
        self._spawn(self._accept, self._server)
        self._start_master()
        return self

    def _broadcast(self, data: bytes) -> None:
        with self._clients_lock:
            clients = list(self._clients)
        for client in clients:
            try:
                client.sendall(data)
            except OSError:
                pass

    def reset(self) -> None:
        """Drop every client with a TCP reset and stop listening."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:  # SO_LINGER 0: close sends RST, as a rebooting gateway does
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
            except OSError:
                pass

    def restore(self) -> None:
        """Listen on the same port again."""
        self._server = self._listen(self.host, self.port)
        self._spawn(self._accept, self._server)

    def _accept(self, server: socket.socket) -> None:
        while not self._stop.is_set() and server is self._server:
            try:
                client, _ = server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._clients_lock:
                busy = self.max_clients is not None and len(self._clients) >= self.max_clients
                if not busy:
                    self._clients.append(client)
            if busy:
                self.rejected_clients += 1
                client.close()
                continue
            self._spawn(self._serve_client, client)
        try:
            server.close()
        except OSError:
            pass

    def _serve_client(self, client: socket.socket) -> None:
        buffer = bytearray()
        client.settimeout(0.1)
        try:
            while not self._stop.is_set():
                try:
                    data = client.recv(4096)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                self._answer(buffer, client.sendall)
        except OSError:
            return
        finally:
            with self._clients_lock:
                if client in self._clients:
                    self._clients.remove(client)
            client.close()

    def stop(self) -> None:
        super().stop()
        self.reset()


def scenario_help() -> str:
    return "; ".join("%s: %s" % item for item in SCENARIOS.items())


def fault_help() -> str:
    return "; ".join("%s: %s" % item for item in FAULTS.items())


