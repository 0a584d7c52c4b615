"""BLE transport and protocol against the fake radio of jkbms_exporter.sim.ble_radio.

The fake boards replay the real captures of vectors/jk02.json as notifications of 20-244
bytes (with 320-byte padding, garbage, cut-off and corrupt frames where a test asks), so
what the exporter decodes is compared with the values the vector file lists. The fake
board checks every write with its own rules, independent of jk02.is_read_only_command.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Callable, Dict, Iterator, List, Optional

import pytest
import yaml

from conftest import REPO, load_vectors

from jkbms_exporter.links import ble
from jkbms_exporter.sim import ble_radio as ble_fake
from jkbms_exporter.protocols import jk02
from jkbms_exporter.config import ConfigError, build_ble_pack, parse_config
from jkbms_exporter.errors import ReadTimeout, TransportError, reason_of
from jkbms_exporter.pack import Pack
from jkbms_exporter.reading import COULOMBS_PER_AMPERE_HOUR as AH

VECTORS = load_vectors("jk02.json")
FRAMES: Dict[str, bytes] = {f["id"]: bytes.fromhex(f["response_hex"]) for f in VECTORS["frames"]}
EXPECTED: Dict[str, dict] = {f["id"]: f["expected"] for f in VECTORS["frames"]}

#: cell-info vector → (device-info vector, settings vector, generation configured in the URL).
#: Settings only where the capture is of the same board.
BOARDS = {
    "cell_info_jk02_24s_v10": ("device_info_jk02_24s_v10", "pdus_jk02_24s_b2a24s20p_1007_type1",
                               None),
    "cell_info_jk02_32s_v11": ("device_info_jk02_32s_v11", None, None),
    "cell_info_jk02_32s_v14": ("device_info_jk02_32s_v14", None, None),
    "cell_info_jk04": ("device_info_jk04", None, None),
    # no device-info capture of this board: the generation is configured
    "cell_info_jk04_b5a24s": (None, "settings_jk04_b5a24s", "JK04"),
}

#: Fast settings so that reconnects, re-requests and stalls happen in milliseconds.
FAST = dict(scan_timeout=0.2, connect_timeout=1.0, backoff_initial=0.05, backoff_max=0.2,
            request_interval=0.5, stall_timeout=2.0, device_info_wait=0.2, close_timeout=2.0)


def board_for(cell_id: str, **options: object) -> ble_fake.FakeJkBms:
    device_id, settings_id, _ = BOARDS[cell_id]
    frames = ble_fake.ReplayFrames(
        [FRAMES[cell_id]],
        settings=FRAMES[settings_id] if settings_id else None,
        device_info=FRAMES[device_id] if device_id else None,
    )
    options.setdefault("interval", 0.02)
    return ble_fake.FakeJkBms(frames, **options)  # type: ignore[arg-type]


@pytest.fixture
def make_pack() -> Iterator[Callable[..., Pack]]:
    packs: List[Pack] = []

    def make(backend: object, url: str, read_timeout: float = 2.0, **options: object) -> Pack:
        for key, value in FAST.items():
            options.setdefault(key, value)
        pack = ble.build_ble_pack("p", url, read_timeout, False, (), backend=backend, **options)
        packs.append(pack)
        return pack

    yield make
    for pack in packs:
        pack.close()
        thread = pack.transport._thread  # type: ignore[attr-defined]
        assert thread is None or not thread.is_alive()


def read(pack: Pack, timeout: float = 2.0):
    return pack.read(time.monotonic() + timeout)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % (what or condition))
        time.sleep(0.005)


def read_eventually(pack: Pack, timeout: float = 5.0):
    """The first successful read (the link may still be coming up or back)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read(pack, 0.5)
        except (TransportError, ReadTimeout):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def assert_matches(reading, cell_id: str) -> None:
    expected = EXPECTED[cell_id]
    assert reading.cell_voltages_volts == pytest.approx(expected["cell_voltages_v"], abs=1e-4)
    if expected["variant"] == jk02.JK04:
        assert reading.pack_voltage_volts == pytest.approx(expected["sum_of_cells_v"], abs=1e-3)
        assert reading.balance_current_amperes == pytest.approx(expected["balance_current_a"],
                                                                abs=1e-3)
        assert reading.balancing == bool(expected["balancing_byte_220"])
        assert reading.runtime_seconds == expected["runtime_s"]
        return
    assert reading.cells == expected["cell_count"]
    assert reading.pack_voltage_volts == pytest.approx(expected["total_voltage_v"])
    assert reading.current_amperes == pytest.approx(expected["current_a"])
    assert reading.state_of_charge_ratio == pytest.approx(expected["soc_percent"] / 100)
    assert reading.state_of_health_ratio == pytest.approx(expected["soh_percent"] / 100)
    assert reading.temperatures_celsius["battery1"] == pytest.approx(expected["temperature_1_c"])
    assert reading.temperatures_celsius["battery2"] == pytest.approx(expected["temperature_2_c"])
    assert reading.temperatures_celsius["mosfet"] == pytest.approx(
        expected["mosfet_temperature_c"])
    assert reading.remaining_capacity_coulombs == pytest.approx(
        expected["capacity_remaining_ah"] * AH)
    assert reading.nominal_capacity_coulombs == pytest.approx(expected["nominal_capacity_ah"] * AH)
    assert reading.cycle_capacity_coulombs == pytest.approx(
        expected["total_cycle_capacity_ah"] * AH)
    assert reading.charge_cycles == expected["cycles"]
    assert reading.runtime_seconds == expected["runtime_s"]
    assert reading.charge_mosfet_on == bool(expected["charging_mosfet"])
    assert reading.discharge_mosfet_on == bool(expected["discharging_mosfet"])
    assert reading.alarm_bitmask == int(expected["errors_bitmask"], 16)
    assert reading.balance_current_amperes == pytest.approx(expected["balance_current_a"])
    assert reading.balancing == bool(expected["balancing_action"])
    assert reading.cell_resistances_ohms == pytest.approx(expected["cell_resistances_ohm"])


