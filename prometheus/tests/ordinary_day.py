#!/usr/bin/env python3
"""Write a promtool unit test of 24 hours of an ordinary solar day, which must raise no
alert at all (issue 10: "quiet on an ordinary day").

    .venv/bin/python prometheus/tests/ordinary_day.py OUT.test.yml [--rules PATH] [--hours N]

(It uses the simulator's LiFePO4 voltage curve, so it needs the installed package.)

Two 16S LiFePO4 packs of 280 Ah, one minute between samples, starting at midnight:

* 00:00-07:00 night load ~10 A with short kettle/pump spikes, 07:00-09:00 morning load:
  the state of charge bottoms out near 19 %;
* 09:00-15:00 solar charge, up to 60 A at noon, to full around 14:00, then absorption with
  the current tapering and the balancer pulling the cells together (top balancing);
* 15:00-18:00 resting full; 18:00-24:00 evening load ~16 A.

Cell spread 5-25 mV (widest near empty and while charging hard), temperatures 15-35 °C.
Pack "house" is a JK-B (4E57) with its settings reported; pack "garage" a JK-PB that
reports its remaining capacity but no settings (chemistry lifepo4 from the configuration).

The test asserts that no ALERTS series (pending or firing) exists over the whole day.
"""

from __future__ import annotations

import argparse
import math
import random
from typing import Dict, List, Sequence, Tuple

from jkbms_exporter.sim.chemistry import CHEMISTRIES

CELLS = 16
CAPACITY_AH = 280.0
CELL_RESISTANCE = 0.001  # ohms per cell incl. busbars: the sag / rise with current
ABSORPTION_VOLTS = 3.45  # per cell, the charger's constant-voltage stage
LABELS = 'instance="pi:10025",job="jkbms",pack="%s"'

#: Settings of pack "house" as a JK-B BMS reports them.
SETTINGS = (
    ("volts", "cell_overvoltage_protection", 3.65),
    ("volts", "cell_undervoltage_protection", 2.50),
    ("amperes", "charge_overcurrent_protection", 100),
    ("amperes", "discharge_overcurrent_protection", 150),
    ("celsius", "charge_overtemperature_protection", 55),
    ("celsius", "discharge_overtemperature_protection", 60),
    ("celsius", "charge_undertemperature_protection", 0),
    ("celsius", "discharge_undertemperature_protection", -20),
    ("celsius", "mosfet_overtemperature_protection", 80),
)


#: The simulator's LiFePO4 open-circuit voltage curve.
ocv = CHEMISTRIES["lifepo4"].open_circuit_volts


def load_amperes(minute: int, rng: random.Random) -> float:
    """Household load (positive amperes drawn from the bank)."""
    hour = minute / 60.0
    base = 10.0 if hour < 7 else 15.0 if hour < 9 else 12.0 if hour < 18 else 16.0
    # a few minutes of kettle / pump every couple of hours, at most 4 minutes long
    spike = 45.0 if minute % 137 < 3 else 0.0
    return base + spike + rng.uniform(-1.0, 1.0)


def solar_amperes(minute: int) -> float:
    """What the panels could deliver (before the charger limits it)."""
    hour = minute / 60.0
    if not 8.0 <= hour <= 16.5:
        return 0.0
    return 80.0 * math.sin(math.pi * (hour - 8.0) / 8.5)


def simulate(seed: int, minutes: int) -> Dict[str, List[float]]:
    """One pack's day: current, SOC and every cell voltage, one value a minute."""
    rng = random.Random(seed)
    raw = [rng.uniform(-1.0, 1.0) for _ in range(CELLS)]  # the cells' own character
    offsets = [2.0 * (o - min(raw)) / (max(raw) - min(raw)) - 1.0 for o in raw]  # -1 … +1
    soc = 0.55
    series: Dict[str, List[float]] = {"current": [], "soc": [], "balancing": []}
    for cell in range(CELLS):
        series["cell%02d" % (cell + 1)] = []
    for minute in range(minutes + 1):
        load = load_amperes(minute, rng)
        solar = solar_amperes(minute)
        current = solar - load  # + charging
        if current > 0 and soc >= 0.995:
            # absorption: the charger holds the voltage, the current tapers to a float trickle
            current = min(current, 3.0 + 20.0 * (1.0 - soc) / 0.005)
        current = min(current, 60.0)
        soc = min(1.0, max(0.0, soc + current / 60.0 / CAPACITY_AH))
        # spread: ~5 mV resting in mid charge, wider near empty and under a large current,
        # and pulled together by the balancer once full
        width = 0.003 + 0.005 * abs(soc - 0.55) / 0.45 + 0.00006 * abs(current)
        balancing = soc >= 0.99 and current > 0
        if soc >= 0.99:
            width = min(width, 0.003)
        mean = ocv(soc) + current * CELL_RESISTANCE
        if current > 0:
            mean = min(mean, ABSORPTION_VOLTS)
        for cell in range(CELLS):
            volts = mean + width * offsets[cell] + rng.uniform(-0.0005, 0.0005)
            series["cell%02d" % (cell + 1)].append(round(volts, 3))
        series["current"].append(round(current, 2))
        series["soc"].append(round(soc, 3))
        series["balancing"].append(1.0 if balancing else 0.0)
    return series


