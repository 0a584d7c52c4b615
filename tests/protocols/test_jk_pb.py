"""JK-PB RS-485 codec against every exchange of vectors/pb-modbus.json.

The 55AA payloads are checked key by key with the tables of ``test_jk02``; the Modbus keys
(FC03 reads, FC10 writes) with :data:`FC03_KEYS` / :data:`FC10_KEYS` below.
"""

from __future__ import annotations

import struct
from typing import Dict, List, Mapping

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import load_vectors
from jkbms_exporter.protocols import jk02, jk_pb, jk_pb_listen
from jkbms_exporter.errors import (
    BadStartError,
    ChecksumError,
    FrameError,
    IncompleteFrameError,
    LengthMismatchError,
    TruncatedFieldError,
)
from jkbms_exporter.reading import Reading
from test_jk02 import (
    CELL_INFO_KEYS,
    DEVICE_INFO_KEYS,
    SETTINGS_KEYS,
    assert_vector,
)

VECTORS = load_vectors("pb-modbus.json")
JK02_VECTORS = load_vectors("jk02.json")
EXCHANGES: Dict[str, dict] = {v["id"]: v for v in VECTORS["frames"]}
TRIGGER_EXCHANGES = [v for v in VECTORS["frames"] if (v["response_hex"] or "").startswith("55aaeb90")]
FC03_EXCHANGES = [v for v in VECTORS["frames"] if v["kind"] == "standard Modbus RTU FC03 read"]
WRITE_EXCHANGES = [v for v in VECTORS["frames"] if v["kind"].startswith("request only")]

#: Spec §3: trigger register → frame type of the answer.
SPEC_TRIGGERS = {0x1620: 2, 0x161E: 1, 0x161C: 3}
#: Spec §5: the master's ACK-shaped trailer after its own broadcast.
MASTER_TRAILER = bytes.fromhex("0010162000 01059A".replace(" ", ""))


def request_of(vector: dict) -> bytes:
    return bytes.fromhex(vector["request_hex"])


def response_of(vector: dict) -> bytes:
    return bytes.fromhex(vector["response_hex"])


def payload_of(vector_id: str) -> bytes:
    return response_of(EXCHANGES[vector_id])[:300]


def decoded(vector_id: str) -> jk02.DecodedFrame:
    return jk02.decode_frame(payload_of(vector_id), jk02.JK02_32S)


def test_vector_file_shape() -> None:
    assert len(VECTORS["frames"]) == 10
    assert len(TRIGGER_EXCHANGES) == 4 and len(FC03_EXCHANGES) == 3 and len(WRITE_EXCHANGES) == 3
    assert len(TRIGGER_EXCHANGES) + len(FC03_EXCHANGES) + len(WRITE_EXCHANGES) == len(VECTORS["frames"])


# --------------------------------------------------------------------------- CRC


def test_crc_check_value() -> None:
    # the catalogue check value of CRC-16/MODBUS
    assert jk_pb.crc16(b"123456789") == 0x4B37


@pytest.mark.parametrize("vector", VECTORS["frames"], ids=lambda v: v["id"])
def test_crc_of_every_frame(vector: dict) -> None:
    assert jk_pb.crc_ok(request_of(vector)) is vector["request_crc_ok"]
    if "ack_hex" in vector:
        assert jk_pb.crc_ok(bytes.fromhex(vector["ack_hex"])) is vector["ack_crc_ok"]
    if vector in FC03_EXCHANGES:
        assert jk_pb.crc_ok(response_of(vector)) is vector["checksum_ok"]
    bad = bytearray(request_of(vector))
    bad[-1] ^= 0x01
    assert not jk_pb.crc_ok(bytes(bad))
    with pytest.raises(ChecksumError):
        jk_pb.check_crc(bytes(bad))


def test_spec_example_frames_have_valid_crcs() -> None:
    for text in ("01 10 16 20 00 01 02 00 00 D6 F1", "01 10 16 1E 00 01 02 00 00 D2 2F",
                 "01 10 16 1C 00 01 02 00 00 D3 CD", "01 10 16 20 00 01 04 4B",
                 "00 10 16 20 00 01 05 9A", "02 10 11 14 00 01 02 02 10 B0 19"):
        assert jk_pb.crc_ok(bytes.fromhex(text))
    with pytest.raises(TruncatedFieldError):
        jk_pb.check_crc(b"\x01\x02")


# --------------------------------------------------------------------------- read-only guarantee


def expected_read_only(vector: dict) -> bool:
    return not vector["kind"].startswith("request only")  # the FC10 setting writes


@pytest.mark.parametrize("vector", VECTORS["frames"], ids=lambda v: v["id"])
def test_is_read_only_request_on_every_vector_request(vector: dict) -> None:
    assert jk_pb.is_read_only_request(request_of(vector)) is expected_read_only(vector)
    # what a BMS sends back is never something we may send
    if "ack_hex" in vector:
        assert not jk_pb.is_read_only_request(bytes.fromhex(vector["ack_hex"]))
    if vector["response_hex"]:
        assert not jk_pb.is_read_only_request(response_of(vector))


def test_ble_read_commands_are_read_only_and_ble_writes_are_not() -> None:
    for command in JK02_VECTORS["command_frames"].values():
        assert jk_pb.is_read_only_request(bytes.fromhex(command))
    write = bytearray(bytes.fromhex(JK02_VECTORS["command_frames"]["cell_info_0x96"]))
    write[4] = 0x1D  # charge switch register, same command shape
    write[19] = sum(write[:19]) & 0xFF
    assert not jk_pb.is_read_only_request(bytes(write))


