"""Encoder ⇄ decoder properties over every field's full range (hypothesis).

Frames are built here from the spec (``build_frame``, spec widths), not by the encoder, and
decoded values are compared with the spec's rules written out in the helpers.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from jkbms_exporter.protocols import jk_serial
from jkbms_exporter.reading import DeviceInfo, Reading, Setting

from test_jk_serial_helpers import (
    build_frame,
    cells_tlv,
    password_offset,
    reseal,
    spec_current,
    spec_kind,
    spec_rows,
    spec_scale_unit,
    spec_software_split,
    spec_tlv_widths,
    tlv,
    vendor_temperature,
)

WIDTHS = spec_tlv_widths()
SPEC = spec_rows()
SIGNED = {tag for tag in WIDTHS if spec_kind(SPEC[tag]) == "i"}
STRINGS = {tag for tag in WIDTHS if spec_kind(SPEC[tag]) in ("str", "secret")}
#: 0 off / 1 on registers (spec §6.2), kept as booleans in Reading.switches_enabled
SWITCHES = {0x9D: "balancer", 0xAB: "charge", 0xAC: "discharge", 0xB3: "dedicated_charger"}
#: the oldest firmware (vector vendor_example_20s_nw100) stops after 0xB7
OLD_LAYOUT = [tag for tag in sorted(WIDTHS) if tag <= 0xB7]
FULL_LAYOUT = sorted(WIDTHS)

EXAMPLES = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: printable ASCII without space: a label-safe text keeps these bytes as they are
VISIBLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E)


def canonical_text(width: int):
    """Text a fixed-width field carries unchanged through ``decode_text`` and back: printable
    ASCII, spaces only inside, NUL padding at the end. (A NUL *inside* a field is shown as a
    space, and edge spaces are trimmed, so those cannot come back as the same bytes; the
    full-range property below covers them.)"""
    return st.text(VISIBLE | st.just(" "), max_size=width).map(lambda s: s.strip(" ")).map(
        lambda s: s.encode("ascii").ljust(width, b"\0")
    )


def raw_value(tag: int, canonical: bool):
    width = WIDTHS[tag]
    if tag in STRINGS:
        if canonical and tag in (0xB4, 0xB5, 0xB7):
            return canonical_text(width)
        return st.binary(min_size=width, max_size=width)  # anything, NULs anywhere
    if tag in SIGNED:
        return st.integers(-0x8000, 0x7FFF)
    if canonical and tag in SWITCHES:
        # Reading keeps switches as booleans: raw 2…255 reads as "on" and goes back as 1
        return st.integers(0, 1)
    return st.integers(0, 256 ** width - 1)


@st.composite
def raw_frames(draw, canonical: bool):
    """(frame bytes, raw values by tag, protocol version) of a read-all reply."""
    cells = draw(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=32))
    version: Optional[int] = draw(st.one_of(st.none(), st.sampled_from([0, 1]), st.integers(0, 255)))
    layout = OLD_LAYOUT if version is None else FULL_LAYOUT
    values: Dict[int, object] = {}
    for tag in layout:
        if tag == 0xC0:
            values[tag] = version
        elif tag == 0x84 and version == 1 and canonical:
            # 80 00 ("charging, 0 A") reads as 0.0 A, which is sent as 00 00
            values[tag] = draw(st.integers(0, 0xFFFF).filter(lambda raw: raw != 0x8000))
        else:
            values[tag] = draw(raw_value(tag, canonical))
    info = cells_tlv(cells) + b"".join(
        tlv(tag, value if isinstance(value, bytes) else value.to_bytes(WIDTHS[tag], "big", signed=tag in SIGNED))
        for tag, value in values.items()
    )
    command = draw(st.sampled_from([0x06, 0x03]))
    return build_frame(info, command=command), cells, values, version


def _text(raw: bytes) -> str:
    # spec §6.3: fixed width, NUL is not a terminator (shown as space), padding trimmed
    return "".join(" " if b == 0 else chr(b) if 0x20 <= b <= 0x7E else "?" for b in raw).strip(" ")


def _without_password(frame: bytes, values) -> bytes:
    """The frame as the encoder gives it back: password field zeros, checksum over that."""
    if 0xB2 not in values:
        return frame
    at = password_offset(frame)
    return reseal(frame[:at] + bytes(10) + frame[at + 10 :])


@EXAMPLES
@given(raw_frames(canonical=False))
def test_decode_follows_the_spec_for_every_field_over_its_full_range(case):
    frame, cells, values, version = case
    reading = jk_serial.decode_reply(frame)
    assert reading.cell_voltages_volts == tuple(mv / 1000 for mv in cells)
    assert reading.pack_voltage_volts == pytest.approx(values[0x83] / 100, abs=1e-9)
    assert reading.current_amperes == spec_current(values[0x84], 1 if version == 1 else 0)
    assert reading.temperatures_celsius == {
        sensor: vendor_temperature(values[tag])
        for tag, sensor in ((0x80, "mosfet"), (0x81, "battery1"), (0x82, "battery2"))
    }
    assert reading.state_of_charge_ratio == pytest.approx(values[0x85] / 100, abs=1e-9)
    assert reading.charge_cycles == values[0x87]
    assert reading.cycle_capacity_coulombs == values[0x89] * 3600
    assert reading.nominal_capacity_coulombs == values[0xAA] * 3600
    assert reading.runtime_seconds == values[0xB6] * 60
    assert reading.actual_capacity_coulombs == (None if version is None else values[0xB9] * 3600)
    assert reading.alarm_bitmask == values[0x8B] and reading.status_bitmask == values[0x8C]
    assert reading.switches_enabled == {name: bool(values[tag]) for tag, name in SWITCHES.items()}
    for tag in range(0x8E, 0xB2):
        row = jk_serial.REGISTER_BY_TAG[tag]
        if row.setting:
            scale, unit = spec_scale_unit(SPEC[tag])
            setting = reading.setting(row.name)
            assert (setting.unit, setting.value) == (unit, pytest.approx(values[tag] * scale, abs=1e-9))
    assert reading.device.device_id == _text(values[0xB4])
    assert (reading.device.hardware_version, reading.device.software_version) == spec_software_split(
        _text(values[0xB7])
    )
    assert reading.device.protocol_version == ("" if version is None else str(version))
    if version is not None:
        assert reading.extra["manufacturer_id_hex"] == values[0xBA].hex()
        assert reading.extra["start_current_calibration"] == values[0xB8]
    for tag, key in ((0x86, "temperature_sensor_count"), (0x8A, "cell_count"),
                     (0xA9, "cell_count_setting"), (0xAE, "board_address")):
        assert reading.extra[key] == values[tag]
    # and whatever came in goes out again as the same reading
    assert jk_serial.decode_reply(jk_serial.encode_reading(reading)) == reading


@EXAMPLES
@given(raw_frames(canonical=True))
def test_encode_gives_back_the_frame_it_decoded_byte_for_byte(case):
    frame, _, values, _ = case
    reading = jk_serial.decode_reply(frame)
    assert jk_serial.encode_reading(reading, command=frame[8]).hex() == _without_password(frame, values).hex()


@EXAMPLES
@given(raw_frames(canonical=False))
def test_registers_round_trip_exactly_over_full_ranges(case):
    frame, cells, values, _ = case
    registers = jk_serial.walk_registers(frame[11:-9])
    expected = {tag: value for tag, value in values.items() if tag != 0xB2}
    expected[0x79] = tuple(enumerate(cells, start=1))
    assert registers == expected
    assert jk_serial.encode_registers(registers) == _without_password(frame, values)[11:-9]


@EXAMPLES
@given(
    cells=st.lists(st.tuples(st.integers(0, 255), st.integers(0, 0xFFFF)), max_size=85),
    strings=st.fixed_dictionaries({tag: st.binary(min_size=WIDTHS[tag], max_size=WIDTHS[tag])
                                   for tag in (0xB4, 0xB5, 0xB7, 0xBA)}),
    password=st.binary(min_size=10, max_size=10),
)
def test_encode_registers_is_the_inverse_of_the_walk(cells, strings, password):
    registers = {0x79: tuple(cells), 0xB1: 20, 0xB2: password, 0xB3: 1, **strings}
    info = jk_serial.encode_registers(registers)
    back = jk_serial.walk_registers(info)
    del registers[0xB2]
    assert back == registers
    layout = {tag: (offset, width) for tag, offset, width in jk_serial.walk_layout(info, 0)}
    offset, width = layout[0xB2]
    assert info[offset + 1 : offset + 1 + width] == bytes(10)


# ----------------------------------------------------------------------------- from a Reading

NAMES = {row.tag: row.name for row in jk_serial.REGISTERS}
HARDWARE = st.from_regex(r"\A[0-9]{1,2}\.[A-Z]{1,2}\Z")
SOFTWARE = st.from_regex(r"\A[0-9]{1,2}\.[0-9A-Z.]{1,5}\Z")


@st.composite
def readings(draw):
    """A Reading in the domain the wire can carry. Constraints, all by design of the
    protocol or of Reading: values on the wire's grid (mV, 10 mA, whole °C, 0.01 SOC,
    whole Ah and minutes); temperatures −65435…+100 °C (the vendor rule has no code above
    +100, spec §7.2); current within the encoding of the chosen protocol version; MOSFET /
    balancing flags and alarms consistent with the bitmasks they are derived from; texts
    that fit their field; no 0xB9/0xBA/0xB8 (no model) for protocol version absent."""
    version = draw(st.sampled_from(["", "0", "1"]))
    n = draw(st.integers(1, 32))
    cells = tuple(mv / 1000 for mv in draw(st.lists(st.integers(0, 0xFFFF), min_size=n, max_size=n)))
    if version == "1":
        current = draw(st.integers(-0x7FFF, 0x7FFF)) / 100
    else:
        current = draw(st.integers(10000 - 0xFFFF, 10000)) / 100
    status = draw(st.integers(0, 0xFFFF))
    alarms = draw(st.integers(0, 0xFFFF))
    settings_ = []
    for row in jk_serial.SETTINGS:
        low, high = (-0x8000, 0x7FFF) if row.kind == "i" else (0, 256 ** row.width - 1)
        settings_.append(Setting(row.name, row.unit, round(draw(st.integers(low, high)) * row.scale, 6)))
    hardware = draw(st.one_of(st.just(""), HARDWARE))
    software = draw(SOFTWARE)
    assume(len(jk_serial.join_software_version(hardware, software)) <= 15)
    device = DeviceInfo(
        protocol="jk-serial",
        protocol_version=version,
        model="" if not version else draw(st.text(VISIBLE, max_size=12)),
        hardware_version=hardware,
        software_version=software,
        device_id=draw(st.text(VISIBLE, max_size=8)),
        manufacture_date=draw(st.one_of(st.just(""), st.from_regex(r"\A20[0-9]{2}-(0[1-9]|1[0-2])\Z"))),
        battery_type=draw(st.sampled_from(["lifepo4", "ternary", "lto", "7"])),
    )
    temperature = st.integers(100 - 0xFFFF, 100).map(float)
    return Reading(
        cell_voltages_volts=cells,
        pack_voltage_volts=draw(st.integers(0, 0xFFFF)) / 100,
        current_amperes=current,
        state_of_charge_ratio=draw(st.integers(0, 255)) / 100,
        temperatures_celsius={"mosfet": draw(temperature), "battery1": draw(temperature),
                              "battery2": draw(temperature)},
        charge_cycles=draw(st.integers(0, 0xFFFF)),
        cycle_capacity_coulombs=draw(st.integers(0, 2**32 - 1)) * 3600.0,
        runtime_seconds=draw(st.integers(0, 2**32 - 1)) * 60.0,
        nominal_capacity_coulombs=draw(st.integers(0, 2**32 - 1)) * 3600.0,
        actual_capacity_coulombs=None if not version else draw(st.integers(0, 2**32 - 1)) * 3600.0,
        charge_mosfet_on=bool(status & 1),
        discharge_mosfet_on=bool(status & 2),
        balancing=bool(status & 4),
        switches_enabled={name: draw(st.booleans()) for name in ("charge", "discharge", "balancer",
                                                                  "dedicated_charger")},
        alarm_bitmask=alarms,
        alarms={name: bool(alarms >> bit & 1) for bit, name in enumerate(jk_serial.ALARM_BITS)},
        status_bitmask=status,
        settings=tuple(settings_),
        device=device,
    )


@EXAMPLES
@given(readings())
def test_reading_encode_decode_round_trip(reading):
    decoded = jk_serial.decode_reply(jk_serial.encode_reading(reading))
    # extra is filled by the decoder with protocol details; everything else must match
    assert dataclasses.replace(decoded, extra={}) == reading
    assert decoded.extra["current_raw"] == jk_serial.encode_current(
        reading.current_amperes, 1 if reading.device.protocol_version == "1" else 0)


def _zero_reading(full: bool = True) -> Reading:
    """The reading of a spec-built frame with every register zero / empty, one cell."""
    layout = FULL_LAYOUT if full else OLD_LAYOUT
    info = cells_tlv([3300]) + b"".join(tlv(tag, bytes(WIDTHS[tag])) for tag in layout)
    if full:
        info = info[:-1] + b"\x01"  # 0xC0 = 1
    return jk_serial.decode_reply(build_frame(info))


def test_reading_round_trip_covers_the_extremes():
    # explicit corners, whatever hypothesis drew: 1 and 32 cells at 0 and 65535 mV, the
    # temperature and current limits of each encoding
    for full, version, currents in ((False, "", (100.0, -555.35, 0.0)), (True, "0", (100.0, -555.35)),
                                    (True, "1", (327.67, -327.67, 0.0, 0.01, -0.01))):
        base = _zero_reading(full)
        for cells in ((0.0,), (65.535,) * 32):
            for temperature in (100.0, 0.0, -1.0, -40.0, float(100 - 0xFFFF)):
                for current in currents:
                    reading = dataclasses.replace(
                        base, cell_voltages_volts=cells, current_amperes=current,
                        temperatures_celsius={"mosfet": temperature, "battery1": 0.0, "battery2": 100.0},
                        device=dataclasses.replace(base.device, protocol_version=version), extra={})
                    decoded = jk_serial.decode_reply(jk_serial.encode_reading(reading))
                    assert dataclasses.replace(decoded, extra={}) == reading


@pytest.mark.parametrize("change, match", [
    ({"temperatures_celsius": {"mosfet": 101.0, "battery1": 0.0, "battery2": 0.0}}, "temperature"),
    ({"current_amperes": 400.0}, "current"),
    ({"cell_voltages_volts": (65.536,)}, "cell"),
    ({"cell_voltages_volts": (3.3,) * 86}, "cells"),
    ({"state_of_charge_ratio": 2.56}, "0x85"),
])
def test_readings_the_wire_cannot_carry_are_refused(change, match):
    reading = _zero_reading()
    with pytest.raises(ValueError, match=match):
        jk_serial.encode_reading(dataclasses.replace(reading, **change))


def test_texts_too_long_for_their_field_are_refused():
    reading = _zero_reading()
    for device in (dataclasses.replace(reading.device, device_id="123456789"),
                   dataclasses.replace(reading.device, model="JK_B2A24S20P_"),
                   dataclasses.replace(reading.device, hardware_version="11.XW", software_version="11.2611011")):
        with pytest.raises(ValueError):
            jk_serial.encode_reading(dataclasses.replace(reading, device=device, extra={}))
