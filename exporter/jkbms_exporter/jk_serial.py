"""Codec for the JK "4E 57" (NW) serial protocol of JK-B / JK-BD boards — no I/O here.

Spec: ``shared/protocol/jk-rs485-4e57.md``; ground truth: ``shared/protocol/vectors/4e57.json``.

Frame: ``4E 57 | LEN(2) | terminal(4) | command | source | transport | info(N) | record(4) |
68 | 00 00 SUM(2)``; big-endian; ``LEN`` = total size − 2; ``SUM`` = 16-bit byte sum of
everything up to and including ``68``. A read-all reply's information field is a walk of
``tag, value`` records whose widths come from :data:`REGISTERS`.

Only read requests can be built here (commands 0x06 read-all and 0x03 read-register):
this package never writes to a BMS. Replies can be *encoded* too, for the simulator.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import (
    BadStartError,
    ChecksumError,
    FrameError,
    LengthMismatchError,
    MissingEndByteError,
    TruncatedFieldError,
    UnknownTagError,
)
from .reading import COULOMBS_PER_AMPERE_HOUR, DeviceInfo, Reading, Setting

PROTOCOL_NAME = "jk-serial"

START = b"NW"  # 0x4E 0x57
END_BYTE = 0x68
HEADER_SIZE = 11  # start(2) length(2) terminal(4) command source transport
TRAILER_SIZE = 9  # record number(4) end(1) checksum(4)
MIN_FRAME_SIZE = HEADER_SIZE + TRAILER_SIZE  # an empty information field
#: Largest frame we accept: 32 cells give 339 bytes; anything much bigger is line noise.
MAX_FRAME_SIZE = 1024

COMMAND_READ_REGISTER = 0x03
COMMAND_READ_ALL = 0x06
READ_COMMANDS = frozenset((COMMAND_READ_REGISTER, COMMAND_READ_ALL))

SOURCE_BMS = 0x00
SOURCE_PC = 0x03
TRANSPORT_REQUEST = 0x00
TRANSPORT_REPLY = 0x01

CELLS_TAG = 0x79
CURRENT_TAG = 0x84
PROTOCOL_VERSION_TAG = 0xC0
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
    _u(0x85, 1, "state_of_charge", 0.01, "ratio"),
    _u(0x86, 1, "temperature_sensor_count"),
    _u(0x87, 2, "charge_cycles"),
    _u(0x89, 4, "cycle_capacity", COULOMBS_PER_AMPERE_HOUR, "coulombs"),
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
    Register(0xB2, 10, "password", "secret"),
    _u(0xB3, 1, "dedicated_charger_switch"),
    # 6.3 identification
    Register(0xB4, 8, "device_id", "str"),
    Register(0xB5, 4, "manufacture_date", "str"),
    _u(0xB6, 4, "runtime", 60.0, "seconds"),
    Register(0xB7, 15, "software_version", "str"),
    _u(0xB8, 1, "start_current_calibration"),
    _u(0xB9, 4, "actual_capacity", COULOMBS_PER_AMPERE_HOUR, "coulombs"),
    Register(0xBA, 24, "manufacturer_id", "str"),
    _u(0xC0, 1, "protocol_version"),
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


# --------------------------------------------------------------------------- quirks


def decode_temperature(raw: int) -> float:
    """0x80–0x82: values above 100 are negative, 101 = −1 °C (vendor doc, spec §7.2).

    Peers disagree at the boundary (ESPHome: ``99 - raw``); we follow the vendor rule.
    """
    return float(raw) if raw <= 100 else float(100 - raw)


def encode_temperature(celsius: float) -> int:
    value = int(round(celsius))
    return value if value >= 0 else 100 - value


def decode_current(raw: int, protocol_version: Optional[int]) -> float:
    """0x84, decoded by 0xC0 *of the same frame* (spec §7.1).

    Protocol version 1: bit 15 set = charging, magnitude ``raw & 0x7FFF`` × 10 mA.
    Version 0 or absent (old firmware): ``(10000 − raw)`` × 10 mA, so 10000 is idle.
    Vectors: ``80 D0`` → +2.08 A (esphome_14s_h6), ``27 10`` v0 → 0 A (vendor_example_20s_nw100).
    """
    if protocol_version == 1:
        magnitude = (raw & 0x7FFF) / 100.0
        if magnitude == 0:
            return 0.0  # `00 00` would otherwise be −0.0
        return magnitude if raw & 0x8000 else -magnitude
    return (10000 - raw) / 100.0 + 0.0


def encode_current(amperes: float, protocol_version: Optional[int]) -> int:
    centiamperes = int(round(amperes * 100))
    if protocol_version == 1:
        if centiamperes > 0:
            return 0x8000 | centiamperes
        return -centiamperes
    return 10000 - centiamperes


def decode_text(raw: bytes) -> str:
    """Fixed-width ASCII field: NUL bytes (padding, or mid-string in 0xBA) are dropped."""
    text = raw.replace(b"\x00", b"").decode("ascii", errors="replace")
    return "".join(ch if ch.isprintable() else "?" for ch in text).strip()


def split_software_version(text: str) -> Tuple[str, str]:
    """0xB7 → (hardware, software): ``H6.X__S6.1.3S__`` → (``6.X``, ``6.1.3S``),
    ``11.XW_S11.261__`` → (``11.XW``, ``11.261``); without ``_S`` (``NW_1_0_0_200428``)
    the whole string is the software version."""
    if "_S" not in text:
        return "", text.rstrip("_")
    hardware, software = text.split("_S", 1)
    hardware = hardware.rstrip("_")
    if hardware.startswith("H"):
        hardware = hardware[1:]
    return hardware, software.rstrip("_")


def join_software_version(hardware: str, software: str) -> str:
    if not hardware:
        return software
    return "H%s_S%s" % (hardware, software)


_VENDOR_MANUFACTURER_ID = re.compile(r"BT[0-9A-Z]{22}")


def model_from_manufacturer_id(raw: bytes) -> str:
    """0xBA: retail boards put 12 bytes of user data, then the model (``JK_B1A24S15P``);
    the vendor's own example is a 24-character production code with no model in it."""
    if _VENDOR_MANUFACTURER_ID.fullmatch(raw.decode("ascii", errors="replace")):
        return ""
    return decode_text(raw[12:])