def test_is_read_only_rejects_every_kind_of_write() -> None:
    trigger = jk_pb.trigger_request(1, 2)

    def crc(body: bytes) -> bytes:
        return jk_pb.with_crc(body)

    not_read_only = [
        b"",
        b"\x01",
        crc(trigger[:-4] + b"\x00\x01"),  # trigger register := 1
        crc(b"\x00" + trigger[1:-2]),  # trigger broadcast to address 0
        crc(b"\x10" + trigger[1:-2]),  # address 16: not a DIP address
        crc(b"\x01\x10\x16\x22\x00\x01\x02\x00\x00"),  # unknown 0x1600-block register
        crc(b"\x01\x10\x16\x00\x00\x01\x02\x00\x00"),  # voltage calibration (control block)
        crc(b"\x01\x10\x16\x20\x00\x02\x04\x00\x00\x00\x00"),  # two registers
        crc(b"\x01\x06\x16\x20\x00\x00"),  # FC06 write single register
        crc(b"\x01\x06\x10\x78\x00\x01"),
        crc(b"\x01\x05\x00\x01\xFF\x00"),  # FC05 write coil
        crc(b"\x01\x0F\x00\x01\x00\x01\x01\x01"),  # FC0F
        trigger[:-1] + bytes((trigger[-1] ^ 0xFF,)),  # bad CRC
        trigger + b"\x00",  # trailing byte
        b"\x00" + trigger,
        crc(b"\x01\x03\x12\x00\x00\x00"),  # FC03 of 0 registers
        crc(b"\x01\x03\x12\x00\x00\x7E"),  # FC03 of 126 registers
        crc(b"\x00\x03\x12\x00\x00\x01"),  # FC03 broadcast
        crc(b"\x01\x03\x12\x00\x00\x01\x00"),  # FC03 with a stray byte
    ]
    for frame in not_read_only:
        assert not jk_pb.is_read_only_request(frame), frame.hex(" ")
    assert jk_pb.is_read_only_request(crc(b"\x01\x03\x12\x00\x00\x7D"))  # 125 registers


def test_no_general_write_builder() -> None:
    builders = [name for name in dir(jk_pb) if callable(getattr(jk_pb, name))
                and "write" in name.lower()]
    assert builders == []
    for address in range(1, 16):
        for frame_type in (1, 2, 3):
            assert jk_pb.is_read_only_request(jk_pb.trigger_request(address, frame_type))
    for address, frame_type in ((0, 2), (16, 2), (1, 5), (1, 4), (-1, 2)):
        with pytest.raises(ValueError):
            jk_pb.trigger_request(address, frame_type)
    with pytest.raises(ValueError):
        jk_pb.read_request(1, 0x1600, 1)  # the control block is never read either
    with pytest.raises(ValueError):
        jk_pb.read_request(1, 0x1200, 0)
    for block in (jk_pb.BLOCK_STATUS, jk_pb.BLOCK_SETTINGS, jk_pb.BLOCK_INFO):
        for request in jk_pb.block_read_requests(7, block):
            assert jk_pb.is_read_only_request(request)


@settings(max_examples=300, deadline=1000)
@given(st.binary(max_size=40))
def test_is_read_only_request_never_raises(data: bytes) -> None:
    result = jk_pb.is_read_only_request(data)
    if result:
        assert data[1:2] == b"\x03" or data in {jk_pb.trigger_request(data[0], t) for t in (1, 2, 3)} \
            or jk02.is_read_only_command(data)


# --------------------------------------------------------------------------- trigger exchanges


@pytest.mark.parametrize("vector", TRIGGER_EXCHANGES, ids=lambda v: v["id"])
def test_trigger_request_equals_the_capture(vector: dict) -> None:
    request = request_of(vector)
    register = int.from_bytes(request[2:4], "big")
    assert jk_pb.trigger_request(request[0], SPEC_TRIGGERS[register]) == request
    parsed = jk_pb.parse_request(request)
    assert (parsed.address, parsed.register, parsed.count, parsed.values) == (request[0], register, 1, b"\x00\x00")
    assert parsed.trigger_frame_type == SPEC_TRIGGERS[register]


PAIRED_CELL_INFO = "mppsolar_jkpb_20"


def reading_of_exchange(vector: dict, frame: jk02.DecodedFrame) -> Reading:
    if frame.frame_type == jk02.FRAME_CELL_INFO:
        return jk02.reading_from_frames(frame, protocol=jk_pb.PROTOCOL_NAME)
    cell = decoded(PAIRED_CELL_INFO)
    if frame.frame_type == jk02.FRAME_SETTINGS:
        return jk02.reading_from_frames(cell, settings=frame)
    return jk02.reading_from_frames(cell, device_info=frame)


TABLES = {1: SETTINGS_KEYS, 2: CELL_INFO_KEYS, 3: DEVICE_INFO_KEYS}


@pytest.mark.parametrize("vector", TRIGGER_EXCHANGES, ids=lambda v: v["id"])
def test_trigger_exchange(vector: dict) -> None:
    request = request_of(vector)
    expected = vector["expected"]
    reply = jk_pb.parse_trigger_reply(response_of(vector), address=request[0],
                                      frame_type=expected["frame_type"])
    assert reply.address == request[0] == 1
    assert reply.register == int.from_bytes(request[2:4], "big")
    assert reply.ack == bytes.fromhex(vector["ack_hex"])
    assert reply.leading_bytes == 0
    assert reply.frame_type == expected["frame_type"]
    assert jk_pb.parse_ack(reply.ack).address == 1
    frame = reply.decode()
    assert sum(reply.frame[:299]) & 0xFF == reply.frame[299]  # payload_sum8_ok
    assert vector["payload_sum8_ok"] and vector["checksum_ok"]
    reading = reading_of_exchange(vector, frame)
    assert assert_vector(reading, expected, TABLES[expected["frame_type"]])
    # the sender can be told without knowing whom we asked
    assert jk_pb.parse_trigger_reply(response_of(vector)).address == 1
    assert jk_pb.trigger_reply_complete(response_of(vector), 1)
    # and the simulator's encoding of this reply is byte for byte the capture
    assert jk_pb.encode_trigger_reply(1, reply.frame) == response_of(vector)


