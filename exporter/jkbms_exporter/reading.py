"""Protocol-independent, typed readings of one BMS.

Every protocol codec (4E57 serial, and later JK02 frames and JK-PB Modbus) produces a
:class:`Reading`; the collector, the CLI tables and the JSON output consume nothing else.
Values are in base units (volts, amperes, degrees Celsius, seconds, coulombs, ratios).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Mapping, Optional, Tuple

COULOMBS_PER_AMPERE_HOUR = 3600.0

#: ``Reading.extra`` key: how old the values were when read, for packs fed by a stream or
#: by listening (BLE, a JK-PB bus owned by another master); absent for polled packs.
READING_AGE_KEY = "reading_age_seconds"
#: ``Reading.extra`` key: names of Reading fields that hold placeholders because this
#: protocol does not report them (JK04); they are left out of the metrics.
NOT_REPORTED_KEY = "not_reported"

#: Setting units a protocol may use; each becomes a ``jkbms_setting_<unit>`` metric.
SETTING_UNITS = ("volts", "amperes", "celsius", "seconds", "ratio")


@dataclass(frozen=True)
class Setting:
    """One protection/configuration setting of the BMS, in base units."""

    name: str
    unit: str
    value: float


@dataclass(frozen=True)
class DeviceInfo:
    """Identification strings of a BMS (never contains the parameter password)."""

    protocol: str
    protocol_version: str = ""
    model: str = ""
    hardware_version: str = ""
    software_version: str = ""
    device_id: str = ""
    manufacture_date: str = ""
    battery_type: str = ""
    serial_number: str = ""


@dataclass(frozen=True)
class Reading:
    """Everything one read of a BMS told us.

    ``None`` means "this BMS/firmware does not report it" (the metric is then omitted),
    never "zero".
    """

    cell_voltages_volts: Tuple[float, ...]
    pack_voltage_volts: float
    #: Positive while charging, negative while discharging.
    current_amperes: float
    state_of_charge_ratio: float
    #: Sensor name (``mosfet``, ``battery1`` …) → °C, in the BMS's own order.
    temperatures_celsius: Mapping[str, float]
    charge_cycles: int
    cycle_capacity_coulombs: float
    runtime_seconds: Optional[float]
    nominal_capacity_coulombs: Optional[float]
    actual_capacity_coulombs: Optional[float]
    charge_mosfet_on: bool
    discharge_mosfet_on: bool
    balancing: bool
    #: Switch name (``charge``, ``discharge``, ``balancer`` …) → enabled in the settings.
    switches_enabled: Mapping[str, bool]
    alarm_bitmask: int
    #: Alarm name → active, for every alarm bit the protocol names (always all present).
    alarms: Mapping[str, bool]
    status_bitmask: int
    settings: Tuple[Setting, ...]
    device: DeviceInfo
    #: Protocol details useful for troubleshooting but not exported as metrics.
    extra: Mapping[str, object] = field(default_factory=dict)
    # --- quantities only some protocols report (JK02 frames, JK-PB); None elsewhere
    #: Resistance of each cell's balance lead (sense wire) as the BMS measures it, same order
    #: as the voltages; not the cells' internal resistance.
    cell_resistances_ohms: Optional[Tuple[float, ...]] = None
    #: Balancer current; positive while charging a cell, negative while discharging one.
    balance_current_amperes: Optional[float] = None
    remaining_capacity_coulombs: Optional[float] = None
    state_of_health_ratio: Optional[float] = None

    @property
    def cells(self) -> int:
        return len(self.cell_voltages_volts)

    @property
    def power_watts(self) -> float:
        return self.pack_voltage_volts * self.current_amperes

    @property
    def cell_voltage_min_volts(self) -> float:
        return min(self.cell_voltages_volts) if self.cell_voltages_volts else 0.0

    @property
    def cell_voltage_max_volts(self) -> float:
        return max(self.cell_voltages_volts) if self.cell_voltages_volts else 0.0

    @property
    def cell_voltage_spread_volts(self) -> float:
        return self.cell_voltage_max_volts - self.cell_voltage_min_volts

    def active_alarms(self) -> Tuple[str, ...]:
        return tuple(name for name, active in self.alarms.items() if active)

    def setting(self, name: str) -> Optional[Setting]:
        for item in self.settings:
            if item.name == name:
                return item
        return None


_READING_FIELDS = frozenset(item.name for item in fields(Reading))
_READING_DEFAULTS = {item.name: item.default for item in fields(Reading)
                     if item.default is not MISSING}


def reading_from_fields(**values: Any) -> Reading:
    """``Reading(**values)``, built for a decoder's hot path: a frozen dataclass's
    ``__init__`` sets each of its two dozen fields through ``object.__setattr__``, this
    fills the instance's dict at once (the same object: equality, hashing, ``replace``
    and ``repr`` see no difference). Every field without a default must be given, and
    ``extra``; an unknown or missing name is a ``TypeError`` as for the constructor."""
    reading = object.__new__(Reading)
    state = reading.__dict__
    state.update(_READING_DEFAULTS)
    state.update(values)
    if state.keys() != _READING_FIELDS:
        unknown = sorted(set(values) - _READING_FIELDS)
        missing = sorted(_READING_FIELDS - set(state))
        raise TypeError("Reading fields: unknown %s, missing %s" % (unknown, missing))
    return reading


def cell_label(index: int) -> str:
    """Label value for 1-based cell ``index``: zero-padded so cells sort in Grafana."""
    return "%02d" % index
