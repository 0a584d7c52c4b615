"""``scan --ble``: nearby JK boards by their advertisements, and a ready-to-paste config
snippet of what was heard.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from ...errors import TransportError
from .url import SCHEME
from .backend import (
    BleakMissingError, BleBackend, default_backend, _describe, JK_MANUFACTURER_ID,
    normalize_uuid, SERVICE_UUID,
)


#: Default names of JK boards (``JK-B2A24S20P``, ``JK_PB2A16S15P``, ``JK_B2A8S20P``); the
#: name is user-settable, so it is only a hint.
JK_NAME = re.compile(r"JK[-_]", re.IGNORECASE)

# ----------------------------------------------------------------------------- scanning


@dataclass(frozen=True)
class ScanResult:
    name: str
    address: str
    rssi: Optional[int]
    #: Why it is taken for a JK BMS: ``manufacturer-id``, ``name``, or ``ffe0-only``.
    evidence: str


def jk_evidence(name: str, service_uuids: Iterable[str],
                manufacturer_data: Mapping[int, bytes]) -> Optional[str]:
    """Why an advertisement looks like a JK board, or ``None``.

    JK modules advertise service FFE0 and manufacturer data under company ID 0x0B65
    (``88 A0`` + address); their name is user-settable (default ``JK-…``/``JK_…``, some
    boards use the serial number). FFE0 alone is common (HM-10 clones, other BMS brands).
    """
    has_ffe0 = any(normalize_uuid(u) == SERVICE_UUID for u in service_uuids or ())
    if JK_MANUFACTURER_ID in (manufacturer_data or {}):
        return "manufacturer-id"
    if has_ffe0 and JK_NAME.match(name or ""):
        return "name"
    if has_ffe0:
        return "ffe0-only"
    return None


def scan_ble(timeout: float, progress: Callable[[str], None] = lambda _: None, *,
             backend: Optional[BleBackend] = None, include_ffe0: bool = False) -> List[ScanResult]:
    """Nearby JK BMSs, strongest signal first.

    Listens for ``timeout`` seconds and calls ``progress`` with a line for each new JK
    board (and at start and end). ``include_ffe0`` also lists other FFE0 advertisers.
    A BMS that is connected (to this exporter or the JK app) does not advertise.
    Raises :class:`BleakMissingError` without bleak.
    """
    backend = backend if backend is not None else default_backend()
    found: Dict[str, ScanResult] = {}
    accepted = ("manufacturer-id", "name", "ffe0-only") if include_ffe0 else ("manufacturer-id",
                                                                              "name")

    def on_advertisement(device: Any, advertisement: Any) -> None:
        address = str(getattr(device, "address", "") or "")
        name = (getattr(advertisement, "local_name", None) or getattr(device, "name", None)
                or "")
        evidence = jk_evidence(name, getattr(advertisement, "service_uuids", None) or (),
                               getattr(advertisement, "manufacturer_data", None) or {})
        if not address or evidence is None or evidence not in accepted:
            return
        rssi: Optional[int] = getattr(advertisement, "rssi", None)
        previous = found.get(address)
        if previous is not None:
            name = name or previous.name
            rssi = rssi if rssi is not None else previous.rssi
        found[address] = ScanResult(name, address, rssi, evidence)
        if previous is None:
            progress("found %s %s%s" % (address, name or "(no name)",
                                        "" if rssi is None else ", RSSI %d dBm" % rssi))

    async def run() -> None:
        await backend.scan(timeout, on_advertisement)  # type: ignore[union-attr]

    progress("scanning for JK BMSs over Bluetooth for %g s…" % timeout)
    try:
        asyncio.run(run())
    except BleakMissingError:
        raise
    except Exception as error:
        raise TransportError("Bluetooth scan failed: %s" % _describe(error)) from error
    results = sorted(found.values(), key=lambda r: (-(r.rssi if r.rssi is not None else -999),
                                                    r.address))
    progress("%d JK BMS found" % len(results))
    return results


_PACK_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


def _pack_name(result: ScanResult, taken: Dict[str, int]) -> str:
    base = _PACK_NAME_CHARS.sub("-", result.name).strip("-.").lower()
    if not base or not re.match(r"[a-z0-9_]", base):
        base = "jk-" + result.address.replace(":", "")[-4:].lower()
    base = base[:56]
    count = taken.get(base, 0) + 1
    taken[base] = count
    return base if count == 1 else "%s-%d" % (base, count)


def format_scan_results(results: Sequence[ScanResult]) -> str:
    """A ready-to-paste ``--config.file`` snippet (``packs:`` with ``name`` and ``url``)."""
    if not results:
        return ("# no JK BMS heard. Is it in range and powered, and is the JK app (or another\n"
                "# exporter) disconnected from it? A connected BMS does not advertise.\n")
    lines = ["# %d JK BMS found by `jkbms-exporter scan --ble`, strongest signal first."
             % len(results),
             "# Rename the packs as you like; the address is what identifies the BMS.",
             "packs:"]
    taken: Dict[str, int] = {}
    for result in results:
        comment = "%s, RSSI %s dBm" % (result.name or "no name",
                                       "?" if result.rssi is None else result.rssi)
        if result.evidence == "ffe0-only":
            comment += ", FFE0 only: may not be a JK BMS"
        lines.append("  - name: %s    # %s" % (_pack_name(result, taken),
                                               comment.replace("\n", " ")))
        lines.append('    url: "%s%s"' % (SCHEME, result.address))
    return "\n".join(lines) + "\n"
