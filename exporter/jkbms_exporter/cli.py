"""Command line: ``serve``, ``read``, ``decode``, ``simulate``.

Flags follow the Prometheus exporter style (``--web.listen-address``, ``--log.level``).
Every expected failure ends in one line on stderr and a non-zero exit status, never a
traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence, Tuple

from . import __version__, ranges
from .protocols import jk_serial
from .protocols.jk02_layout import GENERATIONS
from .energy import DEFAULT_MAX_GAP
from .collector import DEFAULT_MIN_INTERVAL, DEFAULT_SCRAPE_TIMEOUT, JkbmsCollector, Poller
from .config import (
    DEFAULT_PROTOCOL,
    PROTOCOLS,
    ConfigError,
    PackConfig,
    build_packs,
    load_config_file,
    parse_device_flag,
)
from .links.ble import is_ble_url
from .errors import JkbmsError, TransportError
from .web.address import DEFAULT_LISTEN_ADDRESS, parse_listen_address
from .logs import FORMATS, LEVELS, setup_logging
from .metrics import reading_to_json
from .pack import DEFAULT_READ_TIMEOUT
from .links.pb_bus import DEFAULT_REPLY_TIMEOUT, EXTRA_FRAMES
from .report import render_reading
from .sim.chemistry import CHEMISTRIES
from .sim.faults import FAULTS, fault_help
from .sim.scenarios import SCENARIOS, scenario_help
from .links.serial import DEFAULT_BAUDRATE, check_url

# What only some commands use is imported in them (the simulators, the web server and
# prometheus_client, Bluetooth): a one-shot `read` starts in a fraction of the time.
if TYPE_CHECKING:
    from .sim.pb_bus import PbBusBms

log = logging.getLogger("jkbms_exporter")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: Name of the in-process simulated pack of ``serve --simulate``.
SIMULATED_PACK = "sim"


class UsageError(Exception):
    """Bad command-line input: reported in one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        # main() prints the program name: name only the command here ("serve: …")
        command = self.prog.partition(" ")[2]
        raise UsageError("%s%s (see --help)" % (command + ": " if command else "", message))


