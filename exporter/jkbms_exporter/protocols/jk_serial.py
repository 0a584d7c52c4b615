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

import math
import re
import struct
from dataclasses import dataclass
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from ..errors import (
    BadStartError,
    ChecksumError,
    FrameError,
    LengthMismatchError,
    MissingEndByteError,
    TruncatedFieldError,
    UnknownTagError,
)
from ..reading import COULOMBS_PER_AMPERE_HOUR, DeviceInfo, Reading, Setting

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


# --------------------------------------------------------------------------- quirks


def decode_temperature(raw: int) -> float:
    """0x80–0x82: values above 100 are negative, 101 = −1 °C, 140 = −40 °C; 100 is +100 °C
    (vendor doc: "the part above 100 is negative, 100 is the reference", spec §7.2).

    Peers disagree at the boundary (ESPHome ``99 - raw``, dbus-serialbattery ``raw < 99``,
    spec §11); we follow the vendor rule. Every captured frame has raw ≤ 100.
    """
    return float(raw) if raw <= 100 else float(100 - raw)


#: Temperatures the vendor rule can carry in a u16: raw 0…100 → 0…100 °C, raw 101…65535 →
#: −1…−65435 °C. Nothing above +100 °C can be sent (101 already means −1 °C).
TEMPERATURE_MIN_CELSIUS = 100 - 0xFFFF
TEMPERATURE_MAX_CELSIUS = 100


def encode_temperature(celsius: float) -> int:
    """Inverse of :func:`decode_temperature` (whole degrees; the wire has no fractions).

    Raises ``ValueError`` for a temperature the vendor rule cannot represent instead of
    sending a code that reads back as a different temperature (+150 °C would read −50 °C).
    """
    if not math.isfinite(celsius):
        raise ValueError("temperature %r cannot be encoded" % (celsius,))
    value = int(round(celsius))
    if not TEMPERATURE_MIN_CELSIUS <= value <= TEMPERATURE_MAX_CELSIUS:
        raise ValueError(
            "temperature %s °C is outside what 0x80–0x82 can carry (%d…%d °C)"
            % (celsius, TEMPERATURE_MIN_CELSIUS, TEMPERATURE_MAX_CELSIUS)
        )
    return value if value >= 0 else 100 - value


def decode_current(raw: int, protocol_version: Optional[int]) -> float:
    """0x84, decoded by 0xC0 *of the same frame* (spec §7.1).

    Protocol version 1: bit 15 set = charging, magnitude ``raw & 0x7FFF`` × 10 mA.
    Version 0 or absent (old firmware): ``(10000 − raw)`` × 10 mA, so 10000 is idle.
    Vectors: ``80 D0`` → +2.08 A (esphome_14s_h6), ``00 45`` → −0.69 A
    (esphome_16s_bd6a17s6p_710h), ``27 10`` without 0xC0 → 0 A (vendor_example_20s_nw100).
    """
    if protocol_version == 1:
        magnitude = (raw & 0x7FFF) / 100.0
        if magnitude == 0:
            return 0.0  # `00 00` (and `80 00`) would otherwise be −0.0 (spec §7.1)
        return magnitude if raw & 0x8000 else -magnitude
    return (10000 - raw) / 100.0 + 0.0


def encode_current(amperes: float, protocol_version: Optional[int]) -> int:
    """Inverse of :func:`decode_current`; ``ValueError`` outside what the encoding can carry
    (±327.67 A with the bit-15 rule, −555.35…+100.00 A with the offset rule), instead of a
    raw value that would overflow the field or flip the sign bit."""
    if not math.isfinite(amperes):
        raise ValueError("current %r cannot be encoded" % (amperes,))
    centiamperes = int(round(amperes * 100))
    if protocol_version == 1:
        if abs(centiamperes) > 0x7FFF:
            raise ValueError("current %s A exceeds ±327.67 A (0x84, protocol 1)" % amperes)
        return 0x8000 | centiamperes if centiamperes > 0 else -centiamperes
    raw = 10000 - centiamperes
    if not 0 <= raw <= 0xFFFF:
        raise ValueError("current %s A is outside −555.35…+100 A (0x84, protocol 0)" % amperes)
    return raw


