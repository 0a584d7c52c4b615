"""Encoders of the JK02 / JK04 "55 AA EB 90" records: the frames a BMS would send.

The inverse of :mod:`.jk02`'s decoding, table-driven from :mod:`.jk02_layout`: given a
:class:`~jkbms_exporter.reading.Reading`, build the cell-info, settings and device-info frames
a board in that state sends. The simulators (JK-PB bus, BLE radio) use them; the exporter
never does. Passcode fields are always zero.
"""

from __future__ import annotations

import math
import struct
from typing import Dict, Mapping, Optional

from ..reading import Reading
from .jk02_quirks import parse_manufacture_date
from .jk02_layout import (
    CELL_SLOTS, checksum, CHECKSUM_OFFSET, _check_generation, CONTROL_BITS, COUNTER_OFFSET,
    Field, fields_for, FRAME_CELL_INFO, FRAME_DEVICE_INFO, FRAME_LOGBOOK, FRAME_SETTINGS,
    FRAME_SIZE, HEADER, JK02_32S, JK04, LOGBOOK_COUNT_OFFSET, LOGBOOK_ENTRIES_OFFSET,
    LOGBOOK_ENTRY_SIZE, LOGBOOK_MAX_ENTRIES, SWITCH_FIELDS, TEMPERATURE_SENSORS,
    TYPE_OFFSET,
)


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
