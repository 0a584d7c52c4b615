"""Every link fault, end to end through real HTTP: /metrics keeps answering, the faulty pack
is down with the right reason, the other pack is unaffected, and the faulty pack recovers
by itself within two scrapes of the fault ending."""

from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import serial
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from conftest import http_get

from jkbms_exporter.collector import JkbmsCollector, Poller
from jkbms_exporter.web.server import ExporterApp, make_http_server, serve_in_thread
from jkbms_exporter.pack import JkSerialProtocol, Pack
from jkbms_exporter.sim.bms import SimulatedBms
from jkbms_exporter.sim.serve import PtySimulator, TcpSimulator
from jkbms_exporter.links.serial import SerialTransport


class Exporter:
    """The real collector behind the real HTTP server, in this process."""

    def __init__(self, packs: List[Pack], scrape_timeout: float = 4.0) -> None:
        self.poller = Poller(packs, min_interval=0, scrape_timeout=scrape_timeout)
        registry = CollectorRegistry()
        registry.register(JkbmsCollector(self.poller))
        self.server = make_http_server(ExporterApp(registry, self.poller), "127.0.0.1:0")
        self.thread = serve_in_thread(self.server)
        self.url = "http://127.0.0.1:%d/metrics" % self.server.server_address[1]

    def scrape(self) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
        text = http_get(self.url)
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.poller.close()


def up(samples: Dict, pack: str) -> float:
    return samples[("jkbms_up", (("pack", pack),))]


def errors(samples: Dict, pack: str, reason: str) -> float:
    return samples[("jkbms_read_errors_total", (("pack", pack), ("reason", reason)))]


def pack(name: str, url: str, read_timeout: float = 1.0) -> Pack:
    return Pack(name, SerialTransport(url), JkSerialProtocol(), read_timeout)




#: TCP gateways are read by each port's own thread; local serial ports (ptys here) are
#: received together by the scrape's thread (``links/serial_together``), once open.
LINKS = ["tcp", "pty"]


def simulator(link: str, bms: SimulatedBms, **options: object) -> Tuple[object, str]:
    """A started simulator on ``link`` and the URL of its port."""
    if link == "tcp":
        sim = TcpSimulator(bms, latency=0.02, **options).start()  # type: ignore[arg-type]
        return sim, sim.url
    sim = PtySimulator(bms, latency=0.02, **options).start()  # type: ignore[arg-type]
    return sim, sim.path


def healthy_and(cleanup: List, fault: str, link: str = "tcp") -> Tuple[Exporter, TcpSimulator]:
    good, good_url = simulator(link, SimulatedBms(cells=16, seed=1))
    bad, bad_url = simulator(link, SimulatedBms(cells=8, seed=2), fault=fault)
    cleanup.extend([good, bad])
    # "chunked" spreads a reply over ~0.5 s of pauses: on a loaded machine the sleeps
    # overshoot, so that pack gets room beyond the 1 s default (the fault must not time out)
    faulty_timeout = 3.0 if fault == "chunked" else 1.0
    exporter = Exporter([pack("good", good_url), pack("faulty", bad_url, faulty_timeout)])
    cleanup.append(exporter)
    return exporter, bad  # type: ignore[return-value]


def recovers_within_two_scrapes(exporter: Exporter, name: str) -> None:
    scrapes = [exporter.scrape() for _ in range(2)]
    assert up(scrapes[-1], name) == 1, "not recovered after two scrapes"


@pytest.mark.parametrize("fault, reason", [
    ("silent", "timeout"),
    ("partial", "malformed"),
    ("bad-checksum", "checksum"),
    ("bad-length", "malformed"),
    ("trickle", "timeout"),
])
@pytest.mark.parametrize("link", LINKS)
def test_fault_is_reported_isolated_and_recovered(cleanup: List, fault: str, reason: str,
                                                  link: str) -> None:
    exporter, bad = healthy_and(cleanup, fault, link)
    if link == "pty":  # the ports open on the first scrape; from the next on, together
        fresh = exporter.scrape()
        assert up(fresh, "good") == 1 and up(fresh, "faulty") == 0
    for attempt in (1, 2):
        samples = exporter.scrape()
        assert up(samples, "good") == 1
        assert up(samples, "faulty") == 0
        assert errors(samples, "faulty", reason) == attempt + (link == "pty")
        assert all(errors(samples, "good", r) == 0 for r in ("timeout", "checksum", "malformed", "io"))
    bad.fault = "none"
    if fault == "trickle":  # the last trickled reply must finish draining from the BMS first
        time.sleep(4)
    recovers_within_two_scrapes(exporter, "faulty")