def test_every_cell_info_vector_has_a_board() -> None:
    cell_ids = {f["id"] for f in VECTORS["frames"] if f["expected"]["frame_type"] == 2}
    assert cell_ids == set(BOARDS)


@pytest.mark.parametrize("cell_id", sorted(BOARDS))
def test_vector_frames_over_ble_give_the_listed_values(cell_id: str, make_pack) -> None:
    device_id, settings_id, generation = BOARDS[cell_id]
    board = board_for(cell_id, pad_to_320=True, garbage=0.3, seed=len(cell_id),
                      two_handles=len(cell_id) % 2 == 0)
    url = "ble://%s" % board.address + ("?generation=%s" % generation if generation else "")
    pack = make_pack(ble_fake.FakeBleBackend(board), url)
    reading, frame = read_eventually(pack)
    assert frame[:jk02.FRAME_SIZE] == ble_fake.with_counter(FRAMES[cell_id], frame[5])
    assert_matches(reading, cell_id)
    assert reading.device.protocol_version == EXPECTED[cell_id]["variant"]
    if device_id:
        device = EXPECTED[device_id]
        assert reading.device.model == device["vendor"]
        assert reading.device.hardware_version == device["hw"]
        assert reading.device.software_version == device["sw"]
        assert reading.device.serial_number == device["serial"]
        assert reading.device.device_id == device["name"]
        assert "passcode" not in reading.extra and "1234" not in repr(reading.device)
    if settings_id and "cell_ovp_v" in EXPECTED[settings_id]:
        # the settings frame arrives before the first cell-info frame (0x96)
        settings = EXPECTED[settings_id]
        assert reading.setting("cell_overvoltage_protection").value == pytest.approx(
            settings["cell_ovp_v"])
        assert reading.setting("cell_undervoltage_protection").value == pytest.approx(
            settings["cell_uvp_v"])
        assert reading.setting("max_balance_current").value == pytest.approx(
            settings["max_balance_current_a"])
        assert reading.switches_enabled["charge"] == bool(settings["charge_switch"])
    assert 0 <= ble.reading_age(reading) <= 30


