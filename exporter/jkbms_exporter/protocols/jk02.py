"""Codec for the JK02 / JK04 "55 AA EB 90" records of JK boards — no I/O here.

Spec: ``shared/protocol/jk-02-frames.md``; ground truth: ``shared/protocol/vectors/jk02.json``
(and the 55AA payloads inside ``vectors/pb-modbus.json``).

Frame: ``55 AA EB 90 | type | counter | payload … | sum8`` — 300 bytes, little-endian,
byte 299 = (sum of bytes 0…298) & 0xFF. Some BLE modules deliver 320 bytes; the checksum
stays at 299 and the tail is ignored. Frame types: 01 settings, 02 cell info, 03 device
info, 05 logbook. The frame says nothing about its layout generation (JK02_24S, JK02_32S,
JK04): that comes from the device-info frame (:func:`generation_from_device_info`) or the
configuration.

Decoding is table-driven: :data:`CELL_INFO_FIELDS`, :data:`SETTINGS_FIELDS` and
:data:`DEVICE_INFO_FIELDS` hold one row per field for each generation. A decoded frame is a
:class:`DecodedFrame` (values in base units, keyed by row name); :func:`reading_from_frames`
combines the latest cell-info, settings and device-info frames into one
:class:`~jkbms_exporter.reading.Reading`. Values with no ``Reading`` field go to
``Reading.extra`` under their row name, in the row's unit. Passcode fields are never
decoded, stored or encoded.

The encoders (:func:`encode_cell_info`, :func:`encode_settings`,
:func:`encode_device_info`) build the frames a BMS in the state of a ``Reading`` would send;
the JK-PB bus simulator uses them. The only command frames this module builds are the
three read commands (0x96, 0x97, 0xA1): it never writes to a BMS.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..errors import (
    BadStartError,
    ChecksumError,
    FrameError,
    LengthMismatchError,
    TruncatedFieldError,
)
from ..reading import COULOMBS_PER_AMPERE_HOUR, NOT_REPORTED_KEY, DeviceInfo, Reading, Setting

PROTOCOL_NAME = "jk02"

HEADER = b"\x55\xAA\xEB\x90"
FRAME_SIZE = 300
#: Some BLE modules pad frames to 320 bytes (spec §2, §9 item 7).
PADDED_FRAME_SIZE = 320
CHECKSUM_OFFSET = 299
TYPE_OFFSET = 4
COUNTER_OFFSET = 5

FRAME_SETTINGS = 0x01
FRAME_CELL_INFO = 0x02
FRAME_DEVICE_INFO = 0x03
FRAME_LOGBOOK = 0x05
FRAME_TYPE_NAMES = {
    FRAME_SETTINGS: "settings",
    FRAME_CELL_INFO: "cell_info",
    FRAME_DEVICE_INFO: "device_info",
    FRAME_LOGBOOK: "logbook",
}

JK02_24S = "JK02_24S"
JK02_32S = "JK02_32S"
JK04 = "JK04"
GENERATIONS = (JK02_24S, JK02_32S, JK04)
#: Cell slots of a cell-info frame (spec §3, §7).
CELL_SLOTS = {JK02_24S: 24, JK02_32S: 32, JK04: 24}

MAH = COULOMBS_PER_AMPERE_HOUR / 1000.0  # mAh → coulombs

# BLE command frames (spec §2 "BLE transport"): only the three read commands exist here.
COMMAND_HEADER = b"\xAA\x55\x90\xEB"
COMMAND_SIZE = 20
COMMAND_CELL_INFO = 0x96  # settings frame, then cell-info frames stream
COMMAND_DEVICE_INFO = 0x97
COMMAND_LOGBOOK = 0xA1
READ_COMMANDS = frozenset((COMMAND_CELL_INFO, COMMAND_DEVICE_INFO, COMMAND_LOGBOOK))


class UnknownFrameTypeError(FrameError):
    """Byte 4 of a 55AA frame is not a frame type this codec knows."""

    def __init__(self, frame_type: int) -> None:
        super().__init__("unknown 55AA frame type 0x%02X" % frame_type, TYPE_OFFSET)
        self.frame_type = frame_type


class UnknownGenerationError(FrameError):
    """The frame layout generation cannot be told (configure it explicitly)."""


class CellMaskError(FrameError):
    """The enabled-cells bitmask names no cell, or cells the frame has no slot for."""


class MissingFrameError(FrameError):
    """A reading was asked for before a cell-info frame arrived."""


# --------------------------------------------------------------------------- field tables


@dataclass(frozen=True)
class Field:
    """One row of a frame table: where a field is and how to read it."""

    offset: int
    #: Bytes per element.
    width: int
    name: str
    #: ``u`` unsigned, ``i`` signed two's complement, ``f`` IEEE-754 float32,
    #: ``str`` NUL-terminated ASCII, ``secret`` (passcodes: never decoded or encoded).
    kind: str = "u"
    scale: float = 1.0
    #: Base unit of the decoded value; for settings it names the ``jkbms_setting_<unit>``.
    unit: str = ""
    #: Number of consecutive elements (cell arrays); values are tuples when > 1.
    count: int = 1
    #: True: becomes a :class:`~jkbms_exporter.reading.Setting` of this name and unit.
    setting: bool = False

    @property
    def end(self) -> int:
        return self.offset + self.width * self.count


#: Marker for "one element per cell slot of the generation".
_SLOTS = -1

_Row = Tuple[Optional[int], Optional[int], int, str, str, float, str, int]


def _r(s24: Optional[int], s32: Optional[int], width: int, name: str, kind: str = "u",
       scale: float = 1.0, unit: str = "", count: int = 1) -> _Row:
    return (s24, s32, width, name, kind, scale, unit, count)


def _layout(rows: Sequence[_Row], column: int, slots: int) -> Tuple[Field, ...]:
    """Pick the 24S (column 0) or 32S (column 1) offsets of a two-column table."""
    fields = []
    for row in rows:
        offset = row[column]
        if offset is None:
            continue
        s24, s32, width, name, kind, scale, unit, count = row
        fields.append(Field(offset, width, name, kind, scale, unit, slots if count == _SLOTS else count))
    return tuple(fields)


# Spec §3, both columns as in the spec table (s24, s32).
_CELL_INFO_ROWS: Tuple[_Row, ...] = (
    _r(6, 6, 2, "cell_voltages", scale=0.001, unit="volts", count=_SLOTS),
    _r(54, 70, 4, "enabled_cells_bitmask"),
    _r(58, 74, 2, "average_cell_voltage", scale=0.001, unit="volts"),
    _r(60, 76, 2, "cell_voltage_difference", scale=0.001, unit="volts"),
    _r(62, 78, 1, "highest_cell_index"),  # 0-based, see cell_number()
    _r(63, 79, 1, "lowest_cell_index"),
    _r(64, 80, 2, "cell_resistances", scale=0.001, unit="ohms", count=_SLOTS),
    _r(None, 144, 2, "mosfet_temperature", "i", 0.1, "celsius"),
    _r(114, 146, 4, "wire_resistance_warning_bitmask"),
    _r(118, 150, 4, "pack_voltage", scale=0.001, unit="volts"),
    _r(122, 154, 4, "power_magnitude", scale=0.001, unit="watts"),  # unsigned, §9 item 2
    _r(126, 158, 4, "current", "i", 0.001, "amperes"),
    _r(130, 162, 2, "battery1_temperature", "i", 0.1, "celsius"),
    _r(132, 164, 2, "battery2_temperature", "i", 0.1, "celsius"),
    _r(134, None, 2, "mosfet_temperature", "i", 0.1, "celsius"),
    _r(136, None, 2, "alarm_bitmask"),  # 24S: bits 0–15 only
    _r(None, 166, 4, "alarm_bitmask"),
    _r(138, 170, 2, "balance_current", "i", 0.001, "amperes"),
    _r(140, 172, 1, "balancer_action"),  # 0 off, 1 charging a cell, 2 discharging one
    _r(141, 173, 1, "state_of_charge", scale=0.01, unit="ratio"),
    # spec: u32, vendor map (0x12A8 SOCCapRemain): I32 — we follow the vendor
    _r(142, 174, 4, "remaining_capacity", "i", MAH, "coulombs"),
    _r(146, 178, 4, "nominal_capacity", scale=MAH, unit="coulombs"),
    _r(150, 182, 4, "charge_cycles"),
    _r(154, 186, 4, "cycle_capacity", scale=MAH, unit="coulombs"),
    _r(158, 190, 1, "state_of_health", scale=0.01, unit="ratio"),
    _r(159, 191, 1, "precharging"),
    _r(160, 192, 2, "user_alarm"),
    _r(162, 194, 4, "runtime", unit="seconds"),
    _r(166, 198, 1, "charge_mosfet"),
    _r(167, 199, 1, "discharge_mosfet"),
    # Only verified on 32S / JK-PB (the 24S bytes at these places are not flags).
    _r(None, 200, 2, "user_alarm_2"),  # vendor UserAlarm2; ESPHome reads two flags here
    _r(None, 202, 2, "discharge_overcurrent_release_countdown", unit="seconds"),
    _r(None, 204, 2, "discharge_short_circuit_release_countdown", unit="seconds"),
    _r(None, 206, 2, "charge_overcurrent_release_countdown", unit="seconds"),
    _r(None, 208, 2, "charge_short_circuit_release_countdown", unit="seconds"),
    _r(None, 210, 2, "cell_undervoltage_release_countdown", unit="seconds"),
    _r(None, 212, 2, "cell_overvoltage_release_countdown", unit="seconds"),
    _r(None, 214, 1, "temperature_sensor_presence_bitmask"),  # bit0 MOS, bit n sensor n
    _r(None, 215, 1, "heating"),
    _r(None, 218, 2, "emergency_countdown", unit="seconds"),
    _r(None, 220, 2, "discharge_current_correction_factor"),
    _r(None, 222, 2, "charge_current_sensor_voltage", scale=0.001, unit="volts"),
    _r(None, 224, 2, "discharge_current_sensor_voltage", scale=0.001, unit="volts"),
    _r(None, 226, 4, "pack_voltage_correction_factor", "f"),
    _r(None, 234, 2, "pack_voltage_centivolts", scale=0.01, unit="volts"),
    _r(None, 236, 2, "heating_current", "i", 0.001, "amperes"),
    _r(None, 245, 1, "charger_plugged"),
    # 254/256/258: see temperature_sensors() for why 254 is not "battery3".
    _r(None, 254, 2, "temperature_254", "i", 0.1, "celsius"),
    _r(None, 256, 2, "battery3_temperature", "i", 0.1, "celsius"),
    _r(None, 258, 2, "battery4_temperature", "i", 0.1, "celsius"),
    _r(None, 262, 4, "rtc_ticks", unit="seconds"),
    _r(None, 266, 4, "detail_log_count"),
    _r(None, 270, 4, "smart_sleep_countdown", unit="seconds"),
    _r(None, 274, 1, "pcl_module_state"),
    _r(None, 278, 2, "charge_stage_elapsed", unit="seconds"),
    _r(None, 280, 1, "charge_stage"),
    _r(None, 281, 1, "dry_contacts_bitmask"),
)

#: JK04 cell info (spec §7): float32 values. The enabled-cells bitmask at 214 is not in the
#: spec; both JK04 captures (16 cells each) carry ``FF FF 00 00`` there (vectors cell_info_jk04,
#: cell_info_jk04_b5a24s).
_CELL_INFO_JK04: Tuple[Field, ...] = (
    Field(6, 4, "cell_voltages", "f", unit="volts", count=24),
    Field(102, 4, "cell_resistances", "f", unit="ohms", count=24),
    Field(202, 4, "average_cell_voltage", "f", unit="volts"),
    Field(206, 4, "cell_voltage_difference", "f", unit="volts"),
    Field(214, 4, "enabled_cells_bitmask"),
    Field(220, 1, "balancer_action"),
    Field(222, 4, "balance_current", "f", unit="amperes"),
    Field(286, 4, "runtime", unit="seconds"),
)

CELL_INFO_FIELDS: Mapping[str, Tuple[Field, ...]] = {
    JK02_24S: _layout(_CELL_INFO_ROWS, 0, 24),
    JK02_32S: _layout(_CELL_INFO_ROWS, 1, 32),
    JK04: _CELL_INFO_JK04,
}


def _s(offset: int, name: str, unit: str, scale: float = 1.0, kind: str = "u",
       width: int = 4) -> Field:
    return Field(offset, width, name, kind, scale, unit, setting=True)


# Spec §4: identical for 24S and 32S up to offset 141.
_SETTINGS_COMMON: Tuple[Field, ...] = (
    # "smart-sleep voltage" on JK-PB, 600 mV "meaning unknown" on older boards: not a setting
    Field(6, 4, "smart_sleep_voltage", scale=0.001, unit="volts"),
    _s(10, "cell_undervoltage_protection", "volts", 0.001),
    _s(14, "cell_undervoltage_recovery", "volts", 0.001),
    _s(18, "cell_overvoltage_protection", "volts", 0.001),
    _s(22, "cell_overvoltage_recovery", "volts", 0.001),
    _s(26, "balance_trigger_voltage_difference", "volts", 0.001),
    _s(30, "soc_100_voltage", "volts", 0.001),
    _s(34, "soc_0_voltage", "volts", 0.001),
    _s(38, "request_charge_voltage", "volts", 0.001),
    _s(42, "request_float_voltage", "volts", 0.001),
    _s(46, "power_off_voltage", "volts", 0.001),
    _s(50, "charge_overcurrent_protection", "amperes", 0.001),
    _s(54, "charge_overcurrent_protection_delay", "seconds"),
    _s(58, "charge_overcurrent_recovery_delay", "seconds"),
    _s(62, "discharge_overcurrent_protection", "amperes", 0.001),
    _s(66, "discharge_overcurrent_protection_delay", "seconds"),
    _s(70, "discharge_overcurrent_recovery_delay", "seconds"),
    _s(74, "short_circuit_recovery_delay", "seconds"),
    _s(78, "max_balance_current", "amperes", 0.001),
    _s(82, "charge_overtemperature_protection", "celsius", 0.1, "i"),
    _s(86, "charge_overtemperature_recovery", "celsius", 0.1, "i"),
    _s(90, "discharge_overtemperature_protection", "celsius", 0.1, "i"),
    _s(94, "discharge_overtemperature_recovery", "celsius", 0.1, "i"),
    _s(98, "charge_undertemperature_protection", "celsius", 0.1, "i"),
    _s(102, "charge_undertemperature_recovery", "celsius", 0.1, "i"),
    _s(106, "mosfet_overtemperature_protection", "celsius", 0.1, "i"),
    _s(110, "mosfet_overtemperature_recovery", "celsius", 0.1, "i"),
    Field(114, 4, "cell_count_setting"),
    Field(118, 4, "charge_switch"),
    Field(122, 4, "discharge_switch"),
    Field(126, 4, "balancer_switch"),
    Field(130, 4, "nominal_capacity_setting", scale=MAH, unit="coulombs"),
    _s(134, "short_circuit_protection_delay", "seconds", 1e-6),
    _s(138, "balance_start", "volts", 0.001),
)

SETTINGS_FIELDS: Mapping[str, Tuple[Field, ...]] = {
    JK02_24S: _SETTINGS_COMMON + (
        Field(158, 4, "connection_wire_resistances", scale=1e-6, unit="ohms", count=24),
    ),
    JK02_32S: _SETTINGS_COMMON + (
        Field(142, 4, "connection_wire_resistances", scale=1e-6, unit="ohms", count=32),
        Field(270, 4, "device_address"),
        _s(274, "precharge_time", "seconds"),
        Field(282, 2, "control_bitmask"),
        # Vendor V1.0: TMPBatOTA / TMPBatOTAR; apps call them heating start / stop. Captures
        # hold 60 / 50 °C with heating disabled — alarm thresholds, not heater thresholds.
        _s(284, "battery_overtemperature_alarm", "celsius", kind="i", width=1),
        _s(285, "battery_overtemperature_alarm_recovery", "celsius", kind="i", width=1),
        _s(286, "smart_sleep_delay", "seconds", 3600.0, width=1),
        Field(287, 1, "data_field_enable_control_0"),
        _s(296, "discharge_undertemperature_protection", "celsius", kind="i", width=1),
        _s(297, "discharge_undertemperature_recovery", "celsius", kind="i", width=1),
    ),
    # Not in the spec. Rows at the only offsets holding the values the source states for
    # vector settings_jk04_b5a24s: "16 cells, power-off 3.2 V/cell, balance trigger 8 mV,
    # max balance 4.5 A; voltage calibration at offset 74: 3.033129".
    JK04: (
        Field(34, 4, "cell_count_setting"),
        Field(38, 4, "power_off_voltage", "f", unit="volts", setting=True),
        Field(74, 4, "voltage_calibration", "f"),
        Field(106, 4, "balance_trigger_voltage_difference", "f", unit="volts", setting=True),
        Field(110, 4, "max_balance_current", "f", unit="amperes", setting=True),
    ),
}

# Spec §6 (all generations). The serial number is NUL-terminated inside its 16 bytes: ESPHome
# reads a 5-byte "passcode" at 97 behind an 11-character serial (vector device_info_jk02_24s_v10:
# "2041803028\0" + "0000"), hw 19A fills all 16 bytes with the serial.
_DEVICE_INFO_COMMON: Tuple[Field, ...] = (
    Field(6, 16, "model", "str"),
    Field(22, 8, "hardware_version", "str"),
    Field(30, 8, "software_version", "str"),
    Field(38, 4, "uptime", unit="seconds"),
    Field(42, 4, "power_on_count"),
    Field(46, 16, "device_name", "str"),
    Field(62, 16, "passcode", "secret"),
    Field(78, 8, "manufacture_date", "str"),
    Field(86, 16, "serial_number", "str"),
    Field(97, 5, "passcode_2", "secret"),
    Field(102, 16, "user_data", "str"),
    Field(118, 16, "setup_passcode", "secret"),
    Field(134, 16, "user_data_2", "str"),
)

DEVICE_INFO_FIELDS: Mapping[str, Tuple[Field, ...]] = {
    JK02_24S: _DEVICE_INFO_COMMON,
    JK02_32S: _DEVICE_INFO_COMMON + (
        Field(184, 1, "uart1_protocol"),
        Field(185, 1, "can_protocol"),
        Field(186, 4, "uart1_protocol_enable_bitmask"),
        Field(218, 1, "uart2_protocol"),
        Field(219, 1, "uart2_protocol_enable"),
        Field(266, 1, "request_charge_voltage_time", scale=360.0, unit="seconds"),  # 0.1 h
        Field(267, 1, "request_float_voltage_time", scale=360.0, unit="seconds"),
    ),
    JK04: _DEVICE_INFO_COMMON,
}

LOGBOOK_COUNT_OFFSET = 6
LOGBOOK_ENTRIES_OFFSET = 11
LOGBOOK_ENTRY_SIZE = 5
LOGBOOK_MAX_ENTRIES = 50


def fields_for(frame_type: int, generation: str) -> Tuple[Field, ...]:
    """The table of ``frame_type`` frames in ``generation`` (logbook frames have none)."""
    _check_generation(generation)
    tables = {
        FRAME_CELL_INFO: CELL_INFO_FIELDS,
        FRAME_SETTINGS: SETTINGS_FIELDS,
        FRAME_DEVICE_INFO: DEVICE_INFO_FIELDS,
    }
    if frame_type not in tables:
        raise UnknownFrameTypeError(frame_type)
    return tables[frame_type][generation]


def _check_generation(generation: str) -> None:
    if generation not in GENERATIONS:
        raise ValueError("unknown generation %r (one of %s)" % (generation, ", ".join(GENERATIONS)))


# --------------------------------------------------------------------------- bit names

#: Error bitmask (32S offset 166 u32; 24S offset 136 u16) → alarm name, spec §5. Names of
#: the 4E57 codec where the meaning is the same. Bits 24–28 are ESPHome's labels; 29–31 are
#: unnamed by every source.
ALARM_BITS: Tuple[str, ...] = (
    "balance_wire_resistance",  # 0 AlarmWireRes
    "mosfet_overtemperature",  # 1 AlarmMosOTP
    "cell_count_mismatch",  # 2 AlarmCellQuantity
    "current_sensor_fault",  # 3 AlarmCurSensorErr
    "cell_overvoltage",  # 4 AlarmCellOVP
    "charge_overvoltage",  # 5 AlarmBatOVP (pack; 4E57 bit 2)
    "charge_overcurrent",  # 6 AlarmChOCP
    "charge_short_circuit",  # 7 AlarmChSCP
    "charge_overtemperature",  # 8 AlarmChOTP
    "charge_undertemperature",  # 9 AlarmChUTP
    "coprocessor_communication",  # 10 AlarmCPUAuxCommuErr
    "cell_undervoltage",  # 11 AlarmCellUVP
    "discharge_undervoltage",  # 12 AlarmBatUVP (pack; 4E57 bit 3)
    "discharge_overcurrent",  # 13 AlarmDchOCP
    "discharge_short_circuit",  # 14 AlarmDchSCP
    "discharge_overtemperature",  # 15 AlarmDchOTP
    "charge_mosfet_fault",  # 16 AlarmChargeMOS
    "discharge_mosfet_fault",  # 17 AlarmDischargeMOS
    "gps_disconnected",  # 18
    "password_change_due",  # 19 "Modify PWD in time"
    "discharge_on_failed",  # 20
    "battery_overtemperature",  # 21 (4E57 bit 4)
    "temperature_sensor_fault",  # 22
    "pcl_module_fault",  # 23
    "short_circuit_release_failed",  # 24
    "discharge_overcurrent_2",  # 25
    "discharge_overcurrent_3",  # 26
    "discharge_undertemperature",  # 27
    "gps_remote_lock",  # 28
    "unnamed_bit_29",
    "unnamed_bit_30",
    "unnamed_bit_31",
)
ALARM_WORD_BITS = {JK02_24S: 16, JK02_32S: 32, JK04: 0}

#: Settings offset 282 (32S) control bits → switch name (spec §4; bits 10–15 ESPHome only).
CONTROL_BITS: Tuple[str, ...] = (
    "heating",
    "temperature_sensors_disabled",
    "gps_heartbeat",
    "rs485_port",  # 1 RS485 / 0 CAN
    "display_always_on",
    "dedicated_charger",  # "special charger", 4E57 0xB3
    "smart_sleep",
    "pcl_module_disabled",
    "timed_stored_data",
    "charging_float_mode",
    "button_emergency_trigger",
    "dry_contact_intermittent",
    "discharge_overcurrent_2",
    "discharge_overcurrent_3",
    "gps_locked_charging",
    "gps_locked_discharging",
)

#: Settings rows that are switches → the 4E57 switch names.
SWITCH_FIELDS = (("charge_switch", "charge"), ("discharge_switch", "discharge"),
                 ("balancer_switch", "balancer"))

#: Synthesised status bits, same positions as the 4E57 0x8C word (spec 4E57 §8.2): JK02
#: frames carry the states as separate bytes, no status word.
STATUS_CHARGE_MOSFET = 1 << 0
STATUS_DISCHARGE_MOSFET = 1 << 1
STATUS_BALANCING = 1 << 2

#: Temperature rows → ``sensor`` label, in the BMS's order; the presence bit (32S offset
#: 214, vendor: 1 = present) gates the sensors no source agrees on.
TEMPERATURE_SENSORS = (
    ("mosfet_temperature", "mosfet", None),
    ("battery1_temperature", "battery1", None),
    ("battery2_temperature", "battery2", None),
    ("battery3_temperature", "battery3", 3),
    ("battery4_temperature", "battery4", 4),
)


# --------------------------------------------------------------------------- quirks


def checksum(frame: bytes) -> int:
    """Byte 299: sum of bytes 0…298, low 8 bits (spec §2)."""
    return sum(frame[:CHECKSUM_OFFSET]) & 0xFF


def cell_count(mask: int, slots: int) -> int:
    """Cells that exist, from the enabled-cells bitmask (bit 0 = cell 1, spec §3).

    The count is the highest enabled cell: the slots behind it are unused (they read 0 V);
    a cell inside the range whose bit is clear is still reported (with whatever the BMS
    sends) so that cell numbers stay true. A mask with no cell, or one naming a cell past
    the frame's slots, means a corrupt frame or a wrong generation (a 32S frame read with
    the 24S table finds cell voltages of 0 where the mask should be).
    Evidence: ``FF FF FF 00`` = 24 cells (cell_info_jk02_24s_v10), ``FF FF 00 00`` = 16
    (cell_info_jk02_32s_v11, cell_info_jk04), ``FF 00 00 00`` = 8 (mppsolar_jkpb_20).
    """
    count = mask.bit_length()
    if count == 0:
        raise CellMaskError("enabled-cells bitmask is 0: no cell (wrong generation?)")
    if count > slots:
        raise CellMaskError(
            "enabled-cells bitmask 0x%X names cell %d, the frame has %d slots (wrong generation?)"
            % (mask, count, slots)
        )
    return count


def cell_number(index: int) -> int:
    """Highest/lowest cell fields are 0-based (spec §9 item 4): 0 → cell 1.

    Evidence: cell_info_jk02_32s_v11 lowest = 10 and cell 11 (3.216 V) is the lowest.
    """
    return index + 1


def signed_power(magnitude: float, current: float) -> float:
    """The power field is an unsigned magnitude (spec §9 item 2): give it the current's sign.

    Evidence: mppsolar_jkpb_20, 479.072 W at +17.841 A; no vector has a discharge.
    """
    return -magnitude if current < 0 else magnitude


def status_bitmask(charge_mosfet: bool, discharge_mosfet: bool, balancing: bool) -> int:
    """A 4E57-compatible status word (bits 0/1/2) built from the frame's state bytes."""
    return (
        (STATUS_CHARGE_MOSFET if charge_mosfet else 0)
        | (STATUS_DISCHARGE_MOSFET if discharge_mosfet else 0)
        | (STATUS_BALANCING if balancing else 0)
    )


