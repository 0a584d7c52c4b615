"""``read --protocol auto`` without ``--address`` tries JK-B, then JK-PB addresses 1-15, and
says what it tried (issue 12). Real simulators on pseudo-terminals (conftest ``simulator``)."""

from __future__ import annotations

import json
import subprocess
import sys


def read_auto(path: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jkbms_exporter", "read", path, "--protocol",
                           "auto", *extra], capture_output=True, text=True, timeout=90)


def test_a_jk_pb_pack_is_found_at_its_address(simulator) -> None:
    path = simulator("--protocol", "jk-pb", "--addresses", "7")
    result = read_auto(path, "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["device_info"]["protocol"] == "jk-pb"
    assert document["device_info"]["device_id"] == "SimPB07"
    assert "trying JK-PB addresses 1-15" in result.stderr


def test_a_jk_b_board_is_read_as_before(simulator) -> None:
    result = read_auto(simulator(), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["device_info"]["protocol"] == "jk-serial"


def test_silence_is_reported_as_both_tries(simulator) -> None:
    result = read_auto(simulator("--fault", "silent"), "--read-timeout", "0.2")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("jkbms-exporter: no answer as JK-B (4E57: ")
    assert "nor as JK-PB at DIP addresses 1-15" in line and "--baud" in line
