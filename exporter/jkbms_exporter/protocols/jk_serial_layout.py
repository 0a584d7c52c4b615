"""Register table of the JK "4E 57" serial protocol: tags, widths, scales, names, bit names.

Spec: ``shared/protocol/jk-rs485-4e57.md``; ground truth: ``shared/protocol/vectors/4e57.json``.
Data only; the framing is in :mod:`.jk_serial`, the value rules in :mod:`.jk_serial_quirks`,
registers ⇄ ``Reading`` in :mod:`.jk_serial_reading`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple, Union

from ..reading import COULOMBS_PER_AMPERE_HOUR


PROTOCOL_NAME = "jk-serial"

CELLS_TAG = 0x79
CURRENT_TAG = 0x84
PROTOCOL_VERSION_TAG = 0xC0
PASSWORD_TAG = 0xB2
#: Tags that only ever appear in write commands (restart, factory reset, upgrade, GPS power).
WRITE_ONLY_TAGS = frozenset(range(0xBB, 0xC0))

Raw = Union[int, bytes, Tuple[Tuple[int, int], ...]]


# --------------------------------------------------------------------------- register table


@dataclass(frozen=True)
class Register:
    """One row of the register table (spec §6)."""

    tag: int
    width: int
    name: str
    #: ``u`` unsigned, ``i`` signed two's complement, ``str`` fixed-width text,
    #: ``temp`` offset-coded temperature (§7.2), ``current`` (§7.1), ``secret`` (never kept).
    kind: str
    scale: float = 1.0
    #: Base unit after scaling; for settings it names the ``jkbms_setting_<unit>`` metric.
    unit: str = ""
    setting: bool = False


def _u(tag: int, width: int, name: str, scale: float = 1.0, unit: str = "") -> Register:
    return Register(tag, width, name, "u", scale, unit)


def _set(tag: int, name: str, unit: str, scale: float = 1.0, kind: str = "u") -> Register:
    return Register(tag, 2, name, kind, scale, unit, setting=True)


REGISTERS: Tuple[Register, ...] = (
    # 6.1 live data (0x79, the cell list, has its own length byte and is handled apart)
    Register(0x80, 2, "mosfet_temperature", "temp", unit="celsius"),
    Register(0x81, 2, "battery1_temperature", "temp", unit="celsius"),
    Register(0x82, 2, "battery2_temperature", "temp", unit="celsius"),
    _u(0x83, 2, "pack_voltage", 0.01, "volts"),
    Register(0x84, 2, "current", "current", unit="amperes"),
    _u(0x85, 1, "state_of_charge", 0.01, "ratio"),  # % → ratio
    _u(0x86, 1, "temperature_sensor_count"),
    _u(0x87, 2, "charge_cycles"),
    _u(0x89, 4, "cycle_capacity", COULOMBS_PER_AMPERE_HOUR, "coulombs"),  # Ah (§11: not a float)
    _u(0x8A, 2, "cell_count"),
    _u(0x8B, 2, "alarm_bitmask"),
    _u(0x8C, 2, "status_bitmask"),
    # 6.2 settings
    _set(0x8E, "pack_overvoltage_protection", "volts", 0.01),
    _set(0x8F, "pack_undervoltage_protection", "volts", 0.01),
    _set(0x90, "cell_overvoltage_protection", "volts", 0.001),
    _set(0x91, "cell_overvoltage_recovery", "volts", 0.001),
    _set(0x92, "cell_overvoltage_protection_delay", "seconds"),
    _set(0x93, "cell_undervoltage_protection", "volts", 0.001),
    _set(0x94, "cell_undervoltage_recovery", "volts", 0.001),
    _set(0x95, "cell_undervoltage_protection_delay", "seconds"),
    _set(0x96, "cell_voltage_difference_protection", "volts", 0.001),
    _set(0x97, "discharge_overcurrent_protection", "amperes"),
    _set(0x98, "discharge_overcurrent_protection_delay", "seconds"),
    _set(0x99, "charge_overcurrent_protection", "amperes"),
    _set(0x9A, "charge_overcurrent_protection_delay", "seconds"),
    _set(0x9B, "balance_start", "volts", 0.001),
    _set(0x9C, "balance_trigger_voltage_difference", "volts", 0.001),
    _u(0x9D, 1, "balancer_switch"),
    # 0x9E–0xA4 are plain °C; 0xA5–0xA8 signed (spec §6.2, `FF EC` = −20 in vector esphome_14s_h6)
    _set(0x9E, "mosfet_overtemperature_protection", "celsius"),
    _set(0x9F, "mosfet_overtemperature_recovery", "celsius"),
    _set(0xA0, "battery_box_overtemperature_protection", "celsius"),
    _set(0xA1, "battery_box_overtemperature_recovery", "celsius"),
    _set(0xA2, "battery_temperature_difference_protection", "celsius"),
    _set(0xA3, "charge_overtemperature_protection", "celsius"),
    _set(0xA4, "discharge_overtemperature_protection", "celsius"),
    _set(0xA5, "charge_undertemperature_protection", "celsius", kind="i"),
    _set(0xA6, "charge_undertemperature_recovery", "celsius", kind="i"),
    _set(0xA7, "discharge_undertemperature_protection", "celsius", kind="i"),
    _set(0xA8, "discharge_undertemperature_recovery", "celsius", kind="i"),
    _u(0xA9, 1, "cell_count_setting"),
    _u(0xAA, 4, "nominal_capacity", COULOMBS_PER_AMPERE_HOUR, "coulombs"),
    _u(0xAB, 1, "charge_switch"),
    _u(0xAC, 1, "discharge_switch"),
    _set(0xAD, "current_calibration", "amperes", 0.001),
    _u(0xAE, 1, "board_address"),
    _u(0xAF, 1, "battery_type"),
    _set(0xB0, "sleep_wait", "seconds"),
    Register(0xB1, 1, "low_capacity_alarm", "u", 0.01, "ratio", setting=True),
    Register(0xB2, 10, "password", "secret"),  # parsed past, never kept (spec §6.2, §10)
    _u(0xB3, 1, "dedicated_charger_switch"),
    # 6.3 identification
    Register(0xB4, 8, "device_id", "str"),
    Register(0xB5, 4, "manufacture_date", "str"),
    # minutes, not seconds (spec §6.3: 0x0000E200 = 57856 min in vector esphome_14s_h6)
    _u(0xB6, 4, "runtime", 60.0, "seconds"),
    Register(0xB7, 15, "software_version", "str"),
    _u(0xB8, 1, "start_current_calibration"),
    _u(0xB9, 4, "actual_capacity", COULOMBS_PER_AMPERE_HOUR, "coulombs"),
    Register(0xBA, 24, "manufacturer_id", "str"),  # NULs inside are data (decode_text)
    _u(0xC0, 1, "protocol_version"),  # selects the 0x84 encoding (decode_current)
)

REGISTER_BY_TAG: Dict[int, Register] = {row.tag: row for row in REGISTERS}
REGISTER_BY_NAME: Dict[str, Register] = {row.name: row for row in REGISTERS}
SETTINGS: Tuple[Register, ...] = tuple(row for row in REGISTERS if row.setting)

#: 0x8B bit → alarm name (spec §8.1; bit 13 is 309_B per the vendor, not ESPHome's label).
ALARM_BITS: Tuple[str, ...] = (
    "low_capacity",
    "mosfet_overtemperature",
    "charge_overvoltage",
    "discharge_undervoltage",
    "battery_overtemperature",
    "charge_overcurrent",
    "discharge_overcurrent",
    "cell_voltage_difference",
    "battery_box_overtemperature",
    "battery_undertemperature",
    "cell_overvoltage",
    "cell_undervoltage",
    "protection_309_a",
    "protection_309_b",
)

#: 0x8C bits (spec §8.2).
STATUS_CHARGE_MOSFET = 1 << 0
STATUS_DISCHARGE_MOSFET = 1 << 1
STATUS_BALANCING = 1 << 2

#: 0xAF values.
BATTERY_TYPES = {0: "lifepo4", 1: "ternary", 2: "lto"}

#: Temperature registers → ``sensor`` label values.
TEMPERATURE_SENSORS = ((0x80, "mosfet"), (0x81, "battery1"), (0x82, "battery2"))

#: Registers a read-all reply must carry to make a reading (vendor: 0x79…0xB9 mandatory;
#: the oldest firmware still sends everything up to 0xB7).
REQUIRED_TAGS = (CELLS_TAG, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x87, 0x89, 0x8B, 0x8C)