def test_issue442_settings_frame_names_its_sender() -> None:
    # spec §3 (c): for settings frames the DevAddr field at frame offset 270 names the sender
    reading = reading_of_exchange(EXCHANGES["issue442_settings_addr1"], decoded("issue442_settings_addr1"))
    assert reading.extra["device_address"] == 1


def test_combined_reading_of_a_pb_pack() -> None:
    latest = jk02.LatestFrames()
    for vector_id in ("mppsolar_jkpb_1c", "mppsolar_jkpb_1e", "mppsolar_jkpb_20"):
        latest = latest.with_frame(jk_pb.parse_trigger_reply(response_of(EXCHANGES[vector_id]), 1).decode())
    reading = latest.reading(protocol=jk_pb.PROTOCOL_NAME)
    for vector_id, table in (("mppsolar_jkpb_1c", DEVICE_INFO_KEYS), ("mppsolar_jkpb_1e", SETTINGS_KEYS),
                             ("mppsolar_jkpb_20", CELL_INFO_KEYS)):
        assert assert_vector(reading, EXCHANGES[vector_id]["expected"], table)
    assert reading.device.protocol == "jk-pb"
    assert reading.device.protocol_version == "JK02_32S"
    assert reading.cells == 8 and reading.extra["cell_count_setting"] == 8
    assert reading.current_amperes > 0 and reading.extra["power"] > 0  # type: ignore[operator]
    assert "passcode" not in repr(reading) and "4096" not in repr(reading.extra)


def response_parts(vector_id: str) -> Mapping[str, bytes]:
    data = response_of(EXCHANGES[vector_id])
    return {"frame": data[:300], "ack": data[300:], "request": request_of(EXCHANGES[vector_id])}


def test_trigger_reply_framing_variants() -> None:
    parts = response_parts("mppsolar_jkpb_20")
    frame, ack, request = parts["frame"], parts["ack"], parts["request"]
    variants = {
        "310 bytes, 00 around the ACK": frame + b"\x00" + ack + b"\x00",
        "adapter echo of the request": request + frame + ack,
        "stale bytes before": b"\x13\x37\x00" + frame + ack,
    }
    for name, data in variants.items():
        reply = jk_pb.parse_trigger_reply(data, address=1)
        assert (reply.address, reply.frame, reply.ack) == (1, frame, ack), name
        assert jk_pb.trigger_reply_complete(data, 1), name
    assert jk_pb.parse_trigger_reply(request + frame + ack).leading_bytes == len(request)
    assert jk_pb.encode_trigger_reply(1, frame, padded=True) == variants["310 bytes, 00 around the ACK"]


def test_trigger_reply_errors() -> None:
    parts = response_parts("mppsolar_jkpb_20")
    frame, ack = parts["frame"], parts["ack"]
    other = jk_pb.encode_ack(2, 0x1620)
    with pytest.raises(jk_pb.UnexpectedReplyError):
        jk_pb.parse_trigger_reply(frame + other, address=1)
    assert jk_pb.parse_trigger_reply(frame + other).address == 2
    assert not jk_pb.trigger_reply_complete(frame + other, 1)
    with pytest.raises(jk_pb.MissingAckError):
        jk_pb.parse_trigger_reply(frame)
    with pytest.raises(jk_pb.MissingAckError):
        jk_pb.parse_trigger_reply(frame + ack[:7])
    with pytest.raises(IncompleteFrameError):
        jk_pb.parse_trigger_reply(frame[:299])
    with pytest.raises(BadStartError):
        jk_pb.parse_trigger_reply(ack)
    broken = bytearray(frame)
    broken[299] ^= 0xFF
    with pytest.raises(ChecksumError):
        jk_pb.parse_trigger_reply(bytes(broken) + ack)
    assert jk_pb.parse_trigger_reply(bytes(broken) + ack, verify_checksum=False).frame == bytes(broken)
    bad_ack = ack[:-1] + bytes((ack[-1] ^ 0x55,))
    with pytest.raises(ChecksumError):
        jk_pb.parse_trigger_reply(frame + bad_ack)
    assert jk_pb.parse_trigger_reply(frame + bad_ack, verify_checksum=False).address == 1
    # an ACK of the settings trigger after a cell-info frame
    with pytest.raises(jk_pb.UnexpectedReplyError):
        jk_pb.parse_trigger_reply(frame + jk_pb.encode_ack(1, 0x161E))
    with pytest.raises(jk_pb.UnexpectedReplyError):
        jk_pb.parse_trigger_reply(frame + ack, frame_type=jk02.FRAME_SETTINGS)
    for size in range(0, 308, 7):
        assert not jk_pb.trigger_reply_complete((frame + ack)[:size], 1)


def test_ack_and_request_parsing_errors() -> None:
    ack = bytes.fromhex(EXCHANGES["mppsolar_jkpb_20"]["ack_hex"])
    with pytest.raises(LengthMismatchError):
        jk_pb.parse_ack(ack + b"\x00")
    with pytest.raises(TruncatedFieldError):
        jk_pb.parse_ack(ack[:5])
    with pytest.raises(FrameError):
        jk_pb.parse_ack(jk_pb.with_crc(b"\x01\x03\x16\x20\x00\x01"))
    with pytest.raises(FrameError):
        jk_pb.parse_request(jk_pb.with_crc(b"\x01\x06\x16\x20\x00\x01"))
    with pytest.raises(LengthMismatchError):
        jk_pb.parse_request(jk_pb.with_crc(b"\x01\x10\x16\x20\x00\x01\x04\x00\x00"))
    with pytest.raises(LengthMismatchError):
        jk_pb.parse_request(jk_pb.with_crc(b"\x01\x03\x12\x00\x00\x01\x00"))