def decode_text(raw: bytes) -> str:
    """A fixed-width ASCII field (0xB4, 0xB5, 0xB7, 0xBA) as label-safe text.

    NUL is *not* a terminator (spec §6.3: 0xBA of vector opendtu_16s_b1a24s15p_1 is
    ``beki`` + 8 NULs + ``JK_B1A24S15P``): a NUL stands for an unset character and becomes a
    space, so what follows keeps its position (``beki        JK_B1A24S15P``); NUL/space
    padding at either end is dropped; bytes outside printable ASCII become ``?``.
    """
    text = "".join(
        " " if byte == 0 else chr(byte) if 0x20 <= byte <= 0x7E else "?" for byte in raw
    )
    return text.strip(" ")


def split_software_version(text: str) -> Tuple[str, str]:
    """0xB7 → (hardware, software): ``H6.X__S6.1.3S__`` → (``6.X``, ``6.1.3S``),
    ``11.XW_S11.261__`` → (``11.XW``, ``11.261``); without ``_S`` (``NW_1_0_0_200428``)
    the whole string is the software version (spec §6.3: split at ``_S``, strip a leading
    ``H`` and the ``_`` padding)."""
    if "_S" not in text:
        return "", text.rstrip("_")
    hardware, software = text.split("_S", 1)
    hardware = hardware.rstrip("_")
    if hardware.startswith("H"):
        hardware = hardware[1:]
    return hardware, software.rstrip("_")


SOFTWARE_VERSION_WIDTH = 15


def join_software_version(hardware: str, software: str) -> str:
    """Inverse of :func:`split_software_version`, in the layout real boards send: the
    hardware part padded with ``_`` to 5 characters, ``_S``, the software version, ``_``
    padding to 15 characters. Hardware below 10 gets the ``H`` prefix (vectors:
    ``H6.X__S6.1.3S__``, ``H7.X__S7.1.0H__`` but ``11.XW_S11.261__``; spec §6.3 also
    quotes ``10.XW_S10.07___``)."""
    if not hardware:
        return software
    major = re.match(r"\d+", hardware)
    if (major is not None and int(major.group()) < 10) or hardware.startswith("H"):
        hardware = "H" + hardware  # a leading H is stripped again by the split
    text = "%s_S%s" % (hardware.ljust(5, "_"), software)
    return text.ljust(SOFTWARE_VERSION_WIDTH, "_")


_VENDOR_MANUFACTURER_ID = re.compile(r"BT[0-9A-Z]{22}")


def model_from_manufacturer_id(raw: bytes) -> str:
    """0xBA: retail boards put 12 bytes of user data, then the model (spec §6.3; vectors
    mppsolar_14s_b1a20s15p_11261 ``Input UserdaJK_B1A20S15P``, opendtu_16s_b1a24s15p_1
    ``beki`` + 8 NULs + ``JK_B1A24S15P``); the vendor's own format (vectors esphome_*:
    ``BT3072020120000200521001``) is a 24-character production code with no model in it."""
    if _VENDOR_MANUFACTURER_ID.fullmatch(raw.decode("ascii", errors="replace")):
        return ""
    return decode_text(raw[12:])


def format_manufacture_date(text: str) -> str:
    """0xB5 ``YYMM`` → ``20YY-MM`` (spec §6.3: ``2306`` = June 2023); anything else is kept
    as sent."""
    if len(text) == 4 and text.isdigit():
        return "20%s-%s" % (text[:2], text[2:])
    return text


def parse_manufacture_date(text: str) -> str:
    """Inverse of :func:`format_manufacture_date`."""
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


def _frame_is_sound(frame: bytes) -> Tuple[bool, bool]:
    """(end byte and reserved checksum bytes where they belong, checksum right)."""
    shaped = frame[-5] == END_BYTE and frame[-4:-2] == b"\x00\x00"
    return shaped, shaped and struct.unpack_from(">H", frame, len(frame) - 2)[0] == checksum(
        frame[:-4]
    )