def format_manufacture_date(text: str) -> str:
    """0xB5 ``YYMM`` → ``20YY-MM``; anything else is kept as sent."""
    if len(text) == 4 and text.isdigit():
        return "20%s-%s" % (text[:2], text[2:])
    return text


def parse_manufacture_date(text: str) -> str:
    match = re.fullmatch(r"20(\d\d)-(\d\d)", text)
    return match.group(1) + match.group(2) if match else text


# --------------------------------------------------------------------------- envelope


@dataclass(frozen=True)
class Envelope:
    """The validated outer layer of a frame."""

    command: int
    source: int
    transport_type: int
    info: bytes


def checksum(data: bytes) -> int:
    """16-bit sum of ``data`` (spec §4; masked so a 32-cell frame cannot overflow)."""
    return sum(data) & 0xFFFF


def frame_size(header: bytes) -> int:
    """Total frame size from the first four bytes (``LENGTH`` counts from itself)."""
    return struct.unpack_from(">H", header, 2)[0] + 2


def locate_frame(buffer: bytes) -> Tuple[int, Optional[int]]:
    """Where a frame starts in ``buffer`` and how long it is (``None``: not known yet).

    Bytes before the returned start are junk and may be dropped. A ``4E 57`` whose length
    field is impossible is junk too, and the search goes on after it. This is the framing
    rule the transport uses to return as soon as the last byte of a reply has arrived.
    """
    start = 0
    while True:
        found = buffer.find(START, start)
        if found < 0:
            # keep a trailing 0x4E: it may be the first half of the next start marker
            return (len(buffer) - 1 if buffer.endswith(START[:1]) else len(buffer)), None
        if len(buffer) - found < 4:
            return found, None
        size = frame_size(buffer[found : found + 4])
        if MIN_FRAME_SIZE <= size <= MAX_FRAME_SIZE:
            return found, size
        start = found + 1


