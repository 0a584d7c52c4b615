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


# ----------------------------------------------------------------------------- labels and --json
# (issue 12 "Tests that would not notice": mutants of these went unnoticed)

import dataclasses  # noqa: E402
import json  # noqa: E402

from jkbms_exporter.reading import DeviceInfo, Reading, Setting  # noqa: E402


def hand_made_reading(**changes: object) -> Reading:
    """A reading whose every value is distinct, so a label or value moved to the wrong place
    shows."""
    base = Reading(
        cell_voltages_volts=(3.301, 3.302, 3.303, 3.304),
        pack_voltage_volts=13.21,
        current_amperes=-7.5,
        state_of_charge_ratio=0.55,
        temperatures_celsius={"mosfet": 31.0, "battery1": 21.0},
        charge_cycles=12,
        cycle_capacity_coulombs=3600.0 * 40,
        runtime_seconds=86400.0,
        nominal_capacity_coulombs=3600.0 * 100,
        actual_capacity_coulombs=3600.0 * 98,
        charge_mosfet_on=False,
        discharge_mosfet_on=True,
        balancing=True,
        switches_enabled={"charge": True, "balancer": False},
        alarm_bitmask=0b10,
        alarms={"cell_overvoltage": False, "cell_undervoltage": True},
        status_bitmask=0b110,
        settings=(Setting("cell_overvoltage_protection", "volts", 3.65),
                  Setting("charge_overcurrent_protection_delay", "seconds", 30.0)),
        device=DeviceInfo(protocol="jk-serial", model="JK_B2A8S20P", serial_number="S1"),
        cell_resistances_ohms=(0.061, 0.062, 0.063, 0.064),
        balance_current_amperes=-0.4,
        remaining_capacity_coulombs=3600.0 * 55,
        state_of_health_ratio=0.97,
    )
    return dataclasses.replace(base, **changes)


def samples_of(reading: Reading, name: str) -> dict:
    return {labels: value for spec, labels, value in reading_samples(reading, "/dev/ttyUSB0")
            if spec.full_name == name}


def test_balance_wire_resistance_cell_labels_start_at_01_in_frame_order() -> None:
    assert samples_of(hand_made_reading(), "jkbms_balance_wire_resistance_ohms") == {
        ("01",): 0.061, ("02",): 0.062, ("03",): 0.063, ("04",): 0.064}
    assert samples_of(hand_made_reading(), "jkbms_cell_voltage_volts") == {
        ("01",): 3.301, ("02",): 3.302, ("03",): 3.303, ("04",): 3.304}
    assert samples_of(hand_made_reading(cell_resistances_ohms=None),
                      "jkbms_balance_wire_resistance_ohms") == {}


def test_mosfet_labels_name_each_mosfet_with_its_own_state() -> None:
    assert samples_of(hand_made_reading(), "jkbms_mosfet_on") == {("charge",): False,
                                                                  ("discharge",): True}
    flipped = hand_made_reading(charge_mosfet_on=True, discharge_mosfet_on=False)
    assert samples_of(flipped, "jkbms_mosfet_on") == {("charge",): True, ("discharge",): False}


def test_a_jk04_reading_keeps_every_family_after_the_ones_it_does_not_report() -> None:
    vectors = load_vectors("jk02.json")
    (vector,) = [f for f in vectors["frames"] if f["id"] == "cell_info_jk04"]
    reading = jk02.decode_reading(bytes.fromhex(vector["response_hex"]), jk02.JK04)
    names = {spec.full_name for spec, _, _ in reading_samples(reading)}
    # each of these comes after a family JK04 does not report (current, SOC, cycles, …)
    assert {"jkbms_balancing", "jkbms_status_bitmask", "jkbms_balance_wire_resistance_ohms",
            "jkbms_balance_current_amperes", "jkbms_device_info", "jkbms_cells"} <= names
    # and a hand-made reading that reports nothing of the kind keeps the rest too
    silent = hand_made_reading(extra={"not_reported": ("current_amperes", "temperatures_celsius")})
    kept = {spec.full_name for spec, _, _ in reading_samples(silent)}
    assert "jkbms_current_amperes" not in kept and "jkbms_temperature_celsius" not in kept
    assert {"jkbms_state_of_charge_ratio", "jkbms_charge_cycles_total", "jkbms_alarm",
            "jkbms_setting_volts", "jkbms_device_info"} <= kept


