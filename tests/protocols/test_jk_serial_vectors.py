"""Every real frame of ``vectors/4e57.json``: every expected value, the frames whose checksum
fails, the password that must never come out, and exact re-encoding."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Callable, Dict

import pytest

from jkbms_exporter.protocols import jk_serial
from jkbms_exporter.errors import ChecksumError
from jkbms_exporter.metrics import reading_samples, reading_to_json
from jkbms_exporter.reading import Reading

from test_jk_serial_helpers import (
    bad_checksum_frame_ids,
    byte_sum16,
    frame_by_id,
    frame_bytes,
    frame_ids,
    frames,
    info_of,
    password_offset,
    reseal,
    spec_current,
    spec_documented_range,
    spec_rows,
    spec_section,
    spec_software_split,
)

#: Spec §6.2 0xAF: "0 LiFePO4, 1 ternary (NMC), 2 LTO" → the label values we export.
BATTERY_TYPE_LABELS = {0: "lifepo4", 1: "ternary", 2: "lto"}

#: Spec §8.1, bit → our alarm label (vendor V2.5 meanings; bit 13 is 309_B).
SPEC_ALARM_BITS = {
    0: ("Low capacity", "low_capacity"),
    1: ("MOSFET over-temperature", "mosfet_overtemperature"),
    2: ("Charge over-voltage", "charge_overvoltage"),
    3: ("Discharge under-voltage", "discharge_undervoltage"),
    4: ("Battery over-temperature", "battery_overtemperature"),
    5: ("Charge over-current", "charge_overcurrent"),
    6: ("Discharge over-current", "discharge_overcurrent"),
    7: ("Cell voltage difference", "cell_voltage_difference"),
    8: ("Battery-box over-temperature", "battery_box_overtemperature"),
    9: ("Battery low temperature", "battery_undertemperature"),
    10: ("Cell over-voltage", "cell_overvoltage"),
    11: ("Cell under-voltage", "cell_undervoltage"),
    12: ("309_A protection", "protection_309_a"),
    13: ("309_B protection", "protection_309_b"),
}


@dataclass
class Decoded:
    frame: bytes
    envelope: jk_serial.Envelope
    reading: Reading

    def setting(self, name: str, unit: str) -> float:
        setting = self.reading.setting(name)
        assert setting is not None, name
        assert setting.unit == unit, (name, setting.unit)
        return setting.value


def decode(frame_id: str) -> Decoded:
    vector = frame_by_id(frame_id)
    frame = frame_bytes(frame_id)
    verify = vector["checksum_ok"]  # the two bad ones only with verification turned off
    return Decoded(frame, jk_serial.parse_envelope(frame, verify),
                   jk_serial.decode_reply(frame, verify_checksum=verify))


def _ba_display(hex_text: str) -> str:
    # spec §6.3: fixed width, NUL is not a terminator → shown as a space, position kept
    return "".join(" " if b == 0 else chr(b) for b in bytes.fromhex(hex_text)).strip(" ")


def _ba_model(hex_text: str) -> str:
    raw = bytes.fromhex(hex_text)
    # spec §6.3: vendor format "BT…" (24 chars, no model) vs retail: 12 chars user data + model
    if re.fullmatch(rb"BT[0-9A-Z]{22}", raw):
        return ""
    return raw[12:].replace(b"\0", b" ").decode("ascii").strip(" ")


#: expected key → what the codec produced for it. Each value is compared with the vector's
#: expected value (floats to 1e-9).
EXTRACT: Dict[str, Callable[[Decoded], object]] = {
    # envelope
    "frame_length_bytes": lambda d: jk_serial.locate_frame(d.frame)[1],
    "length_field": lambda d: jk_serial.frame_size(d.frame[:4]) - 2,
    "command_word": lambda d: d.envelope.command,
    "frame_source": lambda d: d.envelope.source,
    "transport_type": lambda d: d.envelope.transport_type,
    # live data
    "cell_count": lambda d: d.reading.cells,
    "cell_voltages_v": lambda d: list(d.reading.cell_voltages_volts),
    "total_voltage_v": lambda d: d.reading.pack_voltage_volts,
    "current_raw_0x84": lambda d: d.reading.extra["current_raw"],
    "protocol_version_0xc0": lambda d: d.reading.extra["protocol_version"],
    "current_a": lambda d: d.reading.current_amperes,
    "soc_percent": lambda d: d.reading.state_of_charge_ratio * 100,
    "mosfet_temperature_c": lambda d: d.reading.temperatures_celsius["mosfet"],
    "temperature_1_c": lambda d: d.reading.temperatures_celsius["battery1"],
    "temperature_2_c": lambda d: d.reading.temperatures_celsius["battery2"],
    "temperature_sensor_count": lambda d: d.reading.extra["temperature_sensor_count"],
    "cycles": lambda d: d.reading.charge_cycles,
    "total_cycle_capacity_ah": lambda d: d.reading.cycle_capacity_coulombs / 3600,
    "cell_count_0x8a": lambda d: d.reading.extra["cell_count"],
    "alarms_bitmask_0x8b": lambda d: d.reading.alarm_bitmask,
    "status_bitmask_0x8c": lambda d: d.reading.status_bitmask,
    # settings
    "ovp_total_v": lambda d: d.setting("pack_overvoltage_protection", "volts"),
    "uvp_total_v": lambda d: d.setting("pack_undervoltage_protection", "volts"),
    "cell_ovp_v": lambda d: d.setting("cell_overvoltage_protection", "volts"),
    "cell_ovp_recovery_v": lambda d: d.setting("cell_overvoltage_recovery", "volts"),
    "cell_uvp_v": lambda d: d.setting("cell_undervoltage_protection", "volts"),
    "cell_uvp_recovery_v": lambda d: d.setting("cell_undervoltage_recovery", "volts"),
    "cell_delta_protection_v": lambda d: d.setting("cell_voltage_difference_protection", "volts"),
    "discharge_ocp_a": lambda d: d.setting("discharge_overcurrent_protection", "amperes"),
    "charge_ocp_a": lambda d: d.setting("charge_overcurrent_protection", "amperes"),
    "balance_start_v": lambda d: d.setting("balance_start", "volts"),
    "balance_trigger_delta_v": lambda d: d.setting("balance_trigger_voltage_difference", "volts"),
    "balancer_switch_0x9d": lambda d: int(d.reading.switches_enabled["balancer"]),
    "charge_low_temp_protection_c": lambda d: d.setting("charge_undertemperature_protection", "celsius"),
    "discharge_low_temp_protection_c": lambda d: d.setting("discharge_undertemperature_protection", "celsius"),
    "capacity_setting_ah": lambda d: d.reading.nominal_capacity_coulombs / 3600,
    "charge_mos_switch_0xab": lambda d: int(d.reading.switches_enabled["charge"]),
    "discharge_mos_switch_0xac": lambda d: int(d.reading.switches_enabled["discharge"]),
    "current_calibration_ma": lambda d: d.setting("current_calibration", "amperes") * 1000,
    "board_address_0xae": lambda d: d.reading.extra["board_address"],
    "battery_type_0xaf": lambda d: {v: k for k, v in BATTERY_TYPE_LABELS.items()}[d.reading.device.battery_type],
    "sleep_wait_s": lambda d: d.setting("sleep_wait", "seconds"),
    "low_soc_alarm_percent": lambda d: d.setting("low_capacity_alarm", "ratio") * 100,
    # identification
    "device_id_0xb4": lambda d: d.reading.device.device_id,
    "manufacturing_date_0xb5": lambda d: re.sub(r"^20(\d\d)-(\d\d)$", r"\1\2", d.reading.device.manufacture_date),
    "runtime_minutes_0xb6": lambda d: d.reading.runtime_seconds / 60,
    "software_version_0xb7": lambda d: d.reading.extra["software_version_string"],
    "actual_capacity_ah_0xb9": lambda d: d.reading.actual_capacity_coulombs / 3600,
    "manufacturer_0xba_hex": lambda d: d.reading.extra["manufacturer_id_hex"],
    "tags_in_order": lambda d: ["0x%02x" % tag for tag, _, _ in jk_serial.walk_layout(d.envelope.info)],
}

#: keys checked by a dedicated test below rather than by plain comparison
CHECKED_ELSEWHERE = {
    "manufacturer_0xba_printable": "test_manufacturer_id_text_and_model",
    "current_a_if_decoded_with_offset_10000_rule": "test_we_do_not_use_the_wrong_current_rule",
    "current_a_if_decoded_with_bit15_rule": "test_we_do_not_use_the_wrong_current_rule",
}

#: keys deliberately not checked, with the reason. (Empty: every key is checked.)
UNCHECKED: Dict[str, str] = {}

#: per-frame keys outside "expected", and the test that checks each
FRAME_KEYS = {
    "id": "-", "source": "-", "description": "-", "notes": "-", "expected_basis": "-",
    "response_hex": "every test", "expected": "test_expected_values",
    "checksum_ok": "test_checksum_status_and_sums", "length_ok": "test_checksum_status_and_sums",
    "computed_sum_16bit": "test_checksum_status_and_sums",
    "transmitted_checksum_hex": "test_checksum_status_and_sums",
    "request_hex": "test_jk_serial_requests.py::test_every_request_recorded_next_to_a_vector_is_one_we_build",
}


def test_every_key_of_every_vector_is_accounted_for():
    for frame in frames():
        assert set(frame) <= set(FRAME_KEYS), frame["id"]
        unknown = set(frame["expected"]) - set(EXTRACT) - set(CHECKED_ELSEWHERE) - set(UNCHECKED)
        assert not unknown, (frame["id"], unknown)


def test_vectors_are_what_the_tests_assume():
    assert len(frames()) == 8
    assert sorted(bad_checksum_frame_ids()) == ["powermon_4s_1121h", "vendor_example_20s_nw100"]


def _expected_items():
    for frame in frames():
        for key, value in frame["expected"].items():
            if key in EXTRACT:
                yield pytest.param(frame["id"], key, value, id="%s-%s" % (frame["id"], key))


@pytest.mark.parametrize("frame_id, key, expected", list(_expected_items()))
def test_expected_values(frame_id, key, expected):
    actual = EXTRACT[key](decode(frame_id))
    if isinstance(actual, float) or (isinstance(actual, list) and actual and isinstance(actual[0], float)):
        assert actual == pytest.approx(expected, abs=1e-9)
    else:
        assert actual == expected and type(actual) is type(expected)


@pytest.mark.parametrize("frame_id", frame_ids())
def test_derived_fields_agree_with_the_expected_raw_values(frame_id):
    expected = frame_by_id(frame_id)["expected"]
    d = decode(frame_id)
    reading = d.reading
    # zero current is +0.0, never −0.0
    assert math.copysign(1.0, reading.current_amperes) == (1.0 if expected["current_a"] >= 0 else -1.0)
    # the current follows spec §7.1 with the frame's own 0xC0
    assert reading.current_amperes == spec_current(expected["current_raw_0x84"], expected["protocol_version_0xc0"])
    version = expected["protocol_version_0xc0"]
    assert reading.device.protocol_version == ("" if version is None else str(version))
    # SOC as a ratio
    assert reading.state_of_charge_ratio == pytest.approx(expected["soc_percent"] / 100, abs=1e-12)
    # 0x8B: every named bit (spec §8.1)
    mask = expected["alarms_bitmask_0x8b"]
    assert {name: reading.alarms[name] for _, name in SPEC_ALARM_BITS.values()} == {
        name: bool(mask >> bit & 1) for bit, (_, name) in SPEC_ALARM_BITS.items()
    }
    assert sorted(reading.active_alarms()) == sorted(
        name for bit, (_, name) in SPEC_ALARM_BITS.items() if mask >> bit & 1
    )
    # 0x8C: MOSFETs and balancing (spec §8.2)
    status = expected["status_bitmask_0x8c"]
    assert (reading.charge_mosfet_on, reading.discharge_mosfet_on, reading.balancing) == (
        bool(status & 1), bool(status & 2), bool(status & 4)
    )
    # 0xB5 YYMM shown as 20YY-MM (spec §6.3: `2306` = June 2023)
    date = expected["manufacturing_date_0xb5"]
    assert reading.device.manufacture_date == "20%s-%s" % (date[:2], date[2:])
    # 0xB7 split per spec §6.3
    hardware, software = spec_software_split(expected["software_version_0xb7"])
    assert (reading.device.hardware_version, reading.device.software_version) == (hardware, software)
    # 0xAF
    assert reading.device.battery_type == BATTERY_TYPE_LABELS[expected["battery_type_0xaf"]]
    # absent registers are None, not 0 (the vendor frame stops after 0xB7)
    if "actual_capacity_ah_0xb9" not in expected:
        assert reading.actual_capacity_coulombs is None
        assert "manufacturer_id" not in reading.extra and reading.device.model == ""
    assert reading.device.protocol == "jk-serial"


def test_alarm_bits_are_the_spec_ones():
    section = spec_section("### 8.1")
    for bit, (meaning, _) in SPEC_ALARM_BITS.items():
        assert re.search(r"^\| %d \| %s" % (bit, re.escape(meaning)), section, re.M), bit
    assert jk_serial.ALARM_BITS == tuple(name for _, name in SPEC_ALARM_BITS.values())


@pytest.mark.parametrize("frame_id", [f["id"] for f in frames() if "manufacturer_0xba_hex" in f["expected"]])
def test_manufacturer_id_text_and_model(frame_id):
    expected = frame_by_id(frame_id)["expected"]
    raw = bytes.fromhex(expected["manufacturer_0xba_hex"])
    # the vector's printable form shows each NUL as "."
    assert "".join("." if b == 0 else chr(b) for b in raw) == expected["manufacturer_0xba_printable"]
    reading = decode(frame_id).reading
    assert reading.extra["manufacturer_id"] == _ba_display(expected["manufacturer_0xba_hex"])
    assert reading.device.model == _ba_model(expected["manufacturer_0xba_hex"])


def test_models_of_the_retail_frames():
    models = {f["id"]: decode(f["id"]).reading.device.model for f in frames()}
    assert models["mppsolar_14s_b1a20s15p_11261"] == "JK_B1A20S15P"
    assert models["opendtu_16s_b1a24s15p_1"] == models["opendtu_16s_b1a24s15p_2"] == "JK_B1A24S15P"
    assert models["esphome_14s_h6"] == ""  # vendor-format 0xBA carries no model


@pytest.mark.parametrize("frame_id", frame_ids())
def test_we_do_not_use_the_wrong_current_rule(frame_id):
    expected = frame_by_id(frame_id)["expected"]
    raw, version = expected["current_raw_0x84"], expected["protocol_version_0xc0"]
    current = decode(frame_id).reading.current_amperes
    for key, wrong_version in (("current_a_if_decoded_with_offset_10000_rule", 0),
                               ("current_a_if_decoded_with_bit15_rule", 1)):
        if key in expected:
            wrong = expected[key]
            assert spec_current(raw, wrong_version) == pytest.approx(wrong)  # the vector's claim
            assert current != pytest.approx(wrong)
            assert jk_serial.decode_current(raw, wrong_version) == pytest.approx(wrong)


@pytest.mark.parametrize("frame_id", frame_ids())
def test_checksum_status_and_sums(frame_id):
    vector = frame_by_id(frame_id)
    frame = frame_bytes(frame_id)
    assert "%04x" % byte_sum16(frame[:-4]) == vector["computed_sum_16bit"]
    assert "%04x" % jk_serial.checksum(frame[:-4]) == vector["computed_sum_16bit"]
    assert frame[-4:].hex() == vector["transmitted_checksum_hex"]
    assert vector["length_ok"] and jk_serial.frame_size(frame[:4]) == len(frame)
    if vector["checksum_ok"]:
        jk_serial.parse_envelope(frame)
    else:
        with pytest.raises(ChecksumError):
            jk_serial.parse_envelope(frame)


@pytest.mark.parametrize("frame_id", bad_checksum_frame_ids())
def test_bad_checksum_frames_are_rejected_and_decode_with_verification_off(frame_id):
    frame = frame_bytes(frame_id)
    with pytest.raises(ChecksumError):
        jk_serial.decode_reply(frame)
    with pytest.raises(ChecksumError):
        jk_serial.decode_reply(frame, verify_checksum=True)
    reading = jk_serial.decode_reply(frame, verify_checksum=False)
    # every expected value of these frames is checked by test_expected_values, which decodes
    # them with verification off; here just that it is the same reading
    assert reading == decode(frame_id).reading


# ----------------------------------------------------------------------------- the password

def _passwords():
    for frame in frames():
        frame_data = frame_bytes(frame["id"])
        at = password_offset(frame_data)
        password = frame_data[at : at + 10].rstrip(b"\0")
        if password:
            yield pytest.param(frame["id"], password, id=frame["id"])


def test_the_vectors_carry_passwords():
    found = {frame_id: password for frame_id, password in (p.values for p in _passwords())}
    assert found["esphome_14s_h6"] == b"123456"


@pytest.mark.parametrize("frame_id, password", list(_passwords()))
def test_password_is_parsed_past_and_never_kept(frame_id, password):
    frame = frame_bytes(frame_id)
    verify = frame_by_id(frame_id)["checksum_ok"]
    envelope = jk_serial.parse_envelope(frame, verify)
    registers = jk_serial.walk_registers(envelope.info)
    reading = jk_serial.decode_reply(frame, verify_checksum=verify)
    assert 0xB2 not in registers
    assert 0xB2 in [tag for tag, _, _ in jk_serial.walk_layout(envelope.info)]
    outputs = {
        "registers": repr(registers),
        "registers_as_dict": repr(jk_serial.registers_as_dict(registers)),
        "reading repr": repr(reading),
        "reading str": str(reading),
        "extra": repr(dict(reading.extra)),
        "device": repr(reading.device),
        "json": json.dumps(reading_to_json(reading, "/dev/ttyUSB0")),
        "samples": repr(list(reading_samples(reading, "/dev/ttyUSB0"))),
        "re-encoded": repr(jk_serial.encode_reading(reading, envelope.command)),
        "re-encoded registers": repr(jk_serial.encode_registers(registers)),
    }
    needles = {password.decode("ascii"), password.hex(), password.hex(" ")}
    for what, text in outputs.items():
        for needle in needles:
            assert needle not in text, "password %r leaks into %s" % (needle, what)
    assert password not in jk_serial.encode_reading(reading, envelope.command)


def test_registers_as_dict_drops_a_password_a_caller_put_in():
    rows = jk_serial.registers_as_dict({0x83: 5359, 0xB2: b"123456\0\0\0\0"})
    assert rows == [("0x83", "pack_voltage", 5359)]


def test_encoder_zeroes_a_password_a_caller_put_in():
    registers = {0xB1: 20, 0xB2: b"123456\0\0\0\0", 0xB3: 0}
    assert jk_serial.encode_registers(registers) == b"\xb1\x14\xb2" + bytes(10) + b"\xb3\x00"


# ----------------------------------------------------------------------------- exact re-encoding

def _without_password(frame: bytes) -> bytes:
    """The frame as our encoder must give it back: password field zeroed (the encoder never
    carries one), checksum recomputed over that."""
    at = password_offset(frame)
    return reseal(frame[:at] + bytes(10) + frame[at + 10 :])


@pytest.mark.parametrize("frame_id", frame_ids())
def test_register_set_re_encodes_to_the_original_bytes(frame_id):
    frame = frame_bytes(frame_id)
    expected = _without_password(frame)
    registers = jk_serial.walk_registers(info_of(frame))
    assert jk_serial.encode_registers(registers) == info_of(expected)
    assert jk_serial.encode_reply(registers, command=frame[8]) == expected
    if frame_by_id(frame_id)["checksum_ok"] and frame[password_offset(frame)] == 0:
        assert expected == frame  # nothing to account for


@pytest.mark.parametrize("frame_id", frame_ids())
def test_reading_re_encodes_to_the_original_bytes(frame_id):
    frame = frame_bytes(frame_id)
    verify = frame_by_id(frame_id)["checksum_ok"]
    reading = jk_serial.decode_reply(frame, verify_checksum=verify)
    encoded = jk_serial.encode_reading(reading, command=frame[8])
    assert encoded.hex() == _without_password(frame).hex()
    assert jk_serial.decode_reply(encoded) == reading


# ----------------------------------------------------------------------------- spec prose vs real frames

#: (frame, tag) whose value lies outside the range spec §6.2 documents. Real frames win:
#: the decoder passes these through unclamped (tested in test_jk_serial_registers.py).
OUTSIDE_DOCUMENTED_RANGE = {
    ("esphome_14s_h6", 0x9C): 8,  # balance trigger delta, documented 10–1000 mV
    ("powermon_4s_1121h", 0x9C): 5,
    ("esphome_16s_bd6a17s6p_710h", 0x98): 300,  # discharge OCP delay, documented 1–60 s
    ("esphome_faker_13s_h7", 0x98): 300,        # (the spec notes this one itself)
    ("mppsolar_14s_b1a20s15p_11261", 0x98): 300,
    ("opendtu_16s_b1a24s15p_1", 0x98): 300,
    ("opendtu_16s_b1a24s15p_2", 0x98): 300,
}


def test_documented_setting_ranges_against_the_frames():
    outside = {}
    for frame in frames():
        registers = jk_serial.walk_registers(info_of(frame_bytes(frame["id"])))
        for tag, row in spec_rows().items():
            documented = spec_documented_range(tag) if row.section == "6.2" else None
            if documented and tag in registers and not documented[0] <= registers[tag] <= documented[1]:
                outside[(frame["id"], tag)] = registers[tag]
    assert outside == OUTSIDE_DOCUMENTED_RANGE


def test_spec_statements_about_the_captures():
    readings = {f["id"]: decode(f["id"]).reading for f in frames()}
    registers = {f["id"]: jk_serial.walk_registers(info_of(frame_bytes(f["id"]))) for f in frames()}
    # agree: 0x86 is 2, 0xAE is 1 in every capture; 0xC0 is 1 wherever present (§6.1–6.3)
    assert {r[0x86] for r in registers.values()} == {2}
    assert {r[0xAE] for r in registers.values()} == {1}
    assert {r[0xC0] for r in registers.values() if 0xC0 in r} == {1}
    # agree: every reply header is 4E 57 LL LL 00 00 00 00 CC 00 01, record number 0 (§2)
    for frame_id in frame_ids():
        frame = frame_bytes(frame_id)
        assert frame[4:8] == bytes(4) and frame[9:11] == b"\x00\x01" and frame[-9:-5] == bytes(4)
    # agree: information field = 3·cells + 223 bytes with all tags present (§6.4)
    for frame_id, reading in readings.items():
        if 0xC0 in registers[frame_id]:
            assert len(info_of(frame_bytes(frame_id))) == 3 * reading.cells + 223
    # DISAGREE (§8.1 "Real examples: 0x0008 (empty pack, SOC 0 %, discharge MOSFET off)"):
    # the only SOC-0 capture, esphome_faker_13s_h7, has 0x8B = 0x0000 and 0x8C = 0x0008;
    # no capture has 0x8B = 0x0008 (nor the 0x0200 example)
    assert [fid for fid, r in registers.items() if r[0x85] == 0] == ["esphome_faker_13s_h7"]
    assert (registers["esphome_faker_13s_h7"][0x8B], registers["esphome_faker_13s_h7"][0x8C]) == (0, 8)
    assert not [fid for fid, r in registers.items() if r[0x8B] in (0x0008, 0x0200)]
    # DISAGREE (§8.2 bit 3 "captures disagree with [vendor: 1 = normal]"): the vendor's own
    # healthy 20S capture has bit 3 set (0x8C = 0x000B), as the vendor says
    assert registers["vendor_example_20s_nw100"][0x8C] & 0x08
    # DISAGREE (§6.3 0xBA "retail boards send 12 chars of user data + model"): in
    # powermon_4s_1121h the last 12 characters are user text ("EddieBlueBMS"), not a model,
    # and come out as device.model all the same
    assert readings["powermon_4s_1121h"].device.model == "EddieBlueBMS"