def locate_frame(buffer: bytes) -> Tuple[int, Optional[int]]:
    """Where a frame starts in ``buffer`` and how long it is (``None``: not known yet).

    Bytes before the returned start are junk and may be dropped. Every ``4E 57`` is a
    candidate; one whose length field is impossible is junk. Among the others, in order of
    preference: the first complete frame that verifies; the first complete frame that has
    its end byte but a wrong checksum (so the decoder reports ``checksum``); the first one
    still arriving (wait for it); the first complete one without its end byte (so the
    decoder reports it). That way a ``4E 57`` inside line noise, whose length field happens
    to be plausible, cannot hide a real reply that follows it (spec §9: "resync on 4E 57").
    This is the framing rule the transport uses to return as soon as the last byte of a
    reply has arrived.
    """
    buffer = bytes(buffer)
    bad_checksum: Optional[Tuple[int, Optional[int]]] = None
    pending: Optional[Tuple[int, Optional[int]]] = None
    damaged: Optional[Tuple[int, Optional[int]]] = None
    found = buffer.find(START)
    while found >= 0:
        if len(buffer) - found < 4:
            pending = pending or (found, None)  # a partial header: wait for its length
            break
        size = frame_size(buffer[found : found + 4])
        if MIN_FRAME_SIZE <= size <= MAX_FRAME_SIZE:
            if len(buffer) - found < size:
                pending = pending or (found, size)
            else:
                shaped, verified = _frame_is_sound(buffer[found : found + size])
                if verified:
                    return found, size
                if shaped:
                    bad_checksum = bad_checksum or (found, size)
                else:
                    damaged = damaged or (found, size)
        found = buffer.find(START, found + 1)
    choice = bad_checksum or pending or damaged
    if choice is not None:
        return choice
    # keep a trailing 0x4E: it may be the first half of the next start marker
    return (len(buffer) - 1 if buffer.endswith(START[:1]) else len(buffer)), None


def parse_envelope(frame: bytes, verify_checksum: bool = True) -> Envelope:
    """Validate the framing of one complete frame (spec §2, §4).

    Each fault has its own error: :class:`BadStartError`, :class:`LengthMismatchError`,
    :class:`MissingEndByteError`, :class:`ChecksumError` (also when the two reserved bytes
    before the sum are not ``00 00``, spec §4).
    """
    frame = bytes(frame)
    if frame[:2] != START[: len(frame)]:
        raise BadStartError("frame starts with %s, expected 4E 57" % frame[:2].hex(" ").upper(), 0)
    if len(frame) < 4:
        raise LengthMismatchError("frame is %d bytes, too short to hold its length" % len(frame), 2)
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
        received = struct.unpack_from(">I", frame, len(frame) - 4)[0]
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
    """The only place a frame is put together. It refuses every command but the two reads
    (0x03, 0x06): this package never writes (0x02), sends a password (0x05), activates
    (0x01) or restarts/resets a BMS (spec §3: "Never send 02/05/BB/BC/BD from an exporter")."""
    if command not in READ_COMMANDS:
        raise ValueError("refusing to build a frame with command 0x%02X: read-only" % command)
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
    """Read one register (command 0x03), as the seed script did for 0x83; tag 0 asks for
    everything (vector mppsolar_14s_b1a20s15p_11261 is such a reply).

    Refuses tags that are not readable registers: the write-only commands 0xBB–0xBF
    (restart, factory reset, upgrade, GPS power), the password 0xB2 (never fetched), and
    tags the table does not know.
    """
    if not 0 <= tag <= 0xFF:
        raise ValueError("register tag %r is not a byte" % (tag,))
    if tag in WRITE_ONLY_TAGS:
        raise ValueError("0x%02X is a write-only command tag, never sent" % tag)
    if tag == PASSWORD_TAG:
        raise ValueError("0xB2 is the parameter password, never read")
    if tag and tag not in REGISTER_BY_TAG and tag != CELLS_TAG:
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


