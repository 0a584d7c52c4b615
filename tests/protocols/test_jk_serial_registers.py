"""The register table against spec §6, the TLV walk, and every quirk at its boundaries."""

from __future__ import annotations

import math
import re

import pytest

from jkbms_exporter.protocols import jk_serial
from jkbms_exporter.reading import COULOMBS_PER_AMPERE_HOUR

from test_jk_serial_helpers import (
    build_frame,
    frame_by_id,
    frame_bytes,
    frame_ids,
    info_of,
    spec_current,
    spec_kind,
    spec_rows,
    spec_scale_unit,
    spec_section,
    spec_software_split,
    spec_tlv_widths,
    spec_type_width,
    vendor_temperature,
)

READ_TAGS = sorted(tag for tag, row in spec_rows().items() if row.section != "6.4" and tag != 0x79)
WRITE_ONLY_TAGS = sorted(tag for tag, row in spec_rows().items() if row.section == "6.4")


# ----------------------------------------------------------------------------- REGISTERS vs spec §6

def test_spec_table_is_what_we_think_it_is():
    # the spec parser must have found every section's rows
    assert READ_TAGS[0] == 0x80 and READ_TAGS[-1] == 0xC0 and len(READ_TAGS) == 58
    assert WRITE_ONLY_TAGS == [0xBB, 0xBC, 0xBD, 0xBE, 0xBF]


def test_table_has_exactly_the_spec_readable_tags():
    assert sorted(jk_serial.REGISTER_BY_TAG) == READ_TAGS
    assert len(jk_serial.REGISTERS) == len(jk_serial.REGISTER_BY_TAG)  # no tag twice
    assert not set(WRITE_ONLY_TAGS) & set(jk_serial.REGISTER_BY_TAG)
    assert jk_serial.WRITE_ONLY_TAGS == set(WRITE_ONLY_TAGS)


@pytest.mark.parametrize("tag", READ_TAGS)
def test_register_row_matches_the_spec(tag):
    spec = spec_rows()[tag]
    row = jk_serial.REGISTER_BY_TAG[tag]
    assert row.width == spec.width, spec
    assert row.kind == spec_kind(spec), spec
    if row.kind not in ("str", "secret"):
        assert spec_type_width(spec) == spec.width, "spec type and width disagree: %r" % (spec,)
    scale, unit = spec_scale_unit(spec)
    if row.kind in ("temp", "current"):
        # scale is applied by the quirk functions; the unit must still be the spec's
        assert row.unit == unit
    else:
        assert (row.scale, row.unit) == (pytest.approx(scale, rel=1e-12), unit), spec


def test_table_widths_match_the_spec_tlv_width_summary():
    widths = spec_tlv_widths()
    assert {tag: row.width for tag, row in jk_serial.REGISTER_BY_TAG.items()} == widths


def test_table_is_in_ascending_tag_order_like_the_frames():
    tags = [row.tag for row in jk_serial.REGISTERS]
    assert tags == sorted(tags)


def test_only_the_spec_signed_registers_are_signed():
    signed = {row.tag for row in jk_serial.REGISTERS if row.kind == "i"}
    assert signed == {0xA5, 0xA6, 0xA7, 0xA8}


def test_settings_are_the_spec_settings_gauges():
    text = spec_section("## 10. What to export")
    line = text[text.index("Settings gauges"):]
    line = line[: line.index("Info labels")]
    spec_tags = set()
    for first, last in re.findall(r"0x([0-9A-F]{2})(?:–0x([0-9A-F]{2}))?", line):
        spec_tags |= set(range(int(first, 16), int(last or first, 16) + 1))
    ours = {row.tag for row in jk_serial.SETTINGS}
    # 0x9D (balancer switch) is exported as switch_enabled{switch="balancer"}; 0xA9 (cell
    # count setting) has no setting unit (reading.SETTING_UNITS has no "count") and is kept
    # in Reading.extra — see the report
    assert ours == spec_tags - {0x9D, 0xA9}
    assert all(row.unit in ("volts", "amperes", "celsius", "seconds", "ratio") for row in jk_serial.SETTINGS)


@pytest.mark.parametrize("frame_id", frame_ids())
def test_vector_tags_in_order_walk_and_are_all_in_the_table(frame_id):
    vector = frame_by_id(frame_id)
    expected = [int(tag, 16) for tag in vector["expected"]["tags_in_order"]]
    layout = jk_serial.walk_layout(info_of(frame_bytes(frame_id)))
    assert [tag for tag, _, _ in layout] == expected
    assert set(expected) - {0x79} <= set(jk_serial.REGISTER_BY_TAG)
    # records are contiguous: each starts right after the previous value
    position = 11
    for tag, offset, width in layout:
        assert offset == position
        if tag != 0x79:
            assert width == spec_rows()[tag].width
        position = offset + 1 + width
    assert position == 11 + len(info_of(frame_bytes(frame_id)))


