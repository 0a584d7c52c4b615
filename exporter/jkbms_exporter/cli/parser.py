"""The command line's flags, and how a usage error is reported.

Start-up cost matters here: every command, ``--help`` and ``--version`` go through this
module. It imports argparse and modules with no heavy imports of their own (``ranges``,
``defaults``); each command's flags are added only when that command is parsed (or its
``--help`` printed), so ``read`` never loads what only ``serve``'s or ``simulate``'s
flags name (the simulators' scenario tables, the collector, the web server).
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__, ranges
from ..defaults import (DEFAULT_BAUDRATE, DEFAULT_PROTOCOL, DEFAULT_READ_TIMEOUT,
                        DEFAULT_REPLY_TIMEOUT, GENERATIONS, LOG_FORMATS, LOG_LEVELS, PROTOCOLS)

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is for type checkers only: it costs every command start-up time
    from typing import Any, Callable, Optional, Sequence, Tuple

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: Name of the in-process simulated pack of ``serve --simulate``.
SIMULATED_PACK = "sim"


class UsageError(Exception):
    """Bad command-line input: reported in one line with exit status 2."""


def _terminal_columns() -> int:
    """What ``shutil.get_terminal_size().columns`` says (``COLUMNS``, then the terminal,
    else 80), without importing shutil and the compression modules it loads."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, with argparse's default width found without shutil (argparse
    makes a formatter to check every flag it is given)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) < 4 and kwargs.get("width") is None:
            kwargs["width"] = _terminal_columns() - 2
        super().__init__(*args, **kwargs)


class _Parser(argparse.ArgumentParser):
    #: Adds this (sub)command's flags; called once, before the first parse or help text.
    add_flags: Optional[Callable[[argparse.ArgumentParser], None]] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def _complete(self) -> None:
        add_flags, self.add_flags = self.add_flags, None
        if add_flags is not None:
            add_flags(self)

    def parse_known_args(self, args: Optional[Sequence[str]] = None,  # type: ignore[override]
                         namespace: Optional[argparse.Namespace] = None,
                         ) -> Tuple[argparse.Namespace, list]:
        self._complete()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._complete()
        return super().format_usage()

    def format_help(self) -> str:
        self._complete()
        return super().format_help()

    def error(self, message: str) -> None:  # type: ignore[override]  # one line, not usage + message
        # main() prints the program name: name only the command here ("serve: …")
        command = self.prog.partition(" ")[2]
        raise UsageError("%s%s (see --help)" % (command + ": " if command else "", message))


def _literal(text: str) -> str:
    """Help text taken from elsewhere (scenario descriptions say "SOC 5 %"): argparse
    %-formats help strings, so a lone % would crash ``--help``."""
    return text.replace("%", "%%")


#: argparse ``type`` of a numeric flag: its range (ranges.py) refuses inf, nan, 1e308, -1…
_in = ranges.flag_type


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="jkbms-exporter",
        description="Prometheus exporter for JK (JiKong) battery management systems.",
    )
    parser.add_argument("--version", action="version", version="jkbms-exporter " + __version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, help_text, description, add_flags in COMMAND_FLAGS:
        sub = commands.add_parser(name, help=help_text, description=description)
        sub.add_flags = add_flags  # type: ignore[attr-defined]
    return parser


def _logging_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--log.level", dest="log_level", choices=LOG_LEVELS, default="info",
                     help="log level (default: info)")
    sub.add_argument("--log.format", dest="log_format", choices=LOG_FORMATS, default="logfmt",
                     help="log line format (default: logfmt)")


def _link_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--baud", type=_in(ranges.BAUD), default=DEFAULT_BAUDRATE,
                     help="baud rate of serial devices, 300-4000000 (default: %d)"
                     % DEFAULT_BAUDRATE)
    sub.add_argument("--read-timeout", type=_in(ranges.READ_TIMEOUT), default=None,
                     help="seconds to wait for one complete reply, above 0 and at most 300 "
                     "(default: %g for jk-serial, %g for jk-pb)"
                     % (DEFAULT_READ_TIMEOUT, DEFAULT_REPLY_TIMEOUT))


