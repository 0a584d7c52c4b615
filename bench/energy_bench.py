"""Energy counters against the exact integral of a simulated solar day (not part of the suite).

    .venv/bin/python bench/energy_bench.py [--hours 24] [--seed 7] [--json]

A 16S LiFePO4 pack of 280 Ah lives one day: a night of base load with a fridge compressor
cycling, a sunny morning and afternoon with passing clouds, an evening load, and load spikes
(kettle, microwave, pump, up to ~140 A) at random times. The model is evaluated on a 50 ms
grid: its current, state of charge and pack voltage (open-circuit voltage of the state of
charge plus the IR drop, per cell) are the truth, and their Riemann sums over the grid are
the exact integrals ∫V·I dt and ∫|I| dt, split by the sign of the current.

The exporter's :class:`~jkbms_exporter.energy.EnergyIntegrator` (the object behind the
``jkbms_*_energy_joules_total`` and ``jkbms_*_coulombs_total`` counters) is then fed what
it would get, on a simulated clock (a day takes a minute or two, not a day):

* Prometheus scraping a 4E57 pack every 15 s or 60 s: each reading encoded as the BMS's
  reply and decoded by the real codec (0.01 A, 0.01 V, 1 mV resolution);
* a Bluetooth stream of one JK02 cell-info record per second (the real frame encoder and
  decoder; mA and mV resolution), settings frame included;
* 15 s scrapes of which 1 % fail (the integrator does not integrate across them and counts
  the lost time in ``jkbms_energy_skipped_seconds_total{reason="failed_read"}``).

It prints each counter against the truth, with the error in percent.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import json
import math
import random
import sys
import time
from array import array
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "exporter"))

from jkbms_exporter.energy import EnergyIntegrator, EnergyTotals  # noqa: E402
from jkbms_exporter.protocols import jk02, jk_serial  # noqa: E402
from jkbms_exporter.reading import Reading  # noqa: E402
# the simulator's own open-circuit voltage curve of a LiFePO4 cell
from jkbms_exporter.sim.bms import SimulatedBms, _ocv as ocv  # noqa: E402

CELLS = 16
CAPACITY_AH = 280.0
#: Per cell, cell plus its share of busbars and leads.
CELL_RESISTANCE_OHMS = 0.001
GRID = 0.05  # seconds
HOUR = 3600.0
#: The charger stops at this state of charge (the pack is full: the solar current falls to 0).
FULL = 0.99


def pulse(t: float, start: float, length: float, ramp: float) -> float:
    """0 … 1 … 0: a trapezoidal pulse with linear ramps (a load or a cloud never switches
    in zero time for the pack: inverters soft-start, clouds pass)."""
    if t <= start or t >= start + length:
        return 0.0
    return min(1.0, (t - start) / ramp, (start + length - t) / ramp)


@dataclasses.dataclass(frozen=True)
class SolarDay:
    """The current a pack sees over one day (positive while charging)."""

    seed: int = 7
    solar_peak: float = 60.0
    base_load: float = 5.0
    evening_load: float = 14.0

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        slot = 23 * HOUR / 16  # one spike per slot: they never overlap
        spikes = [(0.5 * HOUR + (i + rng.uniform(0, 0.7)) * slot, rng.uniform(20, 300),
                   rng.uniform(35, 130)) for i in range(16)]
        clouds = sorted((rng.uniform(8, 16) * HOUR, rng.uniform(120, 900),
                         rng.uniform(0.4, 0.85)) for _ in range(12))
        object.__setattr__(self, "spikes", spikes)
        object.__setattr__(self, "clouds", clouds)

    def solar(self, t: float) -> float:
        sunrise, sunset = 6.5 * HOUR, 17.5 * HOUR
        if not sunrise < t < sunset:
            return 0.0
        sun = self.solar_peak * math.sin(math.pi * (t - sunrise) / (sunset - sunrise)) ** 1.5
        for start, length, depth in self.clouds:  # type: ignore[attr-defined]
            sun *= 1 - depth * pulse(t, start, length, 20.0)
        return sun

    def load(self, t: float) -> float:
        amps = self.base_load
        amps += 5.0 * pulse(t % (45 * 60), 0, 15 * 60, 2.0)  # fridge: 15 min of every 45
        amps += self.evening_load * pulse(t, 18 * HOUR, 4 * HOUR, 60.0)
        for start, length, peak in self.spikes:  # type: ignore[attr-defined]
            if start > t:
                break
            amps += peak * pulse(t, start, length, 1.0)
        return amps


@dataclasses.dataclass
class Truth:
    """The model on its grid, and the exact integrals."""

    amperes: array
    volts: array
    soc: array
    charge_joules: float
    discharge_joules: float
    charge_coulombs: float
    discharge_coulombs: float

    def at(self, t: float) -> Tuple[float, float, float]:
        index = min(len(self.amperes) - 1, int(round(t / GRID)))
        return self.amperes[index], self.volts[index], self.soc[index]


def simulate(day: SolarDay, seconds: float, soc: float = 0.55) -> Truth:
    amperes, volts, socs = array("d"), array("d"), array("d")
    sums = [0.0, 0.0, 0.0, 0.0]
    steps = int(round(seconds / GRID))
    for step in range(steps + 1):
        t = step * GRID
        current = day.solar(t) - day.load(t)
        if soc >= FULL and current > 0:
            current = 0.0  # full: the charge controller holds
        voltage = CELLS * (ocv(soc) + current * CELL_RESISTANCE_OHMS)
        amperes.append(current)
        volts.append(voltage)
        socs.append(soc)
        if step < steps:  # Riemann sum over [t, t + GRID)
            power = voltage * current * GRID
            if current > 0:
                sums[0] += power
                sums[2] += current * GRID
            else:
                sums[1] -= power
                sums[3] -= current * GRID
            soc += current * GRID / 3600.0 / CAPACITY_AH
    return Truth(amperes, volts, socs, *sums)


class Readings:
    """What the BMS reports at a moment of the day (the simulator's reading for everything
    but the cells, the current and the state of charge)."""

    def __init__(self, truth: Truth, seed: int) -> None:
        self.truth = truth
        self.base = SimulatedBms(cells=CELLS, capacity_ah=CAPACITY_AH, seed=seed).reading()
        rng = random.Random(seed)
        self.offsets = [rng.uniform(-0.004, 0.004) for _ in range(CELLS)]
        self.offsets = [o - sum(self.offsets) / CELLS for o in self.offsets]  # sum to 0
        self.noise = random.Random(seed + 1)

    def at(self, t: float) -> Reading:
        amperes, volts, soc = self.truth.at(t)
        cell = volts / CELLS
        cells = tuple(round(cell + o + self.noise.uniform(-0.001, 0.001), 3)
                      for o in self.offsets)
        return dataclasses.replace(self.base, cell_voltages_volts=cells,
                                   pack_voltage_volts=round(sum(cells), 3),
                                   current_amperes=round(amperes, 3),
                                   state_of_charge_ratio=round(soc, 2))


def via_4e57(reading: Reading) -> Reading:
    return jk_serial.decode_reply(jk_serial.encode_reading(reading))


class ViaBle:
    """A cell-info frame per record, decoded with the latest settings frame."""

    def __init__(self, base: Reading) -> None:
        self.settings = jk02.encode_settings(base, jk02.JK02_32S, 0)
        self.counter = 0

    def __call__(self, reading: Reading) -> Reading:
        self.counter = (self.counter + 1) & 0xFF
        frame = jk02.encode_cell_info(reading, jk02.JK02_32S, self.counter)
        return jk02.decode_reading(frame, jk02.JK02_32S, settings=self.settings)


def run(readings: Readings, seconds: float, interval: float, phase: float,
        decode: Callable[[Reading], Reading], failures: float = 0.0,
        seed: int = 0) -> Tuple[EnergyTotals, int, float]:
    """Feed the integrator every ``interval`` s from ``phase``; ``failures``: share of reads
    that fail. Returns the totals, the number of reads and the wall time taken."""
    integrator = EnergyIntegrator()
    rng = random.Random(seed)
    started = time.perf_counter()
    count = 0
    t = phase
    while t <= seconds:
        count += 1
        if failures and rng.random() < failures:
            integrator.fail(t)
        else:
            integrator.add_reading(t, decode(readings.at(t)))
        t += interval
    return integrator.totals(), count, time.perf_counter() - started


def error(measured: float, exact: float) -> Optional[float]:
    return None if exact == 0 else 100.0 * (measured - exact) / exact


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=24.0, help="length of the day (24)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    seconds = args.hours * HOUR

    started = time.perf_counter()
    truth = simulate(SolarDay(args.seed), seconds)
    model_seconds = time.perf_counter() - started
    readings = Readings(truth, args.seed)
    modes = [
        ("4E57 scrapes every 15 s", 15.0, 7.0, via_4e57, 0.0),
        ("4E57 scrapes every 60 s", 60.0, 7.0, via_4e57, 0.0),
        ("BLE records every 1 s", 1.0, 0.0, ViaBle(readings.base), 0.0),
        ("15 s scrapes, 1 % failed", 15.0, 7.0, via_4e57, 0.01),
    ]
    names = ("charge_joules", "discharge_joules", "charge_coulombs", "discharge_coulombs")
    results: Dict[str, Dict[str, object]] = {
        "exact": {name: getattr(truth, name) for name in names}}
    for label, interval, phase, decode, failures in modes:
        totals, count, wall = run(readings, seconds, interval, phase, decode, failures, args.seed)
        row: Dict[str, object] = {name: getattr(totals, name) for name in names}
        row.update({name + "_error_percent": error(getattr(totals, name), getattr(truth, name))
                    for name in names})
        row.update(reads=count, wall_seconds=round(wall, 1),
                   skipped_seconds=dict(totals.skipped_seconds))
        results[label] = row
    results["exact"]["model_wall_seconds"] = round(model_seconds, 1)

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print("Simulated %g h, seed %d: %.0f %% → %.0f %% state of charge, min %.1f A, max %.1f A"
          % (args.hours, args.seed, 100 * truth.soc[0], 100 * truth.soc[-1], min(truth.amperes),
             max(truth.amperes)))
    print("%-26s %10s %10s %10s %10s  %s" % ("", "in kWh", "out kWh", "in Ah", "out Ah",
                                           "skipped s, wall time"))
    exact = results["exact"]
    print("%-26s %10.3f %10.3f %10.2f %10.2f" % (
        "exact integral", exact["charge_joules"] / 3.6e6,  # type: ignore[operator]
        exact["discharge_joules"] / 3.6e6, exact["charge_coulombs"] / 3600,  # type: ignore
        exact["discharge_coulombs"] / 3600))  # type: ignore[operator]
    for label, *_ in modes:
        row = results[label]
        print("%-26s %10.3f %10.3f %10.2f %10.2f  %s, %.0f s" % (
            label, row["charge_joules"] / 3.6e6, row["discharge_joules"] / 3.6e6,  # type: ignore
            row["charge_coulombs"] / 3600, row["discharge_coulombs"] / 3600,  # type: ignore
            ", ".join("%s %.0f" % kv for kv in row["skipped_seconds"].items()  # type: ignore
                      if kv[1]) or "none", row["wall_seconds"]))
        print("%-26s %s" % ("  error", " ".join(
            "%10s" % ("-" if row[name + "_error_percent"] is None
                      else "%+.3f%%" % row[name + "_error_percent"]) for name in names)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
