"""Registers of a JK "4E 57" read-all reply ⇄ :class:`~jkbms_exporter.reading.Reading`.

:func:`registers_to_reading` turns the walked registers (:func:`.jk_serial.walk_registers`)
into a reading; :func:`reading_to_registers` is its inverse, for the simulator. Table-driven
from :mod:`.jk_serial_layout`; the value rules are in :mod:`.jk_serial_quirks`.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

from ..errors import FrameError
from ..reading import COULOMBS_PER_AMPERE_HOUR, DeviceInfo, Reading, Setting
from .jk_serial_layout import (
    ALARM_BITS, BATTERY_TYPES, CELLS_TAG, CURRENT_TAG, PROTOCOL_NAME, PROTOCOL_VERSION_TAG,
    Raw, Register, REGISTER_BY_NAME, REGISTER_BY_TAG, REQUIRED_TAGS, SETTINGS, STATUS_BALANCING,
    STATUS_CHARGE_MOSFET, STATUS_DISCHARGE_MOSFET, TEMPERATURE_SENSORS,
)
from .jk_serial_quirks import (
    decode_current, decode_temperature, decode_text, encode_current, encode_temperature,
    format_manufacture_date, join_software_version, model_from_manufacturer_id,
    parse_manufacture_date, split_software_version,
)


# --------------------------------------------------------------------------- registers ⇄ reading


def _cells(raw: Sequence[Tuple[int, int]]) -> Tuple[float, ...]:
    indices = sorted(index for index, _ in raw)
    if indices != list(range(1, len(raw) + 1)):
        raise FrameError("cell indices %s are not 1…%d" % (indices, len(raw)))
    return tuple(mv / 1000.0 for _, mv in sorted(raw))


#: (tag, raw value) → its Setting: a BMS sends the same settings read after read, and a
#: frozen dataclass costs more to build than to look up. Bounded: cleared when full.
_settings_seen: Dict[Tuple[int, int], Setting] = {}
_SETTINGS_SEEN_LIMIT = 1024


def _setting(row: Register, raw: int) -> Setting:
    setting = _settings_seen.get((row.tag, raw))
    if setting is None:
        setting = Setting(row.name, row.unit, round(int(raw) * row.scale, 6))
        if len(_settings_seen) >= _SETTINGS_SEEN_LIMIT:
            _settings_seen.clear()
        _settings_seen[(row.tag, raw)] = setting
    return setting


def registers_to_reading(registers: Mapping[int, Raw]) -> Reading:
    """Turn a complete read-all register set into a :class:`Reading`."""
    missing = [tag for tag in REQUIRED_TAGS if tag not in registers]
    if missing:
        raise FrameError(
            "reply lacks register(s) %s: not a read-all reply"
            % ", ".join("0x%02X" % tag for tag in missing)
        )

    def scaled(tag: int) -> Optional[float]:
        if tag not in registers:
            return None
        return int(registers[tag]) * REGISTER_BY_TAG[tag].scale  # type: ignore[arg-type]

    def flag(tag: int) -> Optional[bool]:
        return None if tag not in registers else bool(registers[tag])

    def text(tag: int) -> str:
        return decode_text(registers[tag]) if tag in registers else ""  # type: ignore[arg-type]

    protocol_version = registers.get(PROTOCOL_VERSION_TAG)
    status = int(registers[0x8C])  # type: ignore[arg-type]
    alarm_bits = int(registers[0x8B])  # type: ignore[arg-type]
    raw_version = text(0xB7)
    hardware, software = split_software_version(raw_version)
    battery_type = registers.get(0xAF)
    switches = {
        name: enabled
        for name, enabled in (
            ("charge", flag(0xAB)),
            ("discharge", flag(0xAC)),
            ("balancer", flag(0x9D)),
            ("dedicated_charger", flag(0xB3)),
        )
        if enabled is not None
    }
    settings = tuple(_setting(row, registers[row.tag]) for row in SETTINGS  # type: ignore[arg-type]
                     if row.tag in registers)
    extra: Dict[str, object] = {
        "current_raw": registers[CURRENT_TAG],
        "protocol_version": protocol_version,
    }
    for tag in (0x86, 0x8A, 0xA9, 0xAE, 0xB8):
        if tag in registers:
            extra[REGISTER_BY_TAG[tag].name] = registers[tag]
    if 0xBA in registers:
        extra["manufacturer_id"] = text(0xBA)
        # the exact field: NULs inside it are data (spec §6.3), the text above shows spaces
        extra["manufacturer_id_hex"] = bytes(registers[0xBA]).hex()  # type: ignore[arg-type]
    if raw_version:
        extra["software_version_string"] = raw_version
    return Reading(
        cell_voltages_volts=_cells(registers[CELLS_TAG]),  # type: ignore[arg-type]
        pack_voltage_volts=round(scaled(0x83), 2),  # type: ignore[arg-type]
        current_amperes=decode_current(int(registers[CURRENT_TAG]), protocol_version),  # type: ignore[arg-type]
        state_of_charge_ratio=round(scaled(0x85), 2),  # type: ignore[arg-type]
        temperatures_celsius={
            sensor: decode_temperature(int(registers[tag]))  # type: ignore[arg-type]
            for tag, sensor in TEMPERATURE_SENSORS
        },
        charge_cycles=int(registers[0x87]),  # type: ignore[arg-type]
        cycle_capacity_coulombs=scaled(0x89),  # type: ignore[arg-type]
        runtime_seconds=scaled(0xB6),
        nominal_capacity_coulombs=scaled(0xAA),
        actual_capacity_coulombs=scaled(0xB9),
        charge_mosfet_on=bool(status & STATUS_CHARGE_MOSFET),
        discharge_mosfet_on=bool(status & STATUS_DISCHARGE_MOSFET),
        balancing=bool(status & STATUS_BALANCING),
        switches_enabled=switches,
        alarm_bitmask=alarm_bits,
        alarms={name: bool(alarm_bits >> bit & 1) for bit, name in enumerate(ALARM_BITS)},
        status_bitmask=status,
        settings=settings,
        device=DeviceInfo(
            protocol=PROTOCOL_NAME,
            protocol_version="" if protocol_version is None else str(protocol_version),
            model=model_from_manufacturer_id(registers[0xBA]) if 0xBA in registers else "",  # type: ignore[arg-type]
            hardware_version=hardware,
            software_version=software,
            device_id=text(0xB4),
            manufacture_date=format_manufacture_date(text(0xB5)),
            battery_type=(
                ""
                if battery_type is None
                else BATTERY_TYPES.get(int(battery_type), str(battery_type))  # type: ignore[arg-type]
            ),
        ),
        extra=extra,
    )


def _ascii(text: str) -> bytes:
    return text.encode("ascii", errors="replace")


def _software_version_field(reading: Reading) -> bytes:
    """0xB7: the string the BMS sent when the reading still carries it and it agrees with
    the version fields (exact round trip of real frames), else the versions joined."""
    device = reading.device
    sent = reading.extra.get("software_version_string")
    if isinstance(sent, str) and split_software_version(sent) == (
        device.hardware_version,
        device.software_version,
    ):
        return _ascii(sent)
    return _ascii(join_software_version(device.hardware_version, device.software_version))


def _manufacturer_id_field(reading: Reading) -> bytes:
    """0xBA: the exact field the BMS sent (NULs inside included) when the reading carries it
    and it still names the reading's model; else 12 bytes of user data (the device id, NUL
    padded) and the model, as retail boards send it (spec §6.3)."""
    device = reading.device
    sent = reading.extra.get("manufacturer_id_hex")
    if isinstance(sent, str):
        try:
            raw = bytes.fromhex(sent)
        except ValueError:
            raw = b""
        if raw and model_from_manufacturer_id(raw) == device.model:
            return raw
    return _ascii(device.device_id).ljust(12, b"\x00") + _ascii(device.model)


def reading_to_registers(reading: Reading) -> Dict[int, Raw]:
    """Inverse of :func:`registers_to_reading` (used by the simulator's BMS).

    A reading with an empty protocol version is encoded like the oldest firmware: no 0xC0
    and nothing after 0xB7, current in the offset-10000 encoding.
    """
    device = reading.device
    protocol_version = int(device.protocol_version) if device.protocol_version else None
    registers: Dict[int, Raw] = {
        CELLS_TAG: tuple(
            (index, int(round(volts * 1000)))
            for index, volts in enumerate(reading.cell_voltages_volts, start=1)
        ),
        0x83: int(round(reading.pack_voltage_volts * 100)),
        CURRENT_TAG: encode_current(reading.current_amperes, protocol_version),
        0x85: int(round(reading.state_of_charge_ratio * 100)),
        0x86: int(reading.extra.get("temperature_sensor_count", 2)),  # type: ignore[arg-type]
        0x87: reading.charge_cycles,
        0x89: int(round(reading.cycle_capacity_coulombs / COULOMBS_PER_AMPERE_HOUR)),
        0x8A: int(reading.extra.get("cell_count", reading.cells)),  # type: ignore[arg-type]
        0x8B: reading.alarm_bitmask,
        0x8C: reading.status_bitmask,
        0xA9: int(reading.extra.get("cell_count_setting", reading.cells)),  # type: ignore[arg-type]
        0xAE: int(reading.extra.get("board_address", 1)),  # type: ignore[arg-type]
        0xB4: _ascii(device.device_id),
        0xB5: _ascii(parse_manufacture_date(device.manufacture_date)),
        0xB7: _software_version_field(reading),
    }
    for tag, sensor in TEMPERATURE_SENSORS:
        registers[tag] = encode_temperature(reading.temperatures_celsius[sensor])
    for setting in reading.settings:
        row = REGISTER_BY_NAME[setting.name]
        registers[row.tag] = int(round(setting.value / row.scale))
    for tag, name in ((0xAB, "charge"), (0xAC, "discharge"), (0x9D, "balancer"), (0xB3, "dedicated_charger")):
        if name in reading.switches_enabled:
            registers[tag] = int(reading.switches_enabled[name])
    for tag, value in ((0xAA, reading.nominal_capacity_coulombs), (0xB6, reading.runtime_seconds)):
        if value is not None:
            registers[tag] = int(round(value / REGISTER_BY_TAG[tag].scale))
    if device.battery_type:
        by_name = {name: code for code, name in BATTERY_TYPES.items()}
        code = by_name.get(device.battery_type)
        registers[0xAF] = int(device.battery_type) if code is None else code
    if protocol_version is not None:
        registers[0xB8] = int(reading.extra.get("start_current_calibration", 0))  # type: ignore[arg-type]
        if reading.actual_capacity_coulombs is not None:
            registers[0xB9] = int(round(reading.actual_capacity_coulombs / COULOMBS_PER_AMPERE_HOUR))
        registers[0xBA] = _manufacturer_id_field(reading)
        registers[PROTOCOL_VERSION_TAG] = protocol_version
    return registers