def _serve_flags(serve: argparse.ArgumentParser) -> None:
    from ..collector import DEFAULT_MIN_INTERVAL, DEFAULT_SCRAPE_TIMEOUT
    from ..defaults import DEFAULT_MAX_GAP
    from ..sim.chemistry import CHEMISTRIES
    from ..sim.faults import FAULTS, fault_help
    from ..sim.scenarios import SCENARIOS, scenario_help
    from ..web.address import DEFAULT_LISTEN_ADDRESS

    serve.add_argument("--device", action="append", default=[], metavar="[NAME=]URL",
                       help="a BMS to read: /dev/ttyUSB0, /dev/serial/by-id/…, "
                       "socket://HOST:PORT, rfc2217://HOST:PORT, spy://…; repeat for more "
                       "packs; NAME defaults to 1, 2, … in order")
    serve.add_argument("--config.file", dest="config_file", metavar="FILE",
                       help="YAML file listing the packs (see jkbms.example.yml); --device "
                       "flags add to it")
    serve.add_argument("--simulate", action="store_true",
                       help="also serve a built-in simulated BMS as pack '%s'" % SIMULATED_PACK)
    serve.add_argument("--simulate.scenario", dest="simulate_scenario", default="normal",
                       choices=sorted(SCENARIOS), metavar="NAME",
                       help=_literal("scenario of the simulated BMS: " + scenario_help()))
    serve.add_argument("--simulate.chemistry", dest="simulate_chemistry", default="lifepo4",
                       choices=sorted(CHEMISTRIES), help="cell chemistry of the simulated BMS "
                       "(its voltages and protection settings, and the pack's chemistry; "
                       "default: lifepo4)")
    serve.add_argument("--simulate.cells", dest="simulate_cells", type=_in(ranges.CELLS),
                       default=16, metavar="N", help="cells of the simulated BMS, 1-32 "
                       "(default: 16)")
    serve.add_argument("--simulate.protocol", dest="simulate_protocol", default="jk-serial",
                       choices=("jk-serial", "jk-pb"),
                       help="jk-serial: one JK-B BMS as pack 'sim' (default); jk-pb: a simulated "
                       "RS-485 bus of --simulate.packs JK-PB packs, sim1 … simN at DIP 1 … N")
    serve.add_argument("--simulate.packs", dest="simulate_packs", type=_in(ranges.PB_PACKS),
                       default=2, metavar="N", help="packs on the simulated JK-PB bus, 1-15 "
                       "(default: 2)")
    serve.add_argument("--simulate.fault", dest="simulate_fault", default="none",
                       choices=list(FAULTS), metavar="FAULT",
                       help=_literal("link fault of the simulated BMS: " + fault_help()))
    serve.add_argument("--web.listen-address", dest="listen_address",
                       default=DEFAULT_LISTEN_ADDRESS,
                       help="address to listen on (default: %s)" % DEFAULT_LISTEN_ADDRESS)
    serve.add_argument("--web.telemetry-path", dest="telemetry_path", default="/metrics",
                       help="path under which to expose metrics (default: /metrics)")
    serve.add_argument("--web.config.file", dest="web_config_file", metavar="FILE",
                       help="web config (exporter-toolkit format) enabling TLS, client "
                       "certificates and basic auth")
    serve.add_argument("--min-interval", type=_in(ranges.MIN_INTERVAL),
                       default=DEFAULT_MIN_INTERVAL,
                       help="reuse a reading younger than this many seconds, 0-3600 "
                       "(default: %g)" % DEFAULT_MIN_INTERVAL)
    serve.add_argument("--scrape-timeout", type=_in(ranges.SCRAPE_TIMEOUT),
                       default=DEFAULT_SCRAPE_TIMEOUT,
                       help="a scrape never takes longer than this many seconds, above 0 and "
                       "at most 600 (default: %g)" % DEFAULT_SCRAPE_TIMEOUT)
    serve.add_argument("--energy.max-gap", dest="energy_max_gap",
                       type=_in(ranges.ENERGY_MAX_GAP),
                       default=DEFAULT_MAX_GAP, metavar="SECONDS",
                       help="readings of a --device or simulated pack further apart are not "
                       "integrated into the energy counters, 1-86400 (default: %g; the "
                       "config file sets energy_max_gap)" % DEFAULT_MAX_GAP)
    _link_flags(serve)
    _logging_flags(serve)


def _read_flags(read: argparse.ArgumentParser) -> None:
    read.add_argument("url", metavar="URL", help="device path or URL, as for serve --device")
    read.add_argument("--json", action="store_true", help="print JSON instead of a table")
    read.add_argument("--raw", action="store_true", help="also print the reply frame in hex")
    read.add_argument("--protocol", choices=PROTOCOLS, default=DEFAULT_PROTOCOL,
                      help="jk-serial (4E57, the default), jk-pb (RS-485 bus) or auto")
    read.add_argument("--address", type=_in(ranges.PB_ADDRESS), metavar="N",
                      help="JK-PB DIP address 1-15 (with --protocol jk-pb or auto)")
    _link_flags(read)
    _logging_flags(read)


def _decode_flags(decode: argparse.ArgumentParser) -> None:
    decode.add_argument("hex", nargs="?", default="-", metavar="HEX",
                        help="the frame in hex, or - (default) to read it from standard input")
    decode.add_argument("--json", action="store_true", help="print JSON instead of a table")
    decode.add_argument("--no-verify", dest="verify", action="store_false",
                        help="decode even when the checksum does not match")
    decode.add_argument("--generation", type=str.upper, choices=GENERATIONS, metavar="GEN",
                        help="layout of 55 AA records when no device-info record is in the "
                        "capture: %s" % ", ".join(GENERATIONS))
    decode.add_argument("--address", type=_in(ranges.PB_ADDRESS), metavar="N",
                        help="JK-PB capture with several packs: the DIP address to decode")
    _logging_flags(decode)


