"""BLE packs end to end: the real collector and poller behind a real HTTP server, the real
bleak client and scanner classes (on the fake radio through bleak's backend= hook), and
the simulated BMS served over the fake radio (ble+sim://)."""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Dict, Iterator, List, Tuple

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from conftest import http_get, load_vectors

from jkbms_exporter.links import ble
from jkbms_exporter.sim import ble_radio as ble_fake
from jkbms_exporter.protocols import jk02
from jkbms_exporter.collector import JkbmsCollector, Poller
from jkbms_exporter.config import build_ble_pack
from jkbms_exporter.errors import ReadTimeout, TransportError
from jkbms_exporter.web.server import ExporterApp, make_http_server, serve_in_thread
from jkbms_exporter.reading import COULOMBS_PER_AMPERE_HOUR as AH

VECTORS = load_vectors("jk02.json")
FRAMES = {f["id"]: bytes.fromhex(f["response_hex"]) for f in VECTORS["frames"]}
EXPECTED = {f["id"]: f["expected"] for f in VECTORS["frames"]}
FAST = dict(scan_timeout=0.2, connect_timeout=1.0, backoff_initial=0.05, backoff_max=0.2,
            request_interval=0.5, stall_timeout=2.0, device_info_wait=0.2, close_timeout=2.0)

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def wait_until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.01)


@pytest.fixture
def closing() -> Iterator[List]:
    things: List = []
    yield things
    for thing in reversed(things):
        thing.close() if hasattr(thing, "close") else thing()


def test_ble_packs_through_the_collector_and_a_real_http_scrape(closing: List) -> None:
    board_24 = ble_fake.FakeJkBms(
        ble_fake.ReplayFrames([FRAMES["cell_info_jk02_24s_v10"]],
                              settings=FRAMES["pdus_jk02_24s_b2a24s20p_1007_type1"],
                              device_info=FRAMES["device_info_jk02_24s_v10"]),
        "C8:47:80:00:00:24", "JK-B2A24S20P", interval=0.02, pad_to_320=True, garbage=0.2)
    board_32 = ble_fake.FakeJkBms(
        ble_fake.ReplayFrames([FRAMES["cell_info_jk02_32s_v11"]],
                              device_info=FRAMES["device_info_jk02_32s_v11"]),
        "C8:47:80:00:00:32", "JK_PB2A16S15P", interval=0.02, two_handles=False)
    fake = ble_fake.FakeBleBackend(board_24, board_32)
    packs = [
        ble.build_ble_pack("shed", "ble://C8:47:80:00:00:24", 1.5, False, (("site", "cabin"),),
                           backend=fake, **FAST),
        # found by its advertised name, current sensor wired the other way round
        ble.build_ble_pack("house", "ble://JK_PB2A16S15P?max_age=10", 1.5, True, (),
                           backend=fake, **FAST),
    ]
    poller = Poller(packs, min_interval=0, scrape_timeout=3.0)
    closing.append(poller)
    registry = CollectorRegistry()
    registry.register(JkbmsCollector(poller))
    server = make_http_server(ExporterApp(registry, poller), "127.0.0.1:0")
    closing.append(lambda: (server.shutdown(), server.server_close()))
    serve_in_thread(server)
    url = "http://127.0.0.1:%d/metrics" % server.server_address[1]

    def scrape() -> Samples:
        return parse(http_get(url))

    wait_until(lambda: all(value(scrape(), "jkbms_up", pack=p, site=s) == 1
                           for p, s in (("shed", "cabin"), ("house", ""))),
               what="both BLE packs up")
    samples = scrape()
    shed = {"pack": "shed", "site": "cabin"}
    house = {"pack": "house", "site": ""}
    cells_24 = EXPECTED["cell_info_jk02_24s_v10"]["cell_voltages_v"]
    for index, volts in enumerate(cells_24, start=1):
        assert value(samples, "jkbms_cell_voltage_volts", cell="%02d" % index,
                     **shed) == pytest.approx(volts)
    assert value(samples, "jkbms_cells", **shed) == 24
    assert value(samples, "jkbms_pack_voltage_volts", **shed) == pytest.approx(78.735)
    assert value(samples, "jkbms_state_of_charge_ratio", **shed) == pytest.approx(0.85)
    assert value(samples, "jkbms_remaining_capacity_coulombs", **shed) == pytest.approx(
        42.804 * AH)
    assert value(samples, "jkbms_temperature_celsius", sensor="mosfet", **shed) == 23.4
    assert value(samples, "jkbms_setting_volts", setting="cell_overvoltage_protection",
                 **shed) == pytest.approx(3.55)
    assert value(samples, "jkbms_cells", **house) == 16
    assert value(samples, "jkbms_cell_voltage_volts", cell="11", **house) == pytest.approx(3.216)
    assert value(samples, "jkbms_temperature_celsius", sensor="battery1", **house) == 17.7
    info = [labels for (name, labels) in samples if name == "jkbms_device_info"
            and dict(labels)["pack"] == "house"]
    assert dict(info[0])["port"] == "ble://JK_PB2A16S15P?max_age=10"
    assert dict(info[0])["protocol_version"] == "JK02_32S"
    assert dict(info[0])["serial_number"] == "3092572134"

    # many scrapes, one connection per BMS
    for _ in range(5):
        scrape()
    assert board_24.connections == 1 and board_32.connections == 1

    # the link of one pack drops and stays down: that pack is down with reason io,
    # the other one is not affected
    board_24.set_reachable(False)
    wait_until(lambda: not packs[0].transport.is_open, what="the drop")
    samples = scrape()
    assert value(samples, "jkbms_up", **shed) == 0
    assert value(samples, "jkbms_read_errors_total", reason="io", **shed) >= 1
    assert value(samples, "jkbms_up", **house) == 1
    # and comes back by itself
    board_24.set_reachable(True)
    wait_until(lambda: value(scrape(), "jkbms_up", **shed) == 1, what="the pack to come back")
    assert board_24.connections == 2
    assert board_24.non_read_writes == [] and board_32.non_read_writes == []


