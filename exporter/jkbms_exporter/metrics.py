"""The exporter's public interface: metric names, help texts, labels — and how a
:class:`~jkbms_exporter.reading.Reading` maps onto them.

The same table drives the Prometheus exposition (``collector``) and the ``--json``
output of the CLI (``report``), so the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from operator import itemgetter, ne
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Sequence, Tuple

from .energy import SKIP_REASONS, EnergyTotals
from .reading import (
    NOT_REPORTED_KEY, READING_AGE_KEY, SETTING_UNITS, Reading, Setting, cell_label,
)

PREFIX = "jkbms_"


@dataclass(frozen=True)
class MetricSpec:
    #: Name without the ``jkbms_`` prefix; counters include ``_total``.
    name: str
    kind: str  # "gauge" or "counter"
    help: str
    labels: Tuple[str, ...] = ()

    @property
    def full_name(self) -> str:
        return PREFIX + self.name


def _g(name: str, help: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "gauge", help, labels)


def _c(name: str, help: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "counter", help, labels)


DEVICE_INFO_LABELS = (
    "port",
    "protocol",
    "protocol_version",
    "model",
    "hardware_version",
    "software_version",
    "device_id",
    "manufacture_date",
    "battery_type",
    "serial_number",
)

# --- exporter/health metrics (present for every pack, whether the read worked or not)
UP = _g("up", "1 if this scrape's read of the pack succeeded, else 0.")
SCRAPE_DURATION = _g("scrape_duration_seconds", "Time spent reading this pack during the scrape.")
LAST_SUCCESS = _g(
    "last_success_timestamp_seconds",
    "Unix time of the last successful read of this pack (values of BLE packs and of a "
    "listen-only JK-PB bus may be older by up to their max_age: see "
    "jkbms_reading_age_seconds).",
)
READ_ERRORS = _c(
    "read_errors_total",
    "Failed reads of this pack by reason (timeout, checksum, malformed, io).",
    "reason",
)
CHEMISTRY_INFO = _g(
    "chemistry_info",
    "Cell chemistry configured for this pack (lifepo4, nmc, lto; default lifepo4); the alert "
    "rules use its protection levels where the BMS reports no setting. Always 1.",
    "chemistry",
)
BUILD_INFO = _g("exporter_build_info", "Version of jkbms-exporter and of Python; always 1.",
                "version", "python_version")

# --- what a reading carries
CELLS = _g("cells", "Number of cells in series reported by the BMS.")
CELL_VOLTAGE = _g("cell_voltage_volts", "Voltage of each cell.", "cell")
PACK_VOLTAGE = _g("pack_voltage_volts", "Total pack voltage.")
CURRENT = _g("current_amperes", "Pack current; positive while charging, negative while discharging.")
SOC = _g("state_of_charge_ratio", "State of charge as reported by the BMS (0-1).")
TEMPERATURE = _g(
    "temperature_celsius",
    "Temperatures: mosfet (power tube) and battery sensors battery1, battery2, ...",
    "sensor",
)
CYCLES = _c("charge_cycles_total", "Charge cycles counted by the BMS.")
CYCLE_CAPACITY = _c(
    "cycle_capacity_coulombs_total", "Total charge throughput counted by the BMS (Ah x 3600)."
)
RUNTIME = _c("runtime_seconds_total", "BMS working time since its factory reset.")
NOMINAL_CAPACITY = _g("nominal_capacity_coulombs", "Configured nominal capacity (Ah x 3600).")
ACTUAL_CAPACITY = _g(
    "actual_capacity_coulombs", "Actual capacity measured by the BMS (Ah x 3600; 0 if not measured)."
)
MOSFET_ON = _g("mosfet_on", "1 if the charge / discharge MOSFET is switched on now.", "mosfet")
BALANCING = _g("balancing", "1 while the balancer is balancing.")
SWITCH_ENABLED = _g(
    "switch_enabled",
    "1 if the switch is enabled in the BMS settings (charge, discharge, balancer, ...).",
    "switch",
)
ALARM = _g("alarm", "1 while the named BMS alarm bit is set.", "alarm")
ALARM_BITMASK = _g("alarm_bitmask", "Raw alarm/warning bit field as sent by the BMS.")
STATUS_BITMASK = _g("status_bitmask", "Raw status bit field as sent by the BMS.")
SETTINGS = {
    unit: _g("setting_%s" % unit, "BMS protection settings measured in %s." % unit, "setting")
    for unit in SETTING_UNITS
}
BALANCE_WIRE_RESISTANCE = _g(
    "balance_wire_resistance_ohms",
    "Resistance of each cell's balance lead (sense wire and its connections) as the BMS "
    "measures it, typically 0.05-0.2 ohm; not the cell's internal resistance.",
    "cell",
)
BALANCE_CURRENT = _g(
    "balance_current_amperes", "Balancer current; positive while charging a cell."
)
REMAINING_CAPACITY = _g("remaining_capacity_coulombs", "Remaining capacity (Ah x 3600).")
STATE_OF_HEALTH = _g("state_of_health_ratio", "State of health reported by the BMS (0-1).")
READING_AGE = _g(
    "reading_age_seconds",
    "How old this pack's values were when read: only for packs fed by a stream (BLE) or "
    "heard on a bus another master polls, never older than their max_age (default 30 s). "
    "Packs polled on every scrape have no such series.",
)
DEVICE_INFO = _g("device_info", "Identification of the BMS; always 1.", *DEVICE_INFO_LABELS)

# --- integrated by the exporter (see energy.py): present for every pack, from 0 at start
_SINCE_START = (" Starts at 0 when the exporter starts (nothing is stored): use increase() "
                "or rate().")
CHARGE_ENERGY = _c("charge_energy_joules_total",
                   "Energy that went into the pack while charging (integral of V x I over "
                   "consecutive good readings)." + _SINCE_START)
DISCHARGE_ENERGY = _c("discharge_energy_joules_total",
                      "Energy taken from the pack while discharging (integral of V x |I| over "
                      "consecutive good readings)." + _SINCE_START)
CHARGE_COULOMBS = _c("charge_coulombs_total",
                     "Charge that went into the pack (integral of I over consecutive good "
                     "readings; Ah x 3600)." + _SINCE_START)
DISCHARGE_COULOMBS = _c("discharge_coulombs_total",
                        "Charge taken from the pack (integral of |I| over consecutive good "
                        "readings; Ah x 3600)." + _SINCE_START)
ENERGY_SKIPPED = _c(
    "energy_skipped_seconds_total",
    "Time between readings the energy and charge counters did not integrate, by reason: "
    "gap (readings further apart than energy_max_gap), failed_read (a read failed in "
    "between), implausible (current beyond twice the BMS's over-current setting, or pack "
    "voltage outside cells x 1.5-4.5 V)." + _SINCE_START,
    "reason",
)

HEALTH_SPECS = (UP, SCRAPE_DURATION, LAST_SUCCESS, READ_ERRORS, CHEMISTRY_INFO)
ENERGY_SPECS = (CHARGE_ENERGY, DISCHARGE_ENERGY, CHARGE_COULOMBS, DISCHARGE_COULOMBS,
                ENERGY_SKIPPED)
READING_SPECS = (
    CELLS,
    CELL_VOLTAGE,
    PACK_VOLTAGE,
    CURRENT,
    SOC,
    TEMPERATURE,
    CYCLES,
    CYCLE_CAPACITY,
    RUNTIME,
    NOMINAL_CAPACITY,
    ACTUAL_CAPACITY,
    MOSFET_ON,
    BALANCING,
    SWITCH_ENABLED,
    ALARM,
    ALARM_BITMASK,
    STATUS_BITMASK,
    *SETTINGS.values(),
    BALANCE_WIRE_RESISTANCE,
    BALANCE_CURRENT,
    REMAINING_CAPACITY,
    STATE_OF_HEALTH,
    READING_AGE,
    DEVICE_INFO,
)
ALL_SPECS = HEALTH_SPECS + ENERGY_SPECS + READING_SPECS + (BUILD_INFO,)

Sample = Tuple[MetricSpec, Tuple[str, ...], float]


#: Reading fields → the metrics left out when a protocol marks the field not reported.
_FIELD_SPECS = {
    "current_amperes": (CURRENT,),
    "state_of_charge_ratio": (SOC,),
    "charge_cycles": (CYCLES,),
    "cycle_capacity_coulombs": (CYCLE_CAPACITY,),
    "charge_mosfet_on": (MOSFET_ON,),
    "discharge_mosfet_on": (MOSFET_ON,),
    "alarm_bitmask": (ALARM_BITMASK, ALARM),
    "temperatures_celsius": (TEMPERATURE,),
}


#: Samples of one spec, in order: the spec, each sample's label values, their values.
Group = Tuple[MetricSpec, Sequence[Tuple[str, ...]], List[Any]]
NO_LABELS: Tuple[Tuple[str, ...]] = ((),)


def reading_samples(reading: Reading, port: str = "") -> Iterator[Sample]:
    """Every sample a reading yields, labels in :attr:`MetricSpec.labels` order, the
    samples of one spec together.

    A value the BMS does not report is left out, never exported as 0 or NaN."""
    return flatten(reading_groups(reading, port, by_spec=False))


def flatten(groups: Iterable[Group]) -> Iterator[Sample]:
    """The samples of ``groups``, one by one, in order."""
    return ((spec, labels, value) for spec, labels_of, values in groups
            for labels, value in zip(labels_of, values))


def reading_groups(reading: Reading, port: str = "", by_spec: bool = True) -> List[Group]:
    """The samples of :func:`reading_samples` as runs of one spec each (what the
    exposition renders: no work per sample); ``by_spec``: one run per spec (the settings
    of each unit together), else in :func:`reading_samples`' order."""
    groups = _all_groups(reading, port, by_spec)
    skipped = {spec for name in reading.extra.get(NOT_REPORTED_KEY, ())  # type: ignore[union-attr]
               for spec in _FIELD_SPECS.get(str(name), ())}
    if skipped:  # JK04 only
        groups = [group for group in groups if group[0] not in skipped]
    values = list(chain.from_iterable(map(_VALUES, groups)))
    if any(map(ne, values, values)):  # `value != value` only for NaN
        groups = [_without_nan(group) for group in groups]
        groups = [group for group in groups if group[2]]
    age = reading.extra.get(READING_AGE_KEY)
    if age is not None:
        groups.append((READING_AGE, NO_LABELS, [float(age)]))  # type: ignore[arg-type]
    return groups


