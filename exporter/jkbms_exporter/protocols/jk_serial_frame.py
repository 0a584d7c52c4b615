"""The 4E57 frame itself — its constants, checksum and the guarded builder of read requests.

Kept apart from :mod:`.jk_serial` and free of its tables, of :mod:`..reading` and of
``dataclasses``, so a one-shot ``read`` can put its request on the wire before the rest of
the codec has loaded (the BMS takes ~90 ms to answer: the codec loads meanwhile). Frame:
``4E 57 | LEN(2) | terminal(4) | command | source | transport | info(N) | record(4) | 68 |
00 00 SUM(2)`` (spec ``shared/protocol/jk-rs485-4e57.md`` §2-§4).

Only read requests can be built here (0x06 read-all, 0x03 read-register): this package
never writes to a BMS.
"""

from __future__ import annotations

import struct

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


def checksum(data: bytes) -> int:
    """16-bit sum of ``data`` (spec §4; masked so a 32-cell frame cannot overflow)."""
    return sum(data) & 0xFFFF


def frame_size(header: bytes) -> int:
    """Total frame size from the first four bytes (``LENGTH`` counts from itself)."""
    return struct.unpack_from(">H", header, 2)[0] + 2


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


def read_all_request(source: int = SOURCE_PC) -> bytes:
    """The 21-byte read-all request (command 0x06, data id 00)."""
    return _build_frame(COMMAND_READ_ALL, source, TRANSPORT_REQUEST, b"\x00")
