"""Codec for JK-PB inverter BMS on RS-485 (Modbus RTU + "55 AA" trigger protocol) — no I/O.

Spec: ``shared/protocol/jk-pb-modbus.md``; ground truth: ``shared/protocol/vectors/pb-modbus.json``.

* Trigger protocol (spec §3): the FC 0x10 request ``<addr> 10 16 <reg> 00 01 02 00 00 <crc>``
  makes the pack at DIP address ``addr`` answer with a 300-byte JK02_32S frame (decoded by
  :mod:`.jk02`) followed by the FC 0x10 acknowledgement ``<addr> 10 16 <reg> 00 01 <crc>``.
  The frame carries no address: the acknowledgement names the sender.
* Plain Modbus FC 0x03 reads (spec §2, §4) as the fallback, with JK's byte-offset
  addressing; the blocks 0x1000 (settings), 0x1200 (status) and 0x1400 (device info) map onto
  the 55AA frames at ``frame offset = block offset + 6``, big-endian instead of little-endian.
* Listen-only decoding of a bus owned by a DIP-0 master (spec §5) is in :mod:`.jk_pb_listen`
  (``BusDecoder``, ``master_evidence``); it parses the messages with this module.

READ-ONLY: the only FC 0x10 requests this module can build are the three fixed triggers
(:func:`trigger_request`); there is no general register-write builder.
:func:`is_read_only_request` checks any byte string before it is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence, Tuple

from . import jk02
from ..errors import (
    BadStartError,
    ChecksumError,
    FrameError,
    IncompleteFrameError,
    LengthMismatchError,
    TruncatedFieldError,
)
from ..reading import Reading

PROTOCOL_NAME = "jk-pb"
GENERATION = jk02.JK02_32S  # every JK-PB speaks the 32S layout (spec jk-02-frames §1)

FUNCTION_READ_HOLDING = 0x03
FUNCTION_WRITE_MULTIPLE = 0x10
EXCEPTION_FLAG = 0x80

MASTER_ADDRESS = 0
MIN_SLAVE_ADDRESS = 1
MAX_SLAVE_ADDRESS = 15
MAX_MODBUS_ADDRESS = 247

#: Trigger register → the 55AA frame type it makes the pack send (spec §3).
TRIGGER_CELL_INFO = 0x1620
TRIGGER_SETTINGS = 0x161E
TRIGGER_DEVICE_INFO = 0x161C
FRAME_TYPE_BY_TRIGGER: Mapping[int, int] = {
    TRIGGER_CELL_INFO: jk02.FRAME_CELL_INFO,
    TRIGGER_SETTINGS: jk02.FRAME_SETTINGS,
    TRIGGER_DEVICE_INFO: jk02.FRAME_DEVICE_INFO,
}
TRIGGER_BY_FRAME_TYPE: Mapping[int, int] = {v: k for k, v in FRAME_TYPE_BY_TRIGGER.items()}

TRIGGER_REQUEST_SIZE = 11
ACK_SIZE = 8
READ_REQUEST_SIZE = 8
EXCEPTION_SIZE = 5
#: ~40 registers per FC03 read worked, 128 failed (spec §2.2); Modbus itself allows 125.
MAX_READ_REGISTERS = 40
MODBUS_MAX_READ_REGISTERS = 125
MODBUS_MAX_WRITE_REGISTERS = 123

BLOCK_SETTINGS = 0x1000
BLOCK_STATUS = 0x1200
BLOCK_INFO = 0x1400
BLOCK_CONTROL = 0x1600
#: ``55AA frame offset = block byte offset + 6`` (spec §3 "Offset rule", §4).
FRAME_OFFSET_SHIFT = 6
FRAME_TYPE_BY_BLOCK: Mapping[int, int] = {
    BLOCK_SETTINGS: jk02.FRAME_SETTINGS,
    BLOCK_STATUS: jk02.FRAME_CELL_INFO,
    BLOCK_INFO: jk02.FRAME_DEVICE_INFO,
}
#: Byte ranges (block offset, length) the FC03 fallback reads (spec §4.1–4.3). Device info
#: skips the passcode fields (0x38, 0x70) so that they never even cross the wire.
BLOCK_READ_RANGES: Mapping[int, Tuple[Tuple[int, int], ...]] = {
    BLOCK_SETTINGS: ((0x000, 0x11A),),  # up to TIMSmartSleep / enable control 0 at 0x119
    BLOCK_STATUS: ((0x000, 0x10E),),  # up to PCLModuleSta at 0x10C
    BLOCK_INFO: ((0x000, 0x38), (0x048, 0x28)),  # model … device name; date, serial, user data
}

ADDRESS_MASK = 0xFF


class ModbusExceptionError(FrameError):
    """The slave answered with ``function | 0x80`` and an exception code (spec §2)."""

    def __init__(self, address: int, function: int, code: int) -> None:
        super().__init__("slave %d rejected function 0x%02X with exception code %d"
                         % (address, function & 0x7F, code))
        self.address = address
        self.function = function & 0x7F
        self.code = code


class UnexpectedReplyError(FrameError):
    """A well-formed reply that does not answer the request (other address/function/size)."""


class MissingAckError(FrameError):
    """A trigger reply's 55AA frame is not followed by a valid acknowledgement."""


