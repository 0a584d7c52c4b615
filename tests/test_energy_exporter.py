"""The energy and charge counters as users see them: simulated BMSs on real TCP sockets,
the collector, the exporter process over HTTP, its flag and configuration values."""

from __future__ import annotations

import time
from typing import Callable, List, Tuple

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ExporterProcess

from jkbms_exporter.collector import JkbmsCollector, Poller
from jkbms_exporter.config import ConfigError, PackConfig, build_packs, parse_config
from jkbms_exporter.sim.bms import SimulatedBms
from jkbms_exporter.sim.serve import TcpSimulator

COUNTERS = ("jkbms_charge_energy_joules_total", "jkbms_discharge_energy_joules_total",
            "jkbms_charge_coulombs_total", "jkbms_discharge_coulombs_total")
SKIPPED = "jkbms_energy_skipped_seconds_total"
REASONS = ("gap", "failed_read", "implausible")
#: The simulator's cold-charge scenario charges at exactly this current.
COLD_CHARGE_AMPERES = 10.0


class Overcurrent(SimulatedBms):
    """A BMS whose current reads 250 A: 2.5 x its own charge over-current protection."""

    def _current(self, elapsed: float) -> float:
        return 250.0




def serve(servers: List[TcpSimulator], bms: SimulatedBms) -> str:
    sim = TcpSimulator(bms, latency=0.0).start()
    servers.append(sim)
    return sim.url


