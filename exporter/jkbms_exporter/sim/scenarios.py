"""Scenarios of the simulated BMS: what its pack does, one row per scenario.

The alert rules and the dashboard are tested with these (``--simulate-scenario``,
``simulate --scenario``, ``ble+sim://…?scenario=``). A scenario is data: :class:`Scenario`
says which knobs of :class:`~jkbms_exporter.sim.bms.SimulatedBms`'s model it turns; the
model itself (open-circuit voltage, cell resistance, noise) stays in :mod:`.bms`. To add a
scenario, add a row to :data:`SCENARIOS` (and a knob to :class:`Scenario` if none fits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from .chemistry import Chemistry


@dataclass(frozen=True)
class Moment:
    """What a timed scenario's pack does at one instant (see :attr:`Scenario.timeline`)."""

    current: float
    #: (cell number, its voltage): the one cell the event is about.
    cell: Tuple[int, float]
    alarms: Tuple[str, ...] = ()
    charge_on: bool = True
    discharge_on: bool = True


@dataclass(frozen=True)
class Scenario:
    """What one scenario changes in the simulated pack (the defaults: a healthy pack)."""

    #: One line for ``--help``.
    description: str
    #: Pack current in amperes, fixed; ``None``: the healthy slow swing between charge
    #: (+22 A) and discharge (−18 A) over ten minutes.
    current: Optional[float] = None
    #: State of charge at start.
    start_soc: float = 0.62
    #: The state of charge stays at ``start_soc`` (the scenario is about one cell).
    hold_soc: bool = False
    #: (cell number, its voltage as a function of the seconds since start): the one cell the
    #: scenario drives; the others follow the model.
    driven_cell: Optional[Tuple[int, Callable[[float], float]]] = None
    #: Cell offsets spread evenly over this many volts, first cell highest; ``None``: each
    #: cell a random offset within ±8 mV.
    cell_spread_volts: Optional[float] = None
    #: (MOSFET, battery) temperatures in °C, fixed (both battery sensors alike); ``None``:
    #: the healthy ones (MOSFET warming with current, batteries about 22 °C).
    temperatures_celsius: Optional[Tuple[float, float]] = None
    #: Alarm bits the BMS reports (names of ``jk_serial.ALARM_BITS``).
    alarms: Tuple[str, ...] = ()
    #: The BMS has cut charging: charge MOSFET off, the current never positive.
    charge_cut: bool = False
    #: A protection event over time: (seconds since start, the pack's chemistry) → what
    #: the pack does then; it overrides ``current``, ``driven_cell``, ``alarms``, the cuts.
    timeline: Optional[Callable[[float, Chemistry], Moment]] = None


def _climbing_to_overvoltage(elapsed: float) -> float:
    return min(3.72, 3.55 + 0.01 * elapsed)


def _falling_to_undervoltage(elapsed: float) -> float:
    return max(2.40, 2.65 - 0.01 * elapsed)


#: protection-cycling: one cycle; the first trip comes 20 s after the start.
CYCLE_SECONDS, CHARGE_SECONDS, CYCLE_START = 180.0, 90.0, 70.0


def _protection_cycling(elapsed: float, chemistry: Chemistry) -> Moment:
    """A runner cell (05) climbs 210 mV in 90 s of charging until the BMS's over-voltage
    protection trips: charge MOSFET off for 90 s, the alarm bit for the first 30 s."""
    phase = (elapsed + CYCLE_START) % CYCLE_SECONDS
    top = chemistry.overvoltage
    if phase < CHARGE_SECONDS:
        return Moment(20.0, (5, top - 0.20 + 0.21 * phase / CHARGE_SECONDS))
    resting = phase - CHARGE_SECONDS
    return Moment(-2.0, (5, top - 0.20 + 0.05 * max(0.0, 1.0 - resting / 30.0)),
                  alarms=("cell_overvoltage",) if resting < 30.0 else (), charge_on=False)


#: fast-knee: normal discharge, the collapse, the BMS's delay, then its cut (seconds).
KNEE_START, KNEE_SECONDS, KNEE_DELAY = 30.0, 90.0, 5.0


def _fast_knee(elapsed: float, chemistry: Chemistry) -> Moment:
    """Cell 03 collapses from 600 mV above the under-voltage protection to 10 mV below it in
    90 s under a 40 A load; after its 5 s delay the BMS cuts the discharge (alarm bit for
    30 s) and the cell relaxes. The state of charge stays at a false 60 %."""
    floor = chemistry.undervoltage
    if elapsed < KNEE_START:
        return Moment(-40.0, (3, floor + 0.60))
    if elapsed < KNEE_START + KNEE_SECONDS:
        return Moment(-40.0, (3, floor + 0.60 - 0.61 * (elapsed - KNEE_START) / KNEE_SECONDS))
    if elapsed < KNEE_START + KNEE_SECONDS + KNEE_DELAY:  # the BMS's protection delay
        return Moment(-40.0, (3, floor - 0.01))
    cut = elapsed - KNEE_START - KNEE_SECONDS - KNEE_DELAY
    return Moment(0.0, (3, floor + 0.35), alarms=("cell_undervoltage",) if cut < 30.0 else (),
                  discharge_on=False)


SCENARIOS: Dict[str, Scenario] = {
    "normal": Scenario(
        "healthy 16S LiFePO4 pack, current slowly alternating between charge and discharge"),
    "cell-overvoltage": Scenario(
        "cell 05 climbs past 3.65 V while charging",
        current=15.0, start_soc=0.99, hold_soc=True, driven_cell=(5, _climbing_to_overvoltage)),
    "cell-undervoltage": Scenario(
        "cell 03 falls below 2.50 V while discharging",
        current=-20.0, start_soc=0.04, hold_soc=True, driven_cell=(3, _falling_to_undervoltage)),
    "imbalance": Scenario("cells spread by about 150 mV", cell_spread_volts=0.150),
    "cold-charge": Scenario(
        "battery sensors at about -5 °C while charging at 10 A",
        current=10.0, temperatures_celsius=(2.0, -5.0)),
    "alarms": Scenario(
        "BMS alarm bits cell_overvoltage and battery_undertemperature set, charge MOSFET off",
        alarms=("cell_overvoltage", "battery_undertemperature"), charge_cut=True),
    "protection-cycling": Scenario(
        "runner cell 05 trips the over-voltage protection every 3 minutes (first after 20 s): "
        "alarm bit 30 s, charge MOSFET off 90 s",
        start_soc=0.97, hold_soc=True, timeline=_protection_cycling),
    "fast-knee": Scenario(
        "cell 03 collapses to 10 mV under the under-voltage protection in 90 s at 40 A (from "
        "30 s) while the SOC says a false 60 %; the BMS then cuts the discharge",
        start_soc=0.60, hold_soc=True, timeline=_fast_knee),
    "draining": Scenario(
        "steady 60 A discharge from 20 %: 5 % in about 42 minutes", current=-60.0,
        start_soc=0.20),
}


def scenario_help() -> str:
    return "; ".join("%s: %s" % (name, row.description) for name, row in SCENARIOS.items())
