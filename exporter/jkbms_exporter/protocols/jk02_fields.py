"""Reading the rows of a JK02 field table out of a 55AA frame (spec §3–§6): one row with
:func:`read_field`, a table with :func:`decode_fields`.

Each row gets a reader built once (a precompiled little-endian struct for all its elements
and its scaling), remembered by the row object: the tables are module constants, read
frame after frame. A row that needs bytes the frame does not have is left to
:func:`read_field`, which raises :class:`TruncatedFieldError` as it always did.
"""

from __future__ import annotations

import struct
from typing import Callable, Dict, List, Sequence, Tuple, Union

from ..errors import TruncatedFieldError
from .jk02_layout import Field
from .jk02_quirks import decode_text

Reader = Callable[[bytes, int], object]

#: struct codes of the numeric kinds by element width.
_CODES = {("u", 1): "B", ("u", 2): "H", ("u", 4): "I", ("u", 8): "Q",
          ("i", 1): "b", ("i", 2): "h", ("i", 4): "i", ("i", 8): "q", ("f", 4): "f"}


def read_field(frame: bytes, row: Field) -> object:
    """One row's value: a string, a number, or a tuple of numbers when ``row.count`` > 1."""
    if row.end > len(frame):
        raise TruncatedFieldError("field %s needs bytes %d…%d" % (row.name, row.offset, row.end - 1),
                                  row.offset)
    if row.kind == "str":
        return decode_text(frame[row.offset : row.end])
    items: List[Union[int, float]] = []
    for index in range(row.count):
        start = row.offset + index * row.width
        raw = frame[start : start + row.width]
        if row.kind == "f":
            # float32 carries ~7 significant digits: 6 decimals keep every real one
            items.append(round(struct.unpack("<f", raw)[0] * row.scale, 6))
            continue
        number = int.from_bytes(raw, "little", signed=row.kind == "i")
        items.append(number if row.scale == 1.0 else round(number * row.scale, 9))
    return tuple(items) if row.count > 1 else items[0]


def _reader(row: Field) -> Reader:
    """A function ``(frame, len(frame)) → value`` doing what :func:`read_field` does."""
    offset, end, count, scale = row.offset, row.end, row.count, row.scale
    code = _CODES.get((row.kind, row.width))
    if row.kind == "str" or code is None:
        return lambda frame, size: read_field(frame, row)
    unpack = struct.Struct("<%d%s" % (count, code)).unpack_from
    if row.kind != "f" and scale == 1.0:
        if count == 1:
            return lambda frame, size: (unpack(frame, offset)[0] if end <= size
                                        else read_field(frame, row))
        return lambda frame, size: (unpack(frame, offset) if end <= size
                                    else read_field(frame, row))

    if row.kind == "f":
        def scaled_floats(frame: bytes, size: int) -> object:
            if end > size:
                return read_field(frame, row)
            items = tuple([round(number * scale, 6) for number in unpack(frame, offset)])
            return items if count > 1 else items[0]

        return scaled_floats
    rounded: Dict[int, float] = {}  # raw → scaled: cells repeat their millivolts

    def scaled(frame: bytes, size: int) -> object:
        if end > size:
            return read_field(frame, row)
        numbers = unpack(frame, offset)
        items = tuple(map(rounded.get, numbers))
        if None in items:
            if len(rounded) >= _ROUNDED_LIMIT:
                rounded.clear()
            items = tuple([round(number * scale, 9) for number in numbers])
            rounded.update(zip(numbers, items))
        return items if count > 1 else items[0]

    return scaled


#: Scaled values each row remembers (a few thousand distinct millivolts at most).
_ROUNDED_LIMIT = 4096

#: id(row) → (row, its reader); holding the row keeps its id from being reused.
_READERS: Dict[int, Tuple[Field, Reader]] = {}
_READERS_LIMIT = 4096


def _reader_of(row: Field) -> Reader:
    entry = _READERS.get(id(row))
    if entry is not None and entry[0] is row:
        return entry[1]
    reader = _reader(row)
    if len(_READERS) >= _READERS_LIMIT:
        _READERS.clear()
    _READERS[id(row)] = (row, reader)
    return reader


#: id(table) → (table, its (name, reader) pairs), for the tables, which are tuples.
_TABLES: Dict[int, Tuple[Sequence[Field], Tuple[Tuple[str, Reader], ...]]] = {}


def decode_fields(frame: bytes, fields: Sequence[Field]) -> Dict[str, object]:
    """Read every row of ``fields`` from a 300-byte frame (secret rows are skipped)."""
    size = len(frame)
    entry = _TABLES.get(id(fields))
    if entry is None or entry[0] is not fields:
        plan = tuple((row.name, _reader_of(row)) for row in fields if row.kind != "secret")
        if not isinstance(fields, tuple):  # a caller's list may change: not remembered
            return {name: read(frame, size) for name, read in plan}
        if len(_TABLES) >= _READERS_LIMIT:
            _TABLES.clear()
        entry = _TABLES[id(fields)] = (fields, plan)
    return {name: read(frame, size) for name, read in entry[1]}
