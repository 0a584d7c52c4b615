"""Fast path of the 4E57 ``tag, value`` walk: a BMS sends the same records in the same
order reply after reply, so the layout of a walked information field is remembered and
the next field of the same length is checked against it and unpacked with one struct.

A layout is only built from a field the full walk (:func:`.jk_serial.walk_registers`)
accepted. The check reads, at the remembered offsets, every tag byte and the cell list's
length byte; the widths of the records follow from those bytes alone, so a field that
passes the check walks exactly as the remembered one did: same records, no error. Any
other field (another cell count, a tag missing or changed, a corrupted byte where a tag
was) fails the check and takes the full walk, which raises what it always raised.
"""

from __future__ import annotations

import struct
from operator import itemgetter
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .jk_serial_layout import CELLS_TAG, Raw, REGISTER_BY_TAG

#: struct codes of the numeric widths (big-endian, no padding: ``>``).
_UNSIGNED = {1: "B", 2: "H", 4: "I"}
_SIGNED = {1: "b", 2: "h", 4: "i"}


class WalkLayout:
    """The records of one information field: where each tag sits and how to unpack all
    values at once. Immutable once built, so threads may share it."""

    __slots__ = ("size", "marks", "_check", "_unpack", "_before", "_after", "_cells")

    def __init__(self, size: int, check: Callable[[bytes], Tuple[int, ...]],
                 marks: Tuple[int, ...], unpack: Callable[[bytes], Tuple[object, ...]],
                 before: Tuple[int, ...], after: Tuple[int, ...], cells: int) -> None:
        self.size = size
        #: the bytes ``_check`` must find: every tag, and the cell list's length byte
        self.marks = marks
        self._check = check
        self._unpack = unpack
        #: tags (password left out) before and after the cell list, in frame order
        self._before = before
        self._after = after
        #: cells in the list; -1 when the field has no cell list
        self._cells = cells

    def matches(self, info: bytes) -> bool:
        return len(info) == self.size and self._check(info) == self.marks

    def registers(self, info: bytes) -> Dict[int, Raw]:
        """What the full walk returns for ``info`` (call only when :meth:`matches`)."""
        values = self._unpack(info)
        before = len(self._before)
        registers: Dict[int, Raw] = dict(zip(self._before, values))
        if self._cells >= 0:
            end = before + 2 * self._cells
            registers[CELLS_TAG] = tuple(zip(values[before:end:2], values[before + 1:end:2]))
            registers.update(zip(self._after, values[end:]))
        return registers


def build_layout(records: Sequence[Tuple[int, int, int]], size: int) -> Optional[WalkLayout]:
    """A layout from the ``(tag, position in the field, value width)`` records of a field
    the full walk accepted; ``None`` for one the fast path does not handle (more than one
    cell list, a numeric width struct has no code for, fewer than two bytes to check)."""
    codes: List[str] = [">"]
    positions: List[int] = []
    marks: List[int] = []
    before: List[int] = []
    after: List[int] = []
    cells = -1
    for tag, position, width in records:
        positions.append(position)
        marks.append(tag)
        if tag == CELLS_TAG:
            if cells >= 0:
                return None
            cells = (width - 1) // 3
            positions.append(position + 1)
            marks.append(width - 1)
            codes.append("2x" + "BH" * cells)
            continue
        row = REGISTER_BY_TAG[tag]
        if row.kind == "secret":
            codes.append("%dx" % (1 + width))
            continue
        if row.kind == "str":
            code = "%ds" % width
        else:
            code = (_SIGNED if row.kind == "i" else _UNSIGNED).get(width, "")
            if not code:
                return None
        codes.append("x" + code)
        (after if cells >= 0 else before).append(tag)
    if len(positions) < 2:  # itemgetter of one index returns the item, not a tuple
        return None
    unpacker = struct.Struct("".join(codes))
    if unpacker.size != size:  # pragma: no cover - the records tile the field
        return None
    return WalkLayout(size, itemgetter(*positions), tuple(marks), unpacker.unpack,
                      tuple(before), tuple(after), cells)


class LayoutCache:
    """The last layout seen for each field length (a pack's length changes with its cell
    count and firmware, so packs of different kinds on one exporter keep theirs).
    Bounded: cleared when full. Reads and writes are single dict operations (thread safe)."""

    def __init__(self, limit: int = 64) -> None:
        self._by_size: Dict[int, WalkLayout] = {}
        self._limit = limit

    def registers(self, info: bytes) -> Optional[Dict[int, Raw]]:
        """The registers of ``info`` when a remembered layout matches it, else ``None``."""
        layout = self._by_size.get(len(info))
        if layout is not None and layout.matches(info):
            return layout.registers(info)
        return None

    def remember(self, records: Sequence[Tuple[int, int, int]], size: int) -> None:
        layout = build_layout(records, size)
        if layout is None:
            self._by_size.pop(size, None)
            return
        if len(self._by_size) >= self._limit:
            self._by_size.clear()
        self._by_size[size] = layout

    def clear(self) -> None:
        self._by_size.clear()
