"""The collector and poller against simulated BMSs on real TCP sockets."""

from __future__ import annotations

import threading
import time
from typing import Dict, List, Tuple

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jkbms_exporter.collector import JkbmsCollector, Poller
from jkbms_exporter.config import PackConfig, build_packs
from jkbms_exporter.errors import READ_ERROR_REASONS
from jkbms_exporter.sim.bms import SimulatedBms
from jkbms_exporter.sim.serve import TcpSimulator

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]




def start_sim(servers: List[TcpSimulator], fault: str = "none", scenario: str = "normal",
              cells: int = 16, latency: float = 0.02) -> TcpSimulator:
    sim = TcpSimulator(SimulatedBms(cells=cells, scenario=scenario, seed=len(servers)),
                       latency=latency, fault=fault).start()
    servers.append(sim)
    return sim


def scrape(registry: CollectorRegistry) -> Samples:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def make(configs: List[PackConfig], **poller_options: float) -> Tuple[Poller, CollectorRegistry]:
    poller = Poller(build_packs(configs), **poller_options)
    registry = CollectorRegistry()
    registry.register(JkbmsCollector(poller))
    return poller, registry


def test_a_failing_pack_is_down_with_its_reason_and_the_other_unaffected(servers: List) -> None:
    good, bad = start_sim(servers), start_sim(servers, fault="bad-checksum")
    poller, registry = make([PackConfig("good", good.url), PackConfig("bad", bad.url)],
                            min_interval=0)
    samples = scrape(registry)
    assert value(samples, "jkbms_up", pack="good") == 1
    assert value(samples, "jkbms_up", pack="bad") == 0
    assert value(samples, "jkbms_read_errors_total", pack="bad", reason="checksum") == 1
    for reason in READ_ERROR_REASONS:  # every reason exists from the start
        assert value(samples, "jkbms_read_errors_total", pack="good", reason=reason) == 0
    assert value(samples, "jkbms_cells", pack="good") == 16
    assert ("jkbms_cells", (("pack", "bad"),)) not in samples
    assert ("jkbms_last_success_timestamp_seconds", (("pack", "bad"),)) not in samples

    bad.fault = "none"  # the fault ends: the pack is back on the next scrape
    samples = scrape(registry)
    assert value(samples, "jkbms_up", pack="bad") == 1
    assert value(samples, "jkbms_read_errors_total", pack="bad", reason="checksum") == 1
    assert value(samples, "jkbms_last_success_timestamp_seconds", pack="bad") == pytest.approx(
        time.time(), abs=5)
    poller.close()


def test_describe_touches_no_port() -> None:
    # a port nobody listens on: registering must not try to read it
    poller, registry = make([PackConfig("x", "socket://127.0.0.1:9")])
    assert poller.snapshot is None
    names = {family.name for family in JkbmsCollector(poller).describe()}
    assert {"jkbms_up", "jkbms_cell_voltage_volts", "jkbms_read_errors"} <= names
    assert poller.snapshot is None
    poller.close()