# --------------------------------------------------------------------------- FC03 and FC10 writes


FC03_KEYS = ("byte_count", "cell_voltages_mv")


@pytest.mark.parametrize("vector", FC03_EXCHANGES, ids=lambda v: v["id"])
def test_fc03_exchange(vector: dict) -> None:
    request = request_of(vector)
    expected = vector["expected"]
    assert set(expected) == set(FC03_KEYS)
    register, count = int.from_bytes(request[2:4], "big"), int.from_bytes(request[4:6], "big")
    assert jk_pb.read_request(request[0], register, count) == request
    response = jk_pb.parse_read_response(response_of(vector), request)
    assert response.address == 1
    assert len(response.data) == expected["byte_count"]
    assert list(response.registers) == expected["cell_voltages_mv"]
    # the cell voltages of a status block read are big-endian u16 mV from offset 0
    block = jk_pb.block_from_responses(jk_pb.BLOCK_STATUS, [(register, response.data)])
    assert block.covers(0, len(response.data)) and not block.covers(0, len(response.data) + 1)
    assert jk_pb.encode_read_response(1, response.data) == response_of(vector)


def test_fc03_response_errors() -> None:
    vector = EXCHANGES["fc03_cells_0_7_qty8"]
    request, response = request_of(vector), response_of(vector)
    with pytest.raises(jk_pb.UnexpectedReplyError):
        jk_pb.parse_read_response(response, jk_pb.read_request(2, 0x1200, 8))
    with pytest.raises(jk_pb.UnexpectedReplyError):
        jk_pb.parse_read_response(response, jk_pb.read_request(1, 0x1200, 7))
    with pytest.raises(jk_pb.ModbusExceptionError) as caught:
        jk_pb.parse_read_response(jk_pb.with_crc(b"\x01\x83\x02"), request)
    assert (caught.value.address, caught.value.function, caught.value.code) == (1, 3, 2)
    with pytest.raises(ChecksumError):
        jk_pb.parse_read_response(response[:-1] + bytes((response[-1] ^ 1,)))
    with pytest.raises(LengthMismatchError):
        jk_pb.parse_read_response(jk_pb.with_crc(response[:3] + response[3:-4]))
    with pytest.raises(TruncatedFieldError):
        jk_pb.parse_read_response(response[:4])
    with pytest.raises(jk_pb.UnexpectedReplyError):
        jk_pb.parse_read_response(bytes.fromhex(EXCHANGES["mppsolar_jkpb_20"]["ack_hex"]))
    with pytest.raises(ValueError):
        jk_pb.parse_read_response(response, jk_pb.trigger_request(1, 2))


FC10_KEYS = ("register", "register_count", "byte_count", "value_hex")


@pytest.mark.parametrize("vector", WRITE_EXCHANGES, ids=lambda v: v["id"])
def test_fc10_setting_writes_are_recognised_not_built(vector: dict) -> None:
    expected = vector["expected"]
    assert set(expected) == set(FC10_KEYS)
    parsed = jk_pb.parse_request(request_of(vector))
    assert parsed.function == 0x10 and parsed.address == 2
    assert parsed.register == int(expected["register"], 16)
    assert parsed.count == expected["register_count"]
    assert len(parsed.values) == expected["byte_count"]
    assert parsed.values.hex() == expected["value_hex"]
    assert parsed.trigger_frame_type is None
    assert not jk_pb.is_read_only_request(parsed.raw)


# --------------------------------------------------------------------------- FC03 block fallback


def be_block(size: int, fields: Mapping[int, tuple]) -> bytes:
    """A block built by hand from the spec §4 offsets: {offset: (struct format, value…)}."""
    data = bytearray(size)
    for offset, (fmt, *values) in fields.items():
        struct.pack_into(">" + fmt, data, offset, *values)
    return bytes(data)


def serve(block_base: int, data: bytes) -> jk_pb.Block:
    """Answer the fallback's read plan from ``data`` like a slave would, parse the replies."""
    parts = []
    for request in jk_pb.block_read_requests(1, block_base):
        assert jk_pb.is_read_only_request(request)
        parsed = jk_pb.parse_request(request)
        assert parsed.count <= jk_pb.MAX_READ_REGISTERS
        offset = parsed.register - block_base
        answer = data[offset : offset + 2 * parsed.count].ljust(2 * parsed.count, b"\0")
        reply = jk_pb.encode_read_response(1, answer)
        parts.append((parsed.register, jk_pb.parse_read_response(reply, request).data))
    return jk_pb.block_from_responses(block_base, parts)