def battery_celsius(minute: int) -> float:
    """15 °C before dawn to 35 °C mid-afternoon."""
    return round(25.0 - 10.0 * math.cos(2 * math.pi * (minute / 60.0 - 3.0) / 24.0), 1)


def values(numbers: Sequence[float]) -> str:
    return " ".join("%g" % n for n in numbers)


def series_lines(pack: str, day: Dict[str, List[float]], reports_settings: bool) -> List[Tuple[str, str]]:
    labels = LABELS % pack
    samples = len(day["soc"])
    ones = [1.0] * samples
    out = [("jkbms_up{%s}" % labels, values(ones)),
           ('jkbms_chemistry_info{%s,chemistry="lifepo4"}' % labels, values(ones)),
           ("jkbms_current_amperes{%s}" % labels, values(day["current"])),
           ("jkbms_state_of_charge_ratio{%s}" % labels, values(day["soc"])),
           ("jkbms_balancing{%s}" % labels, values(day["balancing"])),
           ("jkbms_nominal_capacity_coulombs{%s}" % labels, values([CAPACITY_AH * 3600] * samples)),
           ("jkbms_state_of_health_ratio{%s}" % labels, values([0.97] * samples)),
           ("jkbms_runtime_seconds_total{%s}" % labels,
            values([7.2e6 + 60 * m for m in range(samples)])),
           ('jkbms_read_errors_total{%s,reason="timeout"}' % labels, values([0.0] * samples))]
    cells = [day["cell%02d" % c] for c in range(1, CELLS + 1)]
    out.append(("jkbms_pack_voltage_volts{%s}" % labels,
                values([round(sum(v), 2) for v in zip(*cells)])))
    for index, volts in enumerate(cells, start=1):
        out.append(('jkbms_cell_voltage_volts{%s,cell="%02d"}' % (labels, index), values(volts)))
    battery = [battery_celsius(m) for m in range(samples)]
    for sensor, offset in (("battery1", 0.0), ("battery2", -1.0)):
        out.append(('jkbms_temperature_celsius{%s,sensor="%s"}' % (labels, sensor),
                    values([b + offset for b in battery])))
    out.append(('jkbms_temperature_celsius{%s,sensor="mosfet"}' % labels,
                values([round(b + 0.1 * abs(i), 1) for b, i in zip(battery, day["current"])])))
    for mosfet in ("charge", "discharge"):
        out.append(('jkbms_mosfet_on{%s,mosfet="%s"}' % (labels, mosfet), values(ones)))
    for alarm in ("cell_overvoltage", "cell_undervoltage", "low_capacity", "cell_voltage_difference"):
        out.append(('jkbms_alarm{%s,alarm="%s"}' % (labels, alarm), values([0.0] * samples)))
    if reports_settings:
        for switch in ("charge", "discharge", "balancer"):
            out.append(('jkbms_switch_enabled{%s,switch="%s"}' % (labels, switch), values(ones)))
        for unit, name, value in SETTINGS:
            out.append(('jkbms_setting_%s{%s,setting="%s"}' % (unit, labels, name),
                        values([value] * samples)))
    else:
        remaining = [round(s * CAPACITY_AH * 3600) for s in day["soc"]]
        out.append(("jkbms_remaining_capacity_coulombs{%s}" % labels, values(remaining)))
    return out


def build(rules: str, hours: int = 24) -> Tuple[str, Dict[str, Dict[str, List[float]]]]:
    days = {"house": simulate(1, hours * 60), "garage": simulate(2, hours * 60)}
    lines = [
        "# GENERATED by prometheus/tests/ordinary_day.py at test time; do not edit or commit.",
        "rule_files:",
        "  - %s" % rules,
        "evaluation_interval: 1m",
        "group_eval_order: [jkbms.recording, jkbms.alerts]",
        "tests:",
        "  - name: %d hours of an ordinary solar day raise no alert" % hours,
        "    interval: 1m",
        "    input_series:",
        "      - series: 'up{instance=\"pi:10025\",job=\"jkbms\"}'",
        "        values: '%s'" % values([1.0] * (hours * 60 + 1)),
    ]
    for pack, settings in (("house", True), ("garage", False)):
        for name, text in series_lines(pack, days[pack], settings):
            lines.append("      - series: '%s'" % name)
            lines.append("        values: '%s'" % text)
    lines += [
        "    promql_expr_test:",
        "      # no alert, pending or firing, at any minute of the day",
        "      - expr: count_over_time(ALERTS[%dh])" % hours,
        "        eval_time: %dh" % hours,
        "        exp_samples: []",
        "      # the time-to-empty estimate exists through the night (so the silence is not",
        "      # an absence of data)",
        "      - expr: count(pack:jkbms_time_to_empty_seconds)",
        "        eval_time: 5h",
        "        exp_samples:",
        "          - labels: '{}'",
        "            value: 2",
    ]
    return "\n".join(lines) + "\n", days


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="where to write the promtool test file")
    parser.add_argument("--hours", type=int, default=24, help="length of the day (default 24)")
    parser.add_argument("--rules", default="../rules/jkbms.rules.yml",
                        help="rule file path as the test file should name it")
    args = parser.parse_args()
    text, _ = build(args.rules, args.hours)
    with open(args.out, "w", encoding="utf-8") as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