#: argparse ``type`` of a numeric flag: its range (ranges.py) refuses inf, nan, 1e308, -1…
_in = ranges.flag_type


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="jkbms-exporter",
        description="Prometheus exporter for JK (JiKong) battery management systems.",
    )
    parser.add_argument("--version", action="version", version="jkbms-exporter " + __version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def logging_flags(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--log.level", dest="log_level", choices=LEVELS, default="info",
                         help="log level (default: info)")
        sub.add_argument("--log.format", dest="log_format", choices=FORMATS, default="logfmt",
                         help="log line format (default: logfmt)")

    def link_flags(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--baud", type=_in(ranges.BAUD), default=DEFAULT_BAUDRATE,
                         help="baud rate of serial devices, 300-4000000 (default: %d)"
                         % DEFAULT_BAUDRATE)
        sub.add_argument("--read-timeout", type=_in(ranges.READ_TIMEOUT), default=None,
                         help="seconds to wait for one complete reply, above 0 and at most 300 "
                         "(default: %g for jk-serial, %g for jk-pb)"
                         % (DEFAULT_READ_TIMEOUT, DEFAULT_REPLY_TIMEOUT))

    serve = commands.add_parser(
        "serve", help="serve /metrics for one or more packs",
        description="Read every configured pack when Prometheus scrapes and serve the metrics.",
    )
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
                       help="scenario of the simulated BMS: " + scenario_help())
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
                       help="link fault of the simulated BMS: " + fault_help())
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
    link_flags(serve)
    logging_flags(serve)

    read = commands.add_parser(
        "read", help="read a BMS once and print what it says",
        description="Read a BMS once: the first thing to run to check the wiring.",
    )
    read.add_argument("url", metavar="URL", help="device path or URL, as for serve --device")
    read.add_argument("--json", action="store_true", help="print JSON instead of a table")
    read.add_argument("--raw", action="store_true", help="also print the reply frame in hex")
    read.add_argument("--protocol", choices=PROTOCOLS, default=DEFAULT_PROTOCOL,
                      help="jk-serial (4E57, the default), jk-pb (RS-485 bus) or auto")
    read.add_argument("--address", type=_in(ranges.PB_ADDRESS), metavar="N",
                      help="JK-PB DIP address 1-15 (with --protocol jk-pb or auto)")
    link_flags(read)
    logging_flags(read)

    decode = commands.add_parser(
        "decode", help="decode a captured reply frame, Bluetooth records or a JK-PB capture",
        description="Decode what a log holds, given in hex (spaces, colons and 0x prefixes "
        "are ignored; junk before a frame is skipped): a 4E57 reply frame, JK02/JK04 "
        "'55 AA EB 90' records from a Bluetooth log (a device-info record tells the layout, "
        "else give --generation), or a JK-PB bus capture (55 AA frames each followed by "
        "their Modbus acknowledgement). The kind is detected from the bytes.",
    )
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
    logging_flags(decode)

    scan = commands.add_parser(
        "scan", help="find JK BMSs on a port or gateway (or over Bluetooth with --ble)",
        description="Find what answers on a serial port or gateway: tries the 4E57 protocol, "
        "JK-PB addresses 1-15 and the usual baud rates, notices a bus master, and prints a "
        "ready-to-paste --config.file snippet. Only read requests are sent.",
    )
    scan.add_argument("url", nargs="?", metavar="URL", help="device path or URL (not with --ble)")
    scan.add_argument("--ble", action="store_true",
                      help="list nearby JK BMSs over Bluetooth LE instead (needs the ble extra)")
    scan.add_argument("--timeout", type=_in(ranges.BLE_SCAN_TIMEOUT), default=10.0,
                      help="with --ble: seconds to listen for advertisements, above 0 and at "
                      "most 600 (default: 10)")
    logging_flags(scan)

    simulate = commands.add_parser(
        "simulate", help="run a simulated BMS on a pseudo-terminal or TCP port",
        description="Run a simulated JK BMS that answers the real wire protocol, for testing "
        "this exporter or other tools.",
    )
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
                          metavar="NAME", help=scenario_help())
    simulate.add_argument("--chemistry", default="lifepo4", choices=sorted(CHEMISTRIES),
                          help="cell chemistry: voltages and protection settings (default: "
                          "lifepo4)")
    simulate.add_argument("--fault", default="none", choices=list(FAULTS), metavar="FAULT",
                          help=fault_help())
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
    logging_flags(simulate)
    return parser


# ------------------------------------------------------------------------------- commands


