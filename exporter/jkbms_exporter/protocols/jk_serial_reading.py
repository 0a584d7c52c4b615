"""Registers of a JK "4E 57" read-all reply ⇄ :class:`~jkbms_exporter.reading.Reading`.

:func:`registers_to_reading` turns the walked registers (:func:`.jk_serial.walk_registers`)
into a reading; :func:`reading_to_registers` is its inverse, for the simulator. Table-driven
from :mod:`.jk_serial_layout`; the value rules are in :mod:`.jk_serial_quirks`.
"""

from __future__ import annotations

from typing import Callable, Dict, Generic, Mapping, Optional, Sequence, Tuple, TypeVar

from ..errors import FrameError
from ..reading import COULOMBS_PER_AMPERE_HOUR, DeviceInfo, Reading, reading_from_fields, Setting
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

T = TypeVar("T")



def _cells(raw: Sequence[Tuple[int, int]]) -> Tuple[float, ...]:
    if raw:
        indices, millivolts = zip(*raw)
        if indices == _IN_ORDER.get(len(raw)):  # as every BMS sends them: nothing to sort
            return tuple([mv / 1000.0 for mv in millivolts])
    indices = sorted(index for index, _ in raw)
    if indices != list(range(1, len(raw) + 1)):
        raise FrameError("cell indices %s are not 1…%d" % (indices, len(raw)))
    return tuple(mv / 1000.0 for _, mv in sorted(raw))


#: cell count → the indices 1…n, the order a BMS lists its cells in (0x79 holds ≤ 85).
_IN_ORDER = {count: tuple(range(1, count + 1)) for count in range(1, 86)}


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


class _Remembered(Generic[T]):
    """What a function of a few registers gave for their raw values last time: the
    settings, the identity, the alarm names of a BMS are the same read after read.
    Bounded: cleared when full. Values that cannot be a key (a caller's bytearray) are
    computed every time."""

    def __init__(self, tags: Sequence[int], compute: Callable[[Mapping[int, Raw]], T],
                 limit: int = 256) -> None:
        self._tags = tuple(tags)
        self._compute = compute
        self._seen: Dict[Tuple[Optional[Raw], ...], T] = {}
        self._limit = limit

    def __call__(self, registers: Mapping[int, Raw]) -> T:
        key = tuple(map(registers.get, self._tags))
        try:
            return self._seen[key]
        except KeyError:
            pass
        except TypeError:
            return self._compute(registers)
        value = self._compute(registers)
        if len(self._seen) >= self._limit:
            self._seen.clear()
        self._seen[key] = value
        return value


def _text(registers: Mapping[int, Raw], tag: int) -> str:
    return decode_text(registers[tag]) if tag in registers else ""  # type: ignore[arg-type]


def _compute_settings(registers: Mapping[int, Raw]) -> Tuple[Setting, ...]:
    return tuple(_setting(row, registers[row.tag]) for row in SETTINGS  # type: ignore[arg-type]
                 if row.tag in registers)


def _compute_switches(registers: Mapping[int, Raw]) -> Dict[str, bool]:
    return {name: bool(registers[tag]) for tag, name in _SWITCHES if tag in registers}


_SWITCHES = ((0xAB, "charge"), (0xAC, "discharge"), (0x9D, "balancer"),
             (0xB3, "dedicated_charger"))


def _compute_alarms(registers: Mapping[int, Raw]) -> Dict[str, bool]:
    alarm_bits = int(registers[0x8B])  # type: ignore[arg-type]
    return {name: bool(alarm_bits >> bit & 1) for bit, name in enumerate(ALARM_BITS)}


#: Registers that only say which board it is, tagged ``extra`` (after ``current_raw``).
_EXTRA_TAGS = (0x86, 0x8A, 0xA9, 0xAE, 0xB8)


