"""Fuzz the 4E57 decoder: whatever comes in, it returns a Reading or raises one of the
package's FrameError types (never IndexError, struct.error, UnicodeError, a bare
ValueError …), and it does a bounded amount of work: the number of lines it executes is
counted (deterministic, no clock) and must stay linear in the input size."""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from jkbms_exporter.protocols import jk_serial
from jkbms_exporter.errors import FrameError
from jkbms_exporter.reading import Reading

from test_jk_serial_helpers import build_frame, frame_bytes, frame_ids, info_of, reseal

PACKAGE = str(Path(jk_serial.__file__).resolve().parent.parent)  # the whole package
FUZZ = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: lines of package code per input byte, plus a constant for building the Reading; a real
#: 291-byte frame takes about 6 lines per byte
LINES_PER_BYTE = 40
LINES_FIXED = 3000


class LineBudget:
    """Counts the lines executed in package code (sys.settrace), restoring any tracer."""

    def __init__(self) -> None:
        self.lines = 0

    def _local(self, frame, event, arg):
        if event == "line":
            self.lines += 1
        return self._local

    def _global(self, frame, event, arg):
        if frame.f_code.co_filename.startswith(PACKAGE):
            return self._local
        return None

    def __enter__(self) -> "LineBudget":
        self._previous = sys.gettrace()
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc) -> None:
        sys.settrace(self._previous)


def decode_checked(data: bytes, verify: bool = True):
    """decode_reply's result or FrameError; anything else fails the test. Also checks the
    work done."""
    with LineBudget() as budget:
        try:
            result = jk_serial.decode_reply(data, verify_checksum=verify)
        except FrameError as error:
            result = error
        except Exception as error:  # pragma: no cover - this is the failure being looked for
            raise AssertionError("decode_reply raised %s: %s" % (type(error).__name__, error)) from error
    assert budget.lines <= LINES_PER_BYTE * len(data) + LINES_FIXED, (budget.lines, len(data))
    assert isinstance(result, (Reading, FrameError))
    if isinstance(result, FrameError):
        assert str(result)  # a message to log
    return result


def test_line_budget_counts():
    # the counter itself must see the decoder's work: the full walk (no layout remembered
    # yet), then the remembered layout's fast path, which must be cheaper
    frame = frame_bytes("esphome_14s_h6")
    jk_serial.forget_layouts()
    with LineBudget() as cold:
        jk_serial.decode_reply(frame)
    assert 500 < cold.lines < LINES_PER_BYTE * 285
    with LineBudget() as warm:
        jk_serial.decode_reply(frame)
    assert warm.lines < cold.lines / 2


@FUZZ
@given(st.binary(max_size=600), st.booleans())
def test_arbitrary_bytes(data, verify):
    decode_checked(data, verify)


@FUZZ
@given(st.binary(max_size=400), st.booleans())
def test_arbitrary_bytes_behind_a_start_marker_and_a_matching_length(tail, verify):
    data = b"\x4e\x57" + (len(tail) + 2).to_bytes(2, "big") + tail
    decode_checked(data, verify)


@FUZZ
@given(st.binary(max_size=400), st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))
def test_arbitrary_information_field_in_a_valid_envelope(info, command, source, transport):
    decode_checked(build_frame(info, command=command, source=source, transport=transport))


TLV_PIECES = st.one_of(
    st.binary(min_size=1, max_size=3),
    st.sampled_from(sorted(jk_serial.REGISTER_BY_TAG)).flatmap(
        lambda tag: st.binary(min_size=0, max_size=30).map(lambda value: bytes((tag,)) + value)),
    st.lists(st.integers(0, 0xFFFF), max_size=40).map(
        lambda cells: bytes((0x79, (3 * len(cells)) & 0xFF))
        + b"".join(bytes((i + 1,)) + mv.to_bytes(2, "big") for i, mv in enumerate(cells))),
    st.binary(max_size=50).map(lambda body: bytes((0x79, len(body))) + body),  # any length byte
)


@FUZZ
@given(st.lists(TLV_PIECES, max_size=80))
def test_information_field_of_plausible_records(pieces):
    decode_checked(build_frame(b"".join(pieces)))


MUTATION = st.tuples(st.sampled_from(["flip", "set", "insert", "delete"]),
                     st.integers(0, 400), st.integers(0, 255))


def mutate(data: bytes, mutations) -> bytes:
    out = bytearray(data)
    for operation, position, value in mutations:
        if not out:
            out.append(value)
            continue
        position %= len(out) + (operation == "insert")
        if operation == "flip":
            out[position] ^= 1 << (value % 8)
        elif operation == "set":
            out[position] = value
        elif operation == "insert":
            out.insert(position, value)
        else:
            del out[position]
    return bytes(out)


@FUZZ
@given(st.sampled_from(frame_ids()), st.lists(MUTATION, min_size=1, max_size=6), st.booleans())
def test_mutated_real_frames(frame_id, mutations, verify):
    decode_checked(mutate(frame_bytes(frame_id), mutations), verify)


@FUZZ
@given(st.sampled_from(frame_ids()), st.lists(MUTATION, min_size=1, max_size=6))
def test_mutated_real_frames_with_length_and_checksum_repaired(frame_id, mutations):
    # what a corrupted byte that slipped past the checksum looks like: the walk and the
    # register → Reading step see it
    frame = frame_bytes(frame_id)
    decode_checked(build_frame(mutate(info_of(frame), mutations), command=frame[8]))


@FUZZ
@given(st.sampled_from(frame_ids()), st.lists(MUTATION, min_size=1, max_size=4))
def test_mutated_real_frames_with_only_the_checksum_repaired(frame_id, mutations):
    decode_checked(reseal(mutate(frame_bytes(frame_id), mutations)))


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=0, max_size=64), st.integers(1, 8))
def test_large_inputs_are_handled_in_linear_work(seed, repeat):
    # large frames: a valid envelope around up to 64 KiB of junk records and plain junk
    info = (seed * (1024 * repeat // max(1, len(seed)) + 1))[: 1024 * repeat * 8]
    decode_checked(build_frame(info[:0xFFFF - 18]))
    decode_checked(b"\x4e\x57\xff\xff" + info)


@FUZZ
@given(st.binary(max_size=700))
def test_locate_frame_never_fails_on_arbitrary_bytes(data):
    start, size = jk_serial.locate_frame(data)
    assert 0 <= start <= len(data)
    if size is not None:
        assert data[start : start + 2] == b"\x4e\x57"
        assert jk_serial.MIN_FRAME_SIZE <= size <= jk_serial.MAX_FRAME_SIZE
    else:
        # nothing usable left but possibly the start of a marker
        assert data[start:] in (b"", b"\x4e", b"\x4e\x57", b"\x4e\x57" + data[start + 2 : start + 3])


@FUZZ
@given(st.binary(max_size=40))
def test_parse_request_never_fails_unexpectedly(data):
    for frame in (data, build_frame(data, transport=0, source=3)):
        try:
            jk_serial.parse_request(frame)
        except FrameError:
            pass
