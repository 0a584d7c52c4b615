"""4E57 envelope validation (one named error per fault) and framing (``locate_frame``)."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from jkbms_exporter.protocols import jk_serial
from jkbms_exporter.errors import (
    BadStartError,
    ChecksumError,
    FrameError,
    LengthMismatchError,
    MissingEndByteError,
    TruncatedFieldError,
    UnknownTagError,
    reason_of,
)

from test_jk_serial_helpers import (
    bad_checksum_frame_ids,
    build_frame,
    byte_sum16,
    frame_by_id,
    frame_bytes,
    frame_ids,
    good_frame_ids,
    info_of,
    reseal,
    spec_tlv_widths,
)

FRAME = frame_bytes("esphome_14s_h6")


def info_offset_of(frame: bytes, wanted: int) -> int:
    """Frame offset of register ``wanted``'s tag byte, walking with the spec's widths."""
    widths = spec_tlv_widths()
    info = info_of(frame)
    position = 0
    while True:
        tag = info[position]
        if tag == wanted:
            return 11 + position
        position += 2 + info[position + 1] if tag == 0x79 else 1 + widths[tag]


def with_info(frame: bytes, info: bytes) -> bytes:
    """``frame``'s header fields around another information field; length and sum right."""
    return build_frame(info, command=frame[8], source=frame[9], transport=frame[10])


# ----------------------------------------------------------------------------- each fault, its error

@pytest.mark.parametrize("frame_id", frame_ids())
def test_every_vector_passes_the_envelope_checks_but_the_checksum(frame_id):
    frame = frame_bytes(frame_id)
    envelope = jk_serial.parse_envelope(frame, verify_checksum=False)
    assert envelope.info == info_of(frame)
    assert (envelope.command, envelope.source, envelope.transport_type) == tuple(frame[8:11])


@pytest.mark.parametrize("start", [b"\x4e\x58", b"\x4f\x57", b"\x00\x00", b"WN", b"\x57\x4e"])
def test_bad_start_bytes(start):
    frame = reseal(start + FRAME[2:])
    with pytest.raises(BadStartError) as caught:
        jk_serial.parse_envelope(frame)
    assert caught.value.offset == 0
    with pytest.raises(BadStartError):
        jk_serial.decode_reply(frame)


def test_bad_start_is_reported_even_for_very_short_input():
    for data in (b"X", b"\x4eX", b"\x00\x57\x00"):
        with pytest.raises(BadStartError):
            jk_serial.parse_envelope(data)


@pytest.mark.parametrize("data", [b"", b"\x4e", b"\x4e\x57", b"\x4e\x57\x00"])
def test_too_short_to_hold_a_length_is_a_length_mismatch(data):
    with pytest.raises(LengthMismatchError):
        jk_serial.parse_envelope(data)


@pytest.mark.parametrize("delta", [-2, -1, 1, 2, 0x100])
def test_length_field_disagreeing_with_the_bytes_received(delta):
    length = int.from_bytes(FRAME[2:4], "big") + delta
    frame = reseal(FRAME[:2] + length.to_bytes(2, "big") + FRAME[4:])
    with pytest.raises(LengthMismatchError) as caught:
        jk_serial.parse_envelope(frame)
    assert caught.value.offset == 2


def test_frame_cut_short_or_with_a_byte_too_many():
    for frame in (FRAME[:-1], FRAME[:100], FRAME + b"\x00", FRAME + FRAME):
        with pytest.raises(LengthMismatchError):
            jk_serial.decode_reply(frame)


@pytest.mark.parametrize("size", [4, 5, 12, 19])
def test_consistent_length_below_the_minimum_frame(size):
    frame = (b"\x4e\x57" + (size - 2).to_bytes(2, "big") + bytes(size))[:size]
    with pytest.raises(LengthMismatchError):
        jk_serial.parse_envelope(frame)