def status_block_of(expected: Mapping[str, object]) -> bytes:
    cells = [round(v * 1000) for v in expected["cell_voltages_v"]]  # type: ignore[union-attr]
    res = [round(v * 1000) for v in expected["cell_resistances_ohm"]]  # type: ignore[union-attr]
    mah = lambda key: round(float(expected[key]) * 1000)  # type: ignore[arg-type]  # noqa: E731
    deci = lambda key: round(float(expected[key]) * 10)  # type: ignore[arg-type]  # noqa: E731
    return be_block(0x10E, {
        0x00: ("%dH" % len(cells), *cells),
        0x40: ("I", int(str(expected["enabled_cells_mask"]), 16)),
        0x44: ("H", round(float(expected["average_cell_voltage_field_v"]) * 1000)),  # type: ignore[arg-type]
        0x46: ("H", round(float(expected["delta_cell_voltage_field_v"]) * 1000)),  # type: ignore[arg-type]
        0x48: ("BB", expected["max_cell_index_zero_based"], expected["min_cell_index_zero_based"]),
        0x4A: ("%dH" % len(res), *res),
        0x8A: ("h", deci("mosfet_temperature_c")),
        0x90: ("I", round(float(expected["total_voltage_v"]) * 1000)),  # type: ignore[arg-type]
        0x94: ("I", round(float(expected["power_field_w"]) * 1000)),  # type: ignore[arg-type]
        0x98: ("i", round(float(expected["current_a"]) * 1000)),  # type: ignore[arg-type]
        0x9C: ("hh", deci("temperature_1_c"), deci("temperature_2_c")),
        0xA0: ("I", int(str(expected["errors_bitmask"]), 16)),
        0xA4: ("h", round(float(expected["balance_current_a"]) * 1000)),  # type: ignore[arg-type]
        0xA6: ("BB", expected["balancing_action"], expected["soc_percent"]),
        0xA8: ("iIII", mah("capacity_remaining_ah"), mah("nominal_capacity_ah"), expected["cycles"],
               mah("total_cycle_capacity_ah")),
        0xB8: ("B", expected["soh_percent"]),
        0xBC: ("I", expected["runtime_s"]),
        0xC0: ("BB", expected["charging_mosfet"], expected["discharging_mosfet"]),
        0xD0: ("BB", int(str(expected["temperature_sensor_mask"]), 16), expected["heating"]),
        0xE6: ("h", round(float(expected["heating_current_a"]) * 1000)),  # type: ignore[arg-type]
        0xF8: ("hhh", deci("int16_at_254_c"), deci("int16_at_256_c"), deci("int16_at_258_c")),
        0x104: ("I", expected["detail_log_count"]),
    })


#: Status-vector keys the FC03 fallback cannot check, and why.
FC03_UNCHECKED = {"charge_status_280": "frame offset 280 = block 0x112, past the vendor table "
                                       "and the fallback's read plan (0x000–0x10D)"}


def test_fc03_status_block_decodes_like_the_55aa_frame() -> None:
    expected = EXCHANGES["mppsolar_jkpb_20"]["expected"]
    block = serve(jk_pb.BLOCK_STATUS, status_block_of(expected))
    reading = jk_pb.reading_from_blocks(block)
    table = {k: v for k, v in CELL_INFO_KEYS.items() if k not in FC03_UNCHECKED}
    checked = assert_vector(reading, {k: v for k, v in expected.items() if k not in FC03_UNCHECKED}, table)
    assert len(checked) == len([k for k in expected if k in CELL_INFO_KEYS]) - 1
    assert "charge_stage" not in reading.extra  # not read, so not reported
    assert reading.device.protocol == "jk-pb"


def test_fc03_settings_and_info_blocks() -> None:
    settings_expected = EXCHANGES["mppsolar_jkpb_1e"]["expected"]
    e = settings_expected
    mv = lambda key: round(float(e[key]) * 1000)  # type: ignore[arg-type]  # noqa: E731
    dc = lambda key: round(float(e[key]) * 10)  # type: ignore[arg-type]  # noqa: E731
    settings_block = be_block(0x11A, {
        0x00: ("11I", mv("field_at_6_v"), mv("cell_uvp_v"), mv("cell_uvpr_v"), mv("cell_ovp_v"),
               mv("cell_ovpr_v"), mv("balance_trigger_delta_v"), mv("soc100_v"), mv("soc0_v"),
               mv("rcv_v"), mv("rfv_v"), mv("power_off_v")),
        0x2C: ("7I", mv("max_charge_current_a"), e["charge_ocp_delay_s"], e["charge_ocp_recovery_s"],
               mv("max_discharge_current_a"), e["discharge_ocp_delay_s"], e["discharge_ocp_recovery_s"],
               e["scp_recovery_s"]),
        0x48: ("I", mv("max_balance_current_a")),
        0x4C: ("8i", dc("charge_otp_c"), dc("charge_otpr_c"), dc("discharge_otp_c"), dc("discharge_otpr_c"),
               dc("charge_utp_c"), dc("charge_utpr_c"), dc("mos_otp_c"), dc("mos_otpr_c")),
        0x6C: ("7I", e["cell_count"], e["charge_switch"], e["discharge_switch"], e["balancer_switch"],
               mv("nominal_capacity_ah"), e["scp_delay_us"], mv("balance_start_v")),
        0x108: ("II", e["device_address_270"], e["precharge_time_s_274"]),
        0x114: ("HbbB", int(str(e["control_bitmask_282"]), 16), e["heating_start_c_284"],
                e["heating_stop_c_285"], e["smart_sleep_h_286"]),
    })
    info_expected = EXCHANGES["mppsolar_jkpb_1c"]["expected"]
    i = info_expected
    info_block = be_block(0x90, {
        0x00: ("16s8s8sII16s", i["vendor"].encode(), i["hw"].encode(), i["sw"].encode(), i["uptime_s"],
               i["power_on"], i["name"].encode()),
        0x38: ("16s", i["passcode"].encode()),  # present on the slave, never read
        0x48: ("8s16s16s", i["mfg_date"].encode(), i["serial"].encode(), i["user_data"].encode()),
        0x70: ("16s", i["setup_pass"].encode()),
    })
    status = serve(jk_pb.BLOCK_STATUS, status_block_of(EXCHANGES["mppsolar_jkpb_20"]["expected"]))
    reading = jk_pb.reading_from_blocks(status, serve(jk_pb.BLOCK_SETTINGS, settings_block),
                                        serve(jk_pb.BLOCK_INFO, info_block))
    assert assert_vector(reading, settings_expected, SETTINGS_KEYS)
    info_unchecked = {"user_data2": "block 0x80 is not in the fallback's read plan"}
    assert assert_vector(reading, {k: v for k, v in info_expected.items() if k not in info_unchecked},
                         DEVICE_INFO_KEYS)
    assert "user_data_2" not in reading.extra
    assert i["setup_pass"] not in repr(reading)