def _records(info: bytes, base_offset: int) -> Iterator[Tuple[int, int, bytes]]:
    """``(tag, offset of the tag byte in the frame, value bytes)`` for each record (spec §5).

    The width comes from :data:`REGISTERS`; 0x79 carries its own length byte, which stays
    part of its value. Stops with :class:`UnknownTagError` at a tag the table does not know
    (a write-only tag 0xBB–0xBF in a reply is one too) and with
    :class:`TruncatedFieldError` where a value runs past the end of the field.
    """
    position = 0
    while position < len(info):
        tag = info[position]
        offset = base_offset + position
        if tag == CELLS_TAG:
            if position + 1 >= len(info):
                raise TruncatedFieldError("cell list 0x79 has no length byte", offset)
            width = 1 + info[position + 1]
        else:
            row = REGISTER_BY_TAG.get(tag)
            if row is None:
                raise UnknownTagError(tag, offset)
            width = row.width
        value = info[position + 1 : position + 1 + width]
        if len(value) < width:
            raise TruncatedFieldError(
                "register 0x%02X needs %d bytes, %d left" % (tag, width, len(value)), offset
            )
        position += 1 + width
        yield tag, offset, value


def walk_layout(info: bytes, base_offset: int = HEADER_SIZE) -> List[Tuple[int, int, int]]:
    """``(tag, offset, value width)`` of every record, password included: the layout only,
    never a value (for tests and troubleshooting)."""
    return [(tag, offset, len(value)) for tag, offset, value in _records(info, base_offset)]


def redact_password(frame: bytes) -> bytes:
    """``frame`` with the value of the password register 0xB2 zeroed, for anything shown to
    people (``read --raw``, bug reports). A checksum that was valid is recomputed, so the
    redacted frame still decodes; a frame that does not walk is returned unchanged."""
    frame = bytes(frame)
    try:
        envelope = parse_envelope(frame, verify_checksum=False)
        layout = walk_layout(envelope.info)
    except FrameError:
        return frame
    valid = struct.unpack_from(">I", frame, len(frame) - 4)[0] == checksum(frame[:-4])
    redacted = bytearray(frame)
    for tag, offset, width in layout:
        if tag == PASSWORD_TAG:
            redacted[offset + 1 : offset + 1 + width] = bytes(width)
    if valid:
        redacted[-4:] = struct.pack(">I", checksum(redacted[:-4]))
    return bytes(redacted)


def walk_registers(info: bytes, base_offset: int = HEADER_SIZE) -> Dict[int, Raw]:
    """Walk the ``tag, value`` records of an information field into raw values.

    Numbers come back as ints (signed where the table says so), strings as bytes, the cell
    list as ``((index, millivolts), …)``. The password (0xB2) is parsed past and never
    stored (spec §6.2: "do not export").
    """
    registers: Dict[int, Raw] = {}
    for tag, offset, value in _records(info, base_offset):
        if tag == CELLS_TAG:
            cells = value[1:]
            if len(cells) % 3:
                raise FrameError(
                    "cell list length %d is not a multiple of 3" % len(cells), offset
                )
            registers[tag] = tuple(
                (cells[i], (cells[i + 1] << 8) | cells[i + 2]) for i in range(0, len(cells), 3)
            )
            continue
        row = REGISTER_BY_TAG[tag]
        if row.kind == "secret":
            continue
        if row.kind == "str":
            registers[tag] = bytes(value)
        else:
            registers[tag] = int.from_bytes(value, "big", signed=row.kind == "i")
    return registers


