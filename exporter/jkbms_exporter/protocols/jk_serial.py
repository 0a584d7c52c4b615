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

import struct
from dataclasses import dataclass
from typing import Dict, Iterator, List, Mapping, Optional, Tuple

from ..errors import (
    BadStartError,
    ChecksumError,
    FrameError,
    LengthMismatchError,
    MissingEndByteError,
    TruncatedFieldError,
    UnknownTagError,
)
from ..reading import Reading
from .jk_serial_frame import (  # noqa: F401  (the frame's constants are this codec's too)
    COMMAND_READ_ALL, COMMAND_READ_REGISTER, END_BYTE, HEADER_SIZE, MAX_FRAME_SIZE,
    MIN_FRAME_SIZE, READ_COMMANDS, SOURCE_BMS, SOURCE_PC, START, TRAILER_SIZE,
    TRANSPORT_REPLY, TRANSPORT_REQUEST, _build_frame, checksum, frame_size, read_all_request,
)
# Re-exported: the register table, the value rules and registers ⇄ Reading are part of
# this codec's interface (``jk_serial.X`` names every part of it).
from .jk_serial_layout import (  # noqa: F401
    ALARM_BITS, BATTERY_TYPES, CELLS_TAG, CURRENT_TAG, PASSWORD_TAG, PROTOCOL_NAME,
    PROTOCOL_VERSION_TAG, Raw, Register, REGISTER_BY_NAME, REGISTER_BY_TAG, REGISTERS,
    REQUIRED_TAGS, SETTINGS, STATUS_BALANCING, STATUS_CHARGE_MOSFET,
    STATUS_DISCHARGE_MOSFET, TEMPERATURE_SENSORS, WRITE_ONLY_TAGS,
)
from .jk_serial_quirks import (  # noqa: F401
    decode_current, decode_temperature, decode_text, encode_current, encode_temperature,
    format_manufacture_date, join_software_version, model_from_manufacturer_id,
    parse_manufacture_date, SOFTWARE_VERSION_WIDTH, split_software_version,
    TEMPERATURE_MAX_CELSIUS, TEMPERATURE_MIN_CELSIUS,
)
from .jk_serial_reading import (  # noqa: F401
    reading_to_registers, registers_to_reading,
)
from .jk_serial_walk_cache import LayoutCache

# --------------------------------------------------------------------------- envelope


@dataclass(frozen=True)
class Envelope:
    """The validated outer layer of a frame."""

    command: int
    source: int
    transport_type: int
    info: bytes


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


# --------------------------------------------------------------------------- requests (read only)


@dataclass(frozen=True)
class Request:
    command: int
    source: int
    register: Optional[int]


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

    A field laid out like one walked before (same length, same tags at the same places)
    is unpacked in one go (:mod:`.jk_serial_walk_cache`); any other takes
    :func:`walk_registers_fully`, with the same result and the same errors.
    """
    registers = _LAYOUTS.registers(info)
    if registers is None:
        records: List[Tuple[int, int, int]] = []
        registers = walk_registers_fully(info, base_offset, records)
        _LAYOUTS.remember(records, len(info))
    return registers


#: The layouts :func:`walk_registers` has seen, by field length.
_LAYOUTS = LayoutCache()


def forget_layouts() -> None:
    """Drop every remembered layout: the next walk of each field goes record by record."""
    _LAYOUTS.clear()


def walk_registers_fully(info: bytes, base_offset: int = HEADER_SIZE,
                         records: Optional[List[Tuple[int, int, int]]] = None
                         ) -> Dict[int, Raw]:
    """:func:`walk_registers` record by record, never from a remembered layout. When the
    walk succeeds, ``records`` (if given) receives ``(tag, position in the field, value
    width)`` of every record."""
    registers: Dict[int, Raw] = {}
    kinds = _KIND_BY_TAG
    walked: List[Tuple[int, int, int]] = []
    for tag, offset, value in _records(info, base_offset):
        walked.append((tag, offset - base_offset, len(value)))
        kind = kinds.get(tag)
        if kind == "u":
            registers[tag] = int.from_bytes(value, "big")
        elif tag == CELLS_TAG:
            cells = value[1:]
            if len(cells) % 3:
                raise FrameError(
                    "cell list length %d is not a multiple of 3" % len(cells), offset
                )
            registers[tag] = tuple(
                (cells[i], (cells[i + 1] << 8) | cells[i + 2]) for i in range(0, len(cells), 3)
            )
        elif kind == "str":
            registers[tag] = bytes(value)
        elif kind != "secret":
            registers[tag] = int.from_bytes(value, "big", signed=kind == "i")
    if records is not None:
        records.extend(walked)
    return registers


#: How :func:`walk_registers` keeps each tag's value (``u`` is by far the most common).
_KIND_BY_TAG = {tag: row.kind for tag, row in REGISTER_BY_TAG.items()}


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