def parse_envelope(frame: bytes, verify_checksum: bool = True) -> Envelope:
    """Validate the framing of one complete frame (spec §2, §4)."""
    frame = bytes(frame)
    if len(frame) < 4:
        raise TruncatedFieldError("frame is %d bytes, too short to hold a header" % len(frame))
    if frame[:2] != START:
        raise BadStartError("frame starts with %s, expected 4E 57" % frame[:2].hex(" ").upper(), 0)
    size = frame_size(frame)
    if size != len(frame):
        raise LengthMismatchError(
            "length field says %d bytes in all, received %d" % (size, len(frame)), 2
        )
    if size < MIN_FRAME_SIZE:
        raise LengthMismatchError("length field %d is below the minimum frame" % (size - 2), 2)
    if frame[-5] != END_BYTE:
        raise MissingEndByteError(
            "end byte is 0x%02X, expected 0x68" % frame[-5], len(frame) - 5
        )
    if verify_checksum:
        received = struct.unpack_from(">H", frame, len(frame) - 2)[0]
        expected = checksum(frame[:-4])
        if received != expected:
            raise ChecksumError(expected=expected, received=received)
    return Envelope(
        command=frame[8],
        source=frame[9],
        transport_type=frame[10],
        info=frame[HEADER_SIZE : len(frame) - TRAILER_SIZE],
    )


def _build_frame(command: int, source: int, transport_type: int, info: bytes) -> bytes:
    body = bytearray(START)
    body += struct.pack(">H", HEADER_SIZE + len(info) + TRAILER_SIZE - 2)
    body += b"\x00\x00\x00\x00"
    body += bytes((command, source, transport_type))
    body += info
    body += b"\x00\x00\x00\x00"
    body.append(END_BYTE)
    return bytes(body) + struct.pack(">I", checksum(body))


# --------------------------------------------------------------------------- requests (read only)


@dataclass(frozen=True)
class Request:
    command: int
    source: int
    register: Optional[int]


def read_all_request(source: int = SOURCE_PC) -> bytes:
    """The 21-byte read-all request (command 0x06, data id 00)."""
    return _build_frame(COMMAND_READ_ALL, source, TRANSPORT_REQUEST, b"\x00")


def read_register_request(tag: int, source: int = SOURCE_PC) -> bytes:
    """Read one register (command 0x03), as the seed script did for 0x83."""
    if tag in WRITE_ONLY_TAGS or (tag and tag not in REGISTER_BY_TAG and tag != CELLS_TAG):
        raise ValueError("0x%02X is not a readable register" % tag)
    return _build_frame(COMMAND_READ_REGISTER, source, TRANSPORT_REQUEST, bytes((tag,)))


def parse_request(frame: bytes, verify_checksum: bool = True) -> Request:
    """Decode a request frame (what a BMS receives); used by the simulator."""
    envelope = parse_envelope(frame, verify_checksum)
    if envelope.transport_type != TRANSPORT_REQUEST:
        raise FrameError("not a request: transport type %d" % envelope.transport_type, 10)
    register = envelope.info[0] if envelope.info else None
    return Request(command=envelope.command, source=envelope.source, register=register)


# --------------------------------------------------------------------------- TLV walk


def walk_registers(info: bytes, base_offset: int = HEADER_SIZE) -> Dict[int, Raw]:
    """Walk the ``tag, value`` records of an information field into raw values.

    Numbers come back as ints (signed where the table says so), strings as bytes, the cell
    list as ``((index, millivolts), …)``. The password (0xB2) is skipped and never stored.
    """
    registers: Dict[int, Raw] = {}
    position = 0
    while position < len(info):
        tag = info[position]
        offset = base_offset + position
        position += 1
        if tag == CELLS_TAG:
            if position >= len(info):
                raise TruncatedFieldError("cell list 0x79 has no length byte", offset)
            length = info[position]
            position += 1
            if length % 3:
                raise FrameError("cell list length %d is not a multiple of 3" % length, offset)
            value = info[position : position + length]
            if len(value) < length:
                raise TruncatedFieldError(
                    "cell list 0x79 needs %d bytes, %d left" % (length, len(value)), offset
                )
            position += length
            registers[tag] = tuple(
                (value[i], (value[i + 1] << 8) | value[i + 2]) for i in range(0, length, 3)
            )
            continue
        row = REGISTER_BY_TAG.get(tag)
        if row is None:
            raise UnknownTagError(tag, offset)
        value = info[position : position + row.width]
        if len(value) < row.width:
            raise TruncatedFieldError(
                "register 0x%02X (%s) needs %d bytes, %d left"
                % (tag, row.name, row.width, len(value)),
                offset,
            )
        position += row.width
        if row.kind == "secret":
            continue
        if row.kind == "str":
            registers[tag] = bytes(value)
        else:
            registers[tag] = int.from_bytes(value, "big", signed=row.kind == "i")
    return registers