@pytest.mark.parametrize("end", [0x00, 0x67, 0x69, 0xFF])
def test_missing_end_byte(end):
    frame = bytearray(FRAME)
    frame[-5] = end
    frame = reseal(bytes(frame))
    with pytest.raises(MissingEndByteError) as caught:
        jk_serial.parse_envelope(frame)
    assert caught.value.offset == len(frame) - 5
    with pytest.raises(MissingEndByteError):  # not excused by turning the checksum off
        jk_serial.parse_envelope(frame, verify_checksum=False)


@pytest.mark.parametrize("position", [-1, -2, 5, 11, 200])
def test_checksum_mismatch(position):
    frame = bytearray(FRAME)
    frame[position] ^= 0x01
    with pytest.raises(ChecksumError) as caught:
        jk_serial.decode_reply(bytes(frame))
    error = caught.value
    assert error.expected == byte_sum16(bytes(frame[:-4]))
    assert error.received == int.from_bytes(frame[-4:], "big")
    assert "checksum" in str(error)


@pytest.mark.parametrize("reserved", [b"\x00\x01", b"\x01\x00", b"\xff\xff"])
def test_reserved_checksum_bytes_must_be_zero(reserved):
    # spec §4: "Also check … frame[-4:-2] == 00 00"
    frame = FRAME[:-4] + reserved + FRAME[-2:]
    with pytest.raises(ChecksumError):
        jk_serial.parse_envelope(frame)
    assert jk_serial.parse_envelope(frame, verify_checksum=False).info == info_of(FRAME)


def test_checksum_is_masked_to_16_bits():
    # a 32-cell reply could sum past 0xFFFF (spec §4: "Mask to 16 bits"); the envelope
    # does not look inside the information field, so 300 bytes of FF will do
    info = b"\xff" * 300
    frame = build_frame(info)
    assert sum(frame[:-4]) > 0xFFFF
    assert jk_serial.parse_envelope(frame).info == info
    unmasked = frame[:-4] + sum(frame[:-4]).to_bytes(4, "big")
    with pytest.raises(ChecksumError):
        jk_serial.parse_envelope(unmasked)


@pytest.mark.parametrize("frame_id", bad_checksum_frame_ids())
def test_vectors_with_a_wrong_checksum_are_rejected_with_their_own_numbers(frame_id):
    vector = frame_by_id(frame_id)
    with pytest.raises(ChecksumError) as caught:
        jk_serial.decode_reply(frame_bytes(frame_id))
    assert caught.value.expected == int(vector["computed_sum_16bit"], 16)
    assert caught.value.received == int(vector["transmitted_checksum_hex"], 16)


@pytest.mark.parametrize("tag", [0x88, 0x8D, 0xBB, 0xBF, 0xC1, 0x00, 0x4E])
def test_unknown_tag_names_the_tag_and_its_offset(tag):
    # put the tag where 0x8E is, so that the walk reaches it after 0x8C
    at = info_offset_of(FRAME, 0x8E)
    info = info_of(FRAME)
    frame = with_info(FRAME, info[: at - 11] + bytes((tag, 0, 0)) + info[at - 11 :])
    with pytest.raises(UnknownTagError) as caught:
        jk_serial.decode_reply(frame)
    error = caught.value
    assert (error.tag, error.offset) == (tag, at)
    message = str(error)
    assert re.search(r"0x%02X\b" % tag, message, re.I)
    assert re.search(r"\b%d\b" % at, message)


def test_unknown_tag_first_in_the_field():
    frame = build_frame(b"\x88\x00\x00")
    with pytest.raises(UnknownTagError) as caught:
        jk_serial.decode_reply(frame)
    assert caught.value.offset == 11


@pytest.mark.parametrize("cut", [1, 3, 5, 25])
def test_truncated_last_field(cut):
    # the info field ends inside 0xC0 (1 byte: cut 1) or 0xBA (24 bytes: cuts 3, 5, 25)
    info = info_of(FRAME)
    frame = with_info(FRAME, info[:-cut])
    with pytest.raises(TruncatedFieldError) as caught:
        jk_serial.decode_reply(frame)
    assert caught.value.offset in (info_offset_of(FRAME, 0xBA), info_offset_of(FRAME, 0xC0))


