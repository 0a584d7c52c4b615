"""Every numeric flag: finite and inside its documented range, else exit 2 with one line
naming the flag and the range (issue 12). The real parser, in process (fast), plus one
subprocess to show the whole command behaves the same."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jkbms_exporter import cli

BAD = ["inf", "-inf", "nan", "-1", "1e30", "", "x", "99999999999999999999"]

#: (command line before the flag, flag, values beyond BAD that must be refused, range text)
FLAGS = [
    (["serve", "--simulate"], "--scrape-timeout", ["0"], "greater than 0 and at most 600"),
    (["serve", "--simulate"], "--min-interval", ["3601"], "from 0 to 3600"),
    (["serve", "--simulate"], "--read-timeout", ["0", "1e308"], "greater than 0 and at most 300"),
    (["read", "x"], "--read-timeout", ["0"], "greater than 0 and at most 300"),
    (["serve", "--simulate"], "--baud", ["0", "299", "9600.5"], "300 to 4000000"),
    (["read", "x"], "--baud", ["0"], "300 to 4000000"),
    (["read", "x", "--protocol", "jk-pb"], "--address", ["0", "16", "1.5"], "1 to 15"),
    (["serve", "--simulate"], "--simulate.cells", ["0", "33"], "1 to 32"),
    (["serve", "--simulate"], "--simulate.packs", ["0", "16"], "1 to 15"),
    (["simulate"], "--cells", ["0", "33"], "1 to 32"),
    (["simulate"], "--latency", ["61"], "from 0 to 60"),
    (["simulate", "--listen", ":0"], "--max-clients", ["0", "1025"], "1 to 1024"),
    (["scan", "--ble"], "--timeout", ["0"], "greater than 0 and at most 600"),
]

CASES = [pytest.param(before, flag, value, expected, id="%s %s=%s" % (before[0], flag, value))
         for before, flag, extra, expected in FLAGS for value in BAD + extra]


@pytest.mark.parametrize("before, flag, value, expected", CASES)
def test_out_of_range_numbers_exit_2_naming_flag_and_range(
        capsys: pytest.CaptureFixture, before: list, flag: str, value: str,
        expected: str) -> None:
    assert cli.main([*before, flag + "=" + value]) == cli.EXIT_USAGE
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("jkbms-exporter: %s: argument %s: " % (before[0], flag))
    assert expected in line


@pytest.mark.parametrize("argv, attribute, value", [
    (["serve", "--min-interval", "0"], "min_interval", 0.0),
    (["serve", "--scrape-timeout", "600"], "scrape_timeout", 600.0),
    (["read", "x", "--baud", "9600"], "baud", 9600),
    (["read", "x", "--baud", "4000000"], "baud", 4000000),
    (["read", "x", "--read-timeout", "0.2"], "read_timeout", 0.2),
    (["simulate", "--latency", "0"], "latency", 0.0),
    (["simulate", "--max-clients", "1"], "max_clients", 1),
])
def test_the_ends_of_each_range_are_accepted(argv: list, attribute: str, value: float) -> None:
    args = cli.build_parser().parse_args(argv)
    assert getattr(args, attribute) == value and type(getattr(args, attribute)) is type(value)


def test_the_command_line_prints_the_program_name_once() -> None:
    result = subprocess.run([sys.executable, "-m", "jkbms_exporter", "serve",
                             "--scrape-timeout", "inf"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.count("jkbms-exporter") == 1, line
    assert line.startswith("jkbms-exporter: serve: argument --scrape-timeout: 'inf' is not a "
                           "finite number")


@pytest.mark.parametrize("argv, words", [
    (["simulate", "--addresses", "inf"], "--addresses and --master are for --protocol jk-pb"),
    (["simulate", "--master"], "--addresses and --master are for --protocol jk-pb"),
    (["simulate", "--protocol", "jk-pb", "--addresses", "0"], "distinct DIP addresses 1-15"),
    (["simulate", "--pty", "--link", "x", "--listen", ":0"], "not allowed with argument"),
    (["read", ""], "read: the URL is empty"),
    (["read", " "], "read: the URL is empty"),
])
def test_flags_that_would_be_ignored_or_mean_nothing_are_refused(
        capsys: pytest.CaptureFixture, argv: list, words: str) -> None:
    assert cli.main(argv) == cli.EXIT_USAGE
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert words in line
