"""The remembered per-row readers of ``jk02_fields.decode_fields`` against the plain
byte-by-byte :func:`jk02_fields.read_field`: the same values, of the same types, for every
real frame read with every table of every generation, read after read; the same error for a
frame too short."""

from __future__ import annotations

import math
import random
import struct
from typing import Dict, List, Tuple

import pytest

from conftest import load_vectors
from jkbms_exporter.errors import TruncatedFieldError
from jkbms_exporter.protocols import jk02
from jkbms_exporter.protocols.jk02_fields import decode_fields, read_field
from jkbms_exporter.protocols.jk02_layout import Field

TABLES = [(kind, generation, table[generation])
          for kind, table in (("cell_info", jk02.CELL_INFO_FIELDS),
                              ("settings", jk02.SETTINGS_FIELDS),
                              ("device_info", jk02.DEVICE_INFO_FIELDS))
          for generation in jk02.GENERATIONS]


def real_frames() -> List[bytes]:
    frames = [bytes.fromhex(f["response_hex"]) for f in load_vectors("jk02.json")["frames"]]
    return [frame[: jk02.FRAME_SIZE] for frame in frames]


def reference(frame: bytes, fields) -> Dict[str, object]:
    return {row.name: read_field(frame, row) for row in fields if row.kind != "secret"}


def typed(values: Dict[str, object]) -> List[Tuple[str, str, object]]:
    def kind(value: object) -> str:
        if isinstance(value, tuple):
            return "tuple(%s)" % ",".join(sorted({type(v).__name__ for v in value}))
        return type(value).__name__
    # repr keeps -0.0 apart from 0.0 and NaN comparable
    return [(name, kind(value), repr(value)) for name, value in values.items()]


@pytest.mark.parametrize("kind, generation, fields", TABLES,
                         ids=["%s-%s" % (k, g) for k, g, _ in TABLES])
def test_every_real_frame_reads_the_same_with_every_table(kind, generation, fields):
    frames = real_frames()
    for _ in range(2):  # the second pass finds every reader and scaled value remembered
        for frame in frames:
            assert typed(decode_fields(frame, fields)) == typed(reference(frame, fields))
            as_list = list(fields)  # jk_pb hands over lists of the rows its reads cover
            assert typed(decode_fields(frame, as_list)) == typed(reference(frame, as_list))


def test_random_frames_read_the_same_including_nan_and_negative_zero():
    generator = random.Random(255)
    specials = [struct.pack("<f", value) for value in (-0.0, 0.0, math.nan, math.inf, -1.5)]
    for _ in range(60):
        frame = bytearray(generator.randrange(256) for _ in range(jk02.FRAME_SIZE))
        for _ in range(20):
            at = generator.randrange(0, jk02.FRAME_SIZE - 4)
            frame[at : at + 4] = generator.choice(specials + [bytes(4), b"\x00\x80\x00\x00"])
        for _, _, fields in TABLES:
            assert typed(decode_fields(bytes(frame), fields)) == \
                typed(reference(bytes(frame), fields))


def test_a_scaled_float_row_keeps_the_sign_of_zero():
    row = Field(0, 4, "probe", kind="f", scale=0.5)
    for raw in (-0.0, 0.0, -0.0, 2.0, -0.0):
        value = decode_fields(struct.pack("<f", raw), (row,))["probe"]
        assert math.copysign(1.0, value) == math.copysign(1.0, raw)


def test_scaled_integer_arrays_after_their_values_changed():
    row = Field(0, 2, "millivolts", scale=0.001, count=4)
    table = (row,)
    for cells in ((3300, 3301, 3302, 0), (3300, 3301, 3302, 0), (3299, 0, 65535, 3301)):
        frame = struct.pack("<4H", *cells)
        assert decode_fields(frame, table)["millivolts"] == \
            tuple(round(mv * 0.001, 9) for mv in cells)


def outcome(read, frame: bytes, fields):
    try:
        return typed(read(frame, fields))
    except TruncatedFieldError as error:
        return str(error), error.offset


@pytest.mark.parametrize("cut", [0, 1, 100, 200, 299])
def test_a_short_frame_fails_at_the_same_row_with_the_same_error(cut):
    frame = real_frames()[1][:cut]
    failed = 0
    for _, _, fields in TABLES:
        expected = outcome(reference, frame, fields)
        assert outcome(decode_fields, frame, fields) == expected
        failed += isinstance(expected, tuple)
    assert failed or cut == 299