def _without_nan(group: Group) -> Group:
    spec, labels_of, values = group
    kept = [(labels, value) for labels, value in zip(labels_of, values) if value == value]
    return spec, [labels for labels, _ in kept], [value for _, value in kept]


def energy_samples(totals: EnergyTotals) -> Iterator[Sample]:
    """The counters of :class:`~jkbms_exporter.energy.EnergyIntegrator` (every skip reason)."""
    return flatten(energy_groups(totals))


_SKIP_LABELS = tuple((reason,) for reason in SKIP_REASONS)


def energy_groups(totals: EnergyTotals) -> List[Group]:
    """:func:`energy_samples` as runs of one spec each."""
    skipped = totals.skipped_seconds
    return [
        (CHARGE_ENERGY, NO_LABELS, [totals.charge_joules]),
        (DISCHARGE_ENERGY, NO_LABELS, [totals.discharge_joules]),
        (CHARGE_COULOMBS, NO_LABELS, [totals.charge_coulombs]),
        (DISCHARGE_COULOMBS, NO_LABELS, [totals.discharge_coulombs]),
        (ENERGY_SKIPPED, _SKIP_LABELS, [skipped[reason] for reason in SKIP_REASONS]),
    ]


#: ``(label value,)`` of each cell (``01``, ``02`` …), for the cell counts a BMS has.
_CELL_LABELS = tuple((cell_label(index),) for index in range(1, 129))
#: Label names in a mapping's order (``alarms``, ``temperatures_celsius`` …) → the
#: ``(value,)`` label tuple of each. Bounded: cleared when full.
_LABELS_OF_KEYS: Dict[Tuple[str, ...], Tuple[Tuple[str], ...]] = {}
#: id of a settings tuple → (the tuple, its runs, its groups by unit): decoders hand out the same tuple
#: while a BMS's settings stay the same. Holding the tuple keeps its id from being reused.
_SETTINGS_GROUPS: Dict[int, Tuple[Tuple[Setting, ...], Tuple[Group, ...], Tuple[Group, ...]]] = {}
_CACHE_LIMIT = 256
_VALUES = itemgetter(2)
_MOSFET_LABELS = (("charge",), ("discharge",))