@pytest.mark.parametrize("frame_id", frame_ids())
def test_walk_keeps_every_register_but_the_password(frame_id):
    expected = [int(tag, 16) for tag in frame_by_id(frame_id)["expected"]["tags_in_order"]]
    registers = jk_serial.walk_registers(info_of(frame_bytes(frame_id)))
    assert list(registers) == [tag for tag in expected if tag != 0xB2]


def test_walk_types():
    registers = jk_serial.walk_registers(info_of(frame_bytes("opendtu_16s_b1a24s15p_1")))
    assert registers[0x79][:2] == ((1, 3323), (2, 3323))
    assert registers[0xBA] == b"beki" + b"\0" * 8 + b"JK_B1A24S15P"
    assert registers[0xB4] == b"beki\0\0\0\0"
    assert registers[0xA7] == -20 and registers[0xA5] == 0
    assert registers[0x84] == 0x83F4


def test_walk_tolerates_missing_tags_and_a_missing_protocol_version():
    registers = jk_serial.walk_registers(b"\x83\x14\xef\x85\x0f")
    assert registers == {0x83: 0x14EF, 0x85: 15}


def _frame_with(values, frame_id: str = "esphome_14s_h6") -> bytes:
    """A real frame with some register values replaced (spec widths), length/sum right."""
    info = bytearray(info_of(frame_bytes(frame_id)))
    widths = spec_tlv_widths()
    position = 0
    while position < len(info):
        tag = info[position]
        width = 1 + info[position + 1] if tag == 0x79 else widths[tag]
        if tag in values:
            assert len(values[tag]) == width
            info[position + 1 : position + 1 + width] = values[tag]
        position += 1 + width
    return build_frame(bytes(info))


# ----------------------------------------------------------------------------- temperatures (spec §7.2)

@pytest.mark.parametrize("raw, celsius", [
    (0, 0), (1, 1), (29, 29), (99, 99),
    (100, 100),  # vendor: 100 is the reference → +100 °C (not ESPHome's −1, not dbus' 0)
    (101, -1), (102, -2), (120, -20), (140, -40),  # vendor: 101 = −1 °C … 140 = −40 °C
    (141, -41), (0xFFFF, 100 - 0xFFFF),
])
def test_temperature_vendor_rule_at_its_boundaries(raw, celsius):
    assert jk_serial.decode_temperature(raw) == celsius


def test_temperature_every_raw_value_follows_the_vendor_rule():
    for raw in range(0x10000):
        assert jk_serial.decode_temperature(raw) == vendor_temperature(raw)


def test_temperature_encoding_is_the_inverse_over_the_whole_encodable_range():
    for celsius in range(100 - 0xFFFF, 101):
        raw = jk_serial.encode_temperature(celsius)
        assert 0 <= raw <= 0xFFFF and vendor_temperature(raw) == celsius


@pytest.mark.parametrize("celsius", [101, 150, 1e9, 100 - 0x10000, -1e9, math.nan, math.inf])
def test_temperature_the_vendor_rule_cannot_carry_is_refused(celsius):
    # +150 °C would go out as raw 150 and read back as −50 °C
    with pytest.raises(ValueError):
        jk_serial.encode_temperature(celsius)


def test_temperatures_in_a_frame_use_the_vendor_rule():
    frame = _frame_with({0x80: b"\x00\x64", 0x81: b"\x00\x65", 0x82: b"\x00\x8c"})
    reading = jk_serial.decode_reply(frame)
    assert reading.temperatures_celsius == {"mosfet": 100.0, "battery1": -1.0, "battery2": -40.0}


# ----------------------------------------------------------------------------- thresholds (spec §6.2)

@pytest.mark.parametrize("tag", [0xA5, 0xA6, 0xA7, 0xA8])
@pytest.mark.parametrize("raw, celsius", [
    (b"\xff\xec", -20), (b"\x80\x00", -32768), (b"\x7f\xff", 32767), (b"\xff\xff", -1),
    (b"\x00\x00", 0), (b"\x00\x19", 25), (b"\xff\xd3", -45),
])
def test_under_temperature_thresholds_are_signed(tag, raw, celsius):
    reading = jk_serial.decode_reply(_frame_with({tag: raw}))
    assert reading.setting(jk_serial.REGISTER_BY_TAG[tag].name).value == celsius


