"""Test-side helpers for the 4E57 codec tests (no tests in here).

Everything below is written from the spec (``shared/protocol/jk-rs485-4e57.md``) and the
vectors, independently of ``jk_serial``: the frame builder, the register table parsed out
of the spec's markdown, and the decode rules the tests compare the codec against. A test
that used the codec to compute its own expectation could not fail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import pytest

from conftest import SHARED, load_vectors

SPEC_PATH = SHARED / "protocol" / "jk-rs485-4e57.md"


def vectors() -> dict:
    return load_vectors("4e57.json")


def frames() -> List[dict]:
    return vectors()["frames"]


def frame_ids() -> List[str]:
    return [frame["id"] for frame in frames()]


def frame_by_id(frame_id: str) -> dict:
    for frame in frames():
        if frame["id"] == frame_id:
            return frame
    raise KeyError(frame_id)


def frame_bytes(frame_id: str) -> bytes:
    return bytes.fromhex(frame_by_id(frame_id)["response_hex"])


def good_frame_ids() -> List[str]:
    return [frame["id"] for frame in frames() if frame["checksum_ok"]]


def bad_checksum_frame_ids() -> List[str]:
    return [frame["id"] for frame in frames() if not frame["checksum_ok"]]


# ----------------------------------------------------------------------------- frames (spec §2, §4)

END = 0x68


def byte_sum16(data: bytes) -> int:
    return sum(data) & 0xFFFF


def build_frame(info: bytes, command: int = 0x06, source: int = 0x00, transport: int = 0x01,
                terminal: bytes = b"\0\0\0\0", record: bytes = b"\0\0\0\0") -> bytes:
    """A frame exactly as spec §2/§4 lays it out (LENGTH = total − 2; 16-bit sum)."""
    body = (b"\x4e\x57" + (len(info) + 18).to_bytes(2, "big") + terminal
            + bytes((command, source, transport)) + info + record + bytes((END,)))
    return body + b"\0\0" + byte_sum16(body).to_bytes(2, "big")


def reseal(frame: bytes) -> bytes:
    """``frame`` with its checksum recomputed (length field left alone)."""
    body = frame[:-4]
    return body + b"\0\0" + byte_sum16(body).to_bytes(2, "big")


def info_of(frame: bytes) -> bytes:
    length = int.from_bytes(frame[2:4], "big")
    return frame[11 : 11 + length - 18]


# ----------------------------------------------------------------------------- the spec's register table

@dataclass(frozen=True)
class SpecRow:
    section: str
    tag: int
    name: str
    width: int
    type: str  # the spec's "Type"/"Format" cell, markdown removed
    unit: str  # the spec's unit cell (6.1/6.2), "" elsewhere
    notes: str


def _clean(cell: str) -> str:
    return cell.replace("**", "").strip()


def spec_text() -> str:
    if not SPEC_PATH.is_file():
        pytest.fail("protocol spec not found at %s (set JKBMS_SHARED)" % SPEC_PATH)
    return SPEC_PATH.read_text(encoding="utf-8")


def spec_section(heading: str) -> str:
    text = spec_text()
    start = text.index(heading)
    following = re.search(r"^##+ ", text[start + len(heading):], re.M)
    end = start + len(heading) + following.start() if following else len(text)
    return text[start:end]


def spec_rows() -> Dict[int, SpecRow]:
    """Every ``| 0x.. |`` row of spec §6.1–6.4, keyed by tag."""
    rows: Dict[int, SpecRow] = {}
    for section in ("### 6.1", "### 6.2", "### 6.3", "### 6.4"):
        for line in spec_section(section).splitlines():
            if not line.startswith("| 0x"):
                continue
            cells = [_clean(cell) for cell in line.strip().strip("|").split("|")]
            tag = int(cells[0], 16)
            if section == "### 6.1":
                name, width, kind, unit, notes = cells[1], cells[2], cells[3], cells[4], cells[6]
            elif section == "### 6.2":
                name, width, kind, unit, notes = cells[1], cells[2], cells[3], cells[4], cells[5]
            elif section == "### 6.3":
                name, width, kind, unit, notes = cells[1], cells[2], cells[3], "", cells[4]
            else:
                name, width, kind, unit, notes = cells[1], cells[2], "", "", cells[3]
            assert tag not in rows, "spec lists 0x%02X twice" % tag
            rows[tag] = SpecRow(section[4:], tag, name, 0 if "·" in width else int(width),
                                kind, unit, notes)
    return rows


def spec_tlv_widths() -> Dict[int, int]:
    """The "TLV widths for the parser" summary under spec §6.4."""
    text = spec_section("### 6.4")
    summary = text[text.index("TLV widths for the parser"):]
    summary = summary[: summary.index("(0xBB")]
    widths: Dict[int, int] = {}
    for first, last, width in re.findall(r"(0x[0-9A-F]{2})(?:–(0x[0-9A-F]{2}))? → (\d+)", summary):
        for tag in range(int(first, 16), int(last or first, 16) + 1):
            widths[tag] = int(width)
    return widths


def spec_documented_range(tag: int) -> Optional[Tuple[float, float]]:
    """The "Documented range" of a §6.2 setting as numbers, or None."""
    row = spec_rows()[tag]
    match = re.match(r"^(−?\+?\d+)\s*(?:–|…)\s*(−?\+?\d+)", row.notes)
    if not match:
        return None
    return tuple(float(part.replace("−", "-").replace("+", "")) for part in match.groups())  # type: ignore[return-value]


# Spec §6 unit cells → (scale to base unit, base unit). Keyed by the spec's own text, so a
# changed spec cell makes the table test fail instead of silently passing.
SPEC_UNITS: Dict[str, Tuple[float, str]] = {
    "°C, see §7.2": (1.0, "celsius"),
    "°C": (1.0, "celsius"),
    "× 0.01 V": (0.01, "volts"),
    "see §7.1": (1.0, "amperes"),
    "% (0–100)": (0.01, "ratio"),
    "%": (0.01, "ratio"),
    "count": (1.0, ""),
    "cycles": (1.0, ""),
    "Ah": (3600.0, "coulombs"),
    "§8.1": (1.0, ""),
    "§8.2": (1.0, ""),
    "× 10 mV (0.01 V)": (0.01, "volts"),
    "× 10 mV": (0.01, "volts"),
    "mV": (0.001, "volts"),
    "s": (1.0, "seconds"),
    "A": (1.0, "amperes"),
    "0 off / 1 on": (1.0, ""),
    "°C (plain, no +100 code)": (1.0, "celsius"),
    "°C (two's complement, e.g. `FF EC` = −20)": (1.0, "celsius"),
    "mA": (0.001, "amperes"),
    "—": (1.0, ""),
    "0 LiFePO4, 1 ternary (NMC), 2 LTO": (1.0, ""),
    "e.g. `123456`": (1.0, ""),
    "0/1": (1.0, ""),
    "1 start / 0 stop": (1.0, ""),
}


def spec_scale_unit(row: SpecRow) -> Tuple[float, str]:
    if row.section == "6.3":
        # identification rows: only 0xB6 is a number with a unit ("**minutes** since ...")
        if row.type == "u32" and "minutes" in row.notes:
            return 60.0, "seconds"
        assert not row.type.startswith("u32"), "unexpected number in spec §6.3: %r" % (row,)
        return 1.0, ""
    return SPEC_UNITS[row.unit]


def spec_kind(row: SpecRow) -> str:
    """The codec's ``Register.kind`` the spec row calls for."""
    if "offset code" in row.type:
        return "temp"
    if "depends on 0xC0" in row.type:
        return "current"
    if "do not export" in row.notes:
        return "secret"
    if row.type.startswith("str") or row.type.startswith("ASCII"):
        return "str"
    if row.type.startswith("i16"):
        return "i"
    if re.match(r"u(8|16|32)\b", row.type):
        return "u"
    raise AssertionError("spec type %r of 0x%02X not understood" % (row.type, row.tag))


