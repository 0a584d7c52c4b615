"""Value rules of the JK02 / JK04 records that a table row cannot say — each a named function
citing the vector or spec item that shows it (``shared/protocol/jk-02-frames.md`` §9).

Used by the decoder (:mod:`.jk02`) and the encoders (:mod:`.jk02_encode`); pure functions.
"""

from __future__ import annotations

import re
from typing import Dict, Mapping

from .jk02_layout import (
    CellMaskError,
    STATUS_BALANCING,
    STATUS_CHARGE_MOSFET,
    STATUS_DISCHARGE_MOSFET,
    TEMPERATURE_SENSORS,
)


def cell_count(mask: int, slots: int) -> int:
    """Cells that exist, from the enabled-cells bitmask (bit 0 = cell 1, spec §3).

    The count is the highest enabled cell: the slots behind it are unused (they read 0 V);
    a cell inside the range whose bit is clear is still reported (with whatever the BMS
    sends) so that cell numbers stay true. A mask with no cell, or one naming a cell past
    the frame's slots, means a corrupt frame or a wrong generation (a 32S frame read with
    the 24S table finds cell voltages of 0 where the mask should be).
    Evidence: ``FF FF FF 00`` = 24 cells (cell_info_jk02_24s_v10), ``FF FF 00 00`` = 16
    (cell_info_jk02_32s_v11, cell_info_jk04), ``FF 00 00 00`` = 8 (mppsolar_jkpb_20).
    """
    count = mask.bit_length()
    if count == 0:
        raise CellMaskError("enabled-cells bitmask is 0: no cell (wrong generation?)")
    if count > slots:
        raise CellMaskError(
            "enabled-cells bitmask 0x%X names cell %d, the frame has %d slots (wrong generation?)"
            % (mask, count, slots)
        )
    return count


def cell_number(index: int) -> int:
    """Highest/lowest cell fields are 0-based (spec §9 item 4): 0 → cell 1.

    Evidence: cell_info_jk02_32s_v11 lowest = 10 and cell 11 (3.216 V) is the lowest.
    """
    return index + 1


def signed_power(magnitude: float, current: float) -> float:
    """The power field is an unsigned magnitude (spec §9 item 2): give it the current's sign.

    Evidence: mppsolar_jkpb_20, 479.072 W at +17.841 A; no vector has a discharge.
    """
    return -magnitude if current < 0 else magnitude


def status_bitmask(charge_mosfet: bool, discharge_mosfet: bool, balancing: bool) -> int:
    """A 4E57-compatible status word (bits 0/1/2) built from the frame's state bytes."""
    return (
        (STATUS_CHARGE_MOSFET if charge_mosfet else 0)
        | (STATUS_DISCHARGE_MOSFET if discharge_mosfet else 0)
        | (STATUS_BALANCING if balancing else 0)
    )


def decode_text(raw: bytes) -> str:
    """Fixed-width text: up to the first NUL (the serial field hides a passcode behind its
    NUL, vector device_info_jk02_24s_v10); non-printable bytes become ``?``."""
    text = raw.split(b"\x00", 1)[0].decode("ascii", errors="replace")
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text).strip()


def format_manufacture_date(text: str) -> str:
    """``YYMMDD`` → ``20YY-MM-DD`` (spec §6, e.g. ``220511``); anything else is kept."""
    if len(text) == 6 and text.isdigit():
        return "20%s-%s-%s" % (text[:2], text[2:4], text[4:])
    return text


def temperature_sensors(values: Mapping[str, object]) -> Dict[str, float]:
    """Temperatures of a cell-info frame by ``sensor`` label.

    mosfet, battery1 and battery2 are what the source files state for every capture. For
    sensors 3–5 the sources disagree (spec §9 item 5): the vendor map puts T3/T4/T5 at
    254/256/258, but 254 equals the MOSFET temperature in all captures (cell_info_jk02_32s_v11
    17.3 °C, …_v14 18.2 °C, mppsolar_jkpb_20 30.0 °C) — the frames side with
    dbus-serialbattery: 254 mirrors the MOSFET sensor (kept in ``extra`` as
    ``temperature_254``), battery3 = 256, battery4 = 258, each only if its presence bit is set.
    """
    presence = values.get("temperature_sensor_presence_bitmask")
    sensors: Dict[str, float] = {}
    for row, sensor, bit in TEMPERATURE_SENSORS:
        if row not in values:
            continue
        present = presence is not None and int(presence) >> bit & 1 if bit is not None else True  # type: ignore[arg-type]
        if not present:
            continue
        sensors[sensor] = float(values[row])  # type: ignore[arg-type]
    return sensors


def parse_manufacture_date(text: str) -> str:
    match = re.fullmatch(r"20(\d\d)-(\d\d)-(\d\d)", text)
    return "".join(match.groups()) if match else text
