"""The remembered-layout fast path of the 4E57 walk (``jk_serial_walk_cache``) against the
full record-by-record walk: the same registers for every real frame, for fields whose layout
changed between reads, and the same errors for corrupted frames."""

from __future__ import annotations

import random
from typing import Dict, List, Tuple

import pytest

from jkbms_exporter.errors import FrameError
from jkbms_exporter.protocols import jk_serial
from jkbms_exporter.protocols.jk_serial_walk_cache import LayoutCache
from jkbms_exporter.sim.bms import SimulatedBms

from test_jk_serial_helpers import build_frame, frame_bytes, frame_ids, info_of, reseal


def full_walk(info: bytes) -> Tuple[Dict[int, object], List[Tuple[int, int, int]]]:
    records: List[Tuple[int, int, int]] = []
    return jk_serial.walk_registers_fully(info, records=records), records


def remembered(info: bytes) -> LayoutCache:
    cache = LayoutCache()
    _, records = full_walk(info)
    cache.remember(records, len(info))
    return cache


def typed_items(registers: Dict[int, object]) -> List[Tuple[int, type, object]]:
    """Order, types and values: an int where the walk gives an int, bytes where bytes."""
    return [(tag, type(value), value) for tag, value in registers.items()]


def outcome(frame: bytes, verify: bool = True) -> Tuple[str, str, object]:
    try:
        reading = jk_serial.decode_reply(frame, verify)
    except FrameError as error:
        return type(error).__name__, str(error), error.offset
    return "ok", "", reading


@pytest.mark.parametrize("frame_id", frame_ids())
def test_every_real_frame_unpacks_as_the_full_walk_does(frame_id):
    info = info_of(frame_bytes(frame_id))
    expected, records = full_walk(info)
    assert [tag for tag, _, _ in records][:1] == [jk_serial.CELLS_TAG]
    cache = remembered(info)
    fast = cache.registers(info)
    assert fast is not None, "a real frame's layout must be unpackable in one go"
    assert typed_items(fast) == typed_items(expected)
    assert jk_serial.PASSWORD_TAG not in fast


@pytest.mark.parametrize("frame_id", frame_ids())
def test_real_frames_decode_the_same_warm_and_cold(frame_id):
    frame = frame_bytes(frame_id)
    jk_serial.forget_layouts()
    cold = outcome(frame, verify=False)
    warm = outcome(frame, verify=False)  # the layout is remembered now
    assert len(jk_serial._LAYOUTS._by_size) == 1
    assert cold == warm


def test_each_real_layout_does_not_serve_another_real_frame_of_the_same_length():
    infos = [info_of(frame_bytes(frame_id)) for frame_id in frame_ids()]
    for first in infos:
        cache = remembered(first)
        for other in infos:
            fast = cache.registers(other)
            if fast is not None:  # only a field laid out the same way may pass the check
                assert [(t, p, w) for t, p, w in full_walk(other)[1]] == full_walk(first)[1]
                assert typed_items(fast) == typed_items(full_walk(other)[0])


def _registers(cells: int, **changes: object) -> Dict[int, object]:
    registers = jk_serial.walk_registers_fully(info_of(frame_bytes(frame_ids()[0])))
    registers = dict(registers)
    registers[jk_serial.CELLS_TAG] = tuple((i, 3300 + i) for i in range(1, cells + 1))
    for name, value in changes.items():
        tag = int(name[1:], 16)
        if value is None:
            registers.pop(tag, None)
        else:
            registers[tag] = value  # type: ignore[assignment]
    return registers


def test_same_length_other_tag_takes_the_full_walk():
    # 0xB8 and 0xC0 are both one byte wide: the two fields have the same length
    with_b8 = jk_serial.encode_registers(_registers(16, xB8=5, xC0=None))
    with_c0 = jk_serial.encode_registers(_registers(16, xB8=None, xC0=1))
    assert len(with_b8) == len(with_c0)
    cache = remembered(with_b8)
    assert cache.registers(with_c0) is None
    cache = remembered(with_c0)
    assert cache.registers(with_b8) is None
    assert typed_items(cache.registers(with_c0)) == typed_items(full_walk(with_c0)[0])


def test_same_length_other_cell_count_takes_the_full_walk():
    # one cell (3 bytes) fewer, 0xB9 (5 bytes) instead of 0xAE (2 bytes): the same length
    sixteen = jk_serial.encode_registers(_registers(16, xAE=1, xB9=None))
    fifteen = jk_serial.encode_registers(_registers(15, xAE=None, xB9=7))
    assert len(sixteen) == len(fifteen)
    for first, second in ((sixteen, fifteen), (fifteen, sixteen)):
        assert remembered(first).registers(second) is None
        jk_serial.forget_layouts()
        for info in (first, second, first, second):
            assert typed_items(jk_serial.walk_registers(info)) == \
                typed_items(full_walk(info)[0])
    assert len(jk_serial.walk_registers(fifteen)[jk_serial.CELLS_TAG]) == 15