def test_concurrent_scrapes_share_one_read(servers: List) -> None:
    # the reply takes 0.6 s and the five scrapes start together, so they overlap even when a
    # loaded machine schedules the threads late
    sim = start_sim(servers, latency=0.6)
    poller, registry = make([PackConfig("a", sim.url)], min_interval=0)
    results: List[Samples] = []
    start = threading.Barrier(5)

    def scrape_together() -> None:
        start.wait()
        results.append(scrape(registry))

    threads = [threading.Thread(target=scrape_together) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 5 and all(value(r, "jkbms_up", pack="a") == 1 for r in results)
    assert sim.requests_received == 1
    poller.close()


def test_a_young_result_is_reused_and_an_old_one_is_not(servers: List) -> None:
    sim = start_sim(servers)
    poller, registry = make([PackConfig("a", sim.url)], min_interval=0.5)
    scrape(registry)
    scrape(registry)
    assert sim.requests_received == 1
    time.sleep(0.6)
    scrape(registry)
    assert sim.requests_received == 2
    poller.close()


def test_packs_on_separate_ports_are_read_concurrently(servers: List) -> None:
    sims = [start_sim(servers, latency=0.4) for _ in range(4)]
    poller, registry = make([PackConfig("p%d" % i, s.url) for i, s in enumerate(sims)],
                            min_interval=0)
    started = time.monotonic()
    samples = scrape(registry)
    elapsed = time.monotonic() - started
    assert all(value(samples, "jkbms_up", pack="p%d" % i) == 1 for i in range(4))
    assert elapsed < 1.2  # sequential would be at least 4 x 0.4 s
    poller.close()


def test_scrape_timeout_bounds_a_scrape_however_many_packs_hang(servers: List) -> None:
    silent = [start_sim(servers, fault="silent") for _ in range(3)]
    good = start_sim(servers)
    configs = [PackConfig("hang%d" % i, s.url, read_timeout=30.0) for i, s in enumerate(silent)]
    configs.append(PackConfig("good", good.url))
    poller, registry = make(configs, min_interval=0, scrape_timeout=1.0)
    started = time.monotonic()
    samples = scrape(registry)
    assert time.monotonic() - started < 1.5
    assert value(samples, "jkbms_up", pack="good") == 1
    for i in range(3):  # reported down as timeouts, never dropped
        assert value(samples, "jkbms_up", pack="hang%d" % i) == 0
        assert value(samples, "jkbms_read_errors_total", pack="hang%d" % i, reason="timeout") == 1
    poller.close()


def test_packs_sharing_a_port_are_read_in_turn_within_the_budget(servers: List) -> None:
    from jkbms_exporter.pack import JkSerialProtocol, Pack
    from jkbms_exporter.links.serial import SerialTransport

    sim = start_sim(servers)
    shared = SerialTransport(sim.url)  # as bus protocols share one port between packs
    poller = Poller([Pack("a", shared, JkSerialProtocol()), Pack("b", shared, JkSerialProtocol())],
                    min_interval=0)
    registry = CollectorRegistry()
    registry.register(JkbmsCollector(poller))
    samples = scrape(registry)
    assert value(samples, "jkbms_up", pack="a") == value(samples, "jkbms_up", pack="b") == 1
    assert sim.requests_received == 2
    poller.close()


def test_unique_pack_names_are_required() -> None:
    from jkbms_exporter.config import ConfigError

    with pytest.raises(ConfigError, match="used twice"):
        build_packs([PackConfig("a", "socket://127.0.0.1:1"), PackConfig("a", "socket://x:2")])


def test_point_to_point_packs_cannot_share_a_port() -> None:
    from jkbms_exporter.config import ConfigError

    with pytest.raises(ConfigError, match="port of its own"):
        build_packs([PackConfig("a", "socket://127.0.0.1:1"), PackConfig("b", "socket://127.0.0.1:1")])


def test_extra_labels_and_inverted_current(servers: List) -> None:
    sim = start_sim(servers, scenario="cold-charge")  # charging at +10 A
    poller, registry = make([
        PackConfig("a", sim.url, labels=(("site", "cabin"),), invert_current=True),
        PackConfig("b", start_sim(servers, scenario="cold-charge").url),
    ], min_interval=0)
    samples = scrape(registry)
    assert value(samples, "jkbms_current_amperes", pack="a", site="cabin") == -10.0
    # exposed as site="", which Prometheus stores as no label at all
    assert value(samples, "jkbms_current_amperes", pack="b", site="") == 10.0
    assert value(samples, "jkbms_cell_voltage_volts", pack="a", site="cabin", cell="01") > 0
    poller.close()


def test_first_failure_warns_repeats_are_rate_limited_recovery_logged_once(
        servers: List, caplog: pytest.LogCaptureFixture) -> None:
    sim = start_sim(servers, fault="bad-checksum", latency=0.0)
    poller, registry = make([PackConfig("a", sim.url)], min_interval=0)
    with caplog.at_level("INFO", logger="jkbms_exporter"):
        for _ in range(5):
            scrape(registry)
        sim.fault = "none"
        scrape(registry)
        scrape(registry)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    recoveries = [r for r in caplog.records if "reading again" in r.getMessage()]
    assert len(warnings) == 1 and "checksum" in warnings[0].getMessage()
    assert len(recoveries) == 1 and "5 failed" in recoveries[0].getMessage()
    poller.close()


# ----------------------------------------------------------------------------- issue 12: what no test noticed


def test_fail_recover_fail_starts_a_new_run_of_failures(
        servers: List, caplog: pytest.LogCaptureFixture) -> None:
    sim = start_sim(servers, fault="bad-checksum", latency=0.0)
    poller, registry = make([PackConfig("a", sim.url)], min_interval=0)
    with caplog.at_level("INFO", logger="jkbms_exporter"):
        scrape(registry)
        scrape(registry)
        assert poller.status["a"].consecutive_failures == 2
        sim.fault = "none"
        scrape(registry)
        assert poller.status["a"].consecutive_failures == 0
        sim.fault = "bad-checksum"
        scrape(registry)
    assert poller.status["a"].consecutive_failures == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    # the new run's first failure is warned about at once, as a first failure
    assert len(warnings) == 2 and "in a row" not in warnings[1], warnings
    assert value(scrape(registry), "jkbms_read_errors_total", pack="a", reason="checksum") == 4
    poller.close()


class StuckDriver:
    """A port whose driver call never returns in time (a USB adapter pulled mid-read: it
    cannot be done for real here). ``read`` blocks until released, ignoring the deadline."""

    name = "stuck"

    def __init__(self) -> None:
        self.url = "stuck://port"
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.reads = 0

    def read(self, transport: object, deadline: float) -> tuple:
        self.reads += 1
        self.release.wait(10)
        return SimulatedBms(cells=4, seed=1).reading(), b""

    def close(self) -> None:
        self.release.set()


def test_a_port_still_busy_past_its_deadline_is_reported_down_and_not_read_again(
        servers: List) -> None:
    from jkbms_exporter.pack import Pack

    stuck = StuckDriver()
    good = start_sim(servers)
    packs = [Pack("stuck", stuck, stuck, read_timeout=5.0)] + build_packs(  # type: ignore[arg-type]
        [PackConfig("good", good.url)])
    poller = Poller(packs, min_interval=0, scrape_timeout=0.6)
    registry = CollectorRegistry()
    registry.register(JkbmsCollector(poller))
    try:
        for attempt in range(2):
            started = time.monotonic()
            samples = scrape(registry)
            assert time.monotonic() - started < 3.0  # the stuck read blocks for 10 s
            assert value(samples, "jkbms_up", pack="stuck") == 0
            assert value(samples, "jkbms_up", pack="good") == 1
            assert value(samples, "jkbms_read_errors_total", pack="stuck",
                         reason="timeout") == attempt + 1
            assert value(samples, "jkbms_scrape_duration_seconds", pack="stuck") == 0.6
        assert stuck.reads == 1  # the second scrape did not pile a read onto the stuck port
        result = poller.snapshot.results[0]  # type: ignore[union-attr]
        assert result.error == "port still busy past the scrape timeout"
        stuck.release.set()  # the driver returns: the port is read again
        for _ in range(50):
            if not poller.busy_ports():
                break
            time.sleep(0.05)
        assert value(scrape(registry), "jkbms_up", pack="stuck") == 1 and stuck.reads == 2
    finally:
        poller.close()


def test_scrape_duration_is_each_packs_own_read_time(servers: List) -> None:
    slow, fast = start_sim(servers, latency=0.8), start_sim(servers, latency=0.0)
    poller, registry = make([PackConfig("slow", slow.url, read_timeout=4.0),
                             PackConfig("fast", fast.url)], min_interval=0)
    samples = scrape(registry)
    slow_s = value(samples, "jkbms_scrape_duration_seconds", pack="slow")
    fast_s = value(samples, "jkbms_scrape_duration_seconds", pack="fast")
    # bounds wide enough for a loaded machine: the slow BMS answers after 0.8 s, the fast
    # one at once; both are read at the same time on their own ports
    assert 0.8 <= slow_s < 4.0, slow_s
    assert 0.0 < fast_s < 0.6, fast_s
    poller.close()


def test_good_reads_feed_the_energy_counters(servers: List) -> None:
    sim = start_sim(servers, scenario="cold-charge", latency=0.0)  # charging at +10 A
    poller, registry = make([PackConfig("a", sim.url)], min_interval=0)
    first = scrape(registry)
    time.sleep(0.3)
    second = scrape(registry)
    assert value(first, "jkbms_charge_energy_joules_total", pack="a") == 0
    charged = value(second, "jkbms_charge_energy_joules_total", pack="a")
    assert charged > 0 and value(second, "jkbms_discharge_energy_joules_total", pack="a") == 0
    assert value(second, "jkbms_charge_coulombs_total", pack="a") > 0
    poller.close()


def test_a_short_scrape_timeout_is_kept_too(servers: List) -> None:
    silent = start_sim(servers, fault="silent")
    poller, registry = make([PackConfig("hang", silent.url, read_timeout=30.0)],
                            min_interval=0, scrape_timeout=0.3)
    started = time.monotonic()
    samples = scrape(registry)
    assert time.monotonic() - started < 1.0
    assert value(samples, "jkbms_read_errors_total", pack="hang", reason="timeout") == 1
    poller.close()


def test_closing_the_poller_closes_every_port(servers: List) -> None:
    a, b = start_sim(servers), start_sim(servers)
    poller, registry = make([PackConfig("a", a.url), PackConfig("b", b.url)], min_interval=0)
    scrape(registry)
    assert all(pack.transport.is_open for pack in poller.packs)
    poller.close()
    assert not any(pack.transport.is_open for pack in poller.packs)


def test_local_ports_are_received_together_by_the_scrapes_own_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Once open, single-pack local serial ports get their requests written and their
    replies received, decoded and rendered by the thread that polls, all at once."""
    from jkbms_exporter.pack import JkSerialProtocol
    from jkbms_exporter.sim.serve import PtySimulator

    sims = [PtySimulator(SimulatedBms(cells=8, seed=seed), latency=0.3).start()
            for seed in range(4)]
    decoded_by: List[str] = []
    decode = JkSerialProtocol.decode

    def spy(self: JkSerialProtocol, frame: bytes) -> object:
        decoded_by.append(threading.current_thread().name)
        return decode(self, frame)

    monkeypatch.setattr(JkSerialProtocol, "decode", spy)
    poller = Poller(build_packs([PackConfig("p%d" % i, sim.path) for i, sim in enumerate(sims)]),
                    min_interval=0)
    try:
        first = poller.poll()  # opens the ports (each in its own port thread)
        assert all(result.up for result in first.results)
        del decoded_by[:]
        time.sleep(0.15)  # the ports' gap between requests (0.1 s) has passed
        started = time.monotonic()
        second = poller.poll()
        took = time.monotonic() - started
        assert all(result.up for result in second.results)
        assert decoded_by == [threading.current_thread().name] * 4
        assert took < 0.9, took  # four answers after 0.3 s each, waited for together
    finally:
        poller.close()
        for sim in sims:
            sim.stop()


def test_a_bug_while_receiving_together_reports_the_packs_down_and_frees_their_ports(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from jkbms_exporter import collector
    from jkbms_exporter.sim.serve import PtySimulator

    sims = [PtySimulator(SimulatedBms(cells=4, seed=seed), latency=0.02).start()
            for seed in range(2)]
    poller = Poller(build_packs([PackConfig("p%d" % i, sim.path) for i, sim in enumerate(sims)]),
                    min_interval=0)
    try:
        assert all(result.up for result in poller.poll().results)  # the ports are open
        time.sleep(0.15)

        def broken(*_: object) -> None:
            raise RuntimeError("planted bug")

        with monkeypatch.context() as patched:
            patched.setattr(collector, "receive_together", broken)
            down = poller.poll().results
        assert [(r.up, r.reason) for r in down] == [(False, "io"), (False, "io")]
        time.sleep(0.15)
        assert all(result.up for result in poller.poll().results)  # no port left locked
    finally:
        poller.close()
        for sim in sims:
            sim.stop()