def test_fc03_long_serial_is_text_not_a_number() -> None:
    # a 15-character serial (hw 19A, spec §6) spans the 5 bytes ESPHome calls a passcode
    info = be_block(0x90, {0x00: ("16s", b"JK-PB2A16S20P"), 0x50: ("16s", b"ABCDEFGHIJKLMNO")})
    status = serve(jk_pb.BLOCK_STATUS, status_block_of(EXCHANGES["mppsolar_jkpb_20"]["expected"]))
    reading = jk_pb.reading_from_blocks(status, info=serve(jk_pb.BLOCK_INFO, info))
    assert reading.device.serial_number == "ABCDEFGHIJKLMNO"
    assert reading.device.model == "JK-PB2A16S20P"


def test_fc03_plan_never_reads_passcodes() -> None:
    for register, count in jk_pb.block_read_plan(jk_pb.BLOCK_INFO):
        start, end = register - jk_pb.BLOCK_INFO, register - jk_pb.BLOCK_INFO + 2 * count
        for secret_start, secret_end in ((0x38, 0x48), (0x70, 0x80)):
            assert end <= secret_start or start >= secret_end
    plan = jk_pb.block_read_plan(jk_pb.BLOCK_STATUS)
    assert plan[0] == (0x1200, 40) and sum(c for _, c in plan) * 2 >= 0x10D


def test_fc03_blocks_of_real_frames_match_the_trigger_reading() -> None:
    """frame_to_block (simulator side) → FC03 reads → the same Reading as the 55AA frames."""
    frames = {vid: payload_of(vid) for vid in ("mppsolar_jkpb_20", "mppsolar_jkpb_1e", "mppsolar_jkpb_1c")}
    blocks = {}
    for frame in frames.values():
        base, data = jk_pb.frame_to_block(frame)
        blocks[base] = serve(base, data)
    via_fc03 = jk_pb.reading_from_blocks(blocks[0x1200], blocks[0x1000], blocks[0x1400])
    via_trigger = jk02.reading_from_frames(*(decoded(v) for v in frames), protocol=jk_pb.PROTOCOL_NAME)
    for name in ("cell_voltages_volts", "pack_voltage_volts", "current_amperes", "temperatures_celsius",
                 "alarms", "switches_enabled", "device", "cell_resistances_ohms",
                 "remaining_capacity_coulombs", "state_of_health_ratio", "balance_current_amperes"):
        assert getattr(via_fc03, name) == getattr(via_trigger, name), name
    # frame offsets 296/297 (block 0x122/0x123) are past the vendor table and the read plan
    not_read = {"discharge_undertemperature_protection", "discharge_undertemperature_recovery"}
    assert via_fc03.settings == tuple(s for s in via_trigger.settings if s.name not in not_read)
    with pytest.raises(ValueError):
        jk_pb.reading_from_blocks(blocks[0x1000])


def test_fc03_partial_status_block_is_an_error() -> None:
    vector = EXCHANGES["fc03_cells_0_15_qty16"]
    response = jk_pb.parse_read_response(response_of(vector), request_of(vector))
    block = jk_pb.block_from_responses(jk_pb.BLOCK_STATUS, [(0x1200, response.data)])
    with pytest.raises(FrameError):
        jk_pb.reading_from_blocks(block)
    with pytest.raises(ValueError):
        jk_pb.block_from_responses(jk_pb.BLOCK_STATUS, [(0x1400, response.data)])


# --------------------------------------------------------------------------- listen-only


def master_cycle() -> bytes:
    """A DIP-0 master's cycle (spec §5): triggers to slaves 1–3 (slave 2 answers from a
    recorded frame, slave 3 is absent), then the master's own broadcast."""
    cell = response_parts("mppsolar_jkpb_20")
    settings_parts = response_parts("mppsolar_jkpb_1e")
    return b"".join([
        cell["request"], cell["frame"], cell["ack"],
        settings_parts["request"], settings_parts["frame"], settings_parts["ack"],
        jk_pb.trigger_request(2, 2), jk_pb.encode_trigger_reply(2, cell["frame"]),
        jk_pb.trigger_request(3, 2),
        cell["frame"], MASTER_TRAILER,
    ])


def frames_of(events: List[jk_pb_listen.BusEvent]) -> List[jk_pb_listen.BusFrame]:
    return [e for e in events if isinstance(e, jk_pb_listen.BusFrame)]


def test_bus_decoder_attributes_every_frame() -> None:
    decoder = jk_pb_listen.BusDecoder()
    events = decoder.feed(master_cycle())
    events += decoder.flush()
    frames = frames_of(events)
    assert [(f.address, f.frame_type, f.attributed_by) for f in frames] == [
        (1, 2, "ack+request"), (1, 1, "ack+request"), (2, 2, "ack+request"), (0, 2, "ack")]
    assert decoder.discarded_bytes == 0
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["ModbusRequest", "BusFrame", "Ack"] * 3 + ["ModbusRequest", "BusFrame", "Ack"]
    evidence = jk_pb_listen.master_evidence(events)
    assert evidence.master_present and evidence.bus_in_use
    assert evidence.master_broadcasts == 1
    assert evidence.polled_addresses == {1, 2, 3}
    assert evidence.answering_addresses == {0, 1, 2}
    # the exporter can read every pack without sending a byte
    latest = jk_pb_listen.latest_frames_by_address(events)
    assert set(latest) == {0, 1, 2}
    one = latest[1].reading(protocol=jk_pb.PROTOCOL_NAME)
    assert assert_vector(one, EXCHANGES["mppsolar_jkpb_20"]["expected"], CELL_INFO_KEYS)
    assert assert_vector(one, EXCHANGES["mppsolar_jkpb_1e"]["expected"], SETTINGS_KEYS)
    assert latest[2].settings is None


