"""The long-running commands: ``serve`` (the exporter) and ``simulate`` (a simulated BMS).

Imported only when one of them runs: the one-shot commands never load the web server
or the simulators (and nothing loads prometheus_client).
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import threading
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence

from .. import __version__
from ..config import ConfigError, PackConfig, build_packs, load_config_file, parse_device_flag
from ..defaults import DEFAULT_BAUDRATE
from ..errors import JkbmsError
from ..web.address import parse_listen_address
from .parser import EXIT_OK, SIMULATED_PACK, UsageError

if TYPE_CHECKING:
    from ..sim.pb_bus import PbBusBms

log = logging.getLogger("jkbms_exporter")


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
    from ..sim.serve import PtySimulator, TcpSimulator

    try:
        return PtySimulator(bms, **options)
    except OSError as error:
        log.info("no pseudo-terminal for the simulator (%s): using a loopback TCP gateway",
                 error)
        simulator = TcpSimulator(bms, "127.0.0.1", 0, **options)
        simulator.path = simulator.url
        return simulator


def cmd_serve(args: argparse.Namespace) -> int:
    from ..collector import JkbmsCollector, Poller
    from ..web.server import ExporterApp, make_http_server
    from ..web.webconfig import load_web_config

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
            from ..sim.bms import SimulatedBms

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
    app = ExporterApp(JkbmsCollector(poller), poller, args.telemetry_path)
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


#: Answer latency of a simulated JK-PB (spec §5: ~260 ms per pack for two triggers).
PB_LATENCY = 0.05


def simulated_bus(addresses: Sequence[int], cells: int, scenario: str,
                  master: bool = False, chemistry: str = "lifepo4") -> PbBusBms:
    """JK-PB packs at ``addresses``; the first one runs ``scenario``, the others are healthy."""
    from ..sim.bms import SimulatedBms
    from ..sim.pb_bus import PbBusBms, jk_pb_device

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
    from ..sim.bms import SimulatedBms
    from ..sim.serve import PtySimulator, TcpSimulator

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
