"""Energy and charge counters of one pack, integrated from consecutive good readings.

An :class:`EnergyIntegrator` is fed ``(timestamp, volts, amperes)`` samples on a monotonic
clock (seconds) and adds the trapezoid between each sample and the one before it:

* ``∫ V·I dt`` to the charge energy while the current is positive, to the discharge energy
  while it is negative (an interval whose current changes sign is split where the straight
  line between the two currents crosses zero);
* ``∫ |I| dt`` to the charge or discharge coulombs the same way.

An interval is *not* integrated, and its length is added to ``skipped[reason]`` instead,
when:

* ``failed_read`` — a read of the pack failed since the previous sample;
* ``implausible`` — either end is a reading no BMS can mean: current beyond twice the BMS's
  own over-current protection setting (when the pack reports one), pack voltage outside
  cells × [1.5 V, 4.5 V], or a value that is not a number;
* ``gap`` — the two samples are more than ``max_gap`` seconds apart (default 5 min).

Everything starts at 0 (nothing is stored anywhere): Prometheus' ``increase()`` handles an
exporter restart like any counter reset. The integrator is thread-safe: a stream (BLE, a
JK-PB bus heard listen-only) may feed it while a scrape reads its totals.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Mapping, Optional, Tuple

from .defaults import DEFAULT_MAX_GAP, MAX_GAP_RANGE
from .reading import Reading

# Also re-exported from .defaults: DEFAULT_MAX_GAP, two samples further apart than this are
# not integrated (reason ``gap``); MAX_GAP_RANGE, the range ``energy_max_gap`` may be
# configured in (seconds).
#: Why an interval was not integrated (every reason is exported from the start).
SKIP_REASONS = ("gap", "failed_read", "implausible")
#: Plausible pack voltage per cell in series: LTO cells go down to ~1.5 V, NMC up to 4.2 V.
CELL_VOLTS_RANGE = (1.5, 4.5)
#: A current beyond this multiple of the BMS's own over-current protection is a bad reading.
OVERCURRENT_FACTOR = 2.0
#: Samples this close after the previous one are the same record read again (a scrape of
#: a listen-only pack may return the record the previous scrape returned).
SAME_RECORD = 0.005

_CHARGE_LIMIT = "charge_overcurrent_protection"
_DISCHARGE_LIMIT = "discharge_overcurrent_protection"


@dataclass(frozen=True)
class Sample:
    """One reading as the integrator sees it (current positive while charging)."""

    at: float
    volts: float
    amperes: float


@dataclass(frozen=True)
class CurrentLimits:
    """The largest plausible charge / discharge current in amperes (``None``: not known)."""

    charge: Optional[float] = None
    discharge: Optional[float] = None


@dataclass(frozen=True)
class EnergyTotals:
    charge_joules: float
    discharge_joules: float
    charge_coulombs: float
    discharge_coulombs: float
    #: Seconds not integrated, for every reason of :data:`SKIP_REASONS`.
    skipped_seconds: Mapping[str, float]


def current_limits(reading: Reading) -> CurrentLimits:
    """Twice the BMS's over-current protection settings, where it reports them (>0)."""

    def limit(name: str) -> Optional[float]:
        setting = reading.setting(name)
        if setting is None or not math.isfinite(setting.value) or setting.value <= 0:
            return None
        return OVERCURRENT_FACTOR * setting.value

    return CurrentLimits(limit(_CHARGE_LIMIT), limit(_DISCHARGE_LIMIT))


def is_plausible(volts: float, amperes: float, cells: int, limits: CurrentLimits) -> bool:
    """Whether a reading may be integrated (see the module doc)."""
    if not (math.isfinite(volts) and math.isfinite(amperes)) or cells <= 0:
        return False
    if not CELL_VOLTS_RANGE[0] * cells <= volts <= CELL_VOLTS_RANGE[1] * cells:
        return False
    limit = limits.charge if amperes > 0 else limits.discharge
    return limit is None or abs(amperes) <= limit