def _field(row: Register, value: Raw) -> bytes:
    """One value in its wire form; ``ValueError`` when it does not fit the register."""
    if row.kind == "str":
        if not isinstance(value, (bytes, bytearray)):
            raise ValueError("register 0x%02X (%s) takes bytes" % (row.tag, row.name))
        if len(value) > row.width:
            raise ValueError(
                "register 0x%02X (%s) is %d bytes wide, got %d"
                % (row.tag, row.name, row.width, len(value))
            )
        return bytes(value).ljust(row.width, b"\x00")
    try:
        return int(value).to_bytes(row.width, "big", signed=row.kind == "i")  # type: ignore[arg-type]
    except OverflowError:
        raise ValueError(
            "register 0x%02X (%s) cannot hold %r in %d bytes" % (row.tag, row.name, value, row.width)
        ) from None


def encode_registers(registers: Mapping[int, Raw]) -> bytes:
    """Inverse of :func:`walk_registers`, in table order (0x79 first, 0xC0 last).

    The password field is written as zeros, never with a value: whenever the mapping has
    0xB2 or both of its neighbours 0xB1 and 0xB3 (every real frame does), so replies keep
    the real layout without carrying a password. Tags the table does not know (including
    the write-only 0xBB–0xBF) and values that do not fit raise ``ValueError``.
    """
    unknown = [tag for tag in registers if tag not in REGISTER_BY_TAG and tag != CELLS_TAG]
    if unknown:
        raise ValueError(
            "not readable registers: %s" % ", ".join("0x%02X" % tag for tag in sorted(unknown))
        )
    info = bytearray()
    if CELLS_TAG in registers:
        cells = registers[CELLS_TAG]
        if 3 * len(cells) > 0xFF:  # type: ignore[arg-type]
            raise ValueError("%d cells do not fit the 0x79 length byte" % len(cells))  # type: ignore[arg-type]
        info += bytes((CELLS_TAG, 3 * len(cells)))  # type: ignore[arg-type]
        for index, millivolts in cells:  # type: ignore[union-attr]
            if not (0 <= index <= 0xFF and 0 <= millivolts <= 0xFFFF):
                raise ValueError("cell %r at %r mV cannot be encoded" % (index, millivolts))
            info += bytes((index,)) + struct.pack(">H", millivolts)
    for row in REGISTERS:
        if row.kind == "secret":
            if row.tag in registers or all(tag in registers for tag in _PASSWORD_NEIGHBOURS):
                info += bytes((row.tag,)) + b"\x00" * row.width
            continue
        if row.tag in registers:
            info.append(row.tag)
            info += _field(row, registers[row.tag])
    return bytes(info)


#: 0xB2 sits between these two in every real frame.
_PASSWORD_NEIGHBOURS = (0xB1, 0xB3)


def encode_reply(registers: Mapping[int, Raw], command: int = COMMAND_READ_ALL) -> bytes:
    """A complete reply frame as a BMS would send it; ``command`` is the read command it
    answers (0x06, or 0x03 as in vector mppsolar_14s_b1a20s15p_11261) — nothing else."""
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


# --------------------------------------------------------------------------- the public pair


def decode_reply(frame: bytes, verify_checksum: bool = True) -> Reading:
    """Decode a complete read-all reply frame into a :class:`Reading`."""
    return registers_to_reading(decode_frame_registers(frame, verify_checksum))


def encode_reading(reading: Reading, command: int = COMMAND_READ_ALL) -> bytes:
    """Build the read-all reply a BMS in the state ``reading`` would send."""
    return encode_reply(reading_to_registers(reading), command)


def registers_as_dict(registers: Mapping[int, Raw]) -> List[Tuple[str, str, object]]:
    """(tag, name, raw value) rows for troubleshooting output; the password is left out
    even when a caller's mapping carries one."""
    rows: List[Tuple[str, str, object]] = []
    for tag in sorted(registers):
        if tag == PASSWORD_TAG or (tag in REGISTER_BY_TAG and REGISTER_BY_TAG[tag].kind == "secret"):
            continue
        name = "cell_voltages" if tag == CELLS_TAG else REGISTER_BY_TAG[tag].name
        value = registers[tag]
        rows.append(("0x%02X" % tag, name, value.hex(" ") if isinstance(value, bytes) else value))
    return rows
