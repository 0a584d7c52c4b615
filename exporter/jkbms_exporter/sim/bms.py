"""A simulated JK-B BMS that answers on the real "4E 57" wire protocol.

:class:`SimulatedBms` models a live LiFePO4 pack (cells with small individual offsets that
follow the current, a state of charge that moves, temperatures); what its pack does is a
scenario of :mod:`.scenarios`. Its replies are built by the codec's encoder.
:class:`ReplayBms` answers with recorded frames. The JK-PB bus of such boards is in
:mod:`.pb_bus`; serving a board on a pty or TCP, with link faults, in :mod:`.serve`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import threading
import time
from collections import deque
from typing import Callable, Deque, Dict, List, Optional, Tuple

from ..protocols import jk_serial
from ..errors import FrameError
from ..reading import COULOMBS_PER_AMPERE_HOUR, DeviceInfo, Reading, Setting
from .chemistry import CHEMISTRIES
from .scenarios import SCENARIOS, Moment


log = logging.getLogger(__name__)


KEEP_REQUESTS = 100


_CELL_RESISTANCE = 0.0006  # ohms, for the voltage rise/sag with current


#: Settings; ``None`` values come from the pack's chemistry (:mod:`.chemistry`).
_SETTINGS = (
    ("pack_overvoltage_protection", "volts", None),  # per cell; scaled by cell count below
    ("pack_undervoltage_protection", "volts", None),
    ("cell_overvoltage_protection", "volts", None),
    ("cell_overvoltage_recovery", "volts", None),
    ("cell_overvoltage_protection_delay", "seconds", 5),
    ("cell_undervoltage_protection", "volts", None),
    ("cell_undervoltage_recovery", "volts", None),
    ("cell_undervoltage_protection_delay", "seconds", 5),
    ("cell_voltage_difference_protection", "volts", 0.3),
    ("discharge_overcurrent_protection", "amperes", 150),
    ("discharge_overcurrent_protection_delay", "seconds", 300),
    ("charge_overcurrent_protection", "amperes", 100),
    ("charge_overcurrent_protection_delay", "seconds", 30),
    ("balance_start", "volts", None),
    ("balance_trigger_voltage_difference", "volts", 0.01),
    ("mosfet_overtemperature_protection", "celsius", 80),
    ("mosfet_overtemperature_recovery", "celsius", 70),
    ("battery_box_overtemperature_protection", "celsius", 60),
    ("battery_box_overtemperature_recovery", "celsius", 55),
    ("battery_temperature_difference_protection", "celsius", 20),
    ("charge_overtemperature_protection", "celsius", 55),
    ("discharge_overtemperature_protection", "celsius", 60),
    ("charge_undertemperature_protection", "celsius", None),
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


def _ocv(soc: float) -> float:
    """Open-circuit voltage of a LiFePO4 cell (bench/energy_bench.py uses it)."""
    return CHEMISTRIES["lifepo4"].open_circuit_volts(soc)


def _chemistry_settings(chemistry: str) -> Dict[str, float]:
    row = CHEMISTRIES[chemistry]
    return {"pack_overvoltage_protection": row.overvoltage,
            "pack_undervoltage_protection": row.undervoltage,
            "cell_overvoltage_protection": row.overvoltage,
            "cell_overvoltage_recovery": row.overvoltage_recovery,
            "cell_undervoltage_protection": row.undervoltage,
            "cell_undervoltage_recovery": row.undervoltage_recovery,
            "balance_start": row.balance_start,
            "charge_undertemperature_protection": row.charge_undertemperature}


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
        chemistry: str = "lifepo4",
    ) -> None:
        if chemistry not in CHEMISTRIES:
            raise ValueError("unknown chemistry %r (choose from %s)"
                             % (chemistry, ", ".join(CHEMISTRIES)))
        self.chemistry = chemistry
        self._chemistry = CHEMISTRIES[chemistry]
        if scenario not in SCENARIOS:
            raise ValueError("unknown scenario %r (choose from %s)" % (scenario, ", ".join(SCENARIOS)))
        self._scenario = row = SCENARIOS[scenario]
        if not 1 <= cells <= 32:
            raise ValueError("cells must be 1…32, got %d" % cells)
        self.cells = cells
        self.scenario = scenario
        self.device = device or dataclasses.replace(
            _JK_B_DEVICE, battery_type={"nmc": "ternary"}.get(chemistry, chemistry))
        self.capacity_ah = capacity_ah
        self._clock = clock
        self._random = random.Random(seed)
        self._offsets = [self._random.uniform(-0.008, 0.008) for _ in range(cells)]
        if row.cell_spread_volts is not None:
            spread = row.cell_spread_volts
            self._offsets = [spread / 2 - spread * i / max(1, cells - 1) for i in range(cells)]
        self._start = clock()
        self._last = self._start
        self.soc = row.start_soc
        self._throughput_ah = 12345.0
        #: The most recent requests (bounded: a simulator may run for months).
        self.requests: Deque[jk_serial.Request] = deque(maxlen=KEEP_REQUESTS)
        self.ignored_requests: Deque[bytes] = deque(maxlen=KEEP_REQUESTS)
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- model

    def _moment(self, elapsed: float) -> Optional[Moment]:
        timeline = self._scenario.timeline
        return None if timeline is None else timeline(elapsed, self._chemistry)

    def _current(self, elapsed: float) -> float:
        moment = self._moment(elapsed)
        if moment is not None:
            return moment.current
        if self._scenario.current is not None:
            return self._scenario.current
        return round(20.0 * math.sin(2 * math.pi * elapsed / 600.0) + 2.0, 2)

    def _cell_voltage(self, index: int, elapsed: float, current: float) -> float:
        driven = self._scenario.driven_cell
        if driven is not None and index == driven[0]:
            return driven[1](elapsed)
        moment = self._moment(elapsed)
        if moment is not None and index == moment.cell[0]:
            return moment.cell[1]
        noise = self._random.uniform(-0.001, 0.001)
        return (self._chemistry.open_circuit_volts(self.soc) + current * _CELL_RESISTANCE
                + self._offsets[index - 1] + noise)

    def reading(self) -> Reading:
        with self._lock:
            now = self._clock()
            elapsed = now - self._start
            current = self._current(elapsed)
            dt = now - self._last
            self._last = now
            if not self._scenario.hold_soc:
                self.soc = min(1.0, max(0.0, self.soc + current * dt / 3600.0 / self.capacity_ah))
            self._throughput_ah += abs(current) * dt / 3600.0
            cells = tuple(
                round(self._cell_voltage(i, elapsed, current), 3) for i in range(1, self.cells + 1)
            )
            return self._reading(cells, current, elapsed)

    def _reading(self, cells: Tuple[float, ...], current: float, elapsed: float) -> Reading:
        row = self._scenario
        if row.temperatures_celsius is not None:
            mosfet, battery = row.temperatures_celsius
            temperatures = {"mosfet": mosfet, "battery1": battery, "battery2": battery}
        else:
            battery = round(22.0 + 2.0 * math.sin(elapsed / 900.0))
            temperatures = {"mosfet": round(25.0 + abs(current) * 0.15),
                            "battery1": battery, "battery2": battery - 1.0}
        moment = self._moment(elapsed)
        alarm_bits = 0
        for name in moment.alarms if moment is not None else row.alarms:
            alarm_bits |= 1 << jk_serial.ALARM_BITS.index(name)
        charge_on = not row.charge_cut and (moment is None or moment.charge_on)
        discharge_on = moment is None or moment.discharge_on
        if row.charge_cut:
            current = min(current, 0.0)
        spread = max(cells) - min(cells)
        balancing = max(cells) >= self._chemistry.balance_start and spread >= 0.01
        status = (
            (jk_serial.STATUS_CHARGE_MOSFET if charge_on else 0)
            | (jk_serial.STATUS_DISCHARGE_MOSFET if discharge_on else 0)
            | (jk_serial.STATUS_BALANCING if balancing else 0)
        )
        own = _chemistry_settings(self.chemistry)
        settings = tuple(
            Setting(name, unit, round(own[name] * self.cells, 2) if name.startswith("pack_")
                    else own.get(name, value))  # type: ignore[arg-type]
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
            discharge_mosfet_on=discharge_on,
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
        self.requests: Deque[jk_serial.Request] = deque(maxlen=KEEP_REQUESTS)

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
