"""JK04 cell-info frames: highest and lowest cell number at bytes 218 and 219 (0-based, as
JK02's 62/63), checked against the captured frames (issue 12)."""

from __future__ import annotations

import pytest

from conftest import load_vectors

from jkbms_exporter.protocols import jk02


def frame(vector_id: str) -> bytes:
    (found,) = [v for v in load_vectors("jk02.json")["frames"] if v["id"] == vector_id]
    return bytes.fromhex(found["response_hex"])


@pytest.mark.parametrize("vector_id, highest, lowest", [
    # description: "cell_min: 3.3527 V (cell #1)  cell_max: 3.3586 V (cell #2)"
    ("cell_info_jk04", 2, 1),
    # byte 218 = 7 names the highest cell (8, 3.3303 V); byte 219 = 2 names cell 3
    # (3.3204 V) although cell 1 (3.3167 V) is lower in the same frame: the BMS's figure
    # is reported as sent (notes: spec is silent, frame disagrees with its own cells)
    ("cell_info_jk04_b5a24s", 8, 3),
])
def test_jk04_frames_carry_the_highest_and_lowest_cell_number(vector_id: str, highest: int,
                                                              lowest: int) -> None:
    decoded = jk02.decode_frame(frame(vector_id), jk02.JK04)
    assert decoded.values["highest_cell_index"] == highest - 1
    assert decoded.values["lowest_cell_index"] == lowest - 1
    reading = jk02.reading_from_frames(decoded)
    assert (reading.extra["highest_cell"], reading.extra["lowest_cell"]) == (highest, lowest)
    cells = reading.cell_voltages_volts
    assert cells.index(max(cells)) == highest - 1


def test_jk04_encoding_writes_them_back() -> None:
    reading = jk02.decode_reading(frame("cell_info_jk04_b5a24s"), jk02.JK04)
    again = jk02.encode_cell_info(reading, jk02.JK04)
    assert (again[218], again[219]) == (7, 2)