def decode_text(raw: bytes) -> str:
    """Fixed-width text: up to the first NUL (the serial field hides a passcode behind its
    NUL, vector device_info_jk02_24s_v10); non-printable bytes become ``?``."""
    text = raw.split(b"\x00", 1)[0].decode("ascii", errors="replace")
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text).strip()


def format_manufacture_date(text: str) -> str:
    """``YYMMDD`` → ``20YY-MM-DD`` (spec §6, e.g. ``220511``); anything else is kept."""
    if len(text) == 6 and text.isdigit():
        return "20%s-%s-%s" % (text[:2], text[2:4], text[4:])
    return text


def parse_manufacture_date(text: str) -> str:
    match = re.fullmatch(r"20(\d\d)-(\d\d)-(\d\d)", text)
    return "".join(match.groups()) if match else text


def temperature_sensors(values: Mapping[str, object]) -> Dict[str, float]:
    """Temperatures of a cell-info frame by ``sensor`` label.

    mosfet, battery1 and battery2 are what the source files state for every capture. For
    sensors 3–5 the sources disagree (spec §9 item 5): the vendor map puts T3/T4/T5 at
    254/256/258, but 254 equals the MOSFET temperature in all captures (cell_info_jk02_32s_v11
    17.3 °C, …_v14 18.2 °C, mppsolar_jkpb_20 30.0 °C) — the frames side with
    dbus-serialbattery: 254 mirrors the MOSFET sensor (kept in ``extra`` as
    ``temperature_254``), battery3 = 256, battery4 = 258, each only if its presence bit is set.
    """
    presence = values.get("temperature_sensor_presence_bitmask")
    sensors: Dict[str, float] = {}
    for row, sensor, bit in TEMPERATURE_SENSORS:
        if row not in values:
            continue
        present = presence is not None and int(presence) >> bit & 1 if bit is not None else True  # type: ignore[arg-type]
        if not present:
            continue
        sensors[sensor] = float(values[row])  # type: ignore[arg-type]
    return sensors