def test_truncated_cell_list():
    for info in (b"\x79", b"\x79\x06\x01\x0e", b"\x79\x2a" + bytes(41)):
        with pytest.raises(TruncatedFieldError) as caught:
            jk_serial.walk_registers(info)
        assert caught.value.offset == 11


def test_truncated_middle_field_is_not_read_as_the_next_tag():
    # 0x83 needs 2 bytes; only 1 is left
    with pytest.raises(TruncatedFieldError):
        jk_serial.walk_registers(b"\x83\x14")


def test_cell_list_length_not_a_multiple_of_three_is_malformed():
    with pytest.raises(FrameError) as caught:
        jk_serial.walk_registers(b"\x79\x04\x01\x0e\xed\x02")
    assert reason_of(caught.value) == "malformed"


def test_cell_indices_must_be_one_to_n():
    info = info_of(FRAME)
    broken = bytearray(info)
    broken[2] = 5  # first cell claims index 5: two cells now say 5, none says 1
    with pytest.raises(FrameError):
        jk_serial.decode_reply(with_info(FRAME, bytes(broken)))


def test_a_reply_without_the_live_registers_is_malformed():
    for info in (b"", b"\x83\x14\xef", b"\xc0\x01"):
        with pytest.raises(FrameError) as caught:
            jk_serial.decode_reply(build_frame(info))
        assert reason_of(caught.value) == "malformed"


def test_each_error_maps_to_its_reason():
    assert reason_of(ChecksumError(expected=1, received=2)) == "checksum"
    for error in (
        BadStartError("x", 0),
        LengthMismatchError("x", 2),
        MissingEndByteError("x", 5),
        UnknownTagError(0x88, 30),
        TruncatedFieldError("x", 40),
        FrameError("x"),
    ):
        assert reason_of(error) == "malformed", type(error).__name__


def test_decode_errors_carry_their_reason():
    cases = {
        "checksum": FRAME[:-1] + bytes(((FRAME[-1] + 1) & 0xFF,)),
        "malformed": b"\x4e\x58" + FRAME[2:],
    }
    for reason, frame in cases.items():
        with pytest.raises(FrameError) as caught:
            jk_serial.decode_reply(frame)
        assert reason_of(caught.value) == reason


# ----------------------------------------------------------------------------- locate_frame

def test_locate_a_clean_frame():
    assert jk_serial.locate_frame(FRAME) == (0, len(FRAME))


def test_locate_nothing():
    assert jk_serial.locate_frame(b"") == (0, None)
    assert jk_serial.locate_frame(b"\x00\x01\x02") == (3, None)


def test_locate_keeps_a_stray_4e_at_the_end():
    assert jk_serial.locate_frame(b"\x4e") == (0, None)
    assert jk_serial.locate_frame(b"junk\x4e") == (4, None)
    assert jk_serial.locate_frame(b"junk\x4e\x4e") == (5, None)
    # and that 4E completes to a frame once the rest arrives
    buffer = b"junk\x4e" + FRAME[1:]
    assert jk_serial.locate_frame(buffer) == (4, len(FRAME))


@pytest.mark.parametrize("cut", [2, 3])
def test_locate_waits_on_a_partial_header(cut):
    assert jk_serial.locate_frame(b"xx" + FRAME[:cut]) == (2, None)


def test_locate_reports_the_size_of_a_frame_still_arriving():
    for cut in (4, 11, 100, len(FRAME) - 1):
        assert jk_serial.locate_frame(b"\x00" * 7 + FRAME[:cut]) == (7, len(FRAME))