def _keyed(spec: MetricSpec, mapping: Mapping[str, object]) -> Group:
    """``spec`` with the label ``(key,)`` and value of each item of ``mapping``, in order."""
    keys = tuple(mapping)
    labels = _LABELS_OF_KEYS.get(keys)
    if labels is None:
        if len(_LABELS_OF_KEYS) >= _CACHE_LIMIT:
            _LABELS_OF_KEYS.clear()
        labels = _LABELS_OF_KEYS[keys] = tuple((key,) for key in keys)
    return spec, labels, list(mapping.values())


def _setting_groups(settings: Tuple[Setting, ...], by_unit: bool) -> Tuple[Group, ...]:
    """The settings as runs of one unit (each unit is its own spec) in the decoder's
    order, or (``by_unit``) as one group per unit, units in order of first appearance."""
    entry = _SETTINGS_GROUPS.get(id(settings))
    if entry is None or entry[0] is not settings:
        runs: List[Group] = []
        units: Dict[MetricSpec, Tuple[List[Tuple[str]], List[Any]]] = {}
        for setting in settings:
            spec = SETTINGS[setting.unit]
            if not runs or runs[-1][0] is not spec:
                runs.append((spec, [], []))
            runs[-1][1].append((setting.name,))  # type: ignore[union-attr]
            runs[-1][2].append(setting.value)
            labels, values = units.setdefault(spec, ([], []))
            labels.append((setting.name,))
            values.append(setting.value)
        entry = (settings,
                 tuple((spec, tuple(labels), values) for spec, labels, values in runs),
                 tuple((spec, tuple(labels), values) for spec, (labels, values) in units.items()))
        if isinstance(settings, tuple):  # immutable: its groups cannot change
            if len(_SETTINGS_GROUPS) >= _CACHE_LIMIT:
                _SETTINGS_GROUPS.clear()
            _SETTINGS_GROUPS[id(settings)] = entry
    return entry[2] if by_unit else entry[1]


