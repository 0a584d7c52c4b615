"""Cell chemistries of the simulated BMS (``--simulate.chemistry``): the open-circuit voltage
curve, and the protection settings such a pack's BMS would be set to.

The voltages are typical cell-maker figures, not any one datasheet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple


@dataclass(frozen=True)
class Chemistry:
    #: (state of charge, open-circuit cell voltage), ascending.
    ocv: Tuple[Tuple[float, float], ...]
    #: Per-cell voltage settings of the BMS.
    overvoltage: float
    overvoltage_recovery: float
    undervoltage: float
    undervoltage_recovery: float
    balance_start: float
    #: Lowest temperature at which the BMS allows charging, °C.
    charge_undertemperature: float

    def open_circuit_volts(self, soc: float) -> float:
        soc = min(1.0, max(0.0, soc))
        for (s0, v0), (s1, v1) in zip(self.ocv, self.ocv[1:]):
            if soc <= s1:
                return v0 + (v1 - v0) * (soc - s0) / (s1 - s0)
        return self.ocv[-1][1]


CHEMISTRIES: Dict[str, Chemistry] = {
    "lifepo4": Chemistry(
        ocv=((0.00, 2.80), (0.05, 3.10), (0.10, 3.20), (0.30, 3.27), (0.60, 3.30),
             (0.90, 3.33), (0.97, 3.40), (1.00, 3.45)),
        overvoltage=3.65, overvoltage_recovery=3.55, undervoltage=2.50,
        undervoltage_recovery=2.80, balance_start=3.40,
        # a common field mistake the cold-charge alert exists for: -20 °C instead of 0 °C
        charge_undertemperature=-20.0),
    "nmc": Chemistry(
        ocv=((0.00, 3.00), (0.05, 3.30), (0.10, 3.45), (0.30, 3.62), (0.60, 3.80),
             (0.90, 4.05), (1.00, 4.15)),
        overvoltage=4.20, overvoltage_recovery=4.10, undervoltage=3.00,
        undervoltage_recovery=3.20, balance_start=4.00, charge_undertemperature=0.0),
    "lto": Chemistry(
        ocv=((0.00, 1.80), (0.05, 2.05), (0.10, 2.15), (0.30, 2.25), (0.60, 2.35),
             (0.90, 2.50), (1.00, 2.65)),
        overvoltage=2.85, overvoltage_recovery=2.75, undervoltage=1.80,
        undervoltage_recovery=2.00, balance_start=2.50, charge_undertemperature=-30.0),
}
