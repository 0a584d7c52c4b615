"""How a Reading becomes samples: values a protocol does not report are left out, never 0/NaN."""

from __future__ import annotations

import math

from conftest import load_vectors

from jkbms_exporter.protocols import jk02
from jkbms_exporter.metrics import reading_samples, reading_to_json


def test_jk04_frames_export_no_placeholders() -> None:
    vectors = load_vectors("jk02.json")
    (vector,) = [f for f in vectors["frames"] if f["id"] == "cell_info_jk04"]
    reading = jk02.decode_reading(bytes.fromhex(vector["response_hex"]), jk02.JK04)
    names = {spec.full_name for spec, _, _ in reading_samples(reading)}
    assert names.isdisjoint({"jkbms_current_amperes", "jkbms_state_of_charge_ratio",
                             "jkbms_charge_cycles_total", "jkbms_cycle_capacity_coulombs_total",
                             "jkbms_mosfet_on", "jkbms_alarm", "jkbms_alarm_bitmask",
                             "jkbms_temperature_celsius"})
    assert {"jkbms_cell_voltage_volts", "jkbms_pack_voltage_volts"} <= names
    assert not any(isinstance(v, float) and math.isnan(v) for _, _, v in reading_samples(reading))
    assert "current_amperes" not in reading_to_json(reading)


def test_reading_age_is_exported_only_when_the_protocol_sets_it() -> None:
    vectors = load_vectors("jk02.json")
    (vector,) = [f for f in vectors["frames"] if f["id"] == "cell_info_jk02_32s_v11"]
    reading = jk02.decode_reading(bytes.fromhex(vector["response_hex"]), jk02.JK02_32S)
    assert "jkbms_reading_age_seconds" not in {s.full_name for s, _, _ in reading_samples(reading)}
    import dataclasses

    aged = dataclasses.replace(reading, extra=dict(reading.extra, reading_age_seconds=4.2))
    ages = [v for s, _, v in reading_samples(aged) if s.full_name == "jkbms_reading_age_seconds"]
    assert ages == [4.2]


def test_balance_wire_resistance_of_a_real_frame_is_named_for_what_it_is() -> None:
    from jkbms_exporter.report import render_reading

    vectors = load_vectors("jk02.json")
    (vector,) = [f for f in vectors["frames"] if f["id"] == "cell_info_jk02_32s_v11"]
    reading = jk02.decode_reading(bytes.fromhex(vector["response_hex"]), jk02.JK02_32S)
    ohms = [v for s, _, v in reading_samples(reading)
            if s.full_name == "jkbms_balance_wire_resistance_ohms"]
    assert ohms == vector["expected"]["cell_resistances_ohm"]
    assert all(0.05 <= value <= 0.2 for value in ohms)  # balance leads, not cells' mΩ
    table = render_reading(reading)
    assert "balance-wire resistance" in table and "wire 0.104 Ω" in table