def test_generation_is_guessed_when_no_device_info_frame_comes(make_pack, caplog) -> None:
    frames = ble_fake.ReplayFrames([FRAMES["cell_info_jk02_32s_v11"]])
    board = ble_fake.FakeJkBms(frames, interval=0.02)
    pack = make_pack(ble_fake.FakeBleBackend(board), "ble://%s" % board.address)
    reading, _ = read_eventually(pack)
    assert_matches(reading, "cell_info_jk02_32s_v11")
    assert any("guessing generation JK02_32S" in r.getMessage() for r in caplog.records)


def test_connection_is_held_across_scrapes_and_frames_stay_fresh(make_pack) -> None:
    board = board_for("cell_info_jk02_32s_v11", interval=0.01)
    pack = make_pack(ble_fake.FakeBleBackend(board), "ble://%s?max_age=5" % board.address)
    counters = []
    for _ in range(25):
        reading, _ = read_eventually(pack)
        counters.append(reading.extra["frame_counter"])
        assert ble.reading_age(reading) <= 5
        time.sleep(0.01)
    assert board.connections == 1 and len(board.connect_attempts) == 1
    assert pack.transport.is_open
    assert len(set(counters)) > 5, "reads are not served from the newest frames"
    # 0x97 then 0x96 once: the stream goes on without being asked again
    assert [data for _, data in board.writes] == [ble.COMMAND_DEVICE_INFO, ble.COMMAND_CELL_INFO]


def test_two_handles_with_the_same_uuid_write_and_notify_where_they_must(make_pack) -> None:
    board = board_for("cell_info_jk02_32s_v14", two_handles=True)
    pack = make_pack(ble_fake.FakeBleBackend(board), "ble://%s" % board.address)
    read_eventually(pack)
    assert {handle for handle, _ in board.writes} == {board.WRITE_HANDLE}
    notify, write = ble.pick_characteristics(board.services())
    assert (notify.handle, write.handle) == (board.NOTIFY_HANDLE, board.WRITE_HANDLE)
    single = board_for("cell_info_jk02_32s_v14", two_handles=False)
    notify, write = ble.pick_characteristics(single.services())
    assert notify.handle == write.handle == single.SHARED_HANDLE
    with pytest.raises(ble.LinkError, match="FFE1"):
        ble.pick_characteristics(single.services()[:1])


def test_a_dropped_link_reconnects_and_reads_fail_with_io_meanwhile(make_pack) -> None:
    board = board_for("cell_info_jk02_24s_v10", connect_delay=0.05)
    pack = make_pack(ble_fake.FakeBleBackend(board), "ble://%s" % board.address,
                     backoff_initial=0.3, backoff_max=1.0)
    read_eventually(pack)
    board.drop()
    wait_until(lambda: not pack.transport.is_open, what="the drop to be noticed")
    with pytest.raises(TransportError) as failure:
        read(pack, 0.2)
    assert reason_of(failure.value) == "io"
    assert "down" in str(failure.value) and "next attempt" in str(failure.value)
    # nobody calls anything: the transport reconnects by itself
    wait_until(lambda: pack.transport.is_open, what="the reconnect")
    reading, _ = read_eventually(pack)
    assert_matches(reading, "cell_info_jk02_24s_v10")
    assert board.connections == 2
    status = pack.transport.status()
    assert status.drops == 1 and status.connections == 2
    # after a link that worked, the first new attempt comes after the initial backoff only
    assert board.connect_attempts[1][0] - board.connect_attempts[0][1] < 0.3 + 1.0