def test_unknown_frame_types_on_the_bus_are_skipped() -> None:
    cell = response_parts("mppsolar_jkpb_20")
    odd = bytearray(cell["frame"])
    odd[4] = 0x04
    odd[299] = sum(odd[:299]) & 0xFF
    decoder = jk_pb_listen.BusDecoder()
    events = decoder.feed(bytes(odd) + jk_pb.encode_ack(3, 0x1620) + jk_pb.trigger_request(3, 2)
                          + cell["frame"] + jk_pb.encode_ack(3, 0x1620)) + decoder.flush()
    assert [(f.address, f.frame_type) for f in frames_of(events)] == [(None, 4), (3, 2)]
    latest = jk_pb_listen.latest_frames_by_address(events)
    assert list(latest) == [3] and latest[3].cell_info is not None


def test_bus_decoder_without_ack_or_context() -> None:
    cell = response_parts("mppsolar_jkpb_20")
    decoder = jk_pb_listen.BusDecoder()
    # ACK lost: the trigger before the frame names the sender
    events = decoder.feed(jk_pb.trigger_request(5, 2) + cell["frame"] + jk_pb.trigger_request(6, 1))
    assert [(f.address, f.attributed_by) for f in frames_of(events)] == [(5, "request")]
    # a frame with no context: address unknown, released by flush
    decoder = jk_pb_listen.BusDecoder()
    assert frames_of(decoder.feed(cell["frame"])) == []
    released = frames_of(decoder.flush())
    assert [(f.address, f.attributed_by) for f in released] == [(None, "none")]
    # a trigger for settings does not explain a cell-info frame
    decoder = jk_pb_listen.BusDecoder()
    events = decoder.feed(jk_pb.trigger_request(4, 1) + cell["frame"]) + decoder.flush()
    assert [(f.address, f.attributed_by) for f in frames_of(events)] == [(None, "none")]


def test_bus_decoder_ack_and_request_disagree() -> None:
    cell = response_parts("mppsolar_jkpb_20")
    decoder = jk_pb_listen.BusDecoder()
    events = decoder.feed(jk_pb.trigger_request(4, 2) + cell["frame"] + cell["ack"])
    (frame,) = frames_of(events)
    assert (frame.address, frame.attributed_by, frame.request_address) == (1, "ack", 4)
    # an ACK for another trigger does not attribute the frame
    decoder = jk_pb_listen.BusDecoder()
    events = decoder.feed(cell["frame"] + jk_pb.encode_ack(1, 0x161E)) + decoder.flush()
    assert [(f.address, f.attributed_by) for f in frames_of(events)] == [(None, "none")]
    assert isinstance(events[-1], jk_pb.Ack)


def test_bus_decoder_padding_echo_and_foreign_fc03() -> None:
    cell = response_parts("mppsolar_jkpb_20")
    fc03 = EXCHANGES["fc03_cells_0_7_qty8"]
    decoder = jk_pb_listen.BusDecoder()
    data = (cell["request"] + cell["frame"] + b"\x00" + cell["ack"] + b"\x00"
            + request_of(fc03) + response_of(fc03) + jk_pb.with_crc(b"\x01\x83\x02"))
    events = decoder.feed(data) + decoder.flush()
    assert decoder.discarded_bytes == 2
    assert [(f.address, f.attributed_by) for f in frames_of(events)] == [(1, "ack+request")]
    reads = [e for e in events if isinstance(e, jk_pb.ReadResponse)]
    assert [list(r.registers) for r in reads] == [fc03["expected"]["cell_voltages_mv"]]
    exceptions = [e for e in events if isinstance(e, jk_pb.ExceptionResponse)]
    assert [(x.address, x.function, x.code) for x in exceptions] == [(1, 3, 2)]
    # our own requests echoed back are no evidence of a master
    own = jk_pb_listen.master_evidence(events, own_requests=[cell["request"], request_of(fc03)])
    assert not own.master_present and not own.bus_in_use
    foreign = jk_pb_listen.master_evidence(events)
    assert foreign.trigger_requests == 1 and foreign.other_requests == 1


def test_bus_decoder_recognises_setting_writes_of_others() -> None:
    decoder = jk_pb_listen.BusDecoder()
    events = decoder.feed(b"".join(request_of(v) for v in WRITE_EXCHANGES)) + decoder.flush()
    assert [e.raw for e in events] == [request_of(v) for v in WRITE_EXCHANGES]  # type: ignore[union-attr]
    evidence = jk_pb_listen.master_evidence(events)
    assert evidence.bus_in_use and not evidence.master_present and evidence.other_requests == 3


def test_bus_decoder_drops_a_corrupt_frame() -> None:
    cell = response_parts("mppsolar_jkpb_20")
    broken = bytearray(cell["frame"])
    broken[200] ^= 0x01
    decoder = jk_pb_listen.BusDecoder()
    events = decoder.feed(bytes(broken) + cell["ack"] + cell["frame"] + cell["ack"]) + decoder.flush()
    assert [(f.address, f.frame) for f in frames_of(events)] == [(1, cell["frame"])]
    assert decoder.checksum_errors >= 1 and decoder.discarded_bytes == 300


def describe(events: List[jk_pb_listen.BusEvent]) -> List[tuple]:
    return [(type(e).__name__, getattr(e, "address", None), getattr(e, "raw", getattr(e, "frame", None)),
             getattr(e, "attributed_by", None)) for e in events]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_bus_decoder_any_chunking(data: st.DataObject) -> None:
    stream = master_cycle()
    one_shot = jk_pb_listen.BusDecoder()
    reference = describe(one_shot.feed(stream) + one_shot.flush())
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=60)))
    decoder = jk_pb_listen.BusDecoder()
    events: List[jk_pb_listen.BusEvent] = []
    for a, b in zip([0] + cuts, cuts + [len(stream)]):
        events += decoder.feed(stream[a:b])
    events += decoder.flush()
    assert describe(events) == reference