def test_json_output_has_every_value_in_its_place() -> None:
    out = json.loads(json.dumps(reading_to_json(hand_made_reading(), "/dev/ttyUSB0")))
    assert out["cell_voltage_volts"] == [3.301, 3.302, 3.303, 3.304]
    assert out["balance_wire_resistance_ohms"] == [0.061, 0.062, 0.063, 0.064]
    assert out["cells"] == 4 and out["pack_voltage_volts"] == 13.21
    assert out["current_amperes"] == -7.5 and out["state_of_charge_ratio"] == 0.55
    assert out["temperature_celsius"] == {"mosfet": 31.0, "battery1": 21.0}
    assert out["mosfet_on"] == {"charge": 0, "discharge": 1}
    assert out["balancing"] == 1 and out["charge_cycles_total"] == 12
    assert out["switch_enabled"] == {"charge": 1, "balancer": 0}
    assert out["alarm"] == {"cell_overvoltage": 0, "cell_undervoltage": 1}
    assert out["alarm_bitmask"] == 2 and out["status_bitmask"] == 6
    assert out["setting_volts"] == {"cell_overvoltage_protection": 3.65}
    assert out["setting_seconds"] == {"charge_overcurrent_protection_delay": 30.0}
    assert out["balance_current_amperes"] == -0.4 and out["state_of_health_ratio"] == 0.97
    assert out["device_info"]["port"] == "/dev/ttyUSB0"
    assert out["device_info"]["model"] == "JK_B2A8S20P"
    assert out["device_info"]["serial_number"] == "S1"
    assert all(isinstance(v, int) for v in out["mosfet_on"].values())


def test_energy_counters_are_exported_each_under_its_own_name() -> None:
    from jkbms_exporter.energy import SKIP_REASONS, EnergyTotals
    from jkbms_exporter.metrics import energy_samples

    skipped = {reason: 10.0 * (index + 1) for index, reason in enumerate(SKIP_REASONS)}
    totals = EnergyTotals(charge_joules=1.5, discharge_joules=2.5, charge_coulombs=3.5,
                          discharge_coulombs=4.5, skipped_seconds=skipped)
    out = {(spec.full_name, labels): value for spec, labels, value in energy_samples(totals)}
    assert out == {
        ("jkbms_charge_energy_joules_total", ()): 1.5,
        ("jkbms_discharge_energy_joules_total", ()): 2.5,
        ("jkbms_charge_coulombs_total", ()): 3.5,
        ("jkbms_discharge_coulombs_total", ()): 4.5,
        **{("jkbms_energy_skipped_seconds_total", (reason,)): skipped[reason]
           for reason in SKIP_REASONS},
    }


def test_every_reading_family_of_a_full_reading_is_exported_once_with_its_value() -> None:
    out = reading_to_json(hand_made_reading())
    assert out["cycle_capacity_coulombs_total"] == 3600.0 * 40
    assert out["runtime_seconds_total"] == 86400.0
    assert out["nominal_capacity_coulombs"] == 3600.0 * 100
    assert out["actual_capacity_coulombs"] == 3600.0 * 98
    assert out["remaining_capacity_coulombs"] == 3600.0 * 55
    counts: dict = {}
    for spec, labels, _ in reading_samples(hand_made_reading()):
        counts[(spec.full_name, labels)] = counts.get((spec.full_name, labels), 0) + 1
    assert set(counts.values()) == {1}  # no sample twice


def test_active_alarm_names() -> None:
    from jkbms_exporter.metrics import active_alarm_names

    assert active_alarm_names(hand_made_reading()) == ["cell_undervoltage"]
    assert active_alarm_names(hand_made_reading(alarms={"a": False})) == []
