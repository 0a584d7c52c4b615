"""JK-PB packs on a simulated RS-485 bus, read through real pyserial (TCP gateway and pty)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from typing import Dict, List

import pytest

from conftest import load_vectors

from jkbms_exporter.protocols import jk02, jk_pb
from jkbms_exporter.collector import Poller
from jkbms_exporter.config import PackConfig, build_packs
from jkbms_exporter.links.pb_bus import PbBus, read_response_framer, trigger_framer
from jkbms_exporter.sim.bms import SimulatedBms
from jkbms_exporter.sim.pb_bus import PbBusBms, jk_pb_device
from jkbms_exporter.sim.serve import PtySimulator, TcpSimulator


def bus_of(addresses: List[int], **options: object) -> PbBusBms:
    return PbBusBms({a: SimulatedBms(cells=16, seed=a, device=jk_pb_device(a)) for a in addresses},
                    **options)  # type: ignore[arg-type]




def poller_for(url: str, addresses: List[int], cleanup: List, **options: float) -> Poller:
    packs = build_packs([PackConfig("p%d" % a, url, protocol="jk-pb", address=a)
                         for a in addresses])
    poller = Poller(packs, min_interval=0, **options)
    cleanup.append(poller)
    return poller


def results(poller: Poller) -> Dict[str, object]:
    return {r.name: r for r in poller.poll().results}


# ----------------------------------------------------------------------------- framing


def exchange(vectors_pb: dict, vector_id: str) -> dict:
    (found,) = [e for e in vectors_pb["frames"] if e["id"] == vector_id]
    return found


def test_trigger_framer_skips_the_echo_and_waits_for_the_ack(vectors_pb: dict) -> None:
    vector = exchange(vectors_pb, "mppsolar_jkpb_20")
    request = bytes.fromhex(vector["request_hex"])
    reply = bytes.fromhex(vector["response_hex"]) + bytes.fromhex(vector["ack_hex"])
    framer = trigger_framer(1)
    stream = request + reply  # an adapter that echoes what it sends
    start, size = framer(stream[: len(request) + 100])
    assert start == len(request) and size == 308  # ask for the whole frame + ACK at once
    start, size = framer(stream)
    assert stream[start : start + size] == reply[:size]
    assert jk_pb.parse_trigger_reply(stream[start : start + size], 1).address == 1


def test_read_response_framer_skips_the_echo() -> None:
    request = jk_pb.read_request(2, 0x1200, 8)
    response = jk_pb.encode_read_response(2, bytes(range(16)))
    framer = read_response_framer(request)
    start, size = framer(request + response)
    assert (request + response)[start : start + size] == response


@pytest.fixture(scope="module")
def vectors_pb() -> dict:
    return load_vectors("pb-modbus.json")


# ----------------------------------------------------------------------------- polling


def test_packs_on_one_bus_each_answer_at_their_address(cleanup: List) -> None:
    sim = TcpSimulator(bus_of([1, 2, 5]), latency=0.02).start()
    cleanup.append(sim)
    poller = poller_for(sim.url, [1, 2, 5], cleanup)
    first = results(poller)
    for address in (1, 2, 5):
        reading = first["p%d" % address].reading
        assert reading is not None and reading.cells == 16
        assert reading.device.protocol == "jk-pb"
        # device info is the first extra frame fetched
        assert reading.device.serial_number == jk_pb_device(address).serial_number
    second = results(poller)
    settings = {s.name: s.value for s in second["p2"].reading.settings}
    assert settings["cell_overvoltage_protection"] == pytest.approx(3.65)
    assert second["p2"].reading.cell_resistances_ohms is not None


def test_an_absent_pack_costs_one_reply_timeout_per_scrape_not_a_retry_storm(cleanup: List) -> None:
    bms = bus_of([1, 2])
    sim = TcpSimulator(bms, latency=0.02).start()
    cleanup.append(sim)
    poller = poller_for(sim.url, [1, 2, 9], cleanup)
    results(poller)  # first scrape: probe for a master, device info
    for _ in range(4):
        before = sum(1 for r in bms.requests if r.address == 9)
        scrape = results(poller)
        sent = sum(1 for r in bms.requests if r.address == 9) - before
        assert sent == 1, "requests to the absent pack in one scrape: %d" % sent
        assert not scrape["p9"].up and scrape["p9"].reason == "timeout"
        assert scrape["p9"].duration_seconds < 0.5 + 0.12 + 0.2
        assert scrape["p1"].up and scrape["p2"].up


def test_fc03_fallback_when_a_pack_ignores_triggers(cleanup: List) -> None:
    sim = TcpSimulator(bus_of([3], answer_triggers=False), latency=0.02).start()
    cleanup.append(sim)
    poller = poller_for(sim.url, [3], cleanup)
    outcomes = [results(poller)["p3"] for _ in range(3)]
    assert [o.up for o in outcomes] == [False, False, True]  # two trigger timeouts, then FC03
    reading = outcomes[-1].reading
    assert reading.extra["source"] == "fc03"
    assert reading.cells == 16 and 2.5 < reading.cell_voltages_volts[0] < 3.65


def test_listen_only_when_a_master_owns_the_bus(cleanup: List, caplog: pytest.LogCaptureFixture) -> None:
    bms = bus_of([1, 2, 5], master=True)
    sim = TcpSimulator(bms, latency=0.02).start()
    cleanup.append(sim)
    poller = poller_for(sim.url, [1, 2, 5], cleanup)
    with caplog.at_level(logging.WARNING, logger="jkbms_exporter"):
        for _ in range(3):
            scrape = results(poller)
            assert all(scrape["p%d" % a].up for a in (1, 2, 5))
            assert scrape["p5"].reading.extra["source"] == "listen"
            assert 0 <= scrape["p5"].reading.extra["reading_age_seconds"] <= 30
            time.sleep(0.3)
    assert sim.requests_received == 0, "the exporter sent something to a bus it must only hear"
    warnings = [r.getMessage() for r in caplog.records if "another master" in r.getMessage()]
    assert len(warnings) == 1 and "DIP address" in warnings[0]


def test_master_leaves_and_the_exporter_polls_again(cleanup: List) -> None:
    bms = bus_of([1], master=True)
    sim = TcpSimulator(bms, latency=0.02).start()
    cleanup.append(sim)
    packs = build_packs([PackConfig("p1", sim.url, protocol="jk-pb", address=1)])
    bus: PbBus = packs[0].protocol.bus  # type: ignore[attr-defined]
    bus.listen_window = 1.0  # keep the test short; the default covers a real master's cycle
    poller = Poller(packs, min_interval=0)
    cleanup.append(poller)
    assert results(poller)["p1"].reading.extra["source"] == "listen"
    bms.master = False
    deadline = time.monotonic() + 10
    while bus.mode != "poll":
        assert time.monotonic() < deadline, "still listening to a silent bus"
        time.sleep(0.25)
        results(poller)
    polled = results(poller)["p1"].reading
    assert polled.extra["source"] == "trigger" and "reading_age_seconds" not in polled.extra
    assert sim.requests_received >= 1


def test_auto_protocol_finds_jk_pb_and_jk_serial(cleanup: List) -> None:
    pb = TcpSimulator(bus_of([4]), latency=0.02).start()
    serial_bms = TcpSimulator(SimulatedBms(cells=8, seed=1), latency=0.02).start()
    cleanup.extend([pb, serial_bms])
    packs = build_packs([PackConfig("pb", pb.url, protocol="auto", address=4),
                         PackConfig("jk", serial_bms.url, protocol="auto")])
    poller = Poller(packs, min_interval=0)
    cleanup.append(poller)
    for _ in range(2):
        scrape = results(poller)
        assert scrape["pb"].up and scrape["pb"].reading.device.protocol == "jk-pb"
        assert scrape["jk"].up and scrape["jk"].reading.device.protocol == "jk-serial"


def test_a_bus_over_a_pseudo_terminal_with_paced_replies(cleanup: List) -> None:
    sim = PtySimulator(bus_of([1, 2]), latency=0.02).start()  # paced at 115200 Bd
    cleanup.append(sim)
    poller = poller_for(sim.path, [1, 2], cleanup)
    scrape = results(poller)
    assert scrape["p1"].up and scrape["p2"].up


def test_a_real_jk_pb_frame_on_the_bus_decodes_to_its_listed_values(cleanup: List,
                                                                  vectors_pb: dict) -> None:
    vector = exchange(vectors_pb, "mppsolar_jkpb_20")  # a JK_PB2A16S15P's cell-info frame
    frame = bytes.fromhex(vector["response_hex"])

    class Replay(PbBusBms):
        def _frame(self, bms: SimulatedBms, frame_type: int) -> bytes:
            return frame if frame_type == jk02.FRAME_CELL_INFO else super()._frame(bms, frame_type)

    sim = TcpSimulator(Replay({1: SimulatedBms(seed=1, device=jk_pb_device(1))}), latency=0.01).start()
    cleanup.append(sim)
    reading = results(poller_for(sim.url, [1], cleanup))["p1"].reading
    expected = vector["expected"]
    assert list(reading.cell_voltages_volts) == pytest.approx(expected["cell_voltages_v"])
    assert reading.cells == expected["cell_count"]
    assert reading.pack_voltage_volts == pytest.approx(expected["total_voltage_v"])
    assert list(reading.cell_resistances_ohms) == pytest.approx(expected["cell_resistances_ohm"])


# ----------------------------------------------------------------------------- command line


def test_read_and_simulate_commands_for_a_jk_pb_bus(tmp_path) -> None:
    link = tmp_path / "ttyRS485"
    sim = subprocess.Popen([sys.executable, "-m", "jkbms_exporter", "simulate", "--pty",
                            "--link", str(link), "--protocol", "jk-pb", "--addresses", "2,7"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert sim.stdout.readline().strip() == str(link)
        result = subprocess.run([sys.executable, "-m", "jkbms_exporter", "read", str(link),
                                 "--protocol", "jk-pb", "--address", "7", "--json"],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout)
        assert document["device_info"]["serial_number"] == jk_pb_device(7).serial_number
        assert len(document["cell_voltage_volts"]) == 16
        # one-shot read: settings and device info come with the first read
        assert document["setting_volts"]["cell_overvoltage_protection"] == pytest.approx(3.65)
        table = subprocess.run([sys.executable, "-m", "jkbms_exporter", "read", str(link),
                                "--protocol", "jk-pb", "--address", "2"],
                               capture_output=True, text=True, timeout=30).stdout
        assert "cell 01" in table and " Ω" in table and "Health           97 %" in table
        missing = subprocess.run([sys.executable, "-m", "jkbms_exporter", "read", str(link),
                                  "--protocol", "jk-pb"], capture_output=True, text=True, timeout=30)
        assert missing.returncode == 2 and "--address" in missing.stderr
    finally:
        sim.terminate()
        sim.wait(10)


def test_landing_page_says_listen_only(start_exporter, tmp_path) -> None:
    from conftest import free_port, http_get

    port = free_port()
    sim = subprocess.Popen([sys.executable, "-m", "jkbms_exporter", "simulate", "--listen",
                            "127.0.0.1:%d" % port, "--protocol", "jk-pb", "--addresses", "1",
                            "--master"], stdout=subprocess.PIPE, text=True)
    try:
        sim.stdout.readline()
        config = tmp_path / "jkbms.yml"
        config.write_text("packs:\n  - name: rack\n    url: socket://127.0.0.1:%d\n"
                          "    protocol: jk-pb\n    address: 1\n" % port)
        exporter = start_exporter("--config.file", str(config))
        text = exporter.metrics()
        assert 'jkbms_up{pack="rack"} 1.0' in text
        assert 'jkbms_reading_age_seconds{pack="rack"}' in text
        page = http_get(exporter.url + "/")
        assert "listen-only: another master polls this bus" in page and "s old" in page
        log = exporter.stop()
        assert "another master is polling this RS-485 bus" in log
    finally:
        sim.terminate()
        sim.wait(10)
