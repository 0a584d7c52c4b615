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
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

from . import jk_serial
from .errors import FrameError
from .reading import COULOMBS_PER_AMPERE_HOUR, DeviceInfo, Reading, Setting

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
    ) -> None:
        if scenario not in SCENARIOS:
            raise ValueError("unknown scenario %r (choose from %s)" % (scenario, ", ".join(SCENARIOS)))
        if not 1 <= cells <= 32:
            raise ValueError("cells must be 1…32, got %d" % cells)
        self.cells = cells
        self.scenario = scenario
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
        self.requests: List[jk_serial.Request] = []
        self.ignored_requests: List[bytes] = []
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
            device=DeviceInfo(
                protocol=jk_serial.PROTOCOL_NAME,
                protocol_version="1",
                model="JK_B2A24S20P",
                hardware_version="11.XW",
                software_version="11.26",
                device_id="SimBMS01",
                manufacture_date="2024-05",
                battery_type="lifepo4",
            ),
        )

    # ---------------------------------------------------------------- protocol

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


# -------------------------------------------------------------------- servers


class _StreamServer:
    """Answers request frames found in a byte stream, like a BMS on a UART."""

    def __init__(self, bms: SimulatedBms, latency: float = DEFAULT_LATENCY,
                 baudrate: Optional[int] = DEFAULT_BAUDRATE) -> None:
        self.bms = bms
        self.latency = latency
        #: ``None`` sends replies at once; a baud rate paces them like a real UART.
        self.baudrate = baudrate
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []

    def _answer(self, buffer: bytearray, write: Callable[[bytes], None]) -> None:
        while True:
            start, size = jk_serial.locate_frame(bytes(buffer))
            del buffer[:start]
            if size is None or len(buffer) < size:
                return
            frame = bytes(buffer[:size])
            del buffer[:size]
            reply = self.bms.handle(frame)
            if reply is None:
                continue
            if self.latency:
                time.sleep(self.latency)
            self._send(reply, write)

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
    """The simulated BMS behind a pseudo-terminal; :attr:`path` is the device to open."""

    def __init__(self, bms: SimulatedBms, **kwargs: object) -> None:
        super().__init__(bms, **kwargs)  # type: ignore[arg-type]
        import tty

        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)

    def start(self) -> "PtySimulator":
        self._spawn(self._run)
        return self

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._master, view)
            view = view[written:]

    def _run(self) -> None:
        buffer = bytearray()
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([self._master], [], [], 0.1)
                if not ready:
                    continue
                try:
                    data = os.read(self._master, 4096)
                except OSError:
                    time.sleep(0.05)  # no client has the slave open right now
                    continue
                buffer += data
                self._answer(buffer, self._write)
        finally:
            for fd in (self._master, self._slave):
                try:
                    os.close(fd)
                except OSError:
                    pass

class TcpSimulator(_StreamServer):
    """The simulated BMS behind a transparent TCP serial gateway (``socket://host:port``)."""

    def __init__(self, bms: SimulatedBms, host: str = "127.0.0.1", port: int = 0,
                 **kwargs: object) -> None:
        super().__init__(bms, **kwargs)  # type: ignore[arg-type]
        self._server = socket.create_server((host, port))
        self._server.settimeout(0.1)
        self.host, self.port = self._server.getsockname()[:2]
        self._clients: List[socket.socket] = []

    @property
    def url(self) -> str:
        return "socket://%s:%d" % (self.host, self.port)

    def start(self) -> "TcpSimulator":
        self._spawn(self._accept)
        return self

    def _accept(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    client, _ = self._server.accept()
                except socket.timeout:
                    continue
                except OSError:
                    return
                self._clients.append(client)
                self._spawn(self._serve_client, client)
        finally:
            self._server.close()

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
            client.close()


def scenario_help() -> str:
    return "; ".join("%s: %s" % item for item in SCENARIOS.items())