def test_reconnect_backoff_grows_and_is_capped(make_pack) -> None:
    board = board_for("cell_info_jk02_32s_v11")
    fake = ble_fake.FakeBleBackend(board)
    pack = make_pack(fake, "ble://%s" % board.address, scan_timeout=0.01,
                     backoff_initial=0.04, backoff_max=0.16)
    read_eventually(pack)
    board.set_reachable(False)
    wait_until(lambda: len(fake.finds) >= 8, what="eight connection attempts")
    failures: List[BaseException] = []
    for _ in range(3):
        try:
            read(pack, 0.05)
        except Exception as error:  # noqa: BLE001 - the type is what is checked
            failures.append(error)
    assert len(failures) == 3 and all(reason_of(e) == "io" for e in failures)
    finds = fake.finds[1:8]  # fake.finds[0] found the board
    gaps = [later[0] - earlier[1] for earlier, later in zip(finds, finds[1:])]
    expected = [0.04, 0.08, 0.16, 0.16, 0.16, 0.16]
    for gap, delay in zip(gaps, expected):
        assert gap >= delay * 0.95, (gaps, expected)
    assert max(gaps) < 0.16 + 0.5, "backoff is not capped: %s" % gaps
    assert not any(found for _, _, found in finds)
    board.set_reachable(True)
    reading, _ = read_eventually(pack)
    assert_matches(reading, "cell_info_jk02_32s_v11")


def test_the_jk_app_holding_the_connection_is_an_io_error_until_it_lets_go(make_pack) -> None:
    board = board_for("cell_info_jk02_32s_v14")
    pack = make_pack(ble_fake.FakeBleBackend(board), "ble://%s" % board.address)
    read_eventually(pack)
    board.occupy()
    wait_until(lambda: not pack.transport.is_open)
    wait_until(lambda: "JK app" in pack.transport.status().last_error, what="a scan to fail")
    with pytest.raises(TransportError, match="JK app"):
        read(pack, 0.05)
    board.release()
    read_eventually(pack)
    assert board.connections == 2


def test_a_frame_older_than_max_age_is_never_served(make_pack) -> None:
    board = board_for("cell_info_jk02_32s_v11", interval=0.02)
    pack = make_pack(ble_fake.FakeBleBackend(board), "ble://%s?max_age=0.3" % board.address,
                     request_interval=60.0, stall_timeout=60.0)
    first, _ = read_eventually(pack)
    board.pause_stream()
    paused_at = time.monotonic()
    ages = []
    while True:
        started = time.monotonic()
        try:
            reading, _ = read(pack, 0.1)
        except ReadTimeout as error:
            # it waited for a fresh frame until the deadline before giving up
            assert time.monotonic() - started >= 0.1
            assert "max_age" in str(error)
            break
        ages.append(ble.reading_age(reading))
        assert time.monotonic() - paused_at < 3.0, "a stale frame kept being served"
    assert ages and max(ages) <= 0.3
    assert ages == sorted(ages) and max(ages) >= 0.15, "the age does not grow: %s" % ages
    assert time.monotonic() - paused_at >= 0.3 - 0.05
    # a read that is waiting gets the next fresh frame as soon as it arrives
    threading.Timer(0.2, board.resume_stream).start()
    started = time.monotonic()
    reading, _ = read(pack, 3.0)
    assert 0.15 <= time.monotonic() - started < 2.5
    assert ble.reading_age(reading) <= 0.3
    assert reading.extra["frame_counter"] != first.extra["frame_counter"]


def test_a_frame_from_before_a_reconnect_is_never_served(make_pack) -> None:
    board = board_for("cell_info_jk02_32s_v11")
    pack = make_pack(ble_fake.FakeBleBackend(board), "ble://%s?max_age=30" % board.address,
                     stall_timeout=60.0, request_interval=60.0)
    read_eventually(pack)
    board.pause_stream()
    board.drop()
    wait_until(lambda: board.connections == 2 and pack.transport.is_open, what="the reconnect")
    with pytest.raises(ReadTimeout, match="no cell-info frame yet"):
        read(pack, 0.2)
    board.resume_stream()
    read(pack, 2.0)


def test_the_generation_in_the_url_wins(make_pack) -> None:
    # a 32S board read with the 24S layout: the cell mask lands on cell voltages
    board = board_for("cell_info_jk02_32s_v11")
    pack = make_pack(ble_fake.FakeBleBackend(board),
                     "ble://%s?generation=JK02_24S" % board.address)
    wait_until(lambda: pack.transport.is_open)
    with pytest.raises(jk02.CellMaskError, match="wrong generation") as failure:
        deadline = time.monotonic() + 3
        while True:
            try:
                reading, _ = read(pack, 0.5)
            except ReadTimeout:
                assert time.monotonic() < deadline
                continue
            pytest.fail("read with the generation of the device-info frame (%s), not the URL's"
                        % reading.device.protocol_version)
    assert reason_of(failure.value) == "malformed"