# --------------------------------------------------------------------------- envelope


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded 55AA frame: values in base units keyed by table row name.

    Passcode rows are never decoded, so they are never here.
    """

    frame_type: int
    counter: int
    generation: str
    values: Mapping[str, object]

    @property
    def type_name(self) -> str:
        return FRAME_TYPE_NAMES.get(self.frame_type, "0x%02X" % self.frame_type)


def check_frame(frame: bytes, verify_checksum: bool = True) -> bytes:
    """Validate header, size and checksum; return the 300 meaningful bytes (spec §2)."""
    frame = bytes(frame)
    if len(frame) < len(HEADER) or frame[: len(HEADER)] != HEADER:
        raise BadStartError("frame starts with %s, expected 55 AA EB 90"
                            % frame[: len(HEADER)].hex(" ").upper(), 0)
    if not FRAME_SIZE <= len(frame) <= PADDED_FRAME_SIZE:
        raise LengthMismatchError(
            "55AA frame is %d bytes, expected %d (or up to %d padded)"
            % (len(frame), FRAME_SIZE, PADDED_FRAME_SIZE)
        )
    frame = frame[:FRAME_SIZE]
    if verify_checksum and checksum(frame) != frame[CHECKSUM_OFFSET]:
        raise ChecksumError(expected=checksum(frame), received=frame[CHECKSUM_OFFSET])
    return frame


def frame_type_of(frame: bytes) -> int:
    """Byte 4 of a frame (no validation beyond its presence)."""
    if len(frame) <= TYPE_OFFSET:
        raise TruncatedFieldError("frame too short to hold a frame type", len(frame))
    return frame[TYPE_OFFSET]


def _read_field(frame: bytes, row: Field) -> object:
    if row.end > len(frame):
        raise TruncatedFieldError("field %s needs bytes %d…%d" % (row.name, row.offset, row.end - 1),
                                  row.offset)
    if row.kind == "str":
        return decode_text(frame[row.offset : row.end])
    items: List[Union[int, float]] = []
    for index in range(row.count):
        start = row.offset + index * row.width
        raw = frame[start : start + row.width]
        if row.kind == "f":
            # float32 carries ~7 significant digits: 6 decimals keep every real one
            items.append(round(struct.unpack("<f", raw)[0] * row.scale, 6))
            continue
        number = int.from_bytes(raw, "little", signed=row.kind == "i")
        items.append(number if row.scale == 1.0 else round(number * row.scale, 9))
    return tuple(items) if row.count > 1 else items[0]


def decode_fields(frame: bytes, fields: Sequence[Field]) -> Dict[str, object]:
    """Read every row of ``fields`` from a 300-byte frame (secret rows are skipped)."""
    return {row.name: _read_field(frame, row) for row in fields if row.kind != "secret"}


def _decode_logbook(frame: bytes) -> Dict[str, object]:
    """Spec §8: u32 entry count at 6, then ≤ 50 entries of (u32 timestamp s, u8 event code)
    from offset 11 (vector logbook_jk02_32s: 4 entries, codes 0x01 boot … 0x1C)."""
    count = int.from_bytes(frame[LOGBOOK_COUNT_OFFSET : LOGBOOK_COUNT_OFFSET + 4], "little")
    entries = []
    for index in range(min(count, LOGBOOK_MAX_ENTRIES)):
        start = LOGBOOK_ENTRIES_OFFSET + index * LOGBOOK_ENTRY_SIZE
        entries.append((int.from_bytes(frame[start : start + 4], "little"), frame[start + 4]))
    return {"log_count": count, "log_entries": tuple(entries)}


def decode_frame(frame: bytes, generation: str, verify_checksum: bool = True) -> DecodedFrame:
    """Decode any 55AA frame with the tables of ``generation``."""
    _check_generation(generation)
    frame = check_frame(frame, verify_checksum)
    frame_type = frame[TYPE_OFFSET]
    if frame_type == FRAME_LOGBOOK:
        values = _decode_logbook(frame)
    else:
        values = decode_fields(frame, fields_for(frame_type, generation))
    return DecodedFrame(frame_type, frame[COUNTER_OFFSET], generation, values)


# --------------------------------------------------------------------------- generation


def _major(version: str) -> Optional[int]:
    match = re.match(r"\s*[Hh]?(\d+)", version)
    return int(match.group(1)) if match else None


def generation_from_versions(model: str, hardware: str, software: str) -> str:
    """Layout generation from device-info strings (spec §1 and README's hardware table).

    * JK-PB models are all JK02_32S.
    * A three-part software version (``3.3.0``, ``8.0.3M``) is JK04: the spec's "hardware
      ≤ 3.0" rule misses the JK-B5A24S hw 8.X sw 8.0.3M that the README and vector
      settings_jk04_b5a24s list as JK04, while every JK02 capture has two parts (10.07 …).
    * hardware ≤ 3 → JK04, 6–10 → JK02_24S, ≥ 11 → JK02_32S.
    """
    if re.match(r"JK[-_]?PB", model.upper()):
        return JK02_32S
    if re.fullmatch(r"\d+\.\d+\.\d+\w*", software.strip()):
        return JK04
    major = _major(hardware)
    if major is None:
        raise UnknownGenerationError("cannot tell the generation from hardware version %r" % hardware)
    if major <= 3:
        return JK04
    if 6 <= major <= 10:
        return JK02_24S
    if major >= 11:
        return JK02_32S
    raise UnknownGenerationError(
        "hardware version %r is in no known generation; configure it explicitly" % hardware
    )


def generation_from_device_info(device_info: Union[bytes, DecodedFrame],
                                verify_checksum: bool = True) -> str:
    """Generation of the board that sent this device-info frame (type 03, same layout in
    every generation)."""
    if not isinstance(device_info, DecodedFrame):
        device_info = decode_frame(device_info, JK02_24S, verify_checksum)
    if device_info.frame_type != FRAME_DEVICE_INFO:
        raise FrameError("frame type 0x%02X is not a device-info frame" % device_info.frame_type,
                         TYPE_OFFSET)
    values = device_info.values
    return generation_from_versions(
        str(values["model"]), str(values["hardware_version"]), str(values["software_version"])
    )


def select_generation(configured: Optional[str] = None,
                      device_info: Union[bytes, DecodedFrame, None] = None) -> str:
    """The configured generation if any, else the one the device-info frame implies."""
    if configured:
        key = configured.upper()
        if key not in GENERATIONS:
            raise ValueError("unknown generation %r (one of %s)" % (configured, ", ".join(GENERATIONS)))
        return key
    if device_info is None:
        raise UnknownGenerationError("no generation configured and no device-info frame yet")
    return generation_from_device_info(device_info)


def guess_generation(cell_info: bytes) -> str:
    """Heuristic for a cell-info frame alone — prefer the device-info frame.

    JK04 sends float32 cells: byte 9 is the exponent byte of cell 1 (0x40 for 2–4 V),
    impossible as the high byte of cell 2 in millivolts. Otherwise byte 287 is non-zero on
    32S boards (dbus-serialbattery; 0 on cell_info_jk02_24s_v10, 254 on all 32S captures).
    ESPHome dropped auto-detection as unreliable (spec §1).
    """
    frame = check_frame(cell_info, verify_checksum=False)
    if frame[TYPE_OFFSET] != FRAME_CELL_INFO:
        raise FrameError("not a cell-info frame", TYPE_OFFSET)
    if frame[9] in (0x3F, 0x40):
        return JK04
    return JK02_32S if frame[287] else JK02_24S


# --------------------------------------------------------------------------- frames → Reading


def _alarms(bitmask: int, generation: str) -> Dict[str, bool]:
    return {name: bool(bitmask >> bit & 1)
            for bit, name in enumerate(ALARM_BITS[: ALARM_WORD_BITS[generation]])}


_CELL_INFO_IN_READING = frozenset((
    "cell_voltages", "cell_resistances", "pack_voltage", "current", "alarm_bitmask",
    "balance_current", "state_of_charge", "remaining_capacity", "nominal_capacity",
    "charge_cycles", "cycle_capacity", "state_of_health", "runtime", "charge_mosfet",
    "discharge_mosfet", "mosfet_temperature", "battery1_temperature", "battery2_temperature",
    "battery3_temperature", "battery4_temperature",
))
#: JK04 frames have no such field; the Reading holds a placeholder (NaN, 0, False) and
#: ``extra["not_reported"]`` lists them.
_JK04_NOT_REPORTED = (
    "current_amperes", "state_of_charge_ratio", "charge_cycles", "cycle_capacity_coulombs",
    "charge_mosfet_on", "discharge_mosfet_on", "alarm_bitmask", "temperatures_celsius",
)


#: Rows a cell-info frame must provide for a Reading (FC03 blocks may cover less).
_REQUIRED_CELL_INFO = {
    generation: tuple(
        row.name for row in CELL_INFO_FIELDS[generation]
        if row.name in _CELL_INFO_IN_READING | {"enabled_cells_bitmask", "balancer_action",
                                                "power_magnitude"}
        and not row.name.startswith(("battery3", "battery4"))
    )
    for generation in GENERATIONS
}


def _require(frame: Optional[DecodedFrame], frame_type: int, what: str) -> None:
    if frame is not None and frame.frame_type != frame_type:
        raise FrameError("%s argument is a %s frame" % (what, frame.type_name))


def reading_from_frames(cell_info: DecodedFrame, settings: Optional[DecodedFrame] = None,
                        device_info: Optional[DecodedFrame] = None,
                        protocol: str = PROTOCOL_NAME) -> Reading:
    """Combine the latest cell-info frame with the latest settings and device-info frames.

    Settings and switches come only from a settings frame, identification only from a
    device-info frame; without them those parts are empty.
    """
    _require(cell_info, FRAME_CELL_INFO, "cell_info")
    _require(settings, FRAME_SETTINGS, "settings")
    _require(device_info, FRAME_DEVICE_INFO, "device_info")
    generation = cell_info.generation
    values = cell_info.values
    missing = [name for name in _REQUIRED_CELL_INFO[generation] if name not in values]
    if missing:
        raise FrameError("cell-info values lack %s" % ", ".join(missing))
    count = cell_count(int(values["enabled_cells_bitmask"]), CELL_SLOTS[generation])  # type: ignore[arg-type]
    cells = tuple(float(v) for v in values["cell_voltages"][:count])  # type: ignore[index]
    resistances = tuple(float(v) for v in values["cell_resistances"][:count])  # type: ignore[index]
    balancer_action = int(values["balancer_action"])  # type: ignore[arg-type]
    balancing = balancer_action != 0
    extra: Dict[str, object] = {"generation": generation, "frame_counter": cell_info.counter}
    extra.update((k, v) for k, v in values.items() if k not in _CELL_INFO_IN_READING)
    for index_row, key in (("highest_cell_index", "highest_cell"), ("lowest_cell_index", "lowest_cell")):
        if index_row in extra:
            extra[key] = cell_number(int(extra.pop(index_row)))  # type: ignore[arg-type]

    if generation == JK04:
        # spec §7: no pack voltage or current field — sum the cells
        pack_voltage = round(sum(cells), 6)
        current = math.nan
        soc = math.nan
        cycles, cycle_capacity = 0, math.nan
        charge_on = discharge_on = False
        alarm_bits, alarms = 0, {}
        temperatures: Dict[str, float] = {}
        runtime: Optional[float] = float(values["runtime"])  # type: ignore[arg-type]
        nominal = remaining = soh = None
        extra[NOT_REPORTED_KEY] = _JK04_NOT_REPORTED
    else:
        pack_voltage = float(values["pack_voltage"])  # type: ignore[arg-type]
        current = float(values["current"]) + 0.0  # type: ignore[arg-type]
        soc = float(values["state_of_charge"])  # type: ignore[arg-type]
        cycles = int(values["charge_cycles"])  # type: ignore[arg-type]
        cycle_capacity = float(values["cycle_capacity"])  # type: ignore[arg-type]
        charge_on = bool(values["charge_mosfet"])
        discharge_on = bool(values["discharge_mosfet"])
        alarm_bits = int(values["alarm_bitmask"])  # type: ignore[arg-type]
        alarms = _alarms(alarm_bits, generation)
        temperatures = temperature_sensors(values)
        runtime = float(values["runtime"])  # type: ignore[arg-type]
        nominal = float(values["nominal_capacity"])  # type: ignore[arg-type]
        remaining = float(values["remaining_capacity"])  # type: ignore[arg-type]
        soh = float(values["state_of_health"])  # type: ignore[arg-type]
        extra["power"] = signed_power(float(extra.pop("power_magnitude")), current)  # type: ignore[arg-type]

    settings_list: Tuple[Setting, ...] = ()
    switches: Dict[str, bool] = {}
    if settings is not None:
        rows = fields_for(FRAME_SETTINGS, settings.generation)
        svalues = settings.values
        settings_list = tuple(
            Setting(row.name, row.unit, float(svalues[row.name]))  # type: ignore[arg-type]
            for row in rows if row.setting and row.name in svalues
        )
        setting_names = {row.name for row in rows if row.setting}
        for row_name, switch in SWITCH_FIELDS:
            if row_name in svalues:
                switches[switch] = bool(svalues[row_name])
        if "control_bitmask" in svalues:
            control = int(svalues["control_bitmask"])  # type: ignore[arg-type]
            for bit, name in enumerate(CONTROL_BITS):
                switches[name] = bool(control >> bit & 1)
        switch_rows = {name for name, _ in SWITCH_FIELDS}
        extra.update((k, v) for k, v in svalues.items()
                     if k not in setting_names and k not in switch_rows)

    device = DeviceInfo(protocol=protocol, protocol_version=generation)
    if device_info is not None:
        dvalues = device_info.values
        device = DeviceInfo(
            protocol=protocol,
            protocol_version=generation,
            model=str(dvalues.get("model", "")),
            hardware_version=str(dvalues.get("hardware_version", "")),
            software_version=str(dvalues.get("software_version", "")),
            device_id=str(dvalues.get("device_name", "")),
            manufacture_date=format_manufacture_date(str(dvalues.get("manufacture_date", ""))),
            serial_number=str(dvalues.get("serial_number", "")),
        )
        in_device = {"model", "hardware_version", "software_version", "device_name",
                     "manufacture_date", "serial_number"}
        extra.update((k, v) for k, v in dvalues.items() if k not in in_device)

    return Reading(
        cell_voltages_volts=cells,
        pack_voltage_volts=pack_voltage,
        current_amperes=current,
        state_of_charge_ratio=soc,
        temperatures_celsius=temperatures,
        charge_cycles=cycles,
        cycle_capacity_coulombs=cycle_capacity,
        runtime_seconds=runtime,
        nominal_capacity_coulombs=nominal,
        actual_capacity_coulombs=None,
        charge_mosfet_on=charge_on,
        discharge_mosfet_on=discharge_on,
        balancing=balancing,
        switches_enabled=switches,
        alarm_bitmask=alarm_bits,
        alarms=alarms,
        status_bitmask=status_bitmask(charge_on, discharge_on, balancing),
        settings=settings_list,
        device=device,
        extra=extra,
        cell_resistances_ohms=resistances,
        balance_current_amperes=float(values["balance_current"]) + 0.0,  # type: ignore[arg-type]
        remaining_capacity_coulombs=remaining,
        state_of_health_ratio=soh,
    )


def decode_reading(cell_info: bytes, generation: str, verify_checksum: bool = True,
                   settings: Optional[bytes] = None, device_info: Optional[bytes] = None) -> Reading:
    """Decode raw frames (a cell-info frame and optionally the others) into a Reading."""
    return reading_from_frames(
        decode_frame(cell_info, generation, verify_checksum),
        None if settings is None else decode_frame(settings, generation, verify_checksum),
        None if device_info is None else decode_frame(device_info, generation, verify_checksum),
    )


@dataclass(frozen=True)
class LatestFrames:
    """The latest decoded frame of each kind from one BMS; :meth:`with_frame` returns the
    updated copy, :meth:`reading` the combined Reading."""

    cell_info: Optional[DecodedFrame] = None
    settings: Optional[DecodedFrame] = None
    device_info: Optional[DecodedFrame] = None

    def with_frame(self, frame: DecodedFrame) -> "LatestFrames":
        if frame.frame_type == FRAME_CELL_INFO:
            return LatestFrames(frame, self.settings, self.device_info)
        if frame.frame_type == FRAME_SETTINGS:
            return LatestFrames(self.cell_info, frame, self.device_info)
        if frame.frame_type == FRAME_DEVICE_INFO:
            return LatestFrames(self.cell_info, self.settings, frame)
        return self  # logbook frames are not part of a reading

    def reading(self, protocol: str = PROTOCOL_NAME) -> Reading:
        if self.cell_info is None:
            raise MissingFrameError("no cell-info frame received yet")
        return reading_from_frames(self.cell_info, self.settings, self.device_info, protocol)


# --------------------------------------------------------------------------- stream assembly


@dataclass(frozen=True)
class AssemblerStats:
    frames: int = 0
    #: Bytes thrown away that were neither a frame nor padding (stray bytes, broken frames).
    discarded_bytes: int = 0
    #: Up to 20 bytes right after a frame (320-byte BLE frames, spec §2).
    padding_bytes: int = 0
    checksum_errors: int = 0


class FrameAssembler:
    """Incremental framer: feed byte chunks, get whole validated 300-byte frames.

    Bytes before a header are discarded; a header whose 300 bytes fail the checksum loses
    its first byte and the search goes on (a later header inside it may be the real frame).
    With ``restart_on_header`` (BLE: "start a new buffer whenever a notification begins
    with the header", spec §2) a chunk that starts with the header drops a half-received
    frame at once instead of after 300 bytes.
    """

    def __init__(self, restart_on_header: bool = False) -> None:
        self._buffer = bytearray()
        self._restart = restart_on_header
        self._frames = 0
        self._discarded = 0
        self._padding = 0
        self._checksum_errors = 0
        self._pad_allowance = 0

    @property
    def stats(self) -> AssemblerStats:
        return AssemblerStats(self._frames, self._discarded, self._padding, self._checksum_errors)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def _drop(self, count: int) -> None:
        padding = min(count, self._pad_allowance)
        self._pad_allowance -= padding
        self._padding += padding
        self._discarded += count - padding
        del self._buffer[:count]

    def feed(self, chunk: bytes) -> List[bytes]:
        if self._restart and bytes(chunk[: len(HEADER)]) == HEADER and self._buffer:
            self._drop(len(self._buffer))
        self._buffer += chunk
        frames: List[bytes] = []
        while True:
            start = self._buffer.find(HEADER)
            if start < 0:
                keep = 0
                for size in range(len(HEADER) - 1, 0, -1):
                    if self._buffer.endswith(HEADER[:size]):
                        keep = size
                        break
                self._drop(len(self._buffer) - keep)
                return frames
            if start:
                self._drop(start)
            self._pad_allowance = 0
            if len(self._buffer) < FRAME_SIZE:
                return frames
            frame = bytes(self._buffer[:FRAME_SIZE])
            if checksum(frame) == frame[CHECKSUM_OFFSET]:
                frames.append(frame)
                self._frames += 1
                del self._buffer[:FRAME_SIZE]
                self._pad_allowance = PADDED_FRAME_SIZE - FRAME_SIZE
            else:
                self._checksum_errors += 1
                self._drop(1)

    def flush(self) -> None:
        """Forget a partial frame (e.g. after a link drop); its bytes count as discarded."""
        self._drop(len(self._buffer))


# --------------------------------------------------------------------------- encoding


def _encode_field(frame: bytearray, row: Field, value: object) -> None:
    if row.kind == "secret":
        return
    if row.kind == "str":
        raw = str(value).encode("ascii", errors="replace")[: row.width]
        frame[row.offset : row.end] = raw.ljust(row.width, b"\x00")
        return
    items = tuple(value) if row.count > 1 else (value,)  # type: ignore[arg-type]
    if len(items) > row.count:
        raise ValueError("%s holds at most %d values" % (row.name, row.count))
    items = items + (0,) * (row.count - len(items))
    for index, item in enumerate(items):
        start = row.offset + index * row.width
        if row.kind == "f":
            frame[start : start + 4] = struct.pack("<f", float(item) / row.scale)  # type: ignore[arg-type]
            continue
        number = int(round(float(item) / row.scale))  # type: ignore[arg-type]
        bits = 8 * row.width
        if row.kind == "i":
            number = max(-(1 << (bits - 1)), min((1 << (bits - 1)) - 1, number))
        else:
            number = max(0, min((1 << bits) - 1, number))
        frame[start : start + row.width] = number.to_bytes(row.width, "little", signed=row.kind == "i")


def encode_frame(frame_type: int, values: Mapping[str, object], generation: str,
                 counter: int = 0) -> bytes:
    """A 300-byte frame with every row of the table that ``values`` names (others 0)."""
    frame = bytearray(FRAME_SIZE)
    frame[: len(HEADER)] = HEADER
    frame[TYPE_OFFSET] = frame_type
    frame[COUNTER_OFFSET] = counter & 0xFF
    if frame_type == FRAME_LOGBOOK:
        entries = tuple(values.get("log_entries", ()))  # type: ignore[arg-type]
        count = int(values.get("log_count", len(entries)))  # type: ignore[arg-type]
        frame[LOGBOOK_COUNT_OFFSET : LOGBOOK_COUNT_OFFSET + 4] = count.to_bytes(4, "little")
        for index, (stamp, code) in enumerate(entries[:LOGBOOK_MAX_ENTRIES]):
            start = LOGBOOK_ENTRIES_OFFSET + index * LOGBOOK_ENTRY_SIZE
            frame[start : start + 4] = int(stamp).to_bytes(4, "little")
            frame[start + 4] = int(code)
    else:
        for row in fields_for(frame_type, generation):
            if row.name in values:
                _encode_field(frame, row, values[row.name])
    frame[CHECKSUM_OFFSET] = checksum(frame)
    return bytes(frame)


def _finite(value: float, default: float = 0.0) -> float:
    return default if value is None or math.isnan(value) else value


def cell_info_values(reading: Reading, generation: str) -> Dict[str, object]:
    """Inverse of :func:`reading_from_frames` for the cell-info part."""
    _check_generation(generation)
    extra = reading.extra
    slots = CELL_SLOTS[generation]
    cells = reading.cell_voltages_volts
    if not 0 < len(cells) <= slots:
        raise ValueError("%d cells do not fit a %s frame" % (len(cells), generation))
    names = {row.name for row in fields_for(FRAME_CELL_INFO, generation)}
    values: Dict[str, object] = {k: v for k, v in extra.items() if k in names}
    values["cell_voltages"] = cells
    values["cell_resistances"] = reading.cell_resistances_ohms or ()
    mask = int(extra.get("enabled_cells_bitmask", 0))  # type: ignore[arg-type]
    if mask.bit_length() != len(cells):
        mask = (1 << len(cells)) - 1
    values["enabled_cells_bitmask"] = mask
    values.setdefault("average_cell_voltage", round(sum(cells) / len(cells), 3))
    values.setdefault("cell_voltage_difference", round(max(cells) - min(cells), 3))
    if generation != JK04:
        for index_row, key, pick in (("highest_cell_index", "highest_cell", max),
                                     ("lowest_cell_index", "lowest_cell", min)):
            number = extra.get(key)
            values[index_row] = (int(number) - 1 if number is not None  # type: ignore[arg-type]
                                 else cells.index(pick(cells)))
    action = int(extra.get("balancer_action", 0))  # type: ignore[arg-type]
    if reading.balancing and not action:
        action = 2 if (reading.balance_current_amperes or 0.0) < 0 else 1
    values["balancer_action"] = action if reading.balancing else 0
    values["balance_current"] = reading.balance_current_amperes or 0.0
    values["runtime"] = reading.runtime_seconds or 0
    if generation == JK04:
        return values
    current = _finite(reading.current_amperes)
    values["pack_voltage"] = reading.pack_voltage_volts
    values["current"] = current
    power = extra.get("power")
    values["power_magnitude"] = abs(float(power) if power is not None  # type: ignore[arg-type]
                                    else round(reading.pack_voltage_volts * current, 3))
    values["state_of_charge"] = _finite(reading.state_of_charge_ratio)
    values["charge_cycles"] = reading.charge_cycles
    values["cycle_capacity"] = _finite(reading.cycle_capacity_coulombs)
    values["nominal_capacity"] = reading.nominal_capacity_coulombs or 0
    values["remaining_capacity"] = reading.remaining_capacity_coulombs or 0
    values["state_of_health"] = (1.0 if reading.state_of_health_ratio is None
                                 else reading.state_of_health_ratio)
    values["charge_mosfet"] = int(reading.charge_mosfet_on)
    values["discharge_mosfet"] = int(reading.discharge_mosfet_on)
    values["alarm_bitmask"] = reading.alarm_bitmask
    presence = 0
    for row, sensor, bit in TEMPERATURE_SENSORS:
        if sensor in reading.temperatures_celsius and row in names:
            values[row] = reading.temperatures_celsius[sensor]
            if bit is not None:
                presence |= 1 << bit
    if "temperature_sensor_presence_bitmask" in names:
        known = extra.get("temperature_sensor_presence_bitmask")
        # keep the BMS's other bits; bits 3/4 follow the sensors present; new frames: bits 0–2 set
        base = int(known) & ~0b11000 if known is not None else 0b111  # type: ignore[arg-type]
        values["temperature_sensor_presence_bitmask"] = base | presence
    return values


def settings_values(reading: Reading, generation: str) -> Dict[str, object]:
    """Inverse of :func:`reading_from_frames` for the settings part."""
    rows = fields_for(FRAME_SETTINGS, generation)
    names = {row.name for row in rows}
    values: Dict[str, object] = {k: v for k, v in reading.extra.items() if k in names}
    for setting in reading.settings:
        if setting.name in names:
            values[setting.name] = setting.value
    values.setdefault("cell_count_setting", reading.cells)
    for row_name, switch in SWITCH_FIELDS:
        if row_name in names and switch in reading.switches_enabled:
            values[row_name] = int(reading.switches_enabled[switch])
    if "control_bitmask" in names:
        control = int(reading.extra.get("control_bitmask", 0))  # type: ignore[arg-type]
        for bit, name in enumerate(CONTROL_BITS):
            if name in reading.switches_enabled:
                control = control | (1 << bit) if reading.switches_enabled[name] else control & ~(1 << bit)
        values["control_bitmask"] = control
    return values


def device_info_values(reading: Reading, generation: str) -> Dict[str, object]:
    """Inverse of :func:`reading_from_frames` for the device-info part (no passcodes)."""
    names = {row.name for row in fields_for(FRAME_DEVICE_INFO, generation)}
    values: Dict[str, object] = {k: v for k, v in reading.extra.items() if k in names}
    device = reading.device
    values.update(
        model=device.model,
        hardware_version=device.hardware_version,
        software_version=device.software_version,
        device_name=device.device_id,
        manufacture_date=parse_manufacture_date(device.manufacture_date),
        serial_number=device.serial_number,
    )
    return values


def _counter(reading: Reading, counter: Optional[int]) -> int:
    """Byte 5: as given, else the cell-info counter the reading was decoded from, else 0."""
    if counter is None:
        counter = int(reading.extra.get("frame_counter", 0))  # type: ignore[arg-type]
    return counter


def encode_cell_info(reading: Reading, generation: str = JK02_32S,
                     counter: Optional[int] = None) -> bytes:
    """The cell-info frame a BMS in the state ``reading`` would send."""
    return encode_frame(FRAME_CELL_INFO, cell_info_values(reading, generation), generation,
                        _counter(reading, counter))


def encode_settings(reading: Reading, generation: str = JK02_32S,
                    counter: Optional[int] = None) -> bytes:
    """The settings frame of ``reading``'s settings, switches and settings extras."""
    return encode_frame(FRAME_SETTINGS, settings_values(reading, generation), generation,
                        _counter(reading, counter))


def encode_device_info(reading: Reading, generation: str = JK02_32S,
                       counter: Optional[int] = None) -> bytes:
    """The device-info frame of ``reading.device`` (passcode fields all zero)."""
    return encode_frame(FRAME_DEVICE_INFO, device_info_values(reading, generation), generation,
                        _counter(reading, counter))


# --------------------------------------------------------------------------- BLE commands


def command_frame(command: int) -> bytes:
    """One of the three 20-byte read commands (spec §2); nothing else can be built here."""
    if command not in READ_COMMANDS:
        raise ValueError("0x%02X is not a read command (0x96, 0x97, 0xA1)" % command)
    body = bytearray(COMMAND_SIZE)
    body[:4] = COMMAND_HEADER
    body[4] = command
    body[COMMAND_SIZE - 1] = sum(body[: COMMAND_SIZE - 1]) & 0xFF
    return bytes(body)


def is_read_only_command(frame: bytes) -> bool:
    """True only for the exact bytes :func:`command_frame` builds (BLE register writes use
    the same shape with the register as command byte)."""
    return any(bytes(frame) == command_frame(command) for command in READ_COMMANDS)