def _catch_stop_signals() -> Callable[[], None]:
    """Install SIGINT/SIGTERM handlers now (before anything is announced, so a signal
    right after start still cleans up); the returned function waits for one.

    The kernel may hand a process-directed signal to any thread, and a main thread
    blocked in ``Event.wait`` is then not woken: CI saw ``simulate`` ignore SIGTERM
    while its simulator threads ran. ``signal.set_wakeup_fd`` writes a byte to a pipe
    whichever thread took the signal, and the main thread waits on that pipe.
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)  # not the default: stop cleanly, below
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

    def wait() -> None:
        select.select([read_end], [], [])  # retried after an interrupted call (PEP 475)
        os.read(read_end, 1)  # one signal taken: a later wait() waits for the next

    return wait


def _simulator_link(bms: Any, **options: Any) -> Any:
    """The in-process simulator behind a pseudo-terminal, so the real serial path is used;
    where no pseudo-terminal can be had (some containers), behind a loopback TCP gateway."""
    from .sim.serve import PtySimulator, TcpSimulator

    try:
        return PtySimulator(bms, **options)
    except OSError as error:
        log.info("no pseudo-terminal for the simulator (%s): using a loopback TCP gateway",
                 error)
        simulator = TcpSimulator(bms, "127.0.0.1", 0, **options)
        simulator.path = simulator.url
        return simulator


def cmd_serve(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry

    from .web.server import ExporterApp, make_http_server
    from .web.webconfig import load_web_config

    if not args.telemetry_path.startswith("/") or args.telemetry_path == "/":
        raise UsageError("--web.telemetry-path must start with / and not be / itself")
    try:
        parse_listen_address(args.listen_address)
        configs = [
            PackConfig(config.name, config.url, args.baud, args.read_timeout,
                       energy_max_gap=args.energy_max_gap)
            for config in (parse_device_flag(text, position)
                           for position, text in enumerate(args.device, start=1))
        ]
    except ValueError as error:  # ConfigError included: a bad flag value
        raise UsageError(str(error)) from None
    if args.config_file:
        configs = load_config_file(args.config_file) + configs
    if not configs and not args.simulate:
        raise UsageError("serve: give at least one --device, a --config.file, or --simulate")
    web_config = load_web_config(args.web_config_file) if args.web_config_file else None
    simulator: Optional[Any] = None
    if args.simulate:
        if args.simulate_protocol == "jk-pb":
            addresses = list(range(1, args.simulate_packs + 1))
            bms: object = simulated_bus(addresses, args.simulate_cells, args.simulate_scenario,
                                        chemistry=args.simulate_chemistry)
            simulator = _simulator_link(bms, fault=args.simulate_fault, latency=PB_LATENCY)
            configs.extend(
                PackConfig("%s%d" % (SIMULATED_PACK, address), simulator.path, DEFAULT_BAUDRATE,
                           args.read_timeout, protocol="jk-pb", address=address,
                           energy_max_gap=args.energy_max_gap, chemistry=args.simulate_chemistry)
                for address in addresses)
        else:
            from .sim.bms import SimulatedBms

            bms = SimulatedBms(cells=args.simulate_cells, scenario=args.simulate_scenario,
                               chemistry=args.simulate_chemistry)
            simulator = _simulator_link(bms, fault=args.simulate_fault)
            configs.append(PackConfig(SIMULATED_PACK, simulator.path, DEFAULT_BAUDRATE,
                                      args.read_timeout, energy_max_gap=args.energy_max_gap,
                                      chemistry=args.simulate_chemistry))
    try:
        packs = build_packs(configs)
        poller = Poller(packs, min_interval=args.min_interval, scrape_timeout=args.scrape_timeout)
    except ConfigError:
        if simulator is not None:
            simulator.stop()
        raise
    registry = CollectorRegistry()
    registry.register(JkbmsCollector(poller))
    app = ExporterApp(registry, poller, args.telemetry_path)
    try:
        server = make_http_server(app, args.listen_address, web_config)
    except OSError as error:
        poller.close()
        if simulator is not None:
            simulator.stop()
        raise JkbmsError("cannot listen on %s: %s" % (args.listen_address,
                                                       error.strerror or error)) from None
    if simulator is not None:
        simulator.start()
        log.info("simulated %s %dS (scenario %s, fault %s) on %s", args.simulate_protocol,
                 args.simulate_cells, args.simulate_scenario, args.simulate_fault,
                 simulator.path)
    wait = _catch_stop_signals()
    thread = threading.Thread(target=server.serve_forever, name="jkbms-http", daemon=True)
    thread.start()
    log.info("jkbms-exporter %s listening on %s, metrics at %s, packs: %s", __version__,
             args.listen_address, args.telemetry_path,
             ", ".join("%s=%s" % (pack.name, pack.port) for pack in packs))
    try:
        wait()
    finally:
        log.info("shutting down")
        server.shutdown()
        server.server_close()
        poller.close()
        if simulator is not None:
            simulator.stop()
    return EXIT_OK


def cmd_read(args: argparse.Namespace) -> int:
    if not args.url.strip():
        raise UsageError("read: the URL is empty (a device path like /dev/ttyUSB0 or "
                         "socket://HOST:PORT)")
    if args.protocol == "jk-pb" and args.address is None:
        raise UsageError("read: --protocol jk-pb needs --address (the pack's DIP address 1-15)")
    read_timeout = args.read_timeout
    if is_ble_url(args.url):  # find the device, connect, wait for the first frame: seconds
        from .links.ble import DEFAULT_CONNECT_TIMEOUT, DEFAULT_SCAN_TIMEOUT

        read_timeout = max(read_timeout or 0.0,
                           DEFAULT_SCAN_TIMEOUT + DEFAULT_CONNECT_TIMEOUT + 5.0)
    if args.protocol == "auto" and args.address is None and not is_ble_url(args.url):
        reading, frame = _read_auto(args, read_timeout)
    else:
        config = PackConfig("1", args.url, args.baud, read_timeout, protocol=args.protocol,
                            address=args.address if args.protocol != "jk-serial" else None)
        reading, frame = _read_once(build_packs([config]))
    from .capture import redact

    shown = redact(frame) if args.raw and frame else b""
    _print_reading(reading, args.json, port=args.url, frame=shown)
    return EXIT_OK


def _read_once(packs: List[Any]) -> Tuple[Any, bytes]:
    """Read the first of ``packs`` that answers (all on one port), then close them all."""
    try:
        for index, pack in enumerate(packs):
            bus = getattr(pack.protocol, "bus", None)
            if bus is not None:  # one-shot: fetch settings and device info at once
                bus.extras_per_read = len(EXTRA_FRAMES)
            try:
                return pack.read()
            except JkbmsError as error:
                if index == len(packs) - 1 or isinstance(error, TransportError):
                    raise
        raise JkbmsError("nothing to read")
    finally:
        for pack in packs:
            pack.close()


def _read_auto(args: argparse.Namespace, read_timeout: Optional[float]) -> Tuple[Any, bytes]:
    """``read --protocol auto`` without ``--address``: JK-B (4E57) first, then a JK-PB pack
    at each DIP address 1-15, as ``serve`` would find it; says what was tried."""
    first: Optional[JkbmsError] = None
    for configs in ([PackConfig("1", args.url, args.baud, read_timeout)],
                    [PackConfig(str(address), args.url, args.baud, read_timeout,
                                protocol="jk-pb", address=address) for address in range(1, 16)]):
        try:
            return _read_once(build_packs(configs))
        except TransportError:
            raise
        except JkbmsError as error:
            if first is not None:
                raise JkbmsError("no answer as JK-B (4E57: %s) nor as JK-PB at DIP addresses "
                                 "1-15 (last: %s); check the wiring (TX/RX, A/B), the baud "
                                 "rate (--baud) and that the BMS is awake" % (first, error)) \
                    from None
            first = error
            log.info("%s: no JK-B (4E57) answer (%s); trying JK-PB addresses 1-15", args.url,
                     error)
    raise AssertionError("unreachable")  # pragma: no cover


def parse_hex(text: str) -> bytes:
    cleaned = text.replace("0x", "").replace("0X", "")
    for separator in " \t\r\n:,-":
        cleaned = cleaned.replace(separator, "")
    if not cleaned:
        raise UsageError("decode: no hex digits given")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise UsageError("decode: not a hex string (odd length or a non-hex character)") from None


def cmd_decode(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.hex == "-" else args.hex
    data = parse_hex(text)
    from .capture import decode_capture

    reading, _ = decode_capture(data, args.generation, args.address, args.verify)
    _print_reading(reading, args.json, frame=b"")
    return EXIT_OK


def _print_reading(reading: jk_serial.Reading, as_json: bool, port: str = "",
                   frame: bytes = b"") -> None:
    if as_json:
        document = dict(reading_to_json(reading, port))
        if frame:
            document["frame_hex"] = frame.hex()
        print(json.dumps(document, indent=2))
    else:
        sys.stdout.write(render_reading(reading, port, frame))


#: Answer latency of a simulated JK-PB (spec §5: ~260 ms per pack for two triggers).
PB_LATENCY = 0.05


def simulated_bus(addresses: Sequence[int], cells: int, scenario: str,
                  master: bool = False, chemistry: str = "lifepo4") -> PbBusBms:
    """JK-PB packs at ``addresses``; the first one runs ``scenario``, the others are healthy."""
    from .sim.bms import SimulatedBms
    from .sim.pb_bus import PbBusBms, jk_pb_device

    return PbBusBms({
        address: SimulatedBms(cells=cells, scenario=scenario if index == 0 else "normal",
                              seed=address, device=jk_pb_device(address), chemistry=chemistry)
        for index, address in enumerate(addresses)
    }, master=master)


def _addresses(text: str) -> List[int]:
    try:
        addresses = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError("--addresses %r: a comma-separated list of 1-15" % text) from None
    if not addresses or any(not 1 <= a <= 15 for a in addresses) or \
            len(set(addresses)) != len(addresses):
        raise UsageError("--addresses %r: distinct DIP addresses 1-15" % text)
    return addresses


def cmd_simulate(args: argparse.Namespace) -> int:
    from .sim.bms import SimulatedBms
    from .sim.serve import PtySimulator, TcpSimulator

    latency = args.latency
    if args.protocol != "jk-pb" and (args.addresses is not None or args.master):
        raise UsageError("simulate: --addresses and --master are for --protocol jk-pb")
    if args.protocol == "jk-pb":
        bms: object = simulated_bus(_addresses(args.addresses or "1,2"), args.cells,
                                    args.scenario, args.master, args.chemistry)
        latency = min(latency, PB_LATENCY)
    else:
        bms = SimulatedBms(cells=args.cells, scenario=args.scenario, chemistry=args.chemistry)
    options = dict(latency=latency, baudrate=DEFAULT_BAUDRATE if args.pacing else None,
                   fault=args.fault)
    if args.listen:
        if args.link:
            raise UsageError("--link makes a symlink to a pseudo-terminal: use it with --pty, "
                             "not --listen")
        try:
            host, port = parse_listen_address(args.listen)
        except ValueError as error:
            raise UsageError(str(error)) from None
        try:
            server: object = TcpSimulator(bms, host or "0.0.0.0", port,
                                          max_clients=args.max_clients, **options).start()
        except OSError as error:
            raise JkbmsError("cannot listen on %s: %s" % (args.listen,
                                                           error.strerror or error)) from None
        where = server.url  # type: ignore[attr-defined]
        wait = _catch_stop_signals()
    else:
        wait = _catch_stop_signals()  # before the link exists: a signal still removes it
        try:
            server = PtySimulator(bms, link=args.link, **options).start()
        except OSError as error:
            if not args.link:
                raise JkbmsError("cannot open a pseudo-terminal: %s"
                                 % (error.strerror or error)) from None
            raise UsageError("--link: %s" % _os_error(error)) from None
        where = server.path  # type: ignore[attr-defined]
    print(where, flush=True)
    log.info("simulated %s %dS (scenario %s) answering on %s", args.protocol, args.cells,
             args.scenario, where)
    try:
        wait()
    finally:
        server.stop()  # type: ignore[attr-defined]
    return EXIT_OK


def _os_error(error: OSError) -> str:
    """An OSError in words: our own messages as they are, the system's without errno."""
    if error.strerror is None:
        return str(error)
    path = error.filename2 or error.filename  # symlink(src, dst) names both: dst is ours
    return "%s: %s" % (path, error.strerror.lower()) if path else error.strerror.lower()