def test_a_silent_link_is_asked_again_and_then_dropped(make_pack) -> None:
    board = board_for("cell_info_jk02_24s_v10")
    pack = make_pack(ble_fake.FakeBleBackend(board), "ble://%s" % board.address,
                     request_interval=0.1, stall_timeout=0.6)
    read_eventually(pack)
    board.pause_stream()
    wait_until(lambda: board.connections == 2, what="a reconnect after the stall")
    written = [data for _, data in board.writes]
    assert written.count(ble.COMMAND_CELL_INFO) >= 3, "0x96 was not sent again"
    assert "no cell-info frame" in pack.transport.status().last_error or board.connections == 2
    board.resume_stream()
    read_eventually(pack)


def test_garbage_cut_corrupt_and_padded_notifications(make_pack) -> None:
    board = board_for("cell_info_jk02_32s_v14", garbage=0.5, truncated=0.3, corrupt=0.2,
                      pad_to_320=True, seed=7, interval=0.005)
    pack = make_pack(ble_fake.FakeBleBackend(board), "ble://%s" % board.address)
    for _ in range(40):
        reading, frame = read_eventually(pack)
        assert_matches(reading, "cell_info_jk02_32s_v14")
        assert jk02.checksum(frame) == frame[jk02.CHECKSUM_OFFSET]
        time.sleep(0.005)
    wait_until(lambda: board.frames_sent["corrupt"] >= 3 and board.frames_sent["truncated"] >= 3)
    stats = pack.transport.status().assembler
    assert stats.checksum_errors > 0 and stats.padding_bytes > 0 and stats.discarded_bytes > 0
    assert min(board.fragment_sizes) >= 1 and max(board.fragment_sizes) <= 244
    assert any(size >= 200 for size in board.fragment_sizes)
    assert board.connections == 1


def test_only_read_commands_are_ever_written(make_pack) -> None:
    board = board_for("cell_info_jk02_24s_v10")
    pack = make_pack(ble_fake.FakeBleBackend(board), "ble://%s" % board.address,
                     request_interval=0.05, stall_timeout=0.3)
    read_eventually(pack)
    board.pause_stream()  # re-requests, a stall, a reconnect
    wait_until(lambda: board.connections >= 2)
    board.resume_stream()
    board.drop()
    read_eventually(pack)
    assert len(board.writes) >= 5
    assert board.non_read_writes == []
    assert all(ble_fake.read_command(data) in (0x96, 0x97) for _, data in board.writes)
    assert list(pack.transport.status().written) == [data for _, data in board.writes]


def test_the_write_guard_refuses_a_register_write() -> None:
    board = board_for("cell_info_jk02_24s_v10")
    transport = ble.BleTransport("ble://%s" % board.address, ble_fake.FakeBleBackend(board))
    client = ble_fake.FakeBleClient(board)
    # "charge switch off": the register-write shape the JK app uses (spec §2)
    register_write = bytearray(jk02.COMMAND_HEADER + bytes([0x1D, 0x04]) + bytes(14))
    register_write.append(sum(register_write) & 0xFF)

    async def attempt() -> None:
        await client.connect()
        notify, write = ble.pick_characteristics(client.services)
        with pytest.raises(ble.NotAReadCommandError):
            await transport._write(client, write, bytes(register_write))
        await transport._write(client, write, ble.COMMAND_DEVICE_INFO)
        await client.disconnect()

    import asyncio

    asyncio.run(attempt())
    assert [data for _, data in board.writes] == [ble.COMMAND_DEVICE_INFO]
    assert ble_fake.read_command(bytes(register_write)) is None