@pytest.mark.parametrize("fault", ["junk-before", "chunked", "trailing-junk"])
@pytest.mark.parametrize("link", LINKS)
def test_tolerable_line_faults_keep_the_pack_up(cleanup: List, fault: str, link: str) -> None:
    exporter, _ = healthy_and(cleanup, fault, link)
    for _ in range(3):
        samples = exporter.scrape()
        assert up(samples, "faulty") == 1 and up(samples, "good") == 1
    assert errors(samples, "faulty", "malformed") == 0


def test_adapter_unplugged_and_replugged_on_the_same_path(cleanup: List, tmp_path: Path) -> None:
    link = str(tmp_path / "usb-1a86_USB_Serial-if00-port0")
    sim = PtySimulator(SimulatedBms(cells=16, seed=3), link=link, latency=0.02).start()
    good = TcpSimulator(SimulatedBms(cells=4, seed=4), latency=0.02).start()
    cleanup.extend([sim, good])
    exporter = Exporter([pack("usb", link), pack("good", good.url)])
    cleanup.append(exporter)
    assert up(exporter.scrape(), "usb") == 1
    sim.unplug()
    for _ in range(3):
        samples = exporter.scrape()
        assert up(samples, "usb") == 0 and up(samples, "good") == 1
    assert errors(samples, "usb", "io") == 3
    sim.replug()
    time.sleep(BACKOFF_WAIT)  # the reopen backoff of the failures above runs out
    recovers_within_two_scrapes(exporter, "usb")


#: Longest reopen backoff after the three failures of a test (0.5 + 1 + 2 s, capped at 5).
BACKOFF_WAIT = 2.1


def test_gateway_reset_and_back_on_the_same_port(cleanup: List) -> None:
    exporter, bad = healthy_and(cleanup, "none")
    assert up(exporter.scrape(), "faulty") == 1
    bad.reset()
    for _ in range(2):
        samples = exporter.scrape()
        assert up(samples, "faulty") == 0 and up(samples, "good") == 1
    assert errors(samples, "faulty", "io") + errors(samples, "faulty", "timeout") == 2
    bad.restore()
    time.sleep(BACKOFF_WAIT)
    recovers_within_two_scrapes(exporter, "faulty")


def test_single_client_gateway_taken_by_another_tool(cleanup: List) -> None:
    gateway = TcpSimulator(SimulatedBms(cells=4, seed=5), latency=0.02, max_clients=1).start()
    good = TcpSimulator(SimulatedBms(cells=4, seed=6), latency=0.02).start()
    cleanup.extend([gateway, good])
    other = serial.serial_for_url(gateway.url, timeout=0.2)
    time.sleep(0.2)
    exporter = Exporter([pack("gw", gateway.url), pack("good", good.url)])
    cleanup.append(exporter)
    samples = exporter.scrape()
    assert up(samples, "gw") == 0 and up(samples, "good") == 1
    other.close()
    time.sleep(BACKOFF_WAIT)
    recovers_within_two_scrapes(exporter, "gw")


def _resources() -> Tuple[int, int, float]:
    gc.collect()
    rss_kb = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                  if line.startswith("VmRSS:"))
    return threading.active_count(), len(os.listdir("/proc/self/fd")), rss_kb / 1024


def test_ten_thousand_failed_reads_leak_no_threads_fds_or_memory(cleanup: List) -> None:
    garbled = TcpSimulator(SimulatedBms(cells=16, seed=7), latency=0.0, baudrate=None,
                           fault="bad-checksum").start()
    cleanup.append(garbled)
    closed_port = TcpSimulator(SimulatedBms(cells=4, seed=8))  # bound, then closed: refuses
    refused_url = closed_port.url
    closed_port.stop()
    packs = [
        Pack("garbled", SerialTransport(garbled.url, min_gap=0.0), JkSerialProtocol(retries=0), 1.0),
        # no backoff: every failed read really opens (and fails to open) the connection
        Pack("refused", SerialTransport(refused_url, backoff_initial=0.0, backoff_max=0.0),
             JkSerialProtocol(), 1.0),
    ]
    poller = Poller(packs, min_interval=0)
    cleanup.append(poller)
    for _ in range(200):  # warm up: thread pool, caches, allocator arenas
        poller.poll()
    before = _resources()
    for _ in range(5000):
        poller.poll()
    after = _resources()
    failed = sum(sum(status.errors.values()) for status in poller.status.values())
    assert failed == 2 * 5200
    assert poller.status["garbled"].errors["checksum"] == 5200
    assert poller.status["refused"].errors["io"] == 5200
    assert after[0] == before[0], "threads %d -> %d" % (before[0], after[0])
    assert after[1] == before[1], "file descriptors %d -> %d" % (before[1], after[1])
    assert after[2] - before[2] < 2.0, "RSS %.1f -> %.1f MB" % (before[2], after[2])
