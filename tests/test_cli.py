"""The command line as a user meets it: subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from conftest import free_port

from jkbms_exporter import __version__


def run(*args: str, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jkbms_exporter", *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("jkbms-exporter: ")
    return lines[0]


def vector(vectors: dict, vector_id: str) -> dict:
    (found,) = [v for v in vectors["frames"] if v["id"] == vector_id]
    return found


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0 and result.stdout.strip() == "jkbms-exporter " + __version__


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("jkbms-exporter")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert result.stdout.strip() == "jkbms-exporter " + __version__


def test_decode_table_marks_min_max_and_names_alarms(vectors_4e57: dict) -> None:
    frame = vector(vectors_4e57, "opendtu_16s_b1a24s15p_1")
    spaced = " ".join(frame["response_hex"][i:i + 2] for i in range(0, 40, 2))
    result = run("decode", spaced + frame["response_hex"][40:])  # users paste spaced hex
    assert result.returncode == 0, result.stderr
    out = result.stdout
    cells = frame["expected"]["cell_voltages_v"]
    high, low = cells.index(max(cells)) + 1, cells.index(min(cells)) + 1
    assert "cell %02d  %.3f V  <- max" % (high, max(cells)) in out
    assert "cell %02d  %.3f V  <- min" % (low, min(cells)) in out
    assert "+10.12 A (charging)" in out
    assert "JK_B1A24S15P" in out
    assert "Alarms           none" in out


def test_decode_names_active_alarms_in_words(vectors_4e57: dict) -> None:
    frame = vector(vectors_4e57, "powermon_4s_1121h")  # 0x8B = 0x0003
    result = run("decode", "--no-verify", stdin=frame["response_hex"])
    assert result.returncode == 0
    assert "ACTIVE: low capacity, mosfet overtemperature" in result.stdout


def test_decode_json_uses_metric_names_without_prefix(vectors_4e57: dict) -> None:
    frame = vector(vectors_4e57, "esphome_16s_bd6a17s6p_710h")
    result = run("decode", "--json", frame["response_hex"])
    document = json.loads(result.stdout)
    expected = frame["expected"]
    assert document["cell_voltage_volts"] == pytest.approx(expected["cell_voltages_v"])
    assert document["pack_voltage_volts"] == pytest.approx(expected["total_voltage_v"])
    assert document["current_amperes"] == pytest.approx(expected["current_a"])
    assert document["temperature_celsius"]["mosfet"] == expected["mosfet_temperature_c"]
    assert document["setting_volts"]["cell_overvoltage_protection"] == expected["cell_ovp_v"]
    assert document["alarm"]["cell_overvoltage"] == 0
    assert document["charge_cycles_total"] == expected["cycles"]
    assert document["device_info"]["software_version"] == "7.1.0H"
    assert "password" not in result.stdout and "123456" not in result.stdout


def test_decode_rejects_a_bad_checksum_unless_told(vectors_4e57: dict) -> None:
    frame = vector(vectors_4e57, "vendor_example_20s_nw100")
    refused = run("decode", frame["response_hex"])
    assert refused.returncode == 1
    assert "checksum" in one_line_error(refused)
    accepted = run("decode", "--no-verify", "--json", frame["response_hex"])
    assert accepted.returncode == 0
    assert len(json.loads(accepted.stdout)["cell_voltage_volts"]) == 20


@pytest.mark.parametrize("text", ["", "zz", "4e5"])
def test_decode_rejects_what_is_not_hex(text: str) -> None:
    result = run("decode", stdin=text)
    assert result.returncode == 2
    one_line_error(result)


def test_decode_garbled_frame_is_one_line(vectors_4e57: dict) -> None:
    frame = vector(vectors_4e57, "esphome_14s_h6")["response_hex"]
    result = run("decode", frame[:200])
    assert result.returncode == 1
    one_line_error(result)


def test_simulate_on_a_pty_then_read_it(tmp_path: Path) -> None:
    link = tmp_path / "ttyJK"
    sim = subprocess.Popen([sys.executable, "-m", "jkbms_exporter", "simulate", "--pty",
                            "--link", str(link), "--cells", "7"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert sim.stdout.readline().strip() == str(link)
        table = run("read", str(link), "--raw")
        assert table.returncode == 0, table.stderr
        assert "Cells            7," in table.stdout
        assert "Frame (" in table.stdout and "4e 57" in table.stdout
        document = json.loads(run("read", str(link), "--json", "--raw").stdout)
        assert len(document["cell_voltage_volts"]) == 7
        assert document["frame_hex"].startswith("4e57")
    finally:
        sim.terminate()
        sim.wait(10)


def test_read_without_answer_fails_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as listener:  # a gateway that accepts but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = run("read", "socket://127.0.0.1:%d" % port, "--read-timeout", "0.5")
    assert result.returncode == 1
    assert "no complete reply" in one_line_error(result)


def test_read_missing_device(tmp_path: Path) -> None:
    result = run("read", str(tmp_path / "ttyUSB3"))
    assert result.returncode == 1
    assert "ttyUSB3" in one_line_error(result)


def test_read_device_without_permission(tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        # root ignores file modes: check the message our transport builds for EACCES instead
        from jkbms_exporter.links.serial import _describe

        assert "dialout" in _describe(PermissionError(13, "Permission denied"))
        return
    device = tmp_path / "ttyS9"
    device.write_text("")
    device.chmod(0)
    result = run("read", str(device))
    assert result.returncode == 1 and "dialout" in one_line_error(result)


@pytest.mark.parametrize("args", [
    ["serve"],
    ["serve", "--bogus"],
    ["serve", "--simulate", "--read-timeout", "-1"],
    ["serve", "--simulate", "--web.listen-address", "nonsense"],
    ["serve", "--simulate", "--web.telemetry-path", "metrics"],
    ["serve", "--simulate", "--simulate.scenario", "no-such"],
    ["serve", "--device", "a b=/dev/x"],
    ["simulate", "--cells", "40"],
    ["frobnicate"],
])
def test_bad_usage_is_one_line_and_exit_2(args: List[str]) -> None:
    result = run(*args)
    assert result.returncode == 2
    one_line_error(result)


def test_duplicate_pack_names_are_refused() -> None:
    result = run("serve", "--device", "a=/dev/x", "--device", "a=/dev/y")
    assert result.returncode == 2
    assert "used twice" in one_line_error(result)


def test_address_already_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--simulate", "--web.listen-address", "127.0.0.1:%d" % port)
    assert result.returncode == 1
    assert "cannot listen on 127.0.0.1:%d" % port in one_line_error(result)


def test_json_log_format(start_exporter) -> None:
    exporter = start_exporter("--simulate", "--log.format", "json", "--log.level", "debug")
    exporter.metrics()
    lines = [line for line in exporter.stop().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert any("listening on" in r["msg"] for r in records)
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)


def test_default_pack_names_follow_the_order(start_exporter, tmp_path: Path) -> None:
    exporter = start_exporter("--device", str(tmp_path / "a"), "--device", "x=" + str(tmp_path / "b"),
                              "--device", "socket://127.0.0.1:%d" % free_port())
    text = exporter.metrics()
    for name in ("1", "x", "3"):
        assert 'jkbms_up{pack="%s"} 0.0' % name in text


def test_read_raw_blanks_the_password_and_stays_decodable(vectors_4e57: dict) -> None:
    from jkbms_exporter.sim.bms import ReplayBms
    from jkbms_exporter.sim.serve import TcpSimulator

    frame = vector(vectors_4e57, "esphome_14s_h6")  # its 0xB2 holds "123456"
    raw = bytes.fromhex(frame["response_hex"])
    assert b"123456" in raw
    sim = TcpSimulator(ReplayBms([raw]), latency=0.01).start()
    try:
        table = run("read", sim.url, "--raw")
        document = json.loads(run("read", sim.url, "--raw", "--json").stdout)
    finally:
        sim.stop()
    assert table.returncode == 0, table.stderr
    shown = bytes.fromhex(document["frame_hex"])
    assert b"123456" not in shown and "31 32 33 34 35 36" not in table.stdout
    assert len(shown) == len(raw) and sum(a != b for a, b in zip(shown, raw)) == 6 + 2
    decoded = run("decode", "--json", document["frame_hex"])  # checksum still valid
    assert decoded.returncode == 0, decoded.stderr
    assert json.loads(decoded.stdout)["cell_voltage_volts"] == pytest.approx(
        frame["expected"]["cell_voltages_v"])
