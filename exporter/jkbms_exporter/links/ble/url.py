"""``ble://`` and ``ble+sim://`` URLs (spec ``jk-02-frames.md`` §2 "BLE transport").

    ble://C8:47:80:31:F6:43                  by address (stable; what ``scan --ble`` prints)
    ble://JK-B2A24S20P                       by advertised name (%-encode odd characters)
    ble://C8:47:80:31:F6:43?generation=JK02_32S&max_age=30
    ble+sim://demo?cells=16&scenario=normal  a simulated BMS on the fake radio (no bleak)
"""

from __future__ import annotations

import math
import re
import urllib.parse
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

# SCHEME, SIM_SCHEME and is_ble_url live in the package itself: config asks every URL
# whether it is one, and a serial read then loads none of this module.
from . import SCHEME, SIM_SCHEME, is_ble_url  # noqa: F401  (re-exported)

DEFAULT_MAX_AGE = 30.0

_MAC = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}")
#: macOS (CoreBluetooth) has no addresses, only per-host UUIDs.
_CB_UUID = re.compile(r"[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}")

# ----------------------------------------------------------------------------- URLs


@dataclass(frozen=True)
class BleTarget:
    """A parsed ``ble://`` (or ``ble+sim://``) URL."""

    url: str
    #: Bluetooth address (upper case) or CoreBluetooth UUID; ``None`` when found by name.
    address: Optional[str]
    name: Optional[str]
    #: Configured frame layout; ``None``: from the device-info frame.
    generation: Optional[str] = None
    max_age: float = DEFAULT_MAX_AGE
    simulated: bool = False
    #: ``ble+sim://`` only: cells, scenario, interval of the simulated BMS.
    sim_options: Tuple[Tuple[str, str], ...] = ()

    @property
    def describe(self) -> str:
        return self.address if self.address else "name %r" % self.name


_KEYS: Tuple[str, ...] = ("generation", "max_age")
_SIM_KEYS: Tuple[str, ...] = ("generation", "max_age", "cells", "scenario", "interval")


def parse_ble_url(url: str) -> BleTarget:
    """``ble://ADDRESS-or-NAME[?generation=…&max_age=…]`` → :class:`BleTarget`.

    Raises ``ValueError`` with a one-line reason.
    """
    lowered = url.lower()
    if lowered.startswith(SIM_SCHEME):
        scheme, simulated, keys = SIM_SCHEME, True, _SIM_KEYS
    elif lowered.startswith(SCHEME):
        scheme, simulated, keys = SCHEME, False, _KEYS
    else:
        raise ValueError("not a %s URL" % SCHEME)
    rest = url[len(scheme):]
    where, _, query = rest.partition("?")
    if where.endswith("/"):
        where = where[:-1]
    where = urllib.parse.unquote(where).strip()
    if not where:
        raise ValueError("no device: write ble://AA:BB:CC:DD:EE:FF or ble://<device name>")
    if any(ord(ch) < 32 for ch in where):
        raise ValueError("control characters in the device name")
    values: Dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if key not in keys:
            raise ValueError("unknown option %r (known: %s)" % (key, ", ".join(keys)))
        if key in values:
            raise ValueError("option %r is given twice" % key)
        values[key] = value
    generation = values.get("generation") or None
    if generation is not None:
        generation = generation.upper()
        from ...protocols import jk02  # here: is_ble_url must stay cheap to import

        if generation not in jk02.GENERATIONS:
            raise ValueError("generation=%s: choose from %s"
                             % (values["generation"], ", ".join(jk02.GENERATIONS)))
    max_age = DEFAULT_MAX_AGE
    if "max_age" in values:
        try:
            max_age = float(values["max_age"])
        except ValueError:
            raise ValueError("max_age=%s is not a number of seconds" % values["max_age"]) from None
        if not math.isfinite(max_age) or max_age <= 0:
            raise ValueError("max_age=%s: must be more than 0 seconds" % values["max_age"])
    address: Optional[str] = None
    name: Optional[str] = None
    if _MAC.fullmatch(where) or _CB_UUID.fullmatch(where):
        address = where.upper()
    else:
        name = where
    sim = tuple(sorted((k, v) for k, v in values.items() if k in ("cells", "scenario", "interval")))
    return BleTarget(url, address, name, generation, max_age, simulated, sim)
