"""``jkbms-exporter scan URL``: find what answers on a serial port or gateway.

Tries the usual baud rates; at each it first listens for a bus master (then it only
listens), else it tries the 4E57 read-all and the JK-PB trigger at DIP addresses 1–15.
Only read requests are sent. What it found is printed as a ``--config.file`` snippet.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

from .protocols import jk_pb
from .errors import FrameError, ReadTimeout
from .pack import JkSerialProtocol
from .links.pb_bus import BUS_GAP, PbBus
from .links.serial import SerialTransport

#: 115200 is the default of every JK protocol; JK-PB UART1 protocol "013" runs at 9600.
SCAN_BAUD_RATES = (115200, 9600)
SCAN_REPLY_TIMEOUT = 0.3
SCAN_LISTEN = 1.0


@dataclass(frozen=True)
class Found:
    protocol: str
    baudrate: int
    address: Optional[int] = None
    model: str = ""
    serial_number: str = ""
    cells: int = 0
    listen_only: bool = False

    def describe(self) -> str:
        what = ", ".join(part for part in (
            self.model, "serial %s" % self.serial_number if self.serial_number else "",
            "%d cells" % self.cells if self.cells else "") if part)
        where = "" if self.address is None else " at DIP address %d" % self.address
        return "%s%s, %d Bd%s%s" % (self.protocol, where, self.baudrate,
                                    ": " + what if what else "",
                                    " (heard while a master polls: listen-only)"
                                    if self.listen_only else "")


def scan_port(url: str, progress: Callable[[str], None],
              baud_rates: Sequence[int] = SCAN_BAUD_RATES,
              reply_timeout: float = SCAN_REPLY_TIMEOUT,
              addresses: Sequence[int] = range(1, 16)) -> List[Found]:
    """Everything that answers on ``url``; stops at the first baud rate that finds any."""
    for baud in baud_rates:
        transport = SerialTransport(url, baudrate=baud, min_gap=BUS_GAP, backoff_initial=0.0)
        try:
            with transport.lock:
                found = _scan_at(transport, baud, progress, reply_timeout, addresses)
        finally:
            transport.close()
        if found:
            return found
    return []


def _scan_at(transport: SerialTransport, baud: int, progress: Callable[[str], None],
             reply_timeout: float, addresses: Sequence[int]) -> List[Found]:
    bus = PbBus(transport, reply_timeout=reply_timeout)
    for address in addresses:
        bus.register(address)
    progress("%d Bd: listening %.0f s for a bus master ..." % (baud, SCAN_LISTEN))
    evidence = bus.listen_for(SCAN_LISTEN)
    if evidence.bus_in_use:
        heard = sorted(a for a in bus.heard if a != jk_pb.MASTER_ADDRESS)
        progress("%d Bd: another master polls this bus; packs heard: %s"
                 % (baud, ", ".join(map(str, heard)) or "none yet"))
        return [_from_bus(bus, a, baud, listen_only=True) for a in heard]

    progress("%d Bd: JK-B 4E57 read-all ..." % baud)
    try:
        reading, _ = JkSerialProtocol(retries=0).read(transport, time.monotonic() + 1.0)
    except (ReadTimeout, FrameError) as error:
        progress("%d Bd: no 4E57 answer (%s)" % (baud, _short(error)))
    else:
        progress("%d Bd: found a JK-B BMS, %s, %d cells" % (baud, reading.device.model or "?",
                                                           reading.cells))
        return [Found("jk-serial", baud, None, reading.device.model, "", reading.cells)]

    found: List[Found] = []
    for address in addresses:
        progress("%d Bd: JK-PB address %d ..." % (baud, address))
        try:
            bus.read(address, time.monotonic() + 3 * reply_timeout + 1.0)
        except (ReadTimeout, FrameError) as error:
            if not isinstance(error, ReadTimeout):
                progress("%d Bd: address %d: %s" % (baud, address, _short(error)))
            continue
        result = _from_bus(bus, address, baud)
        progress("%d Bd: found %s" % (baud, result.describe()))
        found.append(result)
    return found


def _from_bus(bus: PbBus, address: int, baud: int, listen_only: bool = False) -> Found:
    state = bus.state(address)
    device = state.latest.device_info
    cells = state.latest.cell_info
    try:
        reading = state.latest.reading(jk_pb.PROTOCOL_NAME) if cells is not None else None
    except FrameError:
        reading = None
    return Found(
        "jk-pb", baud, address,
        model=str(device.values.get("model", "")) if device is not None else "",
        serial_number=reading.device.serial_number if reading is not None else "",
        cells=reading.cells if reading is not None else 0,
        listen_only=listen_only,
    )


def _short(error: BaseException) -> str:
    text = str(error)
    return text if len(text) < 80 else text[:77] + "..."


def config_snippet(url: str, found: Sequence[Found]) -> str:
    """A ready-to-paste ``--config.file`` snippet for what :func:`scan_port` found."""
    if not found:
        return ("# nothing answered on %s at %s Bd.\n# Check the wiring (TX/RX crossed, GND), "
                "the port protocol in the JK app,\n# and that no other program uses the port.\n"
                % (url, "/".join(str(b) for b in SCAN_BAUD_RATES)))
    lines = ["# found by `jkbms-exporter scan %s`" % url, "packs:"]
    for index, item in enumerate(found, start=1):
        name = "pack%d" % (item.address if item.address is not None else index)
        lines.append("  # %s" % item.describe())
        lines.append("  - name: %s" % name)
        lines.append("    url: %s" % url)
        lines.append("    protocol: %s" % item.protocol)
        if item.address is not None:
            lines.append("    address: %d" % item.address)
        if item.baudrate != SCAN_BAUD_RATES[0]:
            lines.append("    baud: %d" % item.baudrate)
    return "\n".join(lines) + "\n"