@pytest.mark.parametrize("url, address, name, generation, max_age", [
    ("ble://c8:47:80:31:f6:43", "C8:47:80:31:F6:43", None, None, 30.0),
    ("BLE://C8:47:80:31:F6:43/?generation=jk02_32s&max_age=12.5", "C8:47:80:31:F6:43", None,
     "JK02_32S", 12.5),
    ("ble://JK-B2A24S20P", None, "JK-B2A24S20P", None, 30.0),
    ("ble://My%20Battery%3F?generation=JK04", None, "My Battery?", "JK04", 30.0),
    ("ble://4B8D2C1E-3A5F-4E6D-9C8B-7A6F5E4D3C2B", "4B8D2C1E-3A5F-4E6D-9C8B-7A6F5E4D3C2B", None,
     None, 30.0),
])
def test_url_forms(url: str, address: Optional[str], name: Optional[str],
                   generation: Optional[str], max_age: float) -> None:
    target = ble.parse_ble_url(url)
    assert (target.address, target.name, target.generation, target.max_age) == (
        address, name, generation, max_age)
    assert ble.is_ble_url(url) and not ble.is_ble_url("/dev/ttyUSB0")


@pytest.mark.parametrize("url, problem", [
    ("ble://", "no device"),
    ("ble://?generation=JK04", "no device"),
    ("ble://AA:BB:CC:DD:EE:FF?generation=JK99", "generation=JK99"),
    ("ble://AA:BB:CC:DD:EE:FF?max_age=0", "more than 0"),
    ("ble://AA:BB:CC:DD:EE:FF?max_age=nan", "more than 0"),
    ("ble://AA:BB:CC:DD:EE:FF?max_age=soon", "not a number"),
    ("ble://AA:BB:CC:DD:EE:FF?timeout=3", "unknown option 'timeout'"),
    ("ble://AA:BB:CC:DD:EE:FF?max_age=1&max_age=2", "twice"),
    ("ble+sim://demo?cells=40", "cells=40"),
    ("ble+sim://demo?cells=30&generation=JK02_24S", "1-24"),
    ("ble+sim://demo?scenario=meltdown", "scenario=meltdown"),
])
def test_bad_urls_are_one_line_config_errors(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as failure:
        build_ble_pack("house", url, 1.0, False, (), backend=ble_fake.FakeBleBackend(),
                           start=False)
    message = str(failure.value)
    assert "\n" not in message and "house" in message and problem in message


MISSING_BLEAK_SCRIPT = r"""
import sys
sys.modules["bleak"] = None  # what `import bleak` sees when the extra is not installed
from jkbms_exporter.links import ble
from jkbms_exporter import config
try:
    ble.build_ble_pack("house", "ble://C8:47:80:31:F6:43", 1.0, False, ())
except config.ConfigError as error:
    print("config:" + str(error))
try:
    ble.scan_ble(1.0, print)
except ble.BleakMissingError as error:
    print("scan:%s:%s" % (error.reason, error))
pack = config.build_ble_pack("demo", "ble+sim://demo?cells=4&interval=0.02", 2.0, False, ())
import time
deadline = time.monotonic() + 10
while True:
    try:
        reading, _ = pack.read(time.monotonic() + 1)
        break
    except Exception:
        if time.monotonic() > deadline:
            raise
print("sim:%d cells" % reading.cells)
pack.close()
"""


def test_without_bleak_a_ble_url_is_a_one_line_error_naming_the_extra() -> None:
    result = subprocess.run([sys.executable, "-c", MISSING_BLEAK_SCRIPT], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    config_lines = [line for line in lines if line.startswith("config:")]
    assert len(config_lines) == 1
    # the command for this installation: the test venv's pip and this checkout
    # (tests/test_install.py), not an index entry that does not exist
    command = "%s -m pip install -e '%s[ble]'" % (sys.executable, REPO)
    assert config_lines[0].endswith(command), config_lines[0]
    assert "house" in config_lines[0]
    assert any(line.startswith("scan:io:") and line.endswith(command) for line in lines)
    # the simulated BLE BMS (demos) needs no bleak
    assert "sim:4 cells" in lines


def scan_air() -> ble_fake.FakeBleBackend:
    frames = ble_fake.ReplayFrames([FRAMES["cell_info_jk02_32s_v11"]])
    return ble_fake.FakeBleBackend(
        ble_fake.FakeJkBms(frames, "C8:47:80:31:F6:43", "JK_PB2A16S15P", rssi=-71),
        # a JK board named by its owner (the serial number): known by the manufacturer ID
        ble_fake.FakeJkBms(frames, "C8:47:80:12:34:56", "50301130603", rssi=-55),
        # a default JK name, no manufacturer data
        ble_fake.FakeJkBms(frames, "C8:47:80:AB:CD:EF", "JK-B2A24S20P", rssi=-80,
                           advertise_manufacturer=False),
        ble_fake.FakeAdvertiser("11:22:33:44:55:66", "HMSoft", (ble.SERVICE_UUID,), rssi=-40),
        ble_fake.FakeAdvertiser("AA:AA:AA:AA:AA:AA", "Pixel 9", ("0000fe9f-0000-1000-8000"
                                                                "-00805f9b34fb",), rssi=-30),
    )


def test_scan_lists_jk_boards_strongest_first_as_a_config_snippet() -> None:
    fake = scan_air()
    connected = fake.devices[2]
    lines: List[str] = []
    results = ble.scan_ble(0.1, lines.append, backend=fake)
    assert [(r.address, r.name, r.rssi, r.evidence) for r in results] == [
        ("C8:47:80:12:34:56", "50301130603", -55, "manufacturer-id"),
        ("C8:47:80:31:F6:43", "JK_PB2A16S15P", -71, "manufacturer-id"),
        ("C8:47:80:AB:CD:EF", "JK-B2A24S20P", -80, "name"),
    ]
    assert lines[0].startswith("scanning") and lines[-1] == "3 JK BMS found"
    assert sum(line.startswith("found ") for line in lines) == 3  # once per board
    snippet = ble.format_scan_results(results)
    configs = parse_config(snippet, "scan.yml", environ={})
    assert [(c.name, c.url) for c in configs] == [
        ("50301130603", "ble://C8:47:80:12:34:56"),
        ("jk_pb2a16s15p", "ble://C8:47:80:31:F6:43"),
        ("jk-b2a24s20p", "ble://C8:47:80:AB:CD:EF"),
    ]
    assert "RSSI -55 dBm" in snippet
    # every URL it prints builds a pack
    for config in configs:
        ble.build_ble_pack(config.name, config.url, 1.0, False, (), backend=fake, start=False)
    # a connected board does not advertise; FFE0 strangers only on request
    connected.occupy()
    results = ble.scan_ble(0.05, backend=fake, include_ffe0=True)
    assert {r.address for r in results} == {"C8:47:80:12:34:56", "C8:47:80:31:F6:43",
                                            "11:22:33:44:55:66"}
    snippet = ble.format_scan_results(results)
    assert "may not be a JK BMS" in snippet
    assert yaml.safe_load(snippet)["packs"][0]["url"] == "ble://11:22:33:44:55:66"


def test_an_empty_scan_says_what_to_check() -> None:
    results = ble.scan_ble(0.02, backend=ble_fake.FakeBleBackend())
    assert results == []
    text = ble.format_scan_results(results)
    assert "JK app" in text and yaml.safe_load(text) is None


def test_packs_found_by_name_and_distinct_pack_names() -> None:
    results = [ble.ScanResult("JK BMS #1", "C8:47:80:00:00:01", -50, "name"),
               ble.ScanResult("JK BMS #1", "C8:47:80:00:00:02", -60, "name"),
               ble.ScanResult("", "C8:47:80:00:BE:EF", None, "manufacturer-id")]
    configs = parse_config(ble.format_scan_results(results), "scan.yml", environ={})
    assert [c.name for c in configs] == ["jk-bms-1", "jk-bms-1-2", "jk-beef"]


def test_scan_errors_are_one_line_and_say_what_to_check() -> None:
    class NoBlueZ(ble_fake.FakeBleBackend):
        async def scan(self, timeout, callback):  # what bleak raises without a system bus
            raise FileNotFoundError(2, "No such file or directory")

    with pytest.raises(TransportError) as failure:
        ble.scan_ble(0.1, backend=NoBlueZ())
    assert "D-Bus" in str(failure.value) and "\n" not in str(failure.value)
    assert reason_of(failure.value) == "io"