@pytest.mark.parametrize("tag", [0x9E, 0x9F, 0xA0, 0xA1, 0xA2, 0xA3, 0xA4])
@pytest.mark.parametrize("raw, celsius", [
    (b"\xff\xec", 65516),  # plain unsigned: not −20
    (b"\x00\x65", 101),    # no +100 code: not −1
    (b"\x00\x64", 100), (b"\x00\x00", 0), (b"\xff\xff", 65535),
])
def test_over_temperature_thresholds_are_plain(tag, raw, celsius):
    reading = jk_serial.decode_reply(_frame_with({tag: raw}))
    setting = reading.setting(jk_serial.REGISTER_BY_TAG[tag].name)
    assert (setting.value, setting.unit) == (celsius, "celsius")


def test_esphome_frame_thresholds():
    # esphome_14s_h6 carries A5..A8 = FF EC, FF F6, FF EC, FF F6
    reading = jk_serial.decode_reply(frame_bytes("esphome_14s_h6"))
    assert [reading.setting(jk_serial.REGISTER_BY_TAG[t].name).value for t in (0xA5, 0xA6, 0xA7, 0xA8)] \
        == [-20, -10, -20, -10]
    assert [reading.setting(jk_serial.REGISTER_BY_TAG[t].name).value for t in range(0x9E, 0xA5)] \
        == [90, 70, 100, 100, 20, 70, 70]


# ----------------------------------------------------------------------------- current (spec §7.1)

@pytest.mark.parametrize("raw, version, amperes", [
    (0x80D0, 1, 2.08), (0x0045, 1, -0.69), (0x83F4, 1, 10.12), (0x0370, 1, -8.80),  # §7.1
    (0x2710, 0, 0.0), (0x2710, None, 0.0),  # "10000 free/idle"
    (0xFFFF, 1, 327.67), (0x7FFF, 1, -327.67), (0x8001, 1, 0.01), (0x0001, 1, -0.01),
    (0x0000, 0, 100.0), (0x0000, None, 100.0), (0xFFFF, 0, -555.35), (0x2711, None, -0.01),
    (0x270F, 0, 0.01),
])
def test_current_rules_at_their_boundaries(raw, version, amperes):
    assert jk_serial.decode_current(raw, version) == amperes


@pytest.mark.parametrize("raw", [0x0000, 0x8000])
def test_current_zero_is_positive_zero(raw):
    value = jk_serial.decode_current(raw, 1)
    assert value == 0.0 and math.copysign(1.0, value) == 1.0


def test_current_offset_idle_is_positive_zero():
    for version in (0, None):
        assert math.copysign(1.0, jk_serial.decode_current(10000, version)) == 1.0


def test_current_every_raw_value_follows_the_spec_rules():
    for raw in range(0x10000):
        for version in (0, 1, None):
            assert jk_serial.decode_current(raw, version) == spec_current(raw, version)


def test_current_encoding_is_the_inverse_over_each_encodings_range():
    for raw in range(0x10000):
        amperes = spec_current(raw, 1)
        # 80 00 ("charging, 0 A") reads as 0.0, which goes out as 00 00: the one raw value
        # of the bit-15 encoding that cannot come back (same current, other bytes)
        assert jk_serial.encode_current(amperes, 1) == (0 if raw == 0x8000 else raw)
        for version in (0, None):
            assert jk_serial.encode_current(spec_current(raw, version), version) == raw


@pytest.mark.parametrize("amperes, version", [
    (327.68, 1), (-327.68, 1), (1000.0, 1), (100.01, 0), (-555.36, None), (math.nan, 1),
])
def test_current_outside_the_encoding_is_refused(amperes, version):
    with pytest.raises(ValueError):
        jk_serial.encode_current(amperes, version)


def test_current_is_decoded_with_the_protocol_version_of_the_same_frame():
    frame = frame_bytes("esphome_14s_h6")  # 0x84 = 80 D0, 0xC0 = 1 as the last tag
    info = info_of(frame)
    assert info[-2:] == b"\xc0\x01"
    assert jk_serial.decode_reply(frame).current_amperes == 2.08
    as_version_0 = jk_serial.decode_reply(build_frame(info[:-1] + b"\x00"))
    assert as_version_0.current_amperes == spec_current(0x80D0, 0) == -229.76
    without_c0 = jk_serial.decode_reply(build_frame(info[:-2]))
    assert without_c0.current_amperes == -229.76 and without_c0.extra["protocol_version"] is None
    assert without_c0.device.protocol_version == ""
    # and the other way round: the old vendor frame read with 0xC0 = 1 appended
    old = info_of(frame_bytes("vendor_example_20s_nw100"))
    assert jk_serial.decode_reply(build_frame(old), verify_checksum=False).current_amperes == 0.0
    assert jk_serial.decode_reply(build_frame(old + b"\xc0\x01")).current_amperes == -100.0