def trapezoid(first: Sample, second: Sample) -> Tuple[float, float, float, float]:
    """``(charge J, discharge J, charge C, discharge C)`` between two samples.

    Voltage and current are taken as straight lines between the samples; an interval whose
    current changes sign is split where the current line crosses zero."""
    dt = second.at - first.at
    p1, p2 = first.volts * first.amperes, second.volts * second.amperes
    i1, i2 = first.amperes, second.amperes
    if i1 * i2 < 0:  # the current crosses zero at fraction f of the interval
        f = i1 / (i1 - i2)
        parts = ((f * dt, p1, i1), ((1 - f) * dt, p2, i2))  # each part: trapezoid to 0
        halves = [(seconds * power / 2, seconds * abs(amps) / 2, amps > 0)
                  for seconds, power, amps in parts]
    else:
        halves = [((p1 + p2) * dt / 2, (abs(i1) + abs(i2)) * dt / 2, i1 + i2 > 0)]
    charge_j = discharge_j = charge_c = discharge_c = 0.0
    for joules, coulombs, charging in halves:
        if charging:
            charge_j += joules
            charge_c += coulombs
        else:
            discharge_j += -joules
            discharge_c += coulombs
    return charge_j, discharge_j, charge_c, discharge_c


class EnergyIntegrator:
    """The counters of one pack (see the module doc)."""

    def __init__(self, max_gap: float = DEFAULT_MAX_GAP) -> None:
        if not (math.isfinite(max_gap) and max_gap > 0):
            raise ValueError("max_gap must be a finite number of seconds > 0, got %r"
                             % (max_gap,))
        self.max_gap = max_gap
        self._lock = threading.Lock()
        self._charge_j = self._discharge_j = self._charge_c = self._discharge_c = 0.0
        self._skipped = dict.fromkeys(SKIP_REASONS, 0.0)
        #: Time up to which every second is either integrated or skipped.
        self._cursor: Optional[float] = None
        #: The previous sample, if it may start the next trapezoid.
        self._previous: Optional[Sample] = None
        #: Why the interval after the cursor cannot be integrated, if it cannot.
        self._broken: Optional[str] = None
        #: Over-current limits last reported by the BMS (a reading may lack its settings).
        self._limits = CurrentLimits()

    def add_reading(self, at: float, reading: Reading) -> None:
        """Feed a decoded reading taken at ``at`` (its settings update the current limits)."""
        limits = current_limits(reading)
        with self._lock:
            self._limits = CurrentLimits(
                limits.charge if limits.charge is not None else self._limits.charge,
                limits.discharge if limits.discharge is not None else self._limits.discharge)
        self.add(at, reading.pack_voltage_volts, reading.current_amperes, reading.cells)

    def add(self, at: float, volts: float, amperes: float, cells: int) -> None:
        """Feed one sample (current positive while charging) taken at monotonic time ``at``."""
        with self._lock:
            if self._cursor is not None and at < self._cursor + SAME_RECORD:
                return  # the same record again, or out of order: nothing new
            sample = Sample(at, volts, amperes)
            plausible = is_plausible(volts, amperes, cells, self._limits)
            previous = self._previous
            if self._cursor is not None:
                reason = self._broken or (None if plausible else "implausible")
                if reason is None and previous is not None and at - previous.at > self.max_gap:
                    reason = "gap"
                if reason is not None or previous is None:
                    self._skipped[reason or "implausible"] += at - self._cursor
                else:
                    self._add(trapezoid(previous, sample))
            self._cursor = at
            self._previous = sample if plausible else None
            self._broken = None if plausible else "implausible"

    def fail(self, at: float) -> None:
        """A read failed at ``at``: the interval it lies in is not integrated."""
        with self._lock:
            if self._cursor is None:
                return  # nothing read yet: no interval to lose
            if at > self._cursor:  # until the failure: lost to whatever broke it already
                self._skipped[self._broken or "failed_read"] += at - self._cursor
                self._cursor = at
            self._broken = "failed_read"
            self._previous = None

    def _add(self, amounts: Tuple[float, float, float, float]) -> None:
        self._charge_j += amounts[0]
        self._discharge_j += amounts[1]
        self._charge_c += amounts[2]
        self._discharge_c += amounts[3]

    def totals(self) -> EnergyTotals:
        with self._lock:
            return EnergyTotals(self._charge_j, self._discharge_j, self._charge_c,
                                self._discharge_c, dict(self._skipped))
