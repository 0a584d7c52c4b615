"""Streams feed the energy counters with every record, scraped or not: BLE boards on the fake
radio, a JK-PB bus heard listen-only under a DIP-0 master and one polled, through the real
poller and collector."""

from __future__ import annotations

import time
from typing import Callable, Dict, List

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jkbms_exporter.collector import JkbmsCollector, Poller
from jkbms_exporter.config import PackConfig, build_packs
from jkbms_exporter.links import ble
from jkbms_exporter.sim import ble_board
from jkbms_exporter.sim.ble_radio import FakeBleBackend
from jkbms_exporter.sim.bms import SimulatedBms
from jkbms_exporter.sim.pb_bus import PbBusBms, jk_pb_device
from jkbms_exporter.sim.serve import TcpSimulator

FAST = dict(scan_timeout=0.2, connect_timeout=1.0, backoff_initial=0.05, backoff_max=0.2,
            request_interval=0.5, stall_timeout=2.0, device_info_wait=0.2, close_timeout=2.0)
SKIPPED = "jkbms_energy_skipped_seconds_total"


class Pulses(SimulatedBms):
    """Charges at 30 A for the first quarter of every second, discharges at 5 A for the rest:
    only a reader of (nearly) every record sees 7.5 C in and 3.75 C out per second."""

    def _current(self, elapsed: float) -> float:
        return 30.0 if elapsed % 1.0 < 0.25 else -5.0




def collector(packs: List, cleanup: List) -> Callable[[], Dict[str, Dict[str, float]]]:
    poller = Poller(packs, min_interval=0, scrape_timeout=8.0)
    cleanup.append(poller)
    registry = CollectorRegistry()
    registry.register(JkbmsCollector(poller))

    def scrape() -> Dict[str, Dict[str, float]]:
        out: Dict[str, Dict[str, float]] = {}
        for family in text_string_to_metric_families(generate_latest(registry).decode()):
            for sample in family.samples:
                if "pack" in sample.labels:
                    key = sample.name + ("/" + sample.labels["reason"]
                                         if sample.name == SKIPPED else "")
                    out.setdefault(sample.labels["pack"], {})[key] = sample.value
        return out

    return scrape


def wait_for(scrape: Callable[[], Dict[str, Dict[str, float]]], condition: Callable[[Dict], bool],
             timeout: float = 8.0) -> Dict[str, Dict[str, float]]:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape()
        if condition(samples):
            return samples
        assert time.monotonic() < deadline, "condition not met: %s" % samples
        time.sleep(0.05)


def test_every_ble_record_is_integrated_with_invert_current_and_link_drops(
        cleanup: List) -> None:
    boards = [ble_board.FakeJkBms(ble_board.SimulatedFrames(Pulses(cells=16, seed=seed)),
                                  "C8:47:80:00:00:%02d" % seed, "JK-%d" % seed, interval=0.04)
              for seed in (1, 2)]
    radio = FakeBleBackend(*boards)
    packs = [ble.build_ble_pack("a", "ble://C8:47:80:00:00:01", 2.0, False, backend=radio,
                                **FAST),
             ble.build_ble_pack("b", "ble://C8:47:80:00:00:02", 2.0, True, backend=radio,
                                **FAST)]
    scrape = collector(packs, cleanup)
    wait_for(scrape, lambda s: s["a"]["jkbms_up"] == s["b"]["jkbms_up"] == 1)
    before = scrape()
    time.sleep(2.0)  # no scrape meanwhile: two scrapes alone would see one trapezoid
    after = scrape()
    grown = {pack: {name: after[pack][name] - before[pack][name] for name in after[pack]}
             for pack in ("a", "b")}
    # 2 s of pulses: about 15 C in and 7.5 C out (records 40 ms apart blur each edge a little)
    assert 11 <= grown["a"]["jkbms_charge_coulombs_total"] <= 19
    assert 5 <= grown["a"]["jkbms_discharge_coulombs_total"] <= 10
    # invert_current applies before integrating: pack b sees the same pulses the other way
    assert 11 <= grown["b"]["jkbms_discharge_coulombs_total"] <= 19
    assert 5 <= grown["b"]["jkbms_charge_coulombs_total"] <= 10
    volts = after["a"]["jkbms_pack_voltage_volts"]
    assert grown["a"]["jkbms_charge_energy_joules_total"] == pytest.approx(
        volts * grown["a"]["jkbms_charge_coulombs_total"], rel=0.05)
    assert after["a"][SKIPPED + "/failed_read"] == 0

    boards[0].drop()  # the link drops: records may be lost, nothing is integrated across it
    dropped = wait_for(scrape, lambda s: s["a"][SKIPPED + "/failed_read"] > 0)
    assert dropped["b"][SKIPPED + "/failed_read"] == 0
    wait_for(scrape, lambda s: s["a"]["jkbms_charge_coulombs_total"]
             > dropped["a"]["jkbms_charge_coulombs_total"] + 1)  # and resumes after it


def bus(addresses: List[int], master: bool) -> PbBusBms:
    return PbBusBms({a: SimulatedBms(cells=16, scenario="cold-charge", seed=a,
                                     device=jk_pb_device(a)) for a in addresses}, master=master)


@pytest.mark.parametrize("master", [True, False], ids=["listen-only", "polled"])
def test_a_jk_pb_bus_feeds_the_counters_with_every_record_it_hears(
        cleanup: List, master: bool) -> None:
    sim = TcpSimulator(bus([1, 2], master), latency=0.02).start()
    cleanup.append(sim)
    packs = build_packs([PackConfig("p%d" % a, sim.url, protocol="jk-pb", address=a,
                                    invert_current=a == 2) for a in (1, 2)])
    scrape = collector(packs, cleanup)
    wait_for(scrape, lambda s: s["p1"]["jkbms_up"] == s["p2"]["jkbms_up"] == 1)
    time.sleep(0.3)  # a scrape right after a listen would reuse what that listen heard
    started = time.monotonic()
    first = scrape()  # each scrape integrates records received during it (listen: fresh ones)
    time.sleep(1.0)
    last = scrape()
    span = time.monotonic() - started
    for pack, direction in (("p1", "charge"), ("p2", "discharge")):  # 10 A; p2 inverted
        grown = (last[pack]["jkbms_%s_coulombs_total" % direction]
                 - first[pack]["jkbms_%s_coulombs_total" % direction])
        assert 10.0 * 0.95 <= grown <= 10.0 * span, (pack, grown, span)
        other = "discharge" if direction == "charge" else "charge"
        assert last[pack]["jkbms_%s_coulombs_total" % other] == 0
    if master:
        assert sim.requests_received == 0, "the exporter sent something to a bus it must only hear"
