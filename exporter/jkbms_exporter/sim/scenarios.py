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


def _climbing_to_overvoltage(elapsed: float) -> float:
    return min(3.72, 3.55 + 0.01 * elapsed)


def _falling_to_undervoltage(elapsed: float) -> float:
    return max(2.40, 2.65 - 0.01 * elapsed)


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
}


def scenario_help() -> str:
    return "; ".join("%s: %s" % (name, row.description) for name, row in SCENARIOS.items())
