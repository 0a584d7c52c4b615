"""The energy integrator against hand-computed integrals, and its gap and plausibility rules."""

from __future__ import annotations

import dataclasses
import math

import pytest

from jkbms_exporter.energy import (
    CurrentLimits,
    EnergyIntegrator,
    current_limits,
    is_plausible,
)
from jkbms_exporter.reading import Setting
from jkbms_exporter.sim.bms import SimulatedBms

CELLS = 16
NO_LIMITS = CurrentLimits()


def fed(*samples: tuple, max_gap: float = 300.0) -> EnergyIntegrator:
    """An integrator fed ``(at, volts, amperes)`` samples, or ``(at, "fail")`` failures."""
    integrator = EnergyIntegrator(max_gap)
    for sample in samples:
        if sample[1] == "fail":
            integrator.fail(sample[0])
        else:
            integrator.add(sample[0], sample[1], sample[2], CELLS)
    return integrator


def test_constant_charge_current() -> None:
    totals = fed((0, 52.0, 10.0), (10, 52.0, 10.0), (20, 52.0, 10.0)).totals()
    assert totals.charge_joules == pytest.approx(52 * 10 * 20)
    assert totals.charge_coulombs == pytest.approx(200)
    assert totals.discharge_joules == totals.discharge_coulombs == 0
    assert set(totals.skipped_seconds.values()) == {0}


def test_trapezoid_of_varying_voltage_and_current() -> None:
    totals = fed((100, 50.0, -10.0), (110, 48.0, -20.0)).totals()
    # (50*10 + 48*20) / 2 * 10 s, (10 + 20) / 2 * 10 s
    assert totals.discharge_joules == pytest.approx(7300)
    assert totals.discharge_coulombs == pytest.approx(150)
    assert totals.charge_joules == totals.charge_coulombs == 0


def test_an_interval_whose_current_changes_sign_is_split_at_zero() -> None:
    # -10 A to +30 A over 20 s: zero after 5 s; 5 s of discharge, 15 s of charge
    totals = fed((0, 50.0, -10.0), (20, 50.0, 30.0)).totals()
    assert totals.discharge_coulombs == pytest.approx(10 * 5 / 2)
    assert totals.charge_coulombs == pytest.approx(30 * 15 / 2)
    assert totals.discharge_joules == pytest.approx(50 * 10 * 5 / 2)
    assert totals.charge_joules == pytest.approx(50 * 30 * 15 / 2)


def test_idle_pack_adds_nothing_and_counters_never_shrink() -> None:
    integrator = EnergyIntegrator()
    before = integrator.totals()
    for at, amps in enumerate((0.0, 0.0, 5.0, -5.0, 0.0, -0.5, 2.0)):
        integrator.add(at * 10.0, 53.0, amps, CELLS)
        after = integrator.totals()
        for name in ("charge_joules", "discharge_joules", "charge_coulombs",
                     "discharge_coulombs"):
            assert getattr(after, name) >= getattr(before, name)
        before = after
    assert before.charge_coulombs == pytest.approx(25 + 25 / 2 + 2 * 10 * (2 / 2.5) / 2)


def test_a_gap_longer_than_the_bound_is_skipped_not_integrated() -> None:
    totals = fed((0, 52.0, 10.0), (301, 52.0, 10.0), (311, 52.0, 10.0)).totals()
    assert totals.skipped_seconds["gap"] == pytest.approx(301)
    assert totals.charge_coulombs == pytest.approx(100)  # only 301 s → 311 s
    # the bound is the pack's: 400 s allowed
    assert fed((0, 52.0, 10.0), (301, 52.0, 10.0), max_gap=400).totals().charge_coulombs == \
        pytest.approx(3010)


def test_never_across_a_failed_read() -> None:
    totals = fed((0, 52.0, 10.0), (15, "fail"), (30, "fail"), (45, 52.0, 10.0),
                 (60, 52.0, 10.0)).totals()
    assert totals.skipped_seconds["failed_read"] == pytest.approx(45)
    assert totals.charge_coulombs == pytest.approx(150)  # 45 s → 60 s only


def test_failures_before_the_first_reading_lose_no_time() -> None:
    totals = fed((0, "fail"), (10, 52.0, 10.0), (20, 52.0, 10.0)).totals()
    assert totals.skipped_seconds["failed_read"] == 0
    assert totals.charge_coulombs == pytest.approx(100)


def test_an_implausible_reading_is_never_integrated() -> None:
    integrator = EnergyIntegrator()
    integrator.add(0, 52.0, 10.0, CELLS)
    integrator.add(10, 52.0, 10.0, CELLS)
    integrator.add(20, 1.0, 10.0, CELLS)  # 16 cells at 0.06 V: a garbled value
    integrator.add(30, 52.0, 10.0, CELLS)
    integrator.add(40, 52.0, 10.0, CELLS)
    totals = integrator.totals()
    assert totals.skipped_seconds["implausible"] == pytest.approx(20)
    assert totals.charge_coulombs == pytest.approx(200)


@pytest.mark.parametrize("volts, amperes, plausible", [
    (16 * 1.5, 5.0, True), (16 * 4.5, 5.0, True),
    (16 * 1.5 - 0.01, 5.0, False), (16 * 4.5 + 0.01, 5.0, False),
    (52.0, 200.0, True), (52.0, 200.1, False),  # charge protection 100 A
    (52.0, -300.0, True), (52.0, -300.1, False),  # discharge protection 150 A
    (math.nan, 1.0, False), (52.0, math.inf, False), (52.0, math.nan, False),
])
def test_plausibility_uses_the_bms_own_settings(volts: float, amperes: float,
                                                plausible: bool) -> None:
    reading = SimulatedBms(cells=16, seed=1).reading()  # its settings: 100 A / 150 A
    limits = current_limits(reading)
    assert limits == CurrentLimits(charge=200.0, discharge=300.0)
    assert is_plausible(volts, amperes, 16, limits) is plausible


def test_without_overcurrent_settings_only_the_voltage_is_checked() -> None:
    assert is_plausible(52.0, 5000.0, 16, NO_LIMITS)
    assert not is_plausible(52.0, 5.0, 0, NO_LIMITS)
    # a setting of 0 means "not set", not "no current allowed"
    reading = SimulatedBms(cells=16, seed=1).reading()
    zeroed = tuple(Setting(s.name, s.unit, 0.0) if s.unit == "amperes" else s
                   for s in reading.settings)
    assert current_limits(dataclasses.replace(reading, settings=zeroed)) == NO_LIMITS


def test_limits_outlive_a_reading_without_settings() -> None:
    reading = SimulatedBms(cells=16, seed=1).reading()
    integrator = EnergyIntegrator()
    integrator.add_reading(0, reading)
    bare = dataclasses.replace(reading, settings=(), current_amperes=250.0)
    integrator.add_reading(10, bare)  # 250 A > 2 x 100 A learnt from the first reading
    assert integrator.totals().skipped_seconds["implausible"] == pytest.approx(10)


def test_the_same_record_twice_and_out_of_order_samples_add_nothing() -> None:
    totals = fed((0, 52.0, 10.0), (10, 52.0, 10.0), (10.001, 52.0, 10.0), (5, 52.0, 10.0),
                 (20, 52.0, 10.0)).totals()
    assert totals.charge_coulombs == pytest.approx(200)
    assert sum(totals.skipped_seconds.values()) == 0


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_max_gap_must_be_a_positive_finite_number(bad: float) -> None:
    with pytest.raises(ValueError):
        EnergyIntegrator(bad)