def cmd_scan(args: argparse.Namespace) -> int:
    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.ble:
        if args.url:
            raise UsageError("scan: give a URL or --ble, not both")
        from .links.ble import format_scan_results, scan_ble

        sys.stdout.write(format_scan_results(scan_ble(args.timeout, progress)))
        return EXIT_OK
    if not args.url:
        raise UsageError("scan: give the device path or URL to scan, or --ble")
    from .scan import config_snippet, scan_port

    try:
        check_url(args.url)
    except ValueError as error:
        raise UsageError(str(error)) from None

    found = scan_port(args.url, progress)
    sys.stdout.write(config_snippet(args.url, found))
    return EXIT_OK if found else EXIT_FAILURE


COMMANDS = {"serve": cmd_serve, "read": cmd_read, "decode": cmd_decode, "scan": cmd_scan,
            "simulate": cmd_simulate}


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return EXIT_USAGE
        setup_logging(args.log_level, args.log_format)
        return COMMANDS[args.command](args)
    except (UsageError, ConfigError) as error:  # a bad flag or configuration value
        print("jkbms-exporter: %s" % error, file=sys.stderr)
        return EXIT_USAGE
    except JkbmsError as error:
        print("jkbms-exporter: %s" % error, file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `jkbms-exporter read … | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