def test_current_calibration_does_not_change_the_current():
    # spec §7.1: 0xAD is a calibration setting only
    for raw in (b"\x00\x64", b"\x4e\x20", b"\xff\xff"):
        assert jk_serial.decode_reply(_frame_with({0xAD: raw})).current_amperes == 2.08


# ----------------------------------------------------------------------------- strings (spec §6.3)

def test_nul_inside_0xba_is_not_a_terminator():
    reading = jk_serial.decode_reply(frame_bytes("opendtu_16s_b1a24s15p_1"))
    assert reading.device.model == "JK_B1A24S15P"
    text = reading.extra["manufacturer_id"]
    # the model keeps its place 12 characters in; the NULs before it are not dropped
    assert text.startswith("beki") and text[12:] == "JK_B1A24S15P" and len(text) == 24
    assert "\0" not in text
    assert reading.extra["manufacturer_id_hex"] == "62656b69" + "00" * 8 + b"JK_B1A24S15P".hex()


@pytest.mark.parametrize("raw, text", [
    (b"Input Us", "Input Us"),
    (b"beki\0\0\0\0", "beki"),
    (b"\0\0\0\0", ""),
    (b"be\0ki\0\0\0", "be ki"),
    (b"2101", "2101"),
    (b"H6.X__S6.1.3S__", "H6.X__S6.1.3S__"),  # the `_` padding is data, kept
    (b"Input UserdaJK_B1A8S20P\0", "Input UserdaJK_B1A8S20P"),  # spec §6.3 example
    (b"ab\xffc\x01", "ab?c?"),
])
def test_decode_text(raw, text):
    assert jk_serial.decode_text(raw) == text


def test_decode_text_never_fails_and_is_printable():
    for value in range(256):
        text = jk_serial.decode_text(bytes((value, 0x41, value)))
        assert text.isprintable() and len(text) <= 3


@pytest.mark.parametrize("text, parts", [
    ("H6.X__S6.1.3S__", ("6.X", "6.1.3S")),
    ("H7.X__S7.1.0H__", ("7.X", "7.1.0H")),
    ("11.XW_S11.261__", ("11.XW", "11.261")),
    ("10.XW_S10.07___", ("10.XW", "10.07")),
    ("11.XW_S11.262H_", ("11.XW", "11.262H")),
    ("NW_1_0_0_200428", ("", "NW_1_0_0_200428")),
])
def test_software_version_split_and_join(text, parts):
    assert jk_serial.split_software_version(text) == parts == spec_software_split(text)
    # joining gives back the string a board sends (15 characters, `_`-padded)
    assert jk_serial.join_software_version(*parts) == text


def test_software_version_examples_are_the_spec_ones():
    section = spec_section("### 6.3")
    for text in ("H6.X__S6.1.3S__", "H7.X__S7.1.0H__", "11.XW_S11.261__", "10.XW_S10.07___",
                 "NW_1_0_0_200428"):
        assert "`%s`" % text in section


def test_manufacture_date_yymm():
    reading = jk_serial.decode_reply(frame_bytes("mppsolar_14s_b1a20s15p_11261"))
    assert reading.device.manufacture_date == "2023-06"  # spec §6.3: `2306` = June 2023


# ----------------------------------------------------------------------------- units

def test_units_runtime_soc_capacity():
    reading = jk_serial.decode_reply(frame_bytes("esphome_14s_h6"))
    assert reading.runtime_seconds == 0xE200 * 60  # §6.3: 0x0000E200 = 57856 minutes
    assert reading.state_of_charge_ratio == pytest.approx(0.15, abs=1e-12)
    assert reading.nominal_capacity_coulombs == 14 * COULOMBS_PER_AMPERE_HOUR == 50400
    assert reading.pack_voltage_volts == 53.59  # §6.1: 0x14EF = 53.59 V
    mpp = jk_serial.decode_reply(frame_bytes("mppsolar_14s_b1a20s15p_11261"))
    assert mpp.cycle_capacity_coulombs == 0x16DA * 3600  # §6.1: 0x16DA = 5850 Ah
    assert mpp.actual_capacity_coulombs == 234 * 3600


def test_values_outside_the_documented_ranges_are_decoded_not_clamped():
    # 0x9C balance trigger: documented 10–1000 mV, esphome_14s_h6 sends 8, powermon 5
    assert jk_serial.decode_reply(frame_bytes("esphome_14s_h6")).setting(
        "balance_trigger_voltage_difference").value == 0.008
    # 0x98: documented 1–60 s, most captures send 300
    assert jk_serial.decode_reply(frame_bytes("opendtu_16s_b1a24s15p_1")).setting(
        "discharge_overcurrent_protection_delay").value == 300