def values(text: str, pack: str) -> dict:
    """Series of one pack: metric name (plus ``/reason``) → value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("pack") == pack:
                key = sample.name + ("/" + sample.labels["reason"]
                                     if sample.name == SKIPPED else "")
                out[key] = sample.value
    return out


def timed_scrapes(scrape: Callable[[], str], count: int, pause: float
                  ) -> List[Tuple[float, float, str]]:
    """``count`` scrapes: (monotonic time before, after, text) of each."""
    done = []
    for index in range(count):
        if index:
            time.sleep(pause)
        before = time.monotonic()
        text = scrape()
        done.append((before, time.monotonic(), text))
    return done


def collector(configs: List[PackConfig]) -> Tuple[Poller, Callable[[], str]]:
    poller = Poller(build_packs(configs), min_interval=0)
    registry = CollectorRegistry()
    registry.register(JkbmsCollector(poller))
    return poller, lambda: generate_latest(registry).decode()


def test_constant_current_is_integrated_between_the_first_and_last_reading(
        servers: List) -> None:
    url = serve(servers, SimulatedBms(cells=16, scenario="cold-charge", seed=1))
    inverted = serve(servers, SimulatedBms(cells=16, scenario="cold-charge", seed=2))
    poller, scrape = collector([PackConfig("a", url),
                                PackConfig("b", inverted, invert_current=True)])
    scrapes = timed_scrapes(scrape, 6, 0.25)
    first, last = scrapes[0], scrapes[-1]
    assert all(values(first[2], "a")[name] == 0 for name in COUNTERS)  # one reading: nothing yet
    a, b = values(last[2], "a"), values(last[2], "b")
    # the readings were taken within the first and the last scrape
    shortest, longest = last[0] - first[1], last[1] - first[0]
    for charged in (a["jkbms_charge_coulombs_total"], b["jkbms_discharge_coulombs_total"]):
        assert COLD_CHARGE_AMPERES * shortest <= charged <= COLD_CHARGE_AMPERES * longest
    volts = [values(text, "a")["jkbms_pack_voltage_volts"] for _, _, text in scrapes]
    mean_volts = a["jkbms_charge_energy_joules_total"] / a["jkbms_charge_coulombs_total"]
    assert min(volts) - 0.01 <= mean_volts <= max(volts) + 0.01
    # invert_current applies before integrating: pack b discharges what pack a charges
    assert a["jkbms_discharge_coulombs_total"] == b["jkbms_charge_coulombs_total"] == 0
    assert a["jkbms_discharge_energy_joules_total"] == b["jkbms_charge_energy_joules_total"] == 0
    assert all(a[SKIPPED + "/" + reason] == 0 for reason in REASONS)
    poller.close()


def test_failed_reads_gaps_and_implausible_readings_are_skipped_and_counted(
        servers: List) -> None:
    flaky = TcpSimulator(SimulatedBms(cells=16, scenario="cold-charge", seed=3),
                         latency=0.0).start()
    servers.append(flaky)
    poller, scrape = collector([
        PackConfig("flaky", flaky.url),
        PackConfig("dense", serve(servers, SimulatedBms(cells=16, scenario="cold-charge",
                                                        seed=4)), energy_max_gap=1.0),
        PackConfig("sparse", serve(servers, SimulatedBms(cells=16, scenario="cold-charge",
                                                         seed=6)), energy_max_gap=0.5),
        PackConfig("wild", serve(servers, Overcurrent(cells=16, seed=5))),
    ])
    scrape()
    flaky.fault = "bad-checksum"
    started = time.monotonic()
    time.sleep(0.6)
    scrape()
    time.sleep(0.6)
    scrape()
    flaky.fault = "none"
    text = scrape()
    lost = time.monotonic() - started
    scrape_again = scrape()
    flaky_values = values(scrape_again, "flaky")
    # from the first good reading to the first good one after the failures
    assert 1.2 <= flaky_values[SKIPPED + "/failed_read"] <= lost + 0.2
    assert flaky_values["jkbms_charge_coulombs_total"] < COLD_CHARGE_AMPERES * 0.5
    # readings 0.6 s apart: within a bound of 1 s, beyond one of 0.5 s
    dense, sparse = values(text, "dense"), values(text, "sparse")
    assert dense[SKIPPED + "/gap"] == 0
    assert dense["jkbms_charge_coulombs_total"] > COLD_CHARGE_AMPERES * 1.2
    assert sparse[SKIPPED + "/gap"] >= 1.2
    assert 0 < sparse["jkbms_charge_coulombs_total"] < COLD_CHARGE_AMPERES * 0.5  # the last one
    wild = values(scrape_again, "wild")
    assert wild[SKIPPED + "/implausible"] >= 1.2
    assert all(wild[name] == 0 for name in COUNTERS)
    poller.close()


def assert_charged_at_cold_charge_rate(scrapes: List, pack: str) -> None:
    """Between the first and the last of ``scrapes`` (start, end, text), the pack charged
    at the cold-charge scenario's current: its coulombs lie between that current times the
    shortest and the longest time the two readings can be apart."""
    charged = values(scrapes[-1][2], pack)["jkbms_charge_coulombs_total"]
    shortest = scrapes[-1][0] - scrapes[0][1]
    longest = scrapes[-1][1] - scrapes[0][0]
    assert COLD_CHARGE_AMPERES * shortest <= charged <= COLD_CHARGE_AMPERES * longest


def test_over_http_counters_grow_and_start_at_zero_after_a_restart(start_exporter) -> None:
    args = ("--simulate", "--simulate.scenario", "cold-charge", "--min-interval", "0")
    exporter: ExporterProcess = start_exporter(*args)
    scrapes = timed_scrapes(exporter.metrics, 3, 0.5)
    assert_charged_at_cold_charge_rate(scrapes, "sim")
    assert "# HELP jkbms_charge_energy_joules_total" in scrapes[-1][2]
    assert "Starts at 0 when the exporter starts" in scrapes[-1][2]
    exporter.stop()
    again = start_exporter(*args, "--energy.max-gap", "1")
    first = values(again.metrics(), "sim")
    assert all(first[name] == 0 for name in COUNTERS)
    assert all(first[SKIPPED + "/" + reason] == 0 for reason in REASONS)
    time.sleep(1.2)
    assert values(again.metrics(), "sim")[SKIPPED + "/gap"] >= 1.2  # the flag's bound


def test_over_http_a_jk_pb_pack_is_integrated_record_by_record_and_promtool_is_clean(
        start_exporter, promtool: str) -> None:
    import subprocess

    exporter: ExporterProcess = start_exporter(
        "--simulate", "--simulate.protocol", "jk-pb", "--simulate.packs", "1",
        "--simulate.scenario", "cold-charge", "--min-interval", "0")
    scrapes = timed_scrapes(exporter.metrics, 3, 0.5)
    assert_charged_at_cold_charge_rate(scrapes, "sim1")
    assert "jkbms_balance_wire_resistance_ohms{" in scrapes[-1][2]
    result = subprocess.run([promtool, "check", "metrics"], input=scrapes[-1][2],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), \
        result.stdout + result.stderr


@pytest.mark.parametrize("value", ["0", "nan", "inf", "1e9"])
def test_a_bad_energy_max_gap_flag_exits_2_naming_it(value: str) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "jkbms_exporter", "serve", "--simulate",
                             "--energy.max-gap", value], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--energy.max-gap" in lines[0], result.stderr


def test_energy_max_gap_in_the_file_per_pack_and_in_defaults() -> None:
    text = ("defaults:\n  energy_max_gap: 120\npacks:\n  - name: a\n    url: /dev/x\n"
            "  - name: b\n    url: /dev/y\n    energy_max_gap: 900\n")
    a, b = parse_config(text, "jkbms.yml")
    assert (a.energy_max_gap, b.energy_max_gap) == (120.0, 900.0)
    packs = build_packs([a, b])
    assert [pack.energy_max_gap for pack in packs] == [120.0, 900.0]
    poller = Poller(packs)
    assert poller.status["b"].energy.max_gap == 900.0
    poller.close()


@pytest.mark.parametrize("value, problem", [  # the shared range check (ranges.py)
    ("0", "0 is out of range: a number from 1 to 86400 s"),
    (".nan", "nan is not a finite number: expected a number from 1 to 86400 s"),
    (".inf", "inf is not a finite number: expected a number from 1 to 86400 s"),
    ("1e400", "'1e400' is not a finite number: expected a number from 1 to 86400 s"),
    ("86401", "86401 is out of range: a number from 1 to 86400 s"),
    ("soon", "'soon' is not a number: expected a number from 1 to 86400 s"),
    ("true", "True is not a number: expected a number from 1 to 86400 s"),
])
def test_a_bad_energy_max_gap_names_file_line_and_field(value: str, problem: str) -> None:
    text = "packs:\n  - name: a\n    url: /dev/x\n    energy_max_gap: %s\n" % value
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "jkbms.yml")
    assert str(raised.value) == "jkbms.yml:4: packs[0].energy_max_gap: " + problem
