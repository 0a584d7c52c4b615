"""The protection scenarios (protection-cycling, fast-knee, draining) and the simulated
chemistries do what their descriptions promise: the alert rules' end-to-end test and the
demos rely on it. A fake clock makes each one deterministic."""

from __future__ import annotations

import subprocess
import sys
from typing import List

import pytest

from jkbms_exporter.reading import Reading
from jkbms_exporter.sim.bms import SimulatedBms
from jkbms_exporter.sim.scenarios import scenario_help


def readings(scenario: str, seconds: float, step: float = 15.0, chemistry: str = "lifepo4"
             ) -> List[Reading]:
    now = [0.0]
    bms = SimulatedBms(scenario=scenario, seed=3, clock=lambda: now[0], chemistry=chemistry)
    out = []
    while now[0] < seconds:
        now[0] += step
        out.append(bms.reading())
    return out


def setting(reading: Reading, name: str) -> float:
    (value,) = [s.value for s in reading.settings if s.name == name]
    return value


@pytest.mark.parametrize("chemistry, protection", [("lifepo4", 3.65), ("nmc", 4.20), ("lto", 2.85)])
def test_protection_cycling_trips_every_3_minutes_for_an_hour(chemistry: str, protection: float) -> None:
    series = readings("protection-cycling", 3600.0, step=5.0, chemistry=chemistry)
    assert setting(series[0], "cell_overvoltage_protection") == protection
    charge = [r.charge_mosfet_on for r in series]
    trips = [i for i in range(1, len(series)) if charge[i - 1] and not charge[i]]
    assert len(trips) == 20 and (trips[0] + 1) * 5 <= 25  # the first trip after 20 s
    assert all(b - a == 36 for a, b in zip(trips, trips[1:]))  # 180 s apart
    for trip in trips:
        before = series[trip - 1]
        # the runner cell 05 is the highest, within 50 mV of the protection just before
        assert max(before.cell_voltages_volts) == before.cell_voltages_volts[4] >= protection - 0.05
        assert before.current_amperes > 0
        off = series[trip: trip + 18]  # 90 s off, the alarm bit for the first 30 s
        assert not any(r.charge_mosfet_on for r in off) and series[trip + 18].charge_mosfet_on
        assert [r.alarms["cell_overvoltage"] for r in off[:7]] == [True] * 6 + [False]


def test_fast_knee_collapses_in_90_s_under_load_then_the_bms_cuts_the_discharge() -> None:
    series = readings("fast-knee", 300.0, step=5.0)
    cell3 = [r.cell_voltages_volts[2] for r in series]
    assert cell3[4] == 3.10 and min(cell3) == 2.49  # from 3.10 V (30 s) to 2.49 V (120 s)
    assert all(r.current_amperes == -40 and r.discharge_mosfet_on for r in series[:24])
    cut = series[24:]  # after the BMS's 5 s delay
    assert not any(r.discharge_mosfet_on for r in cut) and all(r.current_amperes == 0 for r in cut)
    assert [r.alarms["cell_undervoltage"] for r in cut[:7]] == [True] * 6 + [False]
    assert {r.state_of_charge_ratio for r in series} == {0.60}  # the drifted, false SOC


def test_draining_discharges_steadily_from_20_percent() -> None:
    series = readings("draining", 1800.0, step=60.0)
    assert {r.current_amperes for r in series} == {-60.0}
    soc = [r.state_of_charge_ratio for r in series]
    assert soc[0] == 0.20 and 0.09 <= soc[-1] <= 0.11  # 30 Ah of 280 in 30 minutes
    assert soc == sorted(soc, reverse=True)


@pytest.mark.parametrize("chemistry, low, high", [("lifepo4", 3.2, 3.4), ("nmc", 3.7, 3.9),
                                                  ("lto", 2.25, 2.45)])
def test_each_chemistry_has_its_own_voltages_and_settings(chemistry: str, low: float, high: float) -> None:
    (reading,) = readings("normal", 10.0, step=10.0, chemistry=chemistry)
    assert low < min(reading.cell_voltages_volts) and max(reading.cell_voltages_volts) < high
    uvp = setting(reading, "cell_undervoltage_protection")
    ovp = setting(reading, "cell_overvoltage_protection")
    assert uvp < min(reading.cell_voltages_volts) and max(reading.cell_voltages_volts) < ovp - 0.05
    assert setting(reading, "pack_overvoltage_protection") == round(16 * ovp, 2)


def test_new_scenarios_and_chemistries_are_offered_and_checked() -> None:
    for name in ("protection-cycling", "fast-knee", "draining"):
        assert name in scenario_help()
    with pytest.raises(ValueError, match="unknown chemistry 'lipo'"):
        SimulatedBms(chemistry="lipo")
    result = subprocess.run([sys.executable, "-m", "jkbms_exporter", "serve", "--simulate",
                             "--simulate.chemistry", "lipo"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2 and "--simulate.chemistry" in result.stderr
    assert "Traceback" not in result.stderr
