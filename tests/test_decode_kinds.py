"""``decode`` detects what a log holds: 4E57 frames, JK02/JK04 Bluetooth records (layout
from the device-info record or --generation) and JK-PB bus captures (55AA + Modbus ACK),
and prints what ``read`` prints; ``read --raw --protocol jk-pb`` shows the frames
(issue 12). Real subprocesses on the captured vectors."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Dict

import pytest

from conftest import load_vectors

from jkbms_exporter import capture
from jkbms_exporter.protocols import jk02


def ble(vector_id: str) -> str:
    return _by_id("jk02.json")[vector_id]["response_hex"]


def bus(vector_id: str) -> str:
    """The captured reply: the 300-byte 55AA frame and the 8-byte ACK after it."""
    return _by_id("pb-modbus.json")[vector_id]["response_hex"]


def relabel(vector: Dict, address: int) -> str:
    """The same reply as if it came from ``address`` (a new ACK with its CRC)."""
    from jkbms_exporter.protocols import jk_pb

    ack = bytes.fromhex(vector["ack_hex"])
    return vector["response_hex"][:600] + jk_pb.with_crc(bytes([address]) + ack[1:6]).hex()


def _by_id(name: str) -> Dict[str, Dict]:
    return {v["id"]: v for v in load_vectors(name)["frames"]}


def decode(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jkbms_exporter", "decode", *args],
                          capture_output=True, text=True, timeout=60)


def decode_json(*args: str) -> dict:
    result = decode("--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_bluetooth_records_with_the_device_info_record() -> None:
    expected = _by_id("jk02.json")["cell_info_jk02_32s_v11"]["expected"]
    document = decode_json(" ".join((ble("device_info_jk02_32s_v11"),
                                     ble("cell_info_jk02_32s_v11"))))
    assert document["cell_voltage_volts"] == pytest.approx(expected["cell_voltages_v"])
    assert document["device_info"]["model"] == "JK_PB2A16S15P"
    assert document["device_info"]["protocol_version"] == "JK02_32S"
    table = decode(ble("device_info_jk02_32s_v11") + ble("cell_info_jk02_32s_v11"))
    assert "JK_PB2A16S15P" in table.stdout and "cell 16" in table.stdout


def test_bluetooth_records_without_it_need_the_generation() -> None:
    alone = decode(ble("cell_info_jk02_24s_v10"))
    assert alone.returncode == 1 and "Traceback" not in alone.stderr
    (line,) = alone.stderr.strip().splitlines()
    assert "give --generation JK02_24S, JK02_32S or JK04" in line and "looks like" in line
    document = decode_json("--generation", "jk02_24s", ble("cell_info_jk02_24s_v10"))
    expected = _by_id("jk02.json")["cell_info_jk02_24s_v10"]["expected"]
    assert document["cell_voltage_volts"] == pytest.approx(expected["cell_voltages_v"])


def test_jk04_records_use_the_float_layout() -> None:
    document = decode_json(ble("device_info_jk04") + ble("cell_info_jk04"))
    expected = _by_id("jk02.json")["cell_info_jk04"]["expected"]
    assert document["device_info"]["protocol_version"] == "JK04"
    assert document["cell_voltage_volts"] == pytest.approx(expected["cell_voltages_v"], abs=1e-4)
    assert document["pack_voltage_volts"] == pytest.approx(expected["sum_of_cells_v"], abs=1e-3)


def test_a_jk_pb_bus_capture_decodes_as_jk_pb() -> None:
    expected = _by_id("pb-modbus.json")["mppsolar_jkpb_20"]["expected"]
    text = "\n".join(bus(i) for i in ("mppsolar_jkpb_1c", "mppsolar_jkpb_1e", "mppsolar_jkpb_20"))
    document = decode_json(text)
    assert document["device_info"]["protocol"] == "jk-pb"
    assert document["device_info"]["model"] == "JK_PB2A16S15P"
    assert document["cell_voltage_volts"] == pytest.approx(expected["cell_voltages_v"])
    assert document["current_amperes"] == pytest.approx(expected["current_a"])
    assert document["setting_volts"]  # the settings frame of the same sender is used


def test_a_bus_capture_of_two_packs_asks_which() -> None:
    vector = _by_id("pb-modbus.json")["mppsolar_jkpb_20"]
    text = bus("mppsolar_jkpb_20") + relabel(vector, 2)
    refused = decode(text)
    assert refused.returncode == 1
    assert refused.stderr.strip() == ("jkbms-exporter: frames from addresses 1, 2: choose one "
                                      "with --address")
    assert decode_json("--address", "2", text)["device_info"]["protocol"] == "jk-pb"


def read_jk_pb(path: str, address: int, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jkbms_exporter", "read", path, "--protocol",
                           "jk-pb", "--address", str(address), *extra],
                          capture_output=True, text=True, timeout=60)


def test_decode_prints_the_keys_read_prints(simulator) -> None:
    """The same --json keys as `read` of a (simulated) JK-PB pack."""
    read = read_jk_pb(simulator("--protocol", "jk-pb", "--addresses", "1"), 1, "--json", "--raw")
    assert read.returncode == 0, read.stderr
    from_read = json.loads(read.stdout)
    raw = from_read.pop("frame_hex")
    assert raw.count(jk02.HEADER.hex()) == 3  # cell info, device info, settings
    decoded = decode_json(raw)  # read --raw output pasted back into decode
    assert set(decoded) == set(from_read)
    assert decoded["cell_voltage_volts"] == from_read["cell_voltage_volts"]


def test_read_raw_of_a_jk_pb_pack_shows_the_frames_and_acks(simulator) -> None:
    table = read_jk_pb(simulator("--protocol", "jk-pb", "--addresses", "3"), 3, "--raw")
    assert table.returncode == 0, table.stderr
    assert "Frame (924 bytes)" in table.stdout and "55 aa eb 90 02" in table.stdout
    shown = "".join(table.stdout.partition("Frame (")[2].split()[2:])
    assert jk02.HEADER.hex() + "02" in shown
    assert shown.index("031016200001") == 600  # the ACK of the cell-info trigger


def test_shown_frames_never_carry_a_passcode() -> None:
    device = bytes.fromhex(ble("device_info_jk02_24s_v10"))
    secrets = [row for row in jk02.fields_for(jk02.FRAME_DEVICE_INFO, jk02.JK02_24S)
               if row.kind == "secret"]
    assert any(any(device[row.offset:row.end]) for row in secrets)  # the capture has some
    shown = capture.redact(b"\x00\x01" + device)[2:]
    assert not any(any(shown[row.offset:row.end]) for row in secrets)
    again = jk02.decode_frame(shown, jk02.JK02_24S)  # checksum recomputed: still decodes
    assert again.values["model"] == jk02.decode_frame(device, jk02.JK02_24S).values["model"]


def test_records_without_cell_info_say_what_the_capture_has() -> None:
    cell_info = ble("cell_info_jk02_32s_v11")
    unknown = "55aaeb9009" + cell_info[10:]
    for text, has in ((ble("settings_jk02_32s_b2a8s20p_1126"), "settings"),
                      (unknown, "type 0x09")):
        result = decode("--generation", "JK02_32S", "--no-verify", text)
        assert result.returncode == 1
        assert result.stderr.strip() == ("jkbms-exporter: no cell-info record (type 02) to "
                                         "decode; the capture has: %s" % has)