# --------------------------------------------------------------------------- CRC


def _crc_table() -> Tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS: init 0xFFFF, reflected polynomial 0xA001 (spec §2)."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def with_crc(body: bytes) -> bytes:
    """``body`` followed by its CRC, low byte first."""
    return bytes(body) + crc16(body).to_bytes(2, "little")


def crc_ok(frame: bytes) -> bool:
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def check_crc(frame: bytes) -> None:
    if len(frame) < 4:
        raise TruncatedFieldError("Modbus frame of %d bytes is too short" % len(frame))
    received = int.from_bytes(frame[-2:], "little")
    expected = crc16(frame[:-2])
    if received != expected:
        raise ChecksumError(expected=expected, received=received)


# --------------------------------------------------------------------------- requests (read only)


def _check_slave(address: int) -> None:
    if not MIN_SLAVE_ADDRESS <= address <= MAX_SLAVE_ADDRESS:
        raise ValueError("DIP address %r is not a slave address (1–15; 0 is the master)" % address)


def trigger_request(address: int, frame_type: int) -> bytes:
    """The fixed 11-byte FC 0x10 trigger (value 0x0000 into 0x1620/0x161E/0x161C) that makes
    pack ``address`` send its cell-info / settings / device-info frame (spec §3)."""
    _check_slave(address)
    if frame_type not in TRIGGER_BY_FRAME_TYPE:
        raise ValueError("no trigger for frame type %r" % frame_type)
    register = TRIGGER_BY_FRAME_TYPE[frame_type]
    return with_crc(bytes((address, FUNCTION_WRITE_MULTIPLE)) + register.to_bytes(2, "big")
                    + b"\x00\x01\x02\x00\x00")


def read_request(address: int, register: int, count: int) -> bytes:
    """FC 0x03 read of ``count`` registers (2·count bytes) at JK byte address ``register``."""
    _check_slave(address)
    if not 1 <= count <= MODBUS_MAX_READ_REGISTERS:
        raise ValueError("register count %r outside 1…%d" % (count, MODBUS_MAX_READ_REGISTERS))
    if not any(base <= register and register + 2 * count <= base + 0x200
               for base in FRAME_TYPE_BY_BLOCK):
        raise ValueError("0x%04X+%d is not inside a readable block" % (register, count))
    return with_crc(bytes((address, FUNCTION_READ_HOLDING)) + register.to_bytes(2, "big")
                    + count.to_bytes(2, "big"))