def _cell_labels(count: int) -> Tuple[Tuple[str], ...]:
    if count <= len(_CELL_LABELS):
        return _CELL_LABELS[:count]
    return tuple((cell_label(index),) for index in range(1, count + 1))


def _all_groups(reading: Reading, port: str, by_unit: bool) -> List[Group]:
    """The groups of :func:`reading_groups`, NaN and not-reported values included."""
    volts = reading.cell_voltages_volts
    groups: List[Group] = [(CELLS, NO_LABELS, [reading.cells])]
    if volts:
        groups.append((CELL_VOLTAGE, _cell_labels(len(volts)), list(volts)))
    groups += [
        (PACK_VOLTAGE, NO_LABELS, [reading.pack_voltage_volts]),
        (CURRENT, NO_LABELS, [reading.current_amperes]),
        (SOC, NO_LABELS, [reading.state_of_charge_ratio]),
    ]
    if reading.temperatures_celsius:
        groups.append(_keyed(TEMPERATURE, reading.temperatures_celsius))
    groups += (
        (CYCLES, NO_LABELS, [reading.charge_cycles]),
        (CYCLE_CAPACITY, NO_LABELS, [reading.cycle_capacity_coulombs]),
    )
    for spec, value in (  # what only some protocols or firmware report
        (RUNTIME, reading.runtime_seconds),
        (NOMINAL_CAPACITY, reading.nominal_capacity_coulombs),
        (ACTUAL_CAPACITY, reading.actual_capacity_coulombs),
        (BALANCE_CURRENT, reading.balance_current_amperes),
        (REMAINING_CAPACITY, reading.remaining_capacity_coulombs),
        (STATE_OF_HEALTH, reading.state_of_health_ratio),
    ):
        if value is not None:
            groups.append((spec, NO_LABELS, [value]))
    groups += (
        (MOSFET_ON, _MOSFET_LABELS, [reading.charge_mosfet_on, reading.discharge_mosfet_on]),
        (BALANCING, NO_LABELS, [reading.balancing]),
    )
    if reading.switches_enabled:
        groups.append(_keyed(SWITCH_ENABLED, reading.switches_enabled))
    if reading.alarms:
        groups.append(_keyed(ALARM, reading.alarms))
    groups += (
        (ALARM_BITMASK, NO_LABELS, [reading.alarm_bitmask]),
        (STATUS_BITMASK, NO_LABELS, [reading.status_bitmask]),
    )
    groups += _setting_groups(reading.settings, by_unit)
    ohms = reading.cell_resistances_ohms
    if ohms:
        groups.append((BALANCE_WIRE_RESISTANCE, _cell_labels(len(ohms)), list(ohms)))
    device = reading.device
    groups.append((DEVICE_INFO, ((
        port,
        device.protocol,
        device.protocol_version,
        device.model,
        device.hardware_version,
        device.software_version,
        device.device_id,
        device.manufacture_date,
        device.battery_type,
        device.serial_number,
    ),), [1]))
    return groups


def reading_to_json(reading: Reading, port: str = "") -> Mapping[str, object]:
    """The ``--json`` form: metric names without ``jkbms_``, the same units.

    Unlabelled values are plain numbers, ``cell_voltage_volts`` is a list (index 0 =
    cell 1), ``device_info`` an object of its labels, anything else an object keyed by
    its label value.
    """
    out: dict = {}
    for spec, labels, value in reading_samples(reading, port):
        number = value if isinstance(value, float) else int(value)
        if spec is DEVICE_INFO:
            out[spec.name] = dict(zip(spec.labels, labels))
        elif spec in (CELL_VOLTAGE, BALANCE_WIRE_RESISTANCE):
            out.setdefault(spec.name, []).append(number)
        elif spec.labels:
            out.setdefault(spec.name, {})[labels[0]] = number
        else:
            out[spec.name] = number
    return out


def active_alarm_names(reading: Reading) -> List[str]:
    return list(reading.active_alarms())
