"""reading_samples builds its samples as one list; it must yield exactly what the plain
field-by-field generator below (the mapping as first written) yields: order, labels,
values and their types (a bool stays a bool, an int an int)."""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator, List

import pytest

from conftest import load_vectors
from test_metrics import hand_made_reading

from jkbms_exporter import metrics as m
from jkbms_exporter.metrics import reading_samples, reading_to_json
from jkbms_exporter.protocols import jk02, jk_serial
from jkbms_exporter.reading import NOT_REPORTED_KEY, READING_AGE_KEY, Reading, Setting
from jkbms_exporter.sim.bms import SimulatedBms


def reference_samples(reading: Reading, port: str = "") -> Iterator[m.Sample]:
    skipped = {spec for name in reading.extra.get(NOT_REPORTED_KEY, ())
               for spec in m._FIELD_SPECS.get(str(name), ())}

    def every() -> Iterator[m.Sample]:
        yield m.CELLS, (), reading.cells
        for index, volts in enumerate(reading.cell_voltages_volts, start=1):
            yield m.CELL_VOLTAGE, ("%02d" % index,), volts
        yield m.PACK_VOLTAGE, (), reading.pack_voltage_volts
        yield m.CURRENT, (), reading.current_amperes
        yield m.SOC, (), reading.state_of_charge_ratio
        for sensor, celsius in reading.temperatures_celsius.items():
            yield m.TEMPERATURE, (sensor,), celsius
        yield m.CYCLES, (), reading.charge_cycles
        yield m.CYCLE_CAPACITY, (), reading.cycle_capacity_coulombs
        for spec, value in ((m.RUNTIME, reading.runtime_seconds),
                            (m.NOMINAL_CAPACITY, reading.nominal_capacity_coulombs),
                            (m.ACTUAL_CAPACITY, reading.actual_capacity_coulombs),
                            (m.BALANCE_CURRENT, reading.balance_current_amperes),
                            (m.REMAINING_CAPACITY, reading.remaining_capacity_coulombs),
                            (m.STATE_OF_HEALTH, reading.state_of_health_ratio)):
            if value is not None:
                yield spec, (), value
        yield m.MOSFET_ON, ("charge",), reading.charge_mosfet_on
        yield m.MOSFET_ON, ("discharge",), reading.discharge_mosfet_on
        yield m.BALANCING, (), reading.balancing
        for switch, enabled in reading.switches_enabled.items():
            yield m.SWITCH_ENABLED, (switch,), enabled
        for alarm, active in reading.alarms.items():
            yield m.ALARM, (alarm,), active
        yield m.ALARM_BITMASK, (), reading.alarm_bitmask
        yield m.STATUS_BITMASK, (), reading.status_bitmask
        for setting in reading.settings:
            yield m.SETTINGS[setting.unit], (setting.name,), setting.value
        for index, ohms in enumerate(reading.cell_resistances_ohms or (), start=1):
            yield m.BALANCE_WIRE_RESISTANCE, ("%02d" % index,), ohms
        device = reading.device
        yield m.DEVICE_INFO, (port, device.protocol, device.protocol_version, device.model,
                              device.hardware_version, device.software_version,
                              device.device_id, device.manufacture_date,
                              device.battery_type, device.serial_number), 1

    for spec, labels, value in every():
        if value != value or spec in skipped:
            continue
        yield spec, labels, value
    age = reading.extra.get(READING_AGE_KEY)
    if age is not None:
        yield m.READING_AGE, (), float(age)


def typed(samples) -> List[tuple]:
    return [(spec.name, labels, type(value), value) for spec, labels, value in samples]


def readings() -> List[Reading]:
    out: List[Reading] = []
    for frame in load_vectors("4e57.json")["frames"]:
        out.append(jk_serial.decode_reply(bytes.fromhex(frame["response_hex"]), False))
    for vector in load_vectors("jk02.json")["frames"]:
        if vector["id"].startswith("cell_info_"):
            variant = jk02.JK04 if "jk04" in vector["id"] else (
                jk02.JK02_32S if "32s" in vector["id"] else jk02.JK02_24S)
            out.append(jk02.decode_reading(bytes.fromhex(vector["response_hex"]), variant))
    request = jk_serial.read_all_request()
    for cells in (1, 4, 16, 24, 32):
        out.append(jk_serial.decode_reply(SimulatedBms(cells=cells, seed=cells).handle(request)))
    full = hand_made_reading()
    out += [
        full,
        hand_made_reading(cell_voltages_volts=tuple(3.0 + i / 1000 for i in range(200)),
                          cell_resistances_ohms=tuple(0.05 + i / 1000 for i in range(200))),
        hand_made_reading(cell_voltages_volts=(), cell_resistances_ohms=()),
        hand_made_reading(current_amperes=math.nan, state_of_health_ratio=math.nan,
                          cell_voltages_volts=(3.3, math.nan, 3.31),
                          settings=(Setting("balance_start", "volts", math.nan),)),
        hand_made_reading(extra={READING_AGE_KEY: 3}),
        hand_made_reading(extra={READING_AGE_KEY: math.nan}),
        hand_made_reading(extra={NOT_REPORTED_KEY: ("current_amperes", "alarm_bitmask",
                                                    "temperatures_celsius", "bogus")}),
        dataclasses.replace(full, runtime_seconds=None, balance_current_amperes=None),
    ]
    return out


def test_the_vectors_make_every_kind_of_reading():
    kinds = readings()
    assert any(r.extra.get(NOT_REPORTED_KEY) for r in kinds)  # a JK04 frame
    assert any(r.cell_resistances_ohms for r in kinds)
    assert len(kinds) > 20


@pytest.mark.parametrize("port", ["", "/dev/ttyUSB0"])
def test_samples_are_the_reference_mapping_exactly(port):
    for reading in readings():
        assert typed(reading_samples(reading, port)) == typed(reference_samples(reading, port))


def test_samples_come_as_an_iterator_and_json_is_unchanged():
    reading = hand_made_reading()
    samples = reading_samples(reading)
    assert iter(samples) is samples
    assert next(samples)[0] is m.CELLS
    assert reading_to_json(reading)["cells"] == 4


def test_the_exposition_gets_one_group_per_spec_holding_that_specs_samples_in_order():
    """What the exposition renders (reading_groups): every spec once, with exactly the
    samples reading_samples yields for it, in the same order (settings of one unit come
    apart in the decoders' order, and are put together here)."""
    for reading in readings():
        groups = m.reading_groups(reading, "/dev/ttyUSB0")
        specs = [spec for spec, _, _ in groups]
        assert len(specs) == len(set(specs))
        for spec, labels, values in groups:
            assert len(labels) == len(values) > 0
            expected = [(s, label, value) for s, label, value
                        in reading_samples(reading, "/dev/ttyUSB0") if s is spec]
            assert list(zip([spec] * len(values), labels, values)) == expected
        assert sum(len(values) for _, _, values in groups) == len(
            list(reading_samples(reading, "/dev/ttyUSB0")))