@pytest.mark.parametrize("length", [0x0000, 0x0001, 0x0011, 0x0400, 0xFFFF, 0x4E57])
def test_locate_skips_a_start_marker_with_an_impossible_length(length):
    junk = b"\x4e\x57" + length.to_bytes(2, "big")
    assert jk_serial.locate_frame(junk + FRAME) == (4, len(FRAME))
    # alone it is junk, except 4E 57 4E 57, whose second half is a new partial header
    assert jk_serial.locate_frame(junk) == ((2, None) if length == 0x4E57 else (4, None))


def test_locate_skips_junk_and_a_plausible_false_start_before_the_real_frame():
    # 4E 57 00 30 looks like a 50-byte frame; its bytes are junk and the real one follows
    junk = b"\x01\x4e\x57\x00\x30\x02\x03"
    buffer = junk + FRAME
    start, size = jk_serial.locate_frame(buffer)
    assert buffer[start : start + size] == FRAME


def test_locate_prefers_the_real_frame_to_a_false_start_still_pending():
    # a false start whose claimed size reaches past the buffer end
    buffer = b"\x4e\x57\x03\x00" + FRAME + b"\x00\x00"
    assert jk_serial.locate_frame(buffer) == (4, len(FRAME))


def test_locate_returns_the_first_of_two_frames_and_ignores_trailing_junk():
    other = frame_bytes("opendtu_16s_b1a24s15p_1")
    assert jk_serial.locate_frame(FRAME + other) == (0, len(FRAME))
    assert jk_serial.locate_frame(FRAME + b"\x4e\x57\x01") == (0, len(FRAME))


@pytest.mark.parametrize("frame_id", bad_checksum_frame_ids())
def test_locate_hands_a_bad_checksum_frame_on_so_it_is_reported_as_such(frame_id):
    frame = frame_bytes(frame_id)
    buffer = b"\x00\x4e\x57\x00\x30" + frame + b"\x4e\x57\x00"
    start, size = jk_serial.locate_frame(buffer)
    assert buffer[start : start + size] == frame
    with pytest.raises(ChecksumError):
        jk_serial.decode_reply(buffer[start : start + size])


def test_locate_hands_a_frame_without_end_byte_on_so_it_is_reported_as_such():
    frame = bytearray(FRAME)
    frame[-5] = 0x00
    frame = reseal(bytes(frame))
    start, size = jk_serial.locate_frame(b"\x11" + frame)
    assert (start, size) == (1, len(frame))
    with pytest.raises(MissingEndByteError):
        jk_serial.decode_reply(frame)


junk = st.binary(max_size=300)


@settings(max_examples=150, deadline=None)
@given(before=junk, after=junk, frame_id=st.sampled_from(good_frame_ids()))
def test_locate_finds_a_frame_between_arbitrary_junk(before, after, frame_id):
    frame = frame_bytes(frame_id)
    buffer = before + frame + after
    start, size = jk_serial.locate_frame(buffer)
    assert (start, size) == (len(before), len(frame))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=junk, after=st.binary(max_size=40), frame_id=st.sampled_from(good_frame_ids()),
       chunks=st.lists(st.integers(1, 64), min_size=1, max_size=40))
def test_locate_finds_a_frame_arriving_in_chunks(before, after, frame_id, chunks):
    """The transport's loop: feed bytes as they arrive, drop what locate_frame calls junk,
    take ``size`` bytes once they are in; a candidate that fails the envelope check is
    dropped by one byte (the resync a reader does after a bad frame). The real frame comes
    out, whatever the junk before it."""
    frame = frame_bytes(frame_id)
    stream = before + frame + after
    buffer = b""
    sizes = iter(chunks * (len(stream) // min(chunks) + 1))
    position = 0
    while True:
        start, size = jk_serial.locate_frame(buffer)
        assert 0 <= start <= len(buffer)
        buffer = buffer[start:]
        if size is not None and len(buffer) >= size:
            candidate = buffer[:size]
            try:
                jk_serial.parse_envelope(candidate)
            except FrameError:
                buffer = buffer[1:]
                continue
            assert candidate == frame
            return
        assert position < len(stream), "stream ended without the frame"
        step = next(sizes)
        buffer += stream[position : position + step]
        position += step
