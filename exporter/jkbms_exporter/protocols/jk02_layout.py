"""Tables of the JK02 / JK04 "55 AA EB 90" records: offsets, widths, scales, names.

Spec: ``shared/protocol/jk-02-frames.md``; ground truth: ``shared/protocol/vectors/jk02.json``.
Constants of the envelope, one :class:`Field` row per field for each layout generation
(JK02_24S, JK02_32S, JK04), the bit names of the alarm and control words and the
temperature sensor rows. The logic that reads these tables is in :mod:`.jk02` (decoding)
and :mod:`.jk02_encode` (the frames the simulators send); this module holds data only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Tuple

from ..errors import FrameError
from ..reading import COULOMBS_PER_AMPERE_HOUR

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
    # 0-based like JK02's 62/63; not in the spec. vector cell_info_jk04: 1/0 = cells 2/1, as
    # its description states; cell_info_jk04_b5a24s: 7 agrees with the cells, 2 (cell 3)
    # does not (cell 1 is 11 mV lower): the BMS's own figure, possibly lagging like §9.4.
    Field(218, 1, "highest_cell_index"),
    Field(219, 1, "lowest_cell_index"),
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


def checksum(frame: bytes) -> int:
    """Byte 299: sum of bytes 0…298, low 8 bits (spec §2)."""
    return sum(frame[:CHECKSUM_OFFSET]) & 0xFF
