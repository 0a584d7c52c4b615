"""A command imports what it uses (issue 13): ``--version`` and the help texts load no
codec, no pyserial; a one-shot ``read`` loads no collector, web server, simulator or JK-PB
bus code, and imports what prints its answer while the BMS takes its time to answer.
Real subprocesses and simulators on pseudo-terminals; no timings (those are in bench/)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import List, Set

import pytest

from jkbms_exporter import defaults
from jkbms_exporter.cli.oneshot import _read_once
from jkbms_exporter.config import PackConfig, build_packs
from jkbms_exporter.links.serial import SerialTransport
from jkbms_exporter.protocols import jk02_layout, jk_serial

#: Prints the modules loaded after ``main(ARGV)`` as JSON on the last line of stdout.
PROBE = (
    "import json, sys\n"
    "from jkbms_exporter.cli import main\n"
    "try:\n"
    "    code = main(sys.argv[1:])\n"
    "except SystemExit as stop:\n"
    "    code = stop.code\n"
    "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}))\n"
)

#: Loaded by no command that only prints its help or version.
HEAVY_FOR_HELP = ("dataclasses", "typing", "serial", "logging", "shutil",
                  "jkbms_exporter.reading", "jkbms_exporter.protocols", "jkbms_exporter.config")
#: Never needed by a one-shot read of a JK-B board.
NOT_FOR_READ = ("prometheus_client", "asyncio", "yaml", "jkbms_exporter.collector",
                "jkbms_exporter.web.server", "jkbms_exporter.sim", "jkbms_exporter.links.pb_bus",
                "jkbms_exporter.protocols.jk_pb", "jkbms_exporter.energy",
                "jkbms_exporter.cli.serve", "jkbms_exporter.metrics")


def loaded_after(*argv: str) -> Set[str]:
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True,
                            text=True, timeout=60)
    document = json.loads(result.stdout.strip().splitlines()[-1])
    assert document["code"] in (0, None), result.stderr
    return set(document["modules"])


def offenders(loaded: Set[str], heavy: tuple) -> List[str]:
    return sorted(name for name in loaded
                  if any(name == h or name.startswith(h + ".") for h in heavy))


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["read", "--help"],
                                  ["decode", "--help"], ["scan", "--help"]])
def test_help_and_version_load_no_codec_and_no_pyserial(argv: List[str]) -> None:
    assert offenders(loaded_after(*argv), HEAVY_FOR_HELP) == []


def test_a_one_shot_read_loads_only_what_it_uses(simulator) -> None:
    loaded = loaded_after("read", simulator())
    assert offenders(loaded, NOT_FOR_READ) == []
    assert "jkbms_exporter.report" in loaded  # it did print a table


@pytest.mark.parametrize("command", ["serve", "read", "decode", "scan", "simulate"])
def test_every_command_prints_its_help(command: str) -> None:
    # scenario descriptions say "5 %": argparse %-formats help texts, which once crashed here
    result = subprocess.run([sys.executable, "-m", "jkbms_exporter", command, "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout.startswith("usage: jkbms-exporter %s " % command)


def test_the_parser_defaults_match_the_codec() -> None:
    # a codec cannot import defaults.py; the --generation choices must still be its own
    assert defaults.GENERATIONS == jk02_layout.GENERATIONS


def test_output_imports_start_between_the_request_and_the_reply(simulator) -> None:
    path = simulator("--latency", "0.4")
    (pack,) = build_packs([PackConfig("1", path)])
    pack.transport.record_sent = True
    calls: List[tuple] = []

    def on_sent() -> None:
        calls.append((time.monotonic(), len(pack.transport.sent)))

    reading, _ = _read_once([pack], on_sent)
    answered = time.monotonic()
    assert len(reading.cell_voltages_volts) == 16
    assert len(calls) == 1  # once, after the one request was written, not before
    at, requests_written = calls[0]
    assert requests_written == 1
    assert answered - at >= 0.3  # it ran while the simulated BMS took 0.4 s to answer


#: Runs ``read`` and says what was loaded when its request went out (a tty or gateway).
EARLY_PROBE = (
    "import json, sys\n"
    "from jkbms_exporter.cli import main\n"
    "from jkbms_exporter.links.serial import SerialTransport\n"
    "seen = []\n"
    "send_early = SerialTransport.send_early\n"
    "def spy(self, request):\n"
    "    seen.append(sorted(sys.modules))\n"
    "    send_early(self, request)\n"
    "SerialTransport.send_early = spy\n"
    "code = main(sys.argv[1:])\n"
    "print(json.dumps({'code': code, 'seen': seen}))\n"
)


@pytest.mark.parametrize("protocol", ["jk-serial", "auto"])
def test_a_jk_b_read_sends_its_request_before_loading_the_rest(simulator,
                                                               protocol: str) -> None:
    result = subprocess.run([sys.executable, "-c", EARLY_PROBE, "read", simulator(),
                             "--protocol", protocol, "--json"],
                            capture_output=True, text=True, timeout=60)
    document = json.loads(result.stdout.strip().splitlines()[-1])
    assert document["code"] == 0, result.stderr
    (loaded,) = document["seen"]  # one early request
    # the codec's frame module built the request; its tables and the Reading load later
    assert "jkbms_exporter.protocols.jk_serial_frame" in loaded
    assert offenders(set(loaded), ("jkbms_exporter.config", "jkbms_exporter.pack",
                                   "jkbms_exporter.report", "jkbms_exporter.metrics",
                                   "jkbms_exporter.energy", "jkbms_exporter.capture",
                                   "jkbms_exporter.protocols.jk_serial",
                                   "jkbms_exporter.reading", "dataclasses",
                                   "logging")) == []


@pytest.mark.parametrize("log_format, line", [
    ("logfmt", 'level=debug logger=jkbms_exporter.links.serial msg="opened %s"'),
    ("json", '"level": "debug", "logger": "jkbms_exporter.links.serial", "msg": "opened %s"'),
])
def test_at_debug_level_logging_is_set_up_before_the_port_opens(simulator, log_format: str,
                                                                line: str) -> None:
    path = simulator()
    result = subprocess.run([sys.executable, "-m", "jkbms_exporter", "read", path,
                             "--log.level", "debug", "--log.format", log_format],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert line % path in result.stderr


def test_an_exchange_after_an_early_request_only_waits_for_its_reply(simulator) -> None:
    transport = SerialTransport(simulator("--latency", "0.2"))
    transport.record_sent = True
    try:
        request = jk_serial.read_all_request()
        transport.send_early(request)
        frame = transport.exchange(request, jk_serial.locate_frame, 2.0)
        assert transport.sent == [request]  # written once
        assert len(jk_serial.decode_reply(frame).cell_voltages_volts) == 16
        transport.exchange(request, jk_serial.locate_frame, 2.0)  # the next one is written
        assert transport.sent == [request, request]
    finally:
        transport.close()


def test_a_one_shot_process_ends_with_its_whole_output_and_exit_status(simulator) -> None:
    # main() ends a read's or decode's process without the interpreter's teardown: the
    # table, the JSON and the error line must all be out, with the exit status
    path = simulator()
    table = subprocess.run([sys.executable, "-m", "jkbms_exporter", "read", path, "--raw"],
                           capture_output=True, text=True, timeout=60)
    assert table.returncode == 0, table.stderr
    assert "Alarms" in table.stdout and "Frame (" in table.stdout  # the table, then the frame
    as_json = subprocess.run([sys.executable, "-m", "jkbms_exporter", "read", path, "--json"],
                             capture_output=True, text=True, timeout=60)
    assert as_json.returncode == 0 and len(json.loads(as_json.stdout)["cell_voltage_volts"]) == 16
    failed = subprocess.run([sys.executable, "-m", "jkbms_exporter", "read", "/nonexistent/tty"],
                            capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1 and failed.stderr.startswith("jkbms-exporter: cannot open ")
