"""The allowed range of every number a user can give (flags and configuration fields).

One table, one check: a value that is not a finite number inside its range (``inf``,
``nan``, ``-1``, ``1e308``, a 20-digit baud rate) is refused with one line that names the
range, never passed on to crash or freeze something later. The README's flag and field
tables list the same ranges.

Every command's flags use these, so this module stays light: no dataclasses, no typing,
argparse only when a flag is parsed.
"""

from __future__ import annotations

import math

from .defaults import MAX_GAP_RANGE

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is for type checkers only: it costs every command start-up time
    from typing import Any, Callable, Union

    Number = Union[int, float]


class Range:
    """``low``–``high`` (inclusive unless ``low_open``) of an ``int`` or ``float`` value.

    Immutable, compared and hashed by value (a plain class: a dataclass would make every
    command load ``dataclasses`` just to define its flags).
    """

    __slots__ = ("kind", "low", "high", "low_open", "unit")

    kind: type
    low: Number
    high: Number
    #: True: ``low`` itself is not allowed (a timeout must be greater than 0).
    low_open: bool
    unit: str

    def __init__(self, kind: type, low: Number, high: Number, low_open: bool = False,
                 unit: str = "") -> None:
        for name, value in zip(self.__slots__, (kind, low, high, low_open, unit)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a Range cannot be changed")

    def _fields(self) -> tuple:
        return (self.kind, self.low, self.high, self.low_open, self.unit)

    def __eq__(self, other: object) -> bool:
        return other.__class__ is Range and self._fields() == other._fields()  # type: ignore

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return "Range(kind=%s, low=%r, high=%r, low_open=%r, unit=%r)" % (
            self.kind.__name__, self.low, self.high, self.low_open, self.unit)

    def describe(self) -> str:
        unit = " " + self.unit if self.unit else ""
        if self.kind is int:
            return "a whole number from %d to %d%s" % (self.low, self.high, unit)
        if self.low_open:
            return "a number greater than %g and at most %g%s" % (self.low, self.high, unit)
        return "a number from %g to %g%s" % (self.low, self.high, unit)

    def check(self, value: Any) -> Number:
        """``value`` (a number or its text) as ``kind``; ValueError naming the range."""
        number = self._convert(value)
        below = number <= self.low if self.low_open else number < self.low
        if below or number > self.high:
            raise ValueError("%s is out of range: %s" % (_show(value), self.describe()))
        return number

    def _convert(self, value: Any) -> Number:
        expected = "expected %s" % self.describe()
        if isinstance(value, bool):
            raise ValueError("%s is not a number: %s" % (_show(value), expected))
        if isinstance(value, str):
            text = value.strip()
            try:
                number: Number = int(text, 10)
            except ValueError:
                try:  # 9600.0 and 1e3 are whole numbers too; 1.5 is refused below
                    number = float(text)
                except ValueError:
                    raise ValueError("%s is not a number: %s"
                                     % (_show(value), expected)) from None
        elif isinstance(value, (int, float)):
            number = value
        else:
            raise ValueError("%s is not a number: %s" % (_show(value), expected))
        if isinstance(number, float) and not math.isfinite(number):
            raise ValueError("%s is not a finite number: %s" % (_show(value), expected))
        if self.kind is int:
            if isinstance(number, float):
                if number != int(number):
                    raise ValueError("%s is not a whole number: %s" % (_show(value), expected))
                number = int(number)
        else:
            number = float(number)
        return number


def _show(value: Any) -> str:
    """The value as the user wrote it, quoted if text, cut to 40 characters."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > 40:
        text = text[:40] + "…"
    return repr(text) if isinstance(value, str) else text


def flag_type(allowed: Range) -> Callable[[str], Number]:
    """An argparse ``type`` refusing anything outside ``allowed`` (inf, nan, 1e308, -1…)."""
    def parse(text: str) -> Number:
        try:
            return allowed.check(text)
        except ValueError as error:
            import argparse  # loaded already: only a command line parses flags

            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = allowed.kind.__name__
    return parse


# The ranges. Each is wide enough for every real setup and narrow enough that nothing
# downstream overflows, freezes or waits for hours.

#: Serial line speed: JK BMSs talk at 9600 or 115200 Bd; USB adapters reach 4 MBd.
BAUD = Range(int, 300, 4_000_000, unit="Bd")
#: One reply (or, for BLE, the first frame after connecting).
READ_TIMEOUT = Range(float, 0.0, 300.0, low_open=True, unit="s")
#: A whole scrape; Prometheus allows at most its scrape interval.
SCRAPE_TIMEOUT = Range(float, 0.0, 600.0, low_open=True, unit="s")
#: Reuse a reading younger than this; 0 reads on every scrape.
MIN_INTERVAL = Range(float, 0.0, 3600.0, unit="s")
#: JK-PB DIP switch addresses that answer requests (0 is the bus master).
PB_ADDRESS = Range(int, 1, 15)
#: Packs on one simulated JK-PB bus (one per answering address).
PB_PACKS = Range(int, 1, 15, unit="packs")
#: Cells in series a JK BMS measures.
CELLS = Range(int, 1, 32, unit="cells")
#: Simulator: seconds before the simulated BMS answers.
LATENCY = Range(float, 0.0, 60.0, unit="s")
#: Simulator: TCP clients served at once.
MAX_CLIENTS = Range(int, 1, 1024, unit="clients")
#: ``scan --ble``: seconds to listen for advertisements.
BLE_SCAN_TIMEOUT = Range(float, 0.0, 600.0, low_open=True, unit="s")
#: Readings further apart are not integrated into the energy counters (energy.py).
ENERGY_MAX_GAP = Range(float, *MAX_GAP_RANGE, unit="s")