def spec_type_width(row: SpecRow) -> Optional[int]:
    match = re.match(r"[ui](8|16|32)\b", row.type)
    return int(match.group(1)) // 8 if match else None


# ----------------------------------------------------------------------------- decode rules (spec §7)

def vendor_temperature(raw: int) -> int:
    """Spec §7.2: ``t = raw if raw <= 100 else 100 − raw``."""
    return raw if raw <= 100 else 100 - raw


def spec_current(raw: int, protocol_version: Optional[int]) -> float:
    """Spec §7.1, in 10 mA steps; returned in amperes."""
    if protocol_version == 1:
        magnitude = raw & 0x7FFF
        centiamperes = magnitude if raw & 0x8000 else -magnitude
    else:
        centiamperes = 10000 - raw
    return centiamperes / 100


def spec_software_split(text: str) -> Tuple[str, str]:
    """Spec §6.3: split at ``_S``, strip a leading ``H`` and the ``_`` padding."""
    if "_S" not in text:
        return "", text.rstrip("_")
    hardware, software = text.split("_S", 1)
    hardware = hardware.rstrip("_")
    if hardware.startswith("H"):
        hardware = hardware[1:]
    return hardware, software.rstrip("_")


# ----------------------------------------------------------------------------- TLV building

def tlv(tag: int, value: bytes) -> bytes:
    return bytes((tag,)) + value


def cells_tlv(millivolts: Sequence[int], indices: Optional[Iterable[int]] = None) -> bytes:
    indices = list(indices) if indices is not None else list(range(1, len(millivolts) + 1))
    body = b"".join(bytes((index,)) + mv.to_bytes(2, "big") for index, mv in zip(indices, millivolts))
    return bytes((0x79, len(body))) + body


def value_bytes(tag: int, value, widths: Dict[int, int], signed: bool = False) -> bytes:
    width = widths[tag]
    if isinstance(value, (bytes, bytearray)):
        assert len(value) == width
        return bytes(value)
    return int(value).to_bytes(width, "big", signed=signed)


def password_offset(frame: bytes) -> int:
    """Offset of the 0xB2 value in a full read-all reply, found by walking with spec widths."""
    widths = spec_tlv_widths()
    info = info_of(frame)
    position = 0
    while position < len(info):
        tag = info[position]
        if tag == 0x79:
            position += 2 + info[position + 1]
            continue
        if tag == 0xB2:
            return 11 + position + 1
        position += 1 + widths[tag]
    raise AssertionError("frame has no 0xB2")