def _compute_identity(registers: Mapping[int, Raw]) -> Tuple[DeviceInfo, Dict[str, object]]:
    """The device info and every ``extra`` entry but ``current_raw``, in that order."""
    protocol_version = registers.get(PROTOCOL_VERSION_TAG)
    raw_version = _text(registers, 0xB7)
    hardware, software = split_software_version(raw_version)
    battery_type = registers.get(0xAF)
    extra: Dict[str, object] = {"protocol_version": protocol_version}
    for tag in _EXTRA_TAGS:
        if tag in registers:
            extra[REGISTER_BY_TAG[tag].name] = registers[tag]
    if 0xBA in registers:
        extra["manufacturer_id"] = _text(registers, 0xBA)
        # the exact field: NULs inside it are data (spec §6.3), the text above shows spaces
        extra["manufacturer_id_hex"] = bytes(registers[0xBA]).hex()  # type: ignore[arg-type]
    if raw_version:
        extra["software_version_string"] = raw_version
    device = DeviceInfo(
        protocol=PROTOCOL_NAME,
        protocol_version="" if protocol_version is None else str(protocol_version),
        model=model_from_manufacturer_id(registers[0xBA]) if 0xBA in registers else "",  # type: ignore[arg-type]
        hardware_version=hardware,
        software_version=software,
        device_id=_text(registers, 0xB4),
        manufacture_date=format_manufacture_date(_text(registers, 0xB5)),
        battery_type=(
            ""
            if battery_type is None
            else BATTERY_TYPES.get(int(battery_type), str(battery_type))  # type: ignore[arg-type]
        ),
    )
    return device, extra


_settings_of = _Remembered([row.tag for row in SETTINGS], _compute_settings)
_switches_of = _Remembered([tag for tag, _ in _SWITCHES], _compute_switches)
_alarms_of = _Remembered([0x8B], _compute_alarms)
_identity_of = _Remembered((PROTOCOL_VERSION_TAG, 0xAF, 0xB4, 0xB5, 0xB7, 0xBA) + _EXTRA_TAGS,
                           _compute_identity)
_REQUIRED = frozenset(REQUIRED_TAGS)


def registers_to_reading(registers: Mapping[int, Raw]) -> Reading:
    """Turn a complete read-all register set into a :class:`Reading`."""
    if not registers.keys() >= _REQUIRED:
        missing = [tag for tag in REQUIRED_TAGS if tag not in registers]
        raise FrameError(
            "reply lacks register(s) %s: not a read-all reply"
            % ", ".join("0x%02X" % tag for tag in missing)
        )
    get = registers.get
    status = int(registers[0x8C])  # type: ignore[arg-type]
    device, identity = _identity_of(registers)
    current_raw = registers[CURRENT_TAG]
    # each reading gets its own dicts (copies of the remembered ones)
    extra: Dict[str, object] = {"current_raw": current_raw, **identity}
    runtime, nominal, actual = get(0xB6), get(0xAA), get(0xB9)
    return reading_from_fields(
        cell_voltages_volts=_cells(registers[CELLS_TAG]),  # type: ignore[arg-type]
        pack_voltage_volts=round(int(registers[0x83]) * _SCALE_83, 2),  # type: ignore[arg-type]
        current_amperes=decode_current(int(current_raw), identity["protocol_version"]),  # type: ignore[arg-type]
        state_of_charge_ratio=round(int(registers[0x85]) * _SCALE_85, 2),  # type: ignore[arg-type]
        temperatures_celsius={
            sensor: decode_temperature(int(registers[tag]))  # type: ignore[arg-type]
            for tag, sensor in TEMPERATURE_SENSORS
        },
        charge_cycles=int(registers[0x87]),  # type: ignore[arg-type]
        cycle_capacity_coulombs=int(registers[0x89]) * _SCALE_89,  # type: ignore[arg-type]
        runtime_seconds=None if runtime is None else int(runtime) * _SCALE_B6,  # type: ignore[arg-type]
        nominal_capacity_coulombs=None if nominal is None else int(nominal) * _SCALE_AA,  # type: ignore[arg-type]
        actual_capacity_coulombs=None if actual is None else int(actual) * _SCALE_B9,  # type: ignore[arg-type]
        charge_mosfet_on=bool(status & STATUS_CHARGE_MOSFET),
        discharge_mosfet_on=bool(status & STATUS_DISCHARGE_MOSFET),
        balancing=bool(status & STATUS_BALANCING),
        switches_enabled=dict(_switches_of(registers)),
        alarm_bitmask=int(registers[0x8B]),  # type: ignore[arg-type]
        alarms=dict(_alarms_of(registers)),
        status_bitmask=status,
        settings=_settings_of(registers),
        device=device,
        extra=extra,
    )


_SCALE_83, _SCALE_85, _SCALE_89, _SCALE_AA, _SCALE_B6, _SCALE_B9 = (
    REGISTER_BY_TAG[tag].scale for tag in (0x83, 0x85, 0x89, 0xAA, 0xB6, 0xB9))


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