def block_read_plan(block: int, max_registers: int = MAX_READ_REGISTERS) -> Tuple[Tuple[int, int], ...]:
    """(register address, register count) pairs that read :data:`BLOCK_READ_RANGES`."""
    plan = []
    for offset, size in BLOCK_READ_RANGES[block]:
        position = offset
        while position < offset + size:
            count = min(max_registers, (offset + size - position + 1) // 2)
            plan.append((block + position, count))
            position += 2 * count
    return tuple(plan)


def block_read_requests(address: int, block: int) -> Tuple[bytes, ...]:
    return tuple(read_request(address, register, count) for register, count in block_read_plan(block))


def is_read_only_request(frame: bytes) -> bool:
    """True only for bytes that cannot change a BMS: an FC 0x03 read with a valid CRC, one
    of the three fixed trigger requests to address 1–15, or a JK02 BLE read command.

    Everything else — other FC 0x10 writes (e.g. BalanEN in vector
    fc10_write_balance_enable_on_addr2), FC 0x06, broadcasts, bad CRCs, extra bytes — is not.
    """
    frame = bytes(frame)
    if jk02.is_read_only_command(frame):
        return True
    if not crc_ok(frame) or len(frame) < 2:
        return False
    address, function = frame[0], frame[1]
    if function == FUNCTION_READ_HOLDING:
        count = int.from_bytes(frame[4:6], "big")
        return (len(frame) == READ_REQUEST_SIZE and 1 <= address <= MAX_MODBUS_ADDRESS
                and 1 <= count <= MODBUS_MAX_READ_REGISTERS)
    if function == FUNCTION_WRITE_MULTIPLE and MIN_SLAVE_ADDRESS <= address <= MAX_SLAVE_ADDRESS:
        return any(frame == trigger_request(address, frame_type)
                   for frame_type in TRIGGER_BY_FRAME_TYPE)
    return False


# --------------------------------------------------------------------------- Modbus frames


@dataclass(frozen=True)
class ModbusRequest:
    """An FC 0x03 or FC 0x10 request as seen on the bus."""

    address: int
    function: int
    register: int
    count: int
    #: FC 0x10 only: the register values written.
    values: bytes
    raw: bytes

    @property
    def trigger_frame_type(self) -> Optional[int]:
        """The 55AA frame type this request triggers, if it is one of the fixed triggers."""
        if (self.function == FUNCTION_WRITE_MULTIPLE and self.count == 1
                and self.values == b"\x00\x00"):
            return FRAME_TYPE_BY_TRIGGER.get(self.register)
        return None


@dataclass(frozen=True)
class Ack:
    """FC 0x10 acknowledgement ``<addr> 10 <reg> <count> <crc>``."""

    address: int
    register: int
    count: int
    raw: bytes

    @property
    def trigger_frame_type(self) -> Optional[int]:
        return FRAME_TYPE_BY_TRIGGER.get(self.register) if self.count == 1 else None


@dataclass(frozen=True)
class ReadResponse:
    """FC 0x03 response: the register bytes as sent (big-endian values)."""

    address: int
    data: bytes
    raw: bytes

    @property
    def registers(self) -> Tuple[int, ...]:
        return tuple(int.from_bytes(self.data[i : i + 2], "big") for i in range(0, len(self.data), 2))


@dataclass(frozen=True)
class ExceptionResponse:
    address: int
    function: int
    code: int
    raw: bytes


def _frame_bytes(frame: bytes, minimum: int) -> bytes:
    frame = bytes(frame)
    if len(frame) < minimum:
        raise TruncatedFieldError("Modbus frame of %d bytes, need at least %d" % (len(frame), minimum))
    return frame


def parse_request(frame: bytes) -> ModbusRequest:
    """Decode an FC 0x03 or FC 0x10 request (what a slave receives; simulator, sniffer)."""
    frame = _frame_bytes(frame, READ_REQUEST_SIZE)
    check_crc(frame)
    address, function = frame[0], frame[1]
    register = int.from_bytes(frame[2:4], "big")
    count = int.from_bytes(frame[4:6], "big")
    if function == FUNCTION_READ_HOLDING:
        if len(frame) != READ_REQUEST_SIZE:
            raise LengthMismatchError("FC03 request is %d bytes, expected 8" % len(frame))
        return ModbusRequest(address, function, register, count, b"", frame)
    if function == FUNCTION_WRITE_MULTIPLE:
        byte_count = frame[6]
        if len(frame) != 9 + byte_count or byte_count != 2 * count:
            raise LengthMismatchError(
                "FC10 request of %d bytes with count %d and byte count %d"
                % (len(frame), count, byte_count), 6)
        return ModbusRequest(address, function, register, count, frame[7 : 7 + byte_count], frame)
    raise FrameError("function 0x%02X is not a request this protocol uses" % function, 1)


def parse_ack(frame: bytes) -> Ack:
    frame = _frame_bytes(frame, ACK_SIZE)
    if len(frame) != ACK_SIZE:
        raise LengthMismatchError("acknowledgement is %d bytes, expected 8" % len(frame))
    check_crc(frame)
    if frame[1] != FUNCTION_WRITE_MULTIPLE:
        raise FrameError("function 0x%02X is not an FC10 acknowledgement" % frame[1], 1)
    return Ack(frame[0], int.from_bytes(frame[2:4], "big"), int.from_bytes(frame[4:6], "big"), frame)


def parse_read_response(frame: bytes, request: Optional[bytes] = None) -> ReadResponse:
    """Decode an FC 0x03 response; with ``request``, check it answers that request."""
    frame = _frame_bytes(frame, EXCEPTION_SIZE)
    check_crc(frame)
    address, function = frame[0], frame[1]
    if function == FUNCTION_READ_HOLDING | EXCEPTION_FLAG:
        if len(frame) != EXCEPTION_SIZE:
            raise LengthMismatchError("exception response is %d bytes, expected 5" % len(frame))
        raise ModbusExceptionError(address, function, frame[2])
    if function != FUNCTION_READ_HOLDING:
        raise UnexpectedReplyError("function 0x%02X is not an FC03 response" % function, 1)
    if len(frame) != 5 + frame[2] or frame[2] % 2:
        raise LengthMismatchError(
            "byte count %d does not match a %d-byte response" % (frame[2], len(frame)), 2)
    data = frame[3:-2]
    if request is not None:
        asked = parse_request(request)
        if asked.function != FUNCTION_READ_HOLDING:
            raise ValueError("request is not an FC03 read")
        if address != asked.address:
            raise UnexpectedReplyError("response from address %d, asked %d" % (address, asked.address), 0)
        if len(data) != 2 * asked.count:
            raise UnexpectedReplyError(
                "%d data bytes for a read of %d registers" % (len(data), asked.count), 2)
    return ReadResponse(address, data, frame)


def encode_ack(address: int, register: int, count: int = 1) -> bytes:
    """The acknowledgement a slave sends after an FC 0x10 request (simulator)."""
    return with_crc(bytes((address & ADDRESS_MASK, FUNCTION_WRITE_MULTIPLE))
                    + register.to_bytes(2, "big") + count.to_bytes(2, "big"))


def encode_read_response(address: int, data: bytes) -> bytes:
    """FC 0x03 response carrying ``data`` (simulator)."""
    if len(data) % 2 or len(data) > 250:
        raise ValueError("FC03 data must be an even number of bytes ≤ 250")
    return with_crc(bytes((address & ADDRESS_MASK, FUNCTION_READ_HOLDING, len(data))) + bytes(data))


# --------------------------------------------------------------------------- trigger replies


@dataclass(frozen=True)
class TriggerReply:
    """A 55AA frame and the acknowledgement that names its sender."""

    address: int
    register: int
    frame: bytes
    ack: bytes
    #: Bytes before the 55AA header (adapter echo of the request, stale bytes).
    leading_bytes: int

    @property
    def frame_type(self) -> int:
        return self.frame[jk02.TYPE_OFFSET]

    def decode(self, verify_checksum: bool = True) -> jk02.DecodedFrame:
        return jk02.decode_frame(self.frame, GENERATION, verify_checksum)


def _find_ack(tail: bytes, address: Optional[int], verify_crc: bool) -> Optional[Tuple[int, bytes]]:
    """First FC 0x10 acknowledgement of a trigger register in ``tail`` (after optional
    ``00`` padding, spec §3 "Observed framing variants")."""
    for start in range(0, max(0, len(tail) - ACK_SIZE + 1)):
        candidate = tail[start : start + ACK_SIZE]
        if (candidate[1] != FUNCTION_WRITE_MULTIPLE or candidate[4:6] != b"\x00\x01"
                or int.from_bytes(candidate[2:4], "big") not in FRAME_TYPE_BY_TRIGGER):
            continue
        if address is not None and candidate[0] != address:
            continue
        if verify_crc and not crc_ok(candidate):
            continue
        return start, candidate
    return None


#: The first acknowledgement of a trigger in bytes after a 55AA frame (``decode`` uses it).
find_ack = _find_ack


def parse_trigger_reply(data: bytes, address: Optional[int] = None,
                        frame_type: Optional[int] = None,
                        verify_checksum: bool = True) -> TriggerReply:
    """Split what arrived after a trigger into the 55AA frame and its acknowledgement.

    The reply is ``55AA frame (300) + ACK (8)`` = 308 bytes, or 310 with a ``00`` on each
    side of the ACK; adapters may echo the request before it (spec §3). The sender is the
    ACK's address (vector mppsolar_jkpb_20: ``01 10 16 20 00 01 04 4B``).
    """
    data = bytes(data)
    start = data.find(jk02.HEADER)
    if start < 0:
        raise BadStartError("no 55 AA EB 90 frame in %d reply bytes" % len(data), 0)
    if len(data) - start < jk02.FRAME_SIZE:
        raise IncompleteFrameError("55AA frame stops after %d of 300 bytes" % (len(data) - start), start)
    frame = jk02.check_frame(data[start : start + jk02.FRAME_SIZE], verify_checksum)
    tail = data[start + jk02.FRAME_SIZE :]
    found = _find_ack(tail, None, False)  # a bad CRC is a ChecksumError, not a missing ACK
    if found is None:
        raise MissingAckError("no acknowledgement after the 55AA frame", start + jk02.FRAME_SIZE)
    ack = parse_ack(found[1]) if verify_checksum else Ack(
        found[1][0], int.from_bytes(found[1][2:4], "big"), 1, found[1])
    if address is not None and ack.address != address:
        raise UnexpectedReplyError("acknowledgement from address %d, expected %d" % (ack.address, address),
                                   start + jk02.FRAME_SIZE + found[0])
    if FRAME_TYPE_BY_TRIGGER[ack.register] != frame[jk02.TYPE_OFFSET]:
        raise UnexpectedReplyError("acknowledgement of 0x%04X after a frame of type 0x%02X"
                                   % (ack.register, frame[jk02.TYPE_OFFSET]))
    if frame_type is not None and frame[jk02.TYPE_OFFSET] != frame_type:
        raise UnexpectedReplyError(
            "frame type 0x%02X, triggered 0x%02X" % (frame[jk02.TYPE_OFFSET], frame_type),
            start + jk02.TYPE_OFFSET)
    return TriggerReply(ack.address, ack.register, frame, found[1], start)


def trigger_reply_complete(data: bytes, address: Optional[int] = None) -> bool:
    """True once ``data`` holds a whole 55AA frame and an acknowledgement after it: the rule
    a transport uses to stop reading early."""
    data = bytes(data)
    start = data.find(jk02.HEADER)
    if start < 0 or len(data) - start < jk02.FRAME_SIZE:
        return False
    return _find_ack(data[start + jk02.FRAME_SIZE :], address, True) is not None


def encode_trigger_reply(address: int, frame: bytes, padded: bool = False) -> bytes:
    """What pack ``address`` sends after a trigger: the frame, then the ACK (simulator).
    ``padded`` adds the ``00`` before and after the ACK that some setups show."""
    frame = jk02.check_frame(frame)
    register = TRIGGER_BY_FRAME_TYPE[frame[jk02.TYPE_OFFSET]]
    ack = encode_ack(address, register)
    return frame + (b"\x00" + ack + b"\x00" if padded else ack)


# --------------------------------------------------------------------------- FC03 blocks


@dataclass(frozen=True)
class Block:
    """Bytes of one register block as read by FC 0x03 (big-endian values), by offset."""

    base: int
    parts: Tuple[Tuple[int, bytes], ...]

    def covers(self, start: int, end: int) -> bool:
        """Whether bytes ``start`` … ``end - 1`` (block offsets) were all read."""
        position = start
        for offset, data in sorted(self.parts):
            if offset <= position < offset + len(data):
                position = offset + len(data)
            if position >= end:
                return True
        return position >= end

    def data(self, size: int) -> bytes:
        buffer = bytearray(size)
        for offset, data in self.parts:
            chunk = data[: max(0, size - offset)]
            buffer[offset : offset + len(chunk)] = chunk
        return bytes(buffer)


def block_from_responses(block: int, responses: Iterable[Tuple[int, bytes]]) -> Block:
    """``(register address, response data)`` pairs of one block → :class:`Block`."""
    parts = []
    for register, data in responses:
        offset = register - block
        if not 0 <= offset < 0x200:
            raise ValueError("register 0x%04X is outside block 0x%04X" % (register, block))
        parts.append((offset, bytes(data)))
    return Block(block, tuple(parts))


def _block_rows(block: int) -> Tuple[jk02.Field, ...]:
    if block not in FRAME_TYPE_BY_BLOCK:
        raise ValueError("0x%04X is not a readable block" % block)
    return jk02.fields_for(FRAME_TYPE_BY_BLOCK[block], GENERATION)


def _swap_fields(source: bytes, rows: Sequence[jk02.Field], shift: int) -> bytearray:
    """Reverse every multi-byte number of ``rows`` (big-endian ⇄ little-endian, spec §4:
    "in FC03 replies they are big-endian, in 55AA frames little-endian"; 32-bit values
    high word first, spec §2)."""
    out = bytearray(source)
    for row in rows:
        if row.kind in ("str", "secret") or row.width == 1:  # text is sent in byte order
            continue
        for index in range(row.count):
            start = row.offset + shift + index * row.width
            if 0 <= start and start + row.width <= len(out):
                out[start : start + row.width] = out[start : start + row.width][::-1]
    return out


def block_to_frame_values(block: Block) -> jk02.DecodedFrame:
    """Decode the rows of the block's 55AA table that the block's reads fully cover."""
    rows = _block_rows(block.base)
    frame = bytearray(jk02.FRAME_SIZE)
    data = block.data(jk02.FRAME_SIZE - FRAME_OFFSET_SHIFT - 1)
    frame[FRAME_OFFSET_SHIFT : FRAME_OFFSET_SHIFT + len(data)] = data
    frame = _swap_fields(frame, rows, 0)
    covered = [row for row in rows if row.kind != "secret"
               and block.covers(row.offset - FRAME_OFFSET_SHIFT, row.end - FRAME_OFFSET_SHIFT)]
    values = jk02.decode_fields(bytes(frame), covered)
    return jk02.DecodedFrame(FRAME_TYPE_BY_BLOCK[block.base], 0, GENERATION, values)


def frame_to_block(frame: bytes) -> Tuple[int, bytes]:
    """A 55AA frame → (block base, the block bytes an FC03 read would return) — simulator."""
    frame = jk02.check_frame(frame)
    frame_type = frame[jk02.TYPE_OFFSET]
    block = {v: k for k, v in FRAME_TYPE_BY_BLOCK.items()}.get(frame_type)
    if block is None:
        raise jk02.UnknownFrameTypeError(frame_type)
    swapped = _swap_fields(frame, _block_rows(block), 0)
    return block, bytes(swapped[FRAME_OFFSET_SHIFT : jk02.CHECKSUM_OFFSET])


def reading_from_blocks(status: Block, settings: Optional[Block] = None,
                        info: Optional[Block] = None) -> Reading:
    """The FC03 fallback's Reading: same mapping as a trigger's 55AA frames."""
    for block, base in ((status, BLOCK_STATUS), (settings, BLOCK_SETTINGS), (info, BLOCK_INFO)):
        if block is not None and block.base != base:
            raise ValueError("block 0x%04X given where 0x%04X belongs" % (block.base, base))
    return jk02.reading_from_frames(
        block_to_frame_values(status),
        None if settings is None else block_to_frame_values(settings),
        None if info is None else block_to_frame_values(info),
        protocol=PROTOCOL_NAME,
    )


# --------------------------------------------------------------------------- listen-only
