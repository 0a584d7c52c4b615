"""Value rules of the JK "4E 57" registers that a table row cannot say (temperatures above
100, the current's two encodings, text fields, version strings, dates) — each a named
function citing its evidence. Pure functions, used by :mod:`.jk_serial_reading`.
"""

from __future__ import annotations

import math
import re
from typing import Optional, Tuple


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
    return bytes(raw).translate(_TEXT_BYTES).decode("ascii").strip(" ")


#: decode_text's byte mapping: NUL → space, printable ASCII kept, anything else → ``?``.
_TEXT_BYTES = bytes(
    0x20 if byte == 0 else byte if 0x20 <= byte <= 0x7E else ord("?") for byte in range(256)
)


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
