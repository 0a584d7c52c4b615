"""Port URLs: say what is wrong with the URL instead of pyserial's internals (issue 12)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jkbms_exporter import cli
from jkbms_exporter.config import ConfigError, parse_config


def read(url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jkbms_exporter", "read", url,
                           "--read-timeout", "0.3"], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("url, message", [
    ("socket://localhost", "socket://localhost: no port: write socket://HOST:PORT"),
    ("rfc2217://localhost", "rfc2217://localhost: no port: write rfc2217://HOST:PORT"),
    ("socket://127.0.0.1:99999", "socket://127.0.0.1:99999: port 99999 is out of range 1-65535"),
    ("socket://127.0.0.1:0", "port 0 is out of range 1-65535"),
    ("socket://gw:abc", "socket://gw:abc: port 'abc' is not a number"),
    ("socket://:8899", "socket://:8899: no host"),
    ("socket://[::1", "not a valid URL"),
    ("socket://gw:8899?debug", "unknown option 'debug' (known: logging)"),
    ("socket://gw:8899?logging=loud", "logging=loud: choose from debug, info, warning, error"),
    ("rfc2217://gw:2217?timeout=inf", "timeout=inf: seconds above 0, at most 300"),
    ("tcp://gw:8899", "unknown URL scheme 'tcp'"),
])
def test_a_bad_url_says_what_is_wrong(capsys: pytest.CaptureFixture, url: str,
                                      message: str) -> None:
    assert cli.main(["read", url]) == cli.EXIT_USAGE  # the real parser and command
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("jkbms-exporter: " + url) and message in line
    assert "NoneType" not in line and "debug|info" not in line


def test_the_command_says_it_in_one_line() -> None:
    result = read("socket://localhost")
    assert result.returncode == 2 and result.stderr == "jkbms-exporter: socket://localhost: " \
        "no port: write socket://HOST:PORT, e.g. socket://localhost:8899\n"


def test_the_config_file_names_the_url_field() -> None:
    with pytest.raises(ConfigError, match=r"^f\.yml:3: packs\[0\]\.url: socket://gw: no port"):
        parse_config("packs:\n  - name: a\n    url: socket://gw\n", "f.yml", environ={})


def test_open_errors_are_the_reason_without_pyserial_wrapping(tmp_path: Path) -> None:
    refused = read("socket://127.0.0.1:1")
    assert refused.returncode == 1
    assert refused.stderr.strip() == "jkbms-exporter: cannot open socket://127.0.0.1:1: " \
        "Connection refused"
    not_a_tty = tmp_path / "file"
    not_a_tty.write_text("")
    result = read(str(not_a_tty))
    assert result.stderr.strip() == "jkbms-exporter: cannot open %s: not a serial port " \
        "(inappropriate ioctl for device)" % not_a_tty
