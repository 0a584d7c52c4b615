"""reading_from_fields: the decoders' quick way to build a Reading is the constructor's twin."""

from __future__ import annotations

import dataclasses

import pytest

from jkbms_exporter.protocols import jk_serial
from jkbms_exporter.reading import Reading, reading_from_fields
from jkbms_exporter.sim.bms import SimulatedBms


def _fields(reading: Reading) -> dict:
    return {item.name: getattr(reading, item.name) for item in dataclasses.fields(Reading)}


def _decoded() -> Reading:
    return jk_serial.decode_reply(SimulatedBms(cells=16, seed=3).handle(
        jk_serial.read_all_request()))


def test_the_same_reading_as_the_constructor_builds():
    values = _fields(_decoded())
    quick, slow = reading_from_fields(**values), Reading(**values)
    assert quick == slow
    assert repr(quick) == repr(slow)
    assert _fields(quick) == values
    assert quick.cells == 16 and quick.power_watts == slow.power_watts


def test_defaults_are_filled_in_and_the_result_stays_frozen():
    values = _fields(_decoded())
    for name in ("cell_resistances_ohms", "balance_current_amperes",
                 "remaining_capacity_coulombs", "state_of_health_ratio"):
        del values[name]
    quick = reading_from_fields(**values)
    assert quick == Reading(**values)
    assert quick.state_of_health_ratio is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.pack_voltage_volts = 1.0  # type: ignore[misc]
    assert dataclasses.replace(quick, current_amperes=-1.5).current_amperes == -1.5


def test_a_missing_or_unknown_field_is_refused_as_by_the_constructor():
    values = _fields(_decoded())
    missing = dict(values)
    del missing["alarms"]
    with pytest.raises(TypeError, match="alarms"):
        reading_from_fields(**missing)
    with pytest.raises(TypeError):
        Reading(**missing)
    with pytest.raises(TypeError, match="voltage"):
        reading_from_fields(voltage=1.0, **missing)  # one unknown for one missing
    without_extra = dict(values)
    del without_extra["extra"]  # the decoders always say what extra holds
    with pytest.raises(TypeError, match="extra"):
        reading_from_fields(**without_extra)