def test_the_real_bleak_client_and_scanner_classes_drive_the_fake_radio(closing: List) -> None:
    """bleak.BleakClient refuses an ambiguous UUID, wraps callbacks and checks arguments:
    going through it shows the exporter uses bleak's API as bleak means it."""
    board = ble_fake.FakeJkBms(
        ble_fake.ReplayFrames([FRAMES["cell_info_jk02_32s_v14"]],
                              device_info=FRAMES["device_info_jk02_32s_v14"]),
        "C8:47:80:31:F6:43", "JK_PB2A16S15P", interval=0.02, two_handles=True,
        pad_to_320=True)
    fake = ble_fake.FakeBleBackend(board, ble_fake.FakeAdvertiser("11:22:33:44:55:66", "phone"))
    backend = ble_fake.bleak_backend(fake)
    import bleak

    # the two FFE1 handles really are ambiguous to bleak by UUID: the exporter must pick
    client = backend.client(board.address, lambda *_: None, 5.0)
    assert isinstance(client, bleak.BleakClient)

    async def by_uuid() -> str:
        await client.connect()
        try:
            await client.start_notify(ble.CHARACTERISTIC_UUID, lambda *_: None)
        except bleak.exc.BleakError as error:
            return str(error)
        finally:
            await client.disconnect()
        return ""

    assert "Multiple Characteristics" in asyncio.run(by_uuid())
    assert not board.connected

    results = ble.scan_ble(0.2, backend=backend)
    assert [(r.address, r.name, r.rssi) for r in results] == [
        ("C8:47:80:31:F6:43", "JK_PB2A16S15P", -60)]

    pack = ble.build_ble_pack("p", "ble://c8:47:80:31:f6:43", 2.0, False, (), backend=backend,
                              **FAST)
    closing.append(pack)
    deadline = time.monotonic() + 5
    while True:
        try:
            reading, _ = pack.read(time.monotonic() + 1)
            break
        except (TransportError, ReadTimeout):
            assert time.monotonic() < deadline
    expected = EXPECTED["cell_info_jk02_32s_v14"]
    assert reading.cell_voltages_volts == pytest.approx(expected["cell_voltages_v"])
    assert reading.pack_voltage_volts == pytest.approx(expected["total_voltage_v"])
    assert reading.device.model == "JK_PB2A16S15P"
    assert {handle for handle, _ in board.writes} == {board.WRITE_HANDLE}
    assert [data for _, data in board.writes] == [ble.COMMAND_DEVICE_INFO, ble.COMMAND_CELL_INFO]
    board.drop()  # bleak's disconnected_callback path
    wait_until(lambda: board.connections == 2, what="a reconnect through bleak")


def test_the_simulated_ble_bms_serves_the_simulator_live(closing: List) -> None:
    pack = build_ble_pack("demo", "ble+sim://demo?cells=8&generation=JK02_24S&interval=0.02",
                              2.0, False, ())
    closing.append(pack)
    board = pack.transport.backend.devices[0]  # type: ignore[attr-defined]
    frames = board.frames
    wait_until(lambda: pack.transport.is_open, what="the simulated link")
    first, _ = pack.read(time.monotonic() + 2)
    # live: later reads come from later frames
    wait_until(lambda: pack.read(time.monotonic() + 1)[0].extra["frame_counter"]
               != first.extra["frame_counter"], what="a newer frame")
    board.pause_stream()
    # once the last frame the board made has arrived, the reading is exactly its state
    deadline = time.monotonic() + 3
    while True:
        reading, _ = pack.read(time.monotonic() + 1)
        source = frames.last_reading
        if reading.cell_voltages_volts == source.cell_voltages_volts:
            break
        assert time.monotonic() < deadline, "the served reading never matched the simulator"
    assert reading.cells == 8
    assert reading.device.protocol_version == jk02.JK02_24S  # told by the device-info frame
    assert reading.pack_voltage_volts == pytest.approx(source.pack_voltage_volts, abs=0.001)
    assert reading.current_amperes == pytest.approx(source.current_amperes, abs=0.001)
    assert reading.state_of_charge_ratio == pytest.approx(source.state_of_charge_ratio,
                                                          abs=0.01)
    assert reading.temperatures_celsius["battery1"] == pytest.approx(
        source.temperatures_celsius["battery1"])
    assert reading.device.device_id == "SimBMS01"
    assert reading.setting("cell_overvoltage_protection").value == pytest.approx(3.65)
    assert board.non_read_writes == []


def test_a_scrape_never_outlasts_its_deadline_while_the_ble_link_is_coming_up(
        closing: List) -> None:
    board = ble_fake.FakeJkBms(
        ble_fake.ReplayFrames([FRAMES["cell_info_jk02_24s_v10"]]), connect_delay=1.0)
    pack = ble.build_ble_pack("slow", "ble://%s?generation=JK02_24S" % board.address, 5.0, False,
                              (), backend=ble_fake.FakeBleBackend(board),
                              **dict(FAST, connect_timeout=3.0))
    closing.append(pack)
    poller = Poller([pack], min_interval=0, scrape_timeout=0.5)
    closing.append(poller)
    started = time.monotonic()
    result = poller.poll().results[0]
    assert time.monotonic() - started < 0.5 + 0.2
    assert not result.up and result.reason == "io" and "connecting" in result.error
    wait_until(lambda: poller.poll().results[0].up, what="the pack once connected")
    assert board.connections == 1
