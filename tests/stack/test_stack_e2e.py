"""End to end: simulated BMSs → the exporter → the real Prometheus server with the
shipped rule files → the dashboard's queries and the alerts, over real HTTP.

One Prometheus (Debian's 2.42 binary, a free loopback port, a temporary storage
directory, 1 s scrape and evaluation interval) scrapes one exporter that reads six packs:

========  ====================================================  ======================
pack      source                                                scenario
========  ====================================================  ======================
sim       ``serve --simulate`` (in the exporter)                cell-overvoltage
house     ``simulate --listen`` TCP gateway, ``--device``       normal (healthy)
garage    ``simulate --listen`` TCP gateway, ``--device``       cold-charge
shed      ``simulate --listen`` TCP gateway, ``--device``       alarms
rack1/2   ``simulate --protocol jk-pb`` bus, ``--config.file``  normal (JK-PB, JK02 data)
========  ====================================================  ======================

plus a second target in job "jkbms" where nothing listens (an exporter that is down).
The Prometheus configuration is written by the test; the rule files are loaded unchanged
from prometheus/rules/. Alerts only need to reach ``pending``: their ``for`` durations
are covered by the promtool unit tests.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple

import pytest

from conftest import REPO, ExporterProcess, find_tool, free_port, http_get
from test_dashboard import LATER_PROTOCOL_METRICS, data_panels, load_dashboard, metric_names

RULES_GLOB = str(REPO / "prometheus" / "rules" / "*.yml")
#: How long the whole module may wait for data and alerts, from Prometheus's start.
STACK_DEADLINE = 90.0

SCENARIOS = {"house": "normal", "garage": "cold-charge", "shed": "alarms"}
#: JK-PB packs on one simulated RS-485 bus, read through a --config.file: they carry the
#: quantities only JK02 frames have (cell resistance, balance current, SOH …).
BUS_PACKS = {"rack1": 1, "rack2": 2}
PACKS = {"sim", *SCENARIOS, *BUS_PACKS}


class Simulator:
    """``jkbms-exporter simulate --listen 127.0.0.1:PORT``: a BMS behind a TCP gateway."""

    def __init__(self, scenario: str, *extra: str) -> None:
        self.port = free_port()
        self.url = "socket://127.0.0.1:%d" % self.port
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jkbms_exporter", "simulate", "--scenario", scenario,
             "--listen", "127.0.0.1:%d" % self.port, "--log.level", "warn", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 15
        while True:
            if self.process.poll() is not None:
                raise AssertionError("simulator exited: %s" % self.process.stderr.read())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError("simulator did not start listening")
                time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Prometheus:
    """The Prometheus server, started on a free loopback port with a generated config."""

    def __init__(self, workdir: Path, targets: List[str]) -> None:
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        config = workdir / "prometheus.yml"
        # JSON is YAML: no quoting pitfalls for the generated file.
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": [RULES_GLOB],
            "scrape_configs": [{"job_name": "jkbms",
                                "static_configs": [{"targets": targets}]}],
        }, indent=2))
        self.log_path = workdir / "prometheus.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [find_tool("prometheus"), "--config.file=%s" % config,
             "--storage.tsdb.path=%s" % (workdir / "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port,
             "--storage.tsdb.retention.time=1h", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT)
        self.started = time.monotonic()
        self.deadline = self.started + STACK_DEADLINE
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        limit = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise AssertionError("prometheus exited:\n" + self.log())
            try:
                if "Ready" in http_get(self.url + "/-/ready", timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > limit:
                raise AssertionError("prometheus not ready after 30 s:\n" + self.log())
            time.sleep(0.1)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()[-4000:]

    def api(self, path: str, **params: str) -> dict:
        url = "%s/api/v1/%s?%s" % (self.url, path, urllib.parse.urlencode(params))
        try:
            body = http_get(url, timeout=10)
        except urllib.error.HTTPError as error:  # 400/422: a query that does not parse
            body = error.read().decode("utf-8")
        document = json.loads(body)
        return document

    def query(self, expr: str) -> List[dict]:
        document = self.api("query", query=expr)
        assert document["status"] == "success", (expr, document)
        return document["data"]["result"]

    def poll(self, what: str, probe: Callable[[], Optional[object]], interval: float = 0.5):
        """``probe()`` until it returns something truthy, at most until the stack deadline."""
        while True:
            result = probe()
            if result:
                return result
            if time.monotonic() > self.deadline:
                raise AssertionError("%s: nothing after %.0f s\nprometheus log:\n%s"
                                     % (what, time.monotonic() - self.started, self.log()))
            time.sleep(interval)

    def stop(self) -> None:
        stop_process(self.process)
        self._log.close()


class Stack:
    def __init__(self, prometheus: Prometheus, exporter: ExporterProcess, dead_target: str):
        self.prometheus = prometheus
        self.exporter = exporter
        self.dead_target = dead_target


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("stack")
    started: List[object] = []
    try:
        devices = []
        for pack, scenario in SCENARIOS.items():
            simulator = Simulator(scenario)
            started.append(simulator)
            devices += ["--device", "%s=%s" % (pack, simulator.url)]
        bus = Simulator("normal", "--protocol", "jk-pb", "--addresses",
                        ",".join(str(a) for a in BUS_PACKS.values()))
        started.append(bus)
        config = workdir / "jkbms.yml"
        config.write_text("packs:\n" + "".join(
            "  - {name: %s, url: '%s', protocol: jk-pb, address: %d}\n" % (name, bus.url, address)
            for name, address in BUS_PACKS.items()))
        exporter = ExporterProcess(["--simulate", "--simulate.scenario", "cell-overvoltage",
                                    "--config.file", str(config), *devices])
        started.append(exporter)
        dead_target = "127.0.0.1:%d" % free_port()
        prometheus = Prometheus(workdir, ["127.0.0.1:%d" % exporter.port, dead_target])
        started.append(prometheus)
        prometheus.poll("all packs scraped", lambda: {
            s["metric"]["pack"] for s in prometheus.query("jkbms_up == 1")} == PACKS)
        yield Stack(prometheus, exporter, dead_target)
    finally:
        for thing in reversed(started):
            thing.stop()  # type: ignore[attr-defined]


def alerts(stack: Stack, name: str) -> List[Dict[str, str]]:
    return [sample["metric"] for sample in
            stack.prometheus.query('ALERTS{alertname="%s"}' % name)]


def wait_for_alert(stack: Stack, name: str, ready: Callable[[List[Dict[str, str]]], bool]
                   ) -> List[Dict[str, str]]:
    return stack.prometheus.poll(
        "alert %s" % name, lambda: (lambda found: found if ready(found) else None)(alerts(stack, name)))


# ------------------------------------------------------------------------ alerts


def test_cell_overvoltage_alert_names_pack_and_cell(stack: Stack) -> None:
    # cell 05 of the simulated pack climbs from 3.55 V by 0.01 V/s: past 3.60 V within seconds
    found = wait_for_alert(stack, "JkbmsCellOvervoltage", bool)
    assert {(a["pack"], a["cell"]) for a in found} == {("sim", "05")}, found
    assert {a["alertstate"] for a in found} <= {"pending", "firing"}
    assert {a["severity"] for a in found} <= {"warning", "critical"}
    assert all(a["job"] == "jkbms" and a["instance"] == "127.0.0.1:%d" % stack.exporter.port
               for a in found)
    # past 3.65 V the critical tier joins the warning one, for the same cell
    found = wait_for_alert(stack, "JkbmsCellOvervoltage",
                           lambda f: {a["severity"] for a in f} == {"warning", "critical"})
    assert {(a["pack"], a["cell"]) for a in found} == {("sim", "05")}


def test_cold_charge_alert_names_pack_and_sensors(stack: Stack) -> None:
    found = wait_for_alert(stack, "JkbmsChargingBelowFreezing", lambda f: len(f) >= 2)
    assert {(a["pack"], a["sensor"]) for a in found} == {("garage", "battery1"),
                                                         ("garage", "battery2")}, found
    assert "critical" in {a["severity"] for a in found}


def test_alarm_bits_and_mosfet_alerts_name_the_alarm(stack: Stack) -> None:
    found = wait_for_alert(stack, "JkbmsProtectionTripped", lambda f: len(f) >= 2)
    assert {(a["pack"], a["alarm"]) for a in found} == {("shed", "cell_overvoltage"),
                                                        ("shed", "battery_undertemperature")}
    found = wait_for_alert(stack, "JkbmsMosfetOff", bool)
    assert {(a["pack"], a["mosfet"]) for a in found} == {("shed", "charge")}


def test_exporter_down_alert_for_a_target_that_does_not_answer(stack: Stack) -> None:
    found = wait_for_alert(stack, "JkbmsExporterDown", bool)
    assert [(a["instance"], a["job"]) for a in found] == [(stack.dead_target, "jkbms")]


def test_healthy_pack_raises_no_alert(stack: Stack) -> None:
    # wait until the rules have seen the troubled packs, so they have seen this one too
    wait_for_alert(stack, "JkbmsChargingBelowFreezing", bool)
    wait_for_alert(stack, "JkbmsProtectionTripped", bool)
    assert stack.prometheus.query('ALERTS{pack="house"}') == []
    spread = stack.prometheus.query('pack:jkbms_cell_voltage_volts:spread{pack="house"}')
    assert len(spread) == 1 and 0 < float(spread[0]["value"][1]) < 0.05


def test_recording_rules_agree_with_the_raw_series(stack: Stack) -> None:
    prometheus = stack.prometheus
    prometheus.poll("recording rules", lambda: len(prometheus.query(
        "pack:jkbms_cell_voltage_volts:spread")) == len(PACKS))
    # the recorded spread and the same expression written out, at one instant
    check = prometheus.query(
        "abs(pack:jkbms_cell_voltage_volts:max - pack:jkbms_cell_voltage_volts:min"
        " - pack:jkbms_cell_voltage_volts:spread) < 1e-9")
    assert {s["metric"]["pack"] for s in check} == PACKS
    # power: garage and sim charge (positive), shed's charge MOSFET is off (not positive)
    power = {s["metric"]["pack"]: float(s["value"][1])
             for s in prometheus.query("pack:jkbms_power_watts:product")}
    assert power["garage"] > 0 and power["sim"] > 0 and power["shed"] <= 0, power
    imbalance = prometheus.query("pack:jkbms_cell_voltage_volts:spread > 0.1")
    assert imbalance == [] or {s["metric"]["pack"] for s in imbalance} <= {"sim"}


# ------------------------------------------------------------- dashboard queries


def grafana_regex(values: List[str]) -> str:
    """A multi-value variable as Grafana writes it into Prometheus queries."""
    return "(" + "|".join(re.escape(value) for value in values) + ")"


def fill(expr: str, pack: str) -> str:
    for name, value in (("${__rate_interval}", "1m"), ("$__rate_interval", "1m"),
                        ("${__interval}", "15s"), ("$__interval", "15s"),
                        ("${__range}", "1h"), ("$__range", "1h"),
                        ("${pack}", pack), ("$pack", pack)):
        expr = expr.replace(name, value)
    assert "$" not in expr, "unfilled variable in %r" % expr
    return expr


def dashboard_targets() -> List[Tuple[str, dict]]:
    return [(panel["title"], target) for panel in data_panels(load_dashboard())
            for target in panel["targets"]]


def test_pack_variable_query_lists_every_pack(stack: Stack) -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    query = variables["pack"]["query"]
    query = query["query"] if isinstance(query, dict) else query
    metric, label = re.fullmatch(r"label_values\(\s*(\w+)\s*,\s*(\w+)\s*\)", query).groups()
    document = stack.prometheus.api("label/%s/values" % label, **{"match[]": metric})
    assert document["status"] == "success"
    assert set(document["data"]) == PACKS


@pytest.mark.parametrize("selection", ["all", "some"])
def test_every_dashboard_query_parses_and_returns_data(stack: Stack, selection: str) -> None:
    """Each panel query, as Grafana would send it, against the live Prometheus.

    ``all`` is the All option (allValue ``.+``), ``some`` two packs picked by hand.
    Panels for later-protocol metrics must return data for All (the JK-PB bus packs have
    them) and may be empty for the two 4E57 packs picked by hand. Every ``{{label}}`` of a legend must exist on the series.
    """
    prometheus = stack.prometheus
    chosen = sorted(PACKS) if selection == "all" else ["house", "sim"]
    pack = ".+" if selection == "all" else grafana_regex(chosen)
    # ALERTS in the alerts table appear once the rules have had data
    wait_for_alert(stack, "JkbmsCellOvervoltage", bool)
    targets = dashboard_targets()
    assert len(targets) >= 25
    checked = 0
    for title, target in targets:
        expr = fill(target["expr"], pack)
        may_be_empty = selection == "some" and bool(metric_names(expr) & LATER_PROTOCOL_METRICS)

        def probe() -> Optional[List[dict]]:
            now = time.time()
            if target.get("instant"):
                document = prometheus.api("query", query=expr, time="%.3f" % now)
            else:
                document = prometheus.api("query_range", query=expr, start="%.3f" % (now - 30),
                                          end="%.3f" % now, step="1")
            assert document["status"] == "success", "%s: %r does not run: %s" % (
                title, expr, document.get("error"))
            return document["data"]["result"] or ([] if may_be_empty else None)

        result = prometheus.poll("panel %r query %r" % (title, expr), probe) if not may_be_empty \
            else probe()
        if may_be_empty:
            continue
        checked += 1
        packs_seen = {series["metric"].get("pack") for series in result} - {None}
        assert packs_seen <= set(chosen), (title, packs_seen)
        legend = target.get("legendFormat", "")
        for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend):
            missing = [s["metric"] for s in result if label not in s["metric"]]
            assert not missing, "%s: legend {{%s}} missing on %s" % (title, label, missing[:2])
    assert checked >= 20