def encode_registers(registers: Mapping[int, Raw]) -> bytes:
    """Inverse of :func:`walk_registers`, in table order (0x79 first, 0xC0 last)."""
    info = bytearray()
    if CELLS_TAG in registers:
        cells = registers[CELLS_TAG]
        info += bytes((CELLS_TAG, 3 * len(cells)))  # type: ignore[arg-type]
        for index, millivolts in cells:  # type: ignore[union-attr]
            info += bytes((index,)) + struct.pack(">H", millivolts)
    for row in REGISTERS:
        if row.kind == "secret":
            if _PASSWORD_FOLLOWS_TAG in registers and 0xB3 in registers:
                info += bytes((row.tag,)) + b"\x00" * row.width
            continue
        if row.tag not in registers:
            continue
        value = registers[row.tag]
        info.append(row.tag)
        if row.kind == "str":
            info += bytes(value).ljust(row.width, b"\x00")[: row.width]  # type: ignore[arg-type]
        else:
            info += int(value).to_bytes(row.width, "big", signed=row.kind == "i")  # type: ignore[arg-type]
    return bytes(info)


#: The encoder writes an all-zero password field whenever the frame has the register that
#: follows it, so replies keep the real layout without ever carrying a password.
_PASSWORD_FOLLOWS_TAG = 0xB1


def encode_reply(registers: Mapping[int, Raw], command: int = COMMAND_READ_ALL) -> bytes:
    """A complete reply frame as a BMS would send it."""
    return _build_frame(command, SOURCE_BMS, TRANSPORT_REPLY, encode_registers(registers))


def decode_frame_registers(frame: bytes, verify_checksum: bool = True) -> Dict[int, Raw]:
    envelope = parse_envelope(frame, verify_checksum)
    return walk_registers(envelope.info)


# --------------------------------------------------------------------------- registers ⇄ reading


def _cells(raw: Sequence[Tuple[int, int]]) -> Tuple[float, ...]:
    indices = sorted(index for index, _ in raw)
    if indices != list(range(1, len(raw) + 1)):
        raise FrameError("cell indices %s are not 1…%d" % (indices, len(raw)))
    return tuple(mv / 1000.0 for _, mv in sorted(raw))


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
    settings = tuple(
        Setting(row.name, row.unit, round(int(registers[row.tag]) * row.scale, 6))  # type: ignore[arg-type]
        for row in SETTINGS
        if row.tag in registers
    )
    extra: Dict[str, object] = {
        "current_raw": registers[CURRENT_TAG],
        "protocol_version": protocol_version,
    }
    for tag in (0x86, 0x8A, 0xA9, 0xAE, 0xB8):
        if tag in registers:
            extra[REGISTER_BY_TAG[tag].name] = registers[tag]
    if 0xBA in registers:
        extra["manufacturer_id"] = text(0xBA)
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
        0xB7: _ascii(join_software_version(device.hardware_version, device.software_version)),
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
        registers[0xBA] = _ascii(device.device_id).ljust(12, b"\x00") + _ascii(device.model)
        registers[PROTOCOL_VERSION_TAG] = protocol_version
    return registers


# --------------------------------------------------------------------------- the public pair


def decode_reply(frame: bytes, verify_checksum: bool = True) -> Reading:
    """Decode a complete read-all reply frame into a :class:`Reading`."""
    return registers_to_reading(decode_frame_registers(frame, verify_checksum))


def encode_reading(reading: Reading, command: int = COMMAND_READ_ALL) -> bytes:
    """Build the read-all reply a BMS in the state ``reading`` would send."""
    return encode_reply(reading_to_registers(reading), command)


def registers_as_dict(registers: Mapping[int, Raw]) -> List[Tuple[str, str, object]]:
    """(tag, name, raw value) rows for troubleshooting output (password never included)."""
    rows: List[Tuple[str, str, object]] = []
    for tag in sorted(registers):
        name = "cell_voltages" if tag == CELLS_TAG else REGISTER_BY_TAG[tag].name
        value = registers[tag]
        rows.append(("0x%02X" % tag, name, value.hex(" ") if isinstance(value, bytes) else value))
    return rows