def _scan_flags(scan: argparse.ArgumentParser) -> None:
    scan.add_argument("url", nargs="?", metavar="URL", help="device path or URL (not with --ble)")
    scan.add_argument("--ble", action="store_true",
                      help="list nearby JK BMSs over Bluetooth LE instead (needs the ble extra)")
    scan.add_argument("--timeout", type=_in(ranges.BLE_SCAN_TIMEOUT), default=10.0,
                      help="with --ble: seconds to listen for advertisements, above 0 and at "
                      "most 600 (default: 10)")
    _logging_flags(scan)


def _simulate_flags(simulate: argparse.ArgumentParser) -> None:
    from ..sim.chemistry import CHEMISTRIES
    from ..sim.faults import FAULTS, fault_help
    from ..sim.scenarios import SCENARIOS, scenario_help

    where = simulate.add_mutually_exclusive_group()
    where.add_argument("--pty", action="store_true",
                       help="serve on a pseudo-terminal and print its path (the default)")
    where.add_argument("--listen", metavar="HOST:PORT",
                       help="act as a transparent TCP serial gateway on HOST:PORT")
    simulate.add_argument("--protocol", choices=("jk-serial", "jk-pb"), default="jk-serial",
                          help="jk-serial: one JK-B BMS (4E57, the default); jk-pb: JK-PB packs "
                          "on an RS-485 bus at --addresses")
    simulate.add_argument("--addresses", metavar="A,B,…",
                          help="with --protocol jk-pb: DIP addresses of the packs (default: 1,2)")
    simulate.add_argument("--master", action="store_true",
                          help="with --protocol jk-pb: a pack at DIP 0 owns the bus and polls "
                          "the others (the exporter must then only listen)")
    simulate.add_argument("--cells", type=_in(ranges.CELLS), default=16,
                          help="number of cells, 1-32 (default: 16)")
    simulate.add_argument("--scenario", default="normal", choices=sorted(SCENARIOS),
                          metavar="NAME", help=_literal(scenario_help()))
    simulate.add_argument("--chemistry", default="lifepo4", choices=sorted(CHEMISTRIES),
                          help="cell chemistry: voltages and protection settings (default: "
                          "lifepo4)")
    simulate.add_argument("--fault", default="none", choices=list(FAULTS), metavar="FAULT",
                          help=_literal(fault_help()))
    simulate.add_argument("--link", metavar="PATH",
                          help="with --pty: also make PATH a symlink to the terminal, like "
                          "/dev/serial/by-id/…")
    simulate.add_argument("--max-clients", type=_in(ranges.MAX_CLIENTS), metavar="N",
                          help="with --listen: serve at most N TCP clients at once, like many "
                          "gateways, 1-1024 (default: no limit)")
    simulate.add_argument("--latency", type=_in(ranges.LATENCY), default=0.09,
                          help="seconds before the simulated BMS answers, 0-60 (default: 0.09)")
    simulate.add_argument("--no-pacing", dest="pacing", action="store_false",
                          help="send replies at once instead of at 115200 Bd")
    _logging_flags(simulate)


#: (command, its line in the top-level --help, its own --help description, its flags).
COMMAND_FLAGS: Tuple[Tuple[str, str, str, Callable[[argparse.ArgumentParser], None]], ...] = (
    ("serve", "serve /metrics for one or more packs",
     "Read every configured pack when Prometheus scrapes and serve the metrics.", _serve_flags),
    ("read", "read a BMS once and print what it says",
     "Read a BMS once: the first thing to run to check the wiring.", _read_flags),
    ("decode", "decode a captured reply frame, Bluetooth records or a JK-PB capture",
     "Decode what a log holds, given in hex (spaces, colons and 0x prefixes are ignored; "
     "junk before a frame is skipped): a 4E57 reply frame, JK02/JK04 '55 AA EB 90' records "
     "from a Bluetooth log (a device-info record tells the layout, else give --generation), "
     "or a JK-PB bus capture (55 AA frames each followed by their Modbus acknowledgement). "
     "The kind is detected from the bytes.", _decode_flags),
    ("scan", "find JK BMSs on a port or gateway (or over Bluetooth with --ble)",
     "Find what answers on a serial port or gateway: tries the 4E57 protocol, JK-PB "
     "addresses 1-15 and the usual baud rates, notices a bus master, and prints a "
     "ready-to-paste --config.file snippet. Only read requests are sent.", _scan_flags),
    ("simulate", "run a simulated BMS on a pseudo-terminal or TCP port",
     "Run a simulated JK BMS that answers the real wire protocol, for testing this exporter "
     "or other tools.", _simulate_flags),
)
