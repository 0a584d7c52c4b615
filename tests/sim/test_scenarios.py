"""The simulator's scenarios do what their one-line descriptions promise (the alert rules
and the end-to-end tests rely on it). A fake clock makes each one deterministic."""

from __future__ import annotations

from typing import List

import pytest

from jkbms_exporter.reading import Reading
from jkbms_exporter.sim.bms import SimulatedBms
from jkbms_exporter.sim.scenarios import SCENARIOS, scenario_help


def readings(scenario: str, seconds: float = 60.0, step: float = 5.0,
             capacity_ah: float = 280.0) -> List[Reading]:
    now = [0.0]
    bms = SimulatedBms(scenario=scenario, capacity_ah=capacity_ah, seed=7, clock=lambda: now[0])
    out = []
    while now[0] < seconds:
        now[0] += step
        out.append(bms.reading())
    return out


def test_normal_is_a_healthy_pack_that_charges_and_discharges() -> None:
    series = readings("normal", seconds=600.0, step=10.0)
    currents = [r.current_amperes for r in series]
    assert max(currents) > 15 and min(currents) < -10
    for r in series:
        assert not any(r.alarms.values()) and r.charge_mosfet_on and r.discharge_mosfet_on
        assert 3.0 < min(r.cell_voltages_volts) and max(r.cell_voltages_volts) < 3.6
        assert max(r.cell_voltages_volts) - min(r.cell_voltages_volts) < 0.03
        assert 15 <= r.temperatures_celsius["battery1"] <= 30
    small = readings("normal", seconds=300.0, step=10.0, capacity_ah=10.0)
    assert small[-1].state_of_charge_ratio > small[0].state_of_charge_ratio + 0.05  # it moves


def test_cell_overvoltage_drives_cell_05_past_3_65_while_charging() -> None:
    series = readings("cell-overvoltage")
    last = series[-1]
    assert last.cell_voltages_volts[4] > 3.65 and last.current_amperes > 0
    others = last.cell_voltages_volts[:4] + last.cell_voltages_volts[5:]
    assert max(others) < 3.55
    assert [r.cell_voltages_volts[4] for r in series] == sorted(r.cell_voltages_volts[4] for r in series)
    assert {r.state_of_charge_ratio for r in series} == {0.99}


def test_cell_undervoltage_drives_cell_03_below_2_50_while_discharging() -> None:
    last = readings("cell-undervoltage")[-1]
    assert last.cell_voltages_volts[2] < 2.50 and last.current_amperes < 0
    assert min(last.cell_voltages_volts[:2] + last.cell_voltages_volts[3:]) > 2.8
    assert last.state_of_charge_ratio == 0.04


def test_imbalance_spreads_the_cells_by_about_150_mv() -> None:
    for r in readings("imbalance"):
        spread = max(r.cell_voltages_volts) - min(r.cell_voltages_volts)
        assert 0.14 <= spread <= 0.16
        assert r.cell_voltages_volts[0] == max(r.cell_voltages_volts)


def test_cold_charge_charges_at_10_a_with_batteries_at_minus_5() -> None:
    for r in readings("cold-charge"):
        assert r.current_amperes == 10.0
        assert r.temperatures_celsius["battery1"] == r.temperatures_celsius["battery2"] == -5.0


def test_alarms_sets_two_alarm_bits_and_cuts_charging() -> None:
    series = readings("alarms", seconds=600.0, step=20.0)
    for r in series:
        assert {name for name, on in r.alarms.items() if on} == {"cell_overvoltage",
                                                               "battery_undertemperature"}
        assert not r.charge_mosfet_on and r.current_amperes <= 0
    assert readings("normal")[0].alarm_bitmask == 0


def test_every_scenario_is_in_the_help_and_refused_when_unknown() -> None:
    text = scenario_help()
    assert all(name + ": " in text for name in SCENARIOS)
    with pytest.raises(ValueError, match="meltdown"):
        SimulatedBms(scenario="meltdown")