def test_a_missing_tag_between_reads_is_noticed():
    whole = jk_serial.encode_registers(_registers(16))
    jk_serial.walk_registers(whole)
    for tag in (0x83, 0x8C, 0xB4, 0xC0):
        lacking = jk_serial.encode_registers(_registers(16, **{"x%02X" % tag: None}))
        assert typed_items(jk_serial.walk_registers(lacking)) == \
            typed_items(full_walk(lacking)[0])
        assert tag not in jk_serial.walk_registers(lacking)


def test_simulated_packs_of_every_cell_count_read_after_read():
    request = jk_serial.read_all_request()
    jk_serial.forget_layouts()
    bms = {cells: SimulatedBms(cells=cells, seed=cells) for cells in (4, 8, 15, 16, 24, 32)}
    for _ in range(3):
        for cells, sim in bms.items():
            frame = sim.handle(request)
            info = info_of(frame)
            assert typed_items(jk_serial.walk_registers(info)) == \
                typed_items(full_walk(info)[0])
            assert jk_serial.decode_reply(frame).cells == cells


def _corruptions(frame: bytes) -> List[Tuple[str, bytes]]:
    info_start = 11
    records = full_walk(info_of(frame))[1]
    tag_at = {tag: info_start + position for tag, position, _ in records}
    out = []
    flipped = bytearray(frame)
    flipped[tag_at[0x83] + 1] ^= 0x40  # a value byte: the checksum no longer matches
    out.append(("value byte, checksum kept", bytes(flipped)))
    for tag, new in ((0x83, 0xBD), (0x8C, 0x01), (0xB4, 0x83), (0xC0, 0xFF)):
        changed = bytearray(frame)
        changed[tag_at[tag]] = new  # another tag (write-only, unknown, or a known one)
        out.append(("tag 0x%02X -> 0x%02X, resealed" % (tag, new), reseal(bytes(changed))))
    longer = bytearray(frame)
    longer[tag_at[jk_serial.CELLS_TAG] + 1] += 3  # the cell list claims one cell more
    out.append(("cell length +3, resealed", reseal(bytes(longer))))
    odd = bytearray(frame)
    odd[tag_at[jk_serial.CELLS_TAG] + 1] -= 1  # not a multiple of 3
    out.append(("cell length -1, resealed", reseal(bytes(odd))))
    out.append(("last byte cut", build_frame(info_of(frame)[:-1])))
    out.append(("end byte", frame[:-5] + b"\x00" + frame[-4:]))
    return out


@pytest.mark.parametrize("frame_id", frame_ids()[:4])
def test_corrupted_frames_are_rejected_the_same_warm_and_cold(frame_id):
    good = frame_bytes(frame_id)
    for what, bad in _corruptions(good):
        for verify in (True, False):
            jk_serial.forget_layouts()
            cold = outcome(bad, verify)
            jk_serial.decode_reply(good, verify_checksum=False)  # remembers the good layout
            warm = outcome(bad, verify)
            assert warm == cold, what
            if verify:
                assert cold[0] != "ok", what


def test_random_damage_decodes_the_same_warm_and_cold():
    generator = random.Random(4657)
    frames = [frame_bytes(frame_id) for frame_id in frame_ids()]
    for _ in range(400):
        good = generator.choice(frames)
        bad = bytearray(good)
        for _ in range(generator.randint(1, 3)):
            bad[generator.randrange(11, len(bad) - 9)] = generator.randrange(256)
        bad = reseal(bytes(bad))
        jk_serial.forget_layouts()
        cold = outcome(bad)
        jk_serial.decode_reply(good, verify_checksum=False)
        assert outcome(bad) == cold


def test_readings_decoded_again_are_equal_and_share_no_mutable_dict():
    frames = [frame_bytes(frame_id) for frame_id in frame_ids()]
    first = [jk_serial.decode_reply(frame, verify_checksum=False) for frame in frames]
    again = [jk_serial.decode_reply(frame, verify_checksum=False) for frame in frames]
    assert again == first
    for one, other in zip(first, again):
        for name in ("temperatures_celsius", "switches_enabled", "alarms", "extra"):
            assert getattr(one, name) is not getattr(other, name), name