@settings(max_examples=200, deadline=1000)
@given(st.lists(st.binary(max_size=80), max_size=8), st.booleans())
def test_bus_decoder_fuzz(chunks: List[bytes], with_frame: bool) -> None:
    decoder = jk_pb_listen.BusDecoder()
    total = 0
    if with_frame:
        chunks = chunks + [payload_of("mppsolar_jkpb_20")[:150]]
    for chunk in chunks:
        total += len(chunk)
        for event in decoder.feed(chunk):
            assert isinstance(event, (jk_pb.ModbusRequest, jk_pb.Ack, jk_pb.ReadResponse,
                                      jk_pb.ExceptionResponse, jk_pb_listen.BusFrame))
    decoder.flush()
    assert decoder.discarded_bytes <= total


@settings(max_examples=200, deadline=1000)
@given(st.binary(max_size=340), st.integers(0, 3))
def test_parsers_raise_only_frame_errors(data: bytes, prefix: int) -> None:
    candidates = [data, jk02.HEADER + data, bytes((1, 0x10)) + data, bytes((1, 0x03)) + data][prefix]
    for parse in (jk_pb.parse_trigger_reply, jk_pb.parse_ack, jk_pb.parse_request,
                  jk_pb.parse_read_response, jk_pb.check_crc):
        try:
            parse(candidates)
        except FrameError:
            pass
    assert jk_pb.trigger_reply_complete(candidates) in (True, False)
    try:
        jk_pb.parse_trigger_reply(candidates, verify_checksum=False).decode(verify_checksum=False)
    except FrameError:
        pass


# ----------------------------------------------------------------------------- issue 12: what no test noticed


@pytest.mark.parametrize("noise", [0x00, 0x01, 0x03, 0x10, 0x55, 0x90, 0xFF])
def test_bus_decoder_passes_one_noise_byte_without_waiting_for_flush(noise: int) -> None:
    # a listen-only exporter only flushes on a bus silence: traffic after a noise byte must
    # come out while the bus is busy
    cell = response_parts("mppsolar_jkpb_20")
    decoder = jk_pb_listen.BusDecoder()
    events = decoder.feed(bytes((noise,)) + cell["request"] + cell["frame"] + cell["ack"])
    assert [(f.address, f.attributed_by) for f in frames_of(events)] == [(1, "ack+request")]
    assert isinstance(events[-1], jk_pb.Ack) and decoder.discarded_bytes == 1
    # and the same between two exchanges
    events = decoder.feed(bytes((noise,)) + cell["request"] + cell["frame"] + cell["ack"])
    assert len(frames_of(events)) == 1 and decoder.discarded_bytes == 2


def test_bus_decoder_flush_gives_up_a_partial_frame() -> None:
    cell = response_parts("mppsolar_jkpb_20")
    decoder = jk_pb_listen.BusDecoder()
    events = decoder.feed(cell["request"] + cell["frame"][:140])
    assert [type(e).__name__ for e in events] == ["ModbusRequest"]
    assert frames_of(decoder.flush()) == []
    assert decoder.discarded_bytes == 140  # counted, and gone
    # what follows the silence decodes on its own, nothing of the partial frame is kept
    events = decoder.feed(cell["request"] + cell["frame"] + cell["ack"])
    assert [(f.address, f.frame) for f in frames_of(events)] == [(1, cell["frame"])]
    assert decoder.discarded_bytes == 140 and decoder.checksum_errors == 0


def test_a_frame_after_an_unrelated_read_response_is_not_credited_to_the_trigger() -> None:
    cell = response_parts("mppsolar_jkpb_20")
    fc03 = EXCHANGES["fc03_cells_0_7_qty8"]
    decoder = jk_pb_listen.BusDecoder()
    # pack 5 was triggered, then someone read pack 1 over FC03; the frame that follows is
    # not the answer to the old trigger
    events = decoder.feed(jk_pb.trigger_request(5, 2) + response_of(fc03) + cell["frame"])
    events += decoder.flush()
    assert [(f.address, f.attributed_by) for f in frames_of(events)] == [(None, "none")]
    # an exception response or a foreign request in between forgets the trigger as well
    for between in (jk_pb.with_crc(b"\x01\x83\x02"), request_of(fc03)):
        decoder = jk_pb_listen.BusDecoder()
        events = decoder.feed(jk_pb.trigger_request(5, 2) + between + cell["frame"])
        events += decoder.flush()
        assert [f.address for f in frames_of(events)] == [None]


def test_parse_trigger_reply_skips_the_ack_of_another_write() -> None:
    cell = response_parts("mppsolar_jkpb_20")
    other = jk_pb.encode_ack(1, 0x1000)  # someone's setting write, acknowledged
    for data in (cell["frame"] + other + cell["ack"],
                 cell["frame"] + b"\x00" + other + b"\x00" + cell["ack"]):
        reply = jk_pb.parse_trigger_reply(data, address=1, frame_type=2)
        assert (reply.address, reply.register, reply.ack) == (1, 0x1620, cell["ack"])
        assert jk_pb.trigger_reply_complete(data, address=1)
    with pytest.raises(jk_pb.MissingAckError):
        jk_pb.parse_trigger_reply(cell["frame"] + other)
    assert not jk_pb.trigger_reply_complete(cell["frame"] + other, address=1)


def test_block_data_is_cut_to_the_size_asked_and_gaps_stay_zero() -> None:
    block = jk_pb.Block(0x1200, ((0, b"\x01\x02\x03\x04"), (6, b"\x07\x08\x09\x0a")))
    assert block.data(8) == b"\x01\x02\x03\x04\x00\x00\x07\x08"
    assert block.data(3) == b"\x01\x02\x03"
    assert block.data(12) == b"\x01\x02\x03\x04\x00\x00\x07\x08\x09\x0a\x00\x00"
    assert block.covers(0, 4) and block.covers(6, 10) and not block.covers(0, 6)
    assert not block.covers(8, 12)
