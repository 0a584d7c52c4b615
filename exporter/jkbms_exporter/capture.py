"""What a capture pasted from a log holds: ``decode`` and ``read --raw`` use this.

Three kinds are recognised by their bytes:

* ``4E 57`` reply frames (JK-B/JK-BD UART, ``jk-serial``);
* JK02/JK04 ``55 AA EB 90`` records from Bluetooth logs: the layout generation comes from
  a device-info record in the capture, or from ``--generation`` when there is none;
* JK-PB RS-485 bus captures: ``55 AA EB 90`` frames each followed by the Modbus
  acknowledgement (``AA 10 16 xx 00 01 CRC``) that names the sender's address; every
  JK-PB uses the JK02_32S layout.

From the newest cell-info record (with the newest settings and device-info records of the
same sender) it builds the same :class:`~jkbms_exporter.reading.Reading` as ``read``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from .errors import FrameError
from .protocols import jk02, jk_pb, jk_serial
from .reading import Reading

KIND_4E57 = "jk-serial"
KIND_BLE = "jk02"
KIND_PB = "jk-pb"


@dataclass(frozen=True)
class Record:
    """One ``55 AA EB 90`` record found in a capture."""

    offset: int
    frame: bytes
    #: JK-PB: the address of the acknowledgement after it; None for a Bluetooth record.
    address: Optional[int] = None


@dataclass
class Capture:
    kind: str
    records: List[Record] = field(default_factory=list)


class CaptureError(FrameError):
    """The capture holds nothing this program can decode (said in one line)."""


def find_records(data: bytes) -> List[Record]:
    """Every ``55 AA EB 90`` record in ``data``, with the ACK address where one follows."""
    records = []
    start = data.find(jk02.HEADER)
    while start >= 0:
        frame = data[start : start + jk02.FRAME_SIZE]
        if len(frame) < jk02.FRAME_SIZE:
            raise CaptureError("the 55 AA EB 90 record at byte %d stops after %d of 300 bytes"
                               % (start, len(frame)))
        following = data.find(jk02.HEADER, start + jk02.FRAME_SIZE)
        tail = data[start + jk02.FRAME_SIZE : following if following >= 0 else len(data)]
        ack = jk_pb.find_ack(tail[: jk_pb.ACK_SIZE + 4], None, True)
        records.append(Record(start, frame, ack[1][0] if ack is not None else None))
        start = following
    return records


def classify(data: bytes) -> Capture:
    """Which kind of capture ``data`` is (the first header found decides)."""
    first_55aa = data.find(jk02.HEADER)
    first_4e57 = data.find(jk_serial.START)
    if first_55aa < 0 or 0 <= first_4e57 < first_55aa:
        if first_4e57 < 0:
            raise CaptureError("no 4E 57 reply frame and no 55 AA EB 90 record found")
        return Capture(KIND_4E57)
    records = find_records(data)
    on_bus = any(record.address is not None for record in records)
    return Capture(KIND_PB if on_bus else KIND_BLE, records)


def _newest(records: List[Record], frame_type: int) -> Optional[Record]:
    found = [r for r in records if r.frame[jk02.TYPE_OFFSET] == frame_type]
    return found[-1] if found else None


def decode_records(capture: Capture, generation: Optional[str] = None,
                   address: Optional[int] = None, verify_checksum: bool = True) -> Reading:
    """The Reading of a 55AA capture (Bluetooth records or a JK-PB bus capture)."""
    records = capture.records
    if capture.kind == KIND_PB:
        records = [r for r in records if r.address is not None]
        addresses = sorted({r.address for r in records})  # type: ignore[type-var]
        if address is None and len(addresses) > 1:
            raise CaptureError("frames from addresses %s: choose one with --address"
                               % ", ".join(map(str, addresses)))
        if address is not None:
            if address not in addresses:
                raise CaptureError("no frame from address %d (the capture has %s)"
                                   % (address, ", ".join(map(str, addresses))))
            records = [r for r in records if r.address == address]
        generation = generation or jk_pb.GENERATION
    cell_info = _newest(records, jk02.FRAME_CELL_INFO)
    if cell_info is None:
        types = {r.frame[jk02.TYPE_OFFSET] for r in records}
        present = ", ".join(sorted(jk02.FRAME_TYPE_NAMES.get(t, "type 0x%02X" % t)
                                   for t in types))
        raise CaptureError("no cell-info record (type 02) to decode; the capture has: %s"
                           % (present or "none"))
    device = _newest(records, jk02.FRAME_DEVICE_INFO)
    if generation is None:
        if device is None:
            raise CaptureError(
                "no device-info record (type 03) tells the layout: give --generation "
                "JK02_24S, JK02_32S or JK04 (the cell-info record looks like %s)"
                % jk02.guess_generation(cell_info.frame))
        generation = jk02.generation_from_device_info(device.frame, verify_checksum)
    settings = _newest(records, jk02.FRAME_SETTINGS)
    layout: str = generation

    def decoded(record: Optional[Record]) -> Optional[jk02.DecodedFrame]:
        if record is None:
            return None
        return jk02.decode_frame(record.frame, layout, verify_checksum)

    return jk02.reading_from_frames(
        decoded(cell_info), decoded(settings), decoded(device),  # type: ignore[arg-type]
        protocol=jk_pb.PROTOCOL_NAME if capture.kind == KIND_PB else jk02.PROTOCOL_NAME)


def decode_capture(data: bytes, generation: Optional[str] = None,
                   address: Optional[int] = None,
                   verify_checksum: bool = True) -> Tuple[Reading, str]:
    """Decode whatever ``data`` holds; (Reading, kind)."""
    capture = classify(data)
    if capture.kind == KIND_4E57:
        start, size = jk_serial.locate_frame(data)
        frame = data[start : start + size] if size is not None else data
        return jk_serial.decode_reply(frame, verify_checksum=verify_checksum), KIND_4E57
    return decode_records(capture, generation, address, verify_checksum), capture.kind


def redact(data: bytes) -> bytes:
    """``data`` with every password the BMS sent blanked, for showing to people: the 4E57
    password register, and the passcode fields of 55AA device-info records (whose
    checksum is recomputed, so the result still decodes)."""
    if data.find(jk02.HEADER) < 0:
        return jk_serial.redact_password(data) if data else data
    redacted = bytearray(data)
    start = data.find(jk02.HEADER)
    while start >= 0 and start + jk02.FRAME_SIZE <= len(data):
        if data[start + jk02.TYPE_OFFSET] == jk02.FRAME_DEVICE_INFO:
            for row in jk02.fields_for(jk02.FRAME_DEVICE_INFO, jk02.JK02_32S):
                if row.kind == "secret":
                    redacted[start + row.offset : start + row.end] = bytes(row.end - row.offset)
            frame = redacted[start : start + jk02.FRAME_SIZE]
            redacted[start + jk02.CHECKSUM_OFFSET] = jk02.checksum(bytes(frame))
        start = data.find(jk02.HEADER, start + jk02.FRAME_SIZE)
    return bytes(redacted)

