"""End to end: simulated BMSs → two exporters → the real Prometheus server with the
shipped rule files → the dashboard's queries and the alerts, over real HTTP.

One Prometheus (Debian's 2.42 binary, a free loopback port, a temporary storage
directory, 1 s scrape and evaluation interval) scrapes two exporters and a dead target.

Exporter A reads everything from a configuration file that gives each pack
``site: home``, and ``bank: main`` to house, rack1 and rack2:

========  ====================================================  ======================
pack      source                                                scenario
========  ====================================================  ======================
sim       ``simulate --listen`` TCP gateway                     cell-overvoltage
house     ``simulate --listen`` TCP gateway                     normal (healthy)
garage    ``simulate --listen`` TCP gateway                     cold-charge
shed      ``simulate --listen`` TCP gateway                     alarms
drain     ``simulate --listen`` TCP gateway                     cell-undervoltage
rest      the simulator in this process, current held at 0 A    normal, at rest
rack1/2   ``simulate --protocol jk-pb`` bus                     normal (JK-PB, JK02 data)
========  ====================================================  ======================

Exporter B has no ``site`` label and two packs: ``sim`` (``--simulate``: a pack named
like one of A's) and ``ghost`` (a gateway where nothing listens: never read). It is
stopped by the last test, which checks what the dashboard shows for a stale exporter.
The dead target (nothing listens) is an exporter that is down from the start.

The Prometheus configuration is written by the test; the rule files are loaded unchanged
from prometheus/rules/. Alerts only need to reach ``pending``: their ``for`` durations
are covered by the promtool unit tests. Every dashboard query runs with its variables
replaced by real values, as Grafana would send it.
"""

from __future__ import annotations

import json
import math
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
from test_dashboard import data_panels, load_dashboard, targets_in_context, variable_query

pytestmark = pytest.mark.slow

RULES_GLOB = str(REPO / "prometheus" / "rules" / "*.yml")
#: How long the whole module may wait for data and alerts, from Prometheus's start.
STACK_DEADLINE = 90.0

SITE = "home"
SCENARIOS = {"sim": "cell-overvoltage", "house": "normal", "garage": "cold-charge",
             "shed": "alarms", "drain": "cell-undervoltage"}
#: JK-PB packs on one simulated RS-485 bus, read through a --config.file: they carry the
#: quantities only JK02 frames have (balance wire resistance, balance current, SOH …).
BUS_PACKS = {"rack1": 1, "rack2": 2}
BANK = "main"
BANK_PACKS = {"house", "rack1", "rack2"}
#: Exporter A's packs (all with site=home) and exporter B's (no site label).
PACKS = {*SCENARIOS, *BUS_PACKS, "rest"}
PACKS_B = {"sim", "ghost"}


class Simulator:
    """``jkbms-exporter simulate --listen 127.0.0.1:PORT``: a BMS behind a TCP gateway."""

    def __init__(self, scenario: str, *extra: str, wait: bool = True) -> None:
        self.port = free_port()
        self.url = "socket://127.0.0.1:%d" % self.port
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jkbms_exporter", "simulate", "--scenario", scenario,
             "--listen", "127.0.0.1:%d" % self.port, "--log.level", "warn", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if wait:
            self.wait_listening()

    def wait_listening(self) -> None:
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


class RestingSimulator:
    """A simulated pack whose current stays at 0 A (no CLI scenario rests), in this process:
    the at-rest weak-cell rule needs one."""

    def __init__(self) -> None:
        from jkbms_exporter.sim.bms import SimulatedBms
        from jkbms_exporter.sim.serve import TcpSimulator

        class Resting(SimulatedBms):
            def _current(self, elapsed: float) -> float:
                return 0.0

        self.server = TcpSimulator(Resting(), latency=0.01).start()
        self.url = self.server.url

    def stop(self) -> None:
        self.server.stop()


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

    def poll(self, what: str, probe: Callable[[], Optional[object]], interval: float = 0.5,
             within: float = 0.0):
        """``probe()`` until it returns something truthy, at most until the stack deadline
        (or ``within`` seconds from now, if later)."""
        deadline = max(self.deadline, time.monotonic() + within)
        while True:
            result = probe()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError("%s: nothing after %.0f s\nprometheus log:\n%s"
                                     % (what, time.monotonic() - self.started, self.log()))
            time.sleep(interval)

    def stop(self) -> None:
        stop_process(self.process)
        self._log.close()


class Stack:
    def __init__(self, prometheus: Prometheus, exporter: ExporterProcess,
                 other: ExporterProcess, dead_target: str):
        self.prometheus = prometheus
        self.exporter = exporter  # A
        self.other = other  # B
        self.dead_target = dead_target

    @property
    def instance(self) -> str:
        return "127.0.0.1:%d" % self.exporter.port

    @property
    def other_instance(self) -> str:
        return "127.0.0.1:%d" % self.other.port


def write_config(path: Path, urls: Dict[str, str], bus_url: str) -> None:
    """Exporter A's configuration file: every pack at site home, a bank of three."""
    lines = ["packs:"]

    def labels(name: str) -> str:
        return "{site: %s%s}" % (SITE, ", bank: %s" % BANK if name in BANK_PACKS else "")

    for name, url in urls.items():
        lines.append("  - {name: %s, url: '%s', labels: %s}" % (name, url, labels(name)))
    for name, address in BUS_PACKS.items():
        lines.append("  - {name: %s, url: '%s', protocol: jk-pb, address: %d, labels: %s}"
                     % (name, bus_url, address, labels(name)))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("stack")
    started: List[object] = []
    try:
        # started together, then waited for: their start-up overlaps
        simulators = {pack: Simulator(scenario, wait=False) for pack, scenario in SCENARIOS.items()}
        started += simulators.values()
        bus = Simulator("normal", "--protocol", "jk-pb", "--addresses",
                        ",".join(str(a) for a in BUS_PACKS.values()), wait=False)
        started.append(bus)
        resting = RestingSimulator()
        started.append(resting)
        for simulator in [*simulators.values(), bus]:
            simulator.wait_listening()
        config = workdir / "jkbms.yml"
        urls = {pack: simulator.url for pack, simulator in simulators.items()}
        write_config(config, {**urls, "rest": resting.url}, bus.url)
        exporter = ExporterProcess(["--config.file", str(config)])
        started.append(exporter)
        other = ExporterProcess(["--simulate", "--device",
                                 "ghost=socket://127.0.0.1:%d" % free_port()])
        started.append(other)
        dead_target = "127.0.0.1:%d" % free_port()
        prometheus = Prometheus(workdir, ["127.0.0.1:%d" % exporter.port,
                                          "127.0.0.1:%d" % other.port, dead_target])
        started.append(prometheus)
        stack = Stack(prometheus, exporter, other, dead_target)
        prometheus.poll("all packs scraped", lambda: {
            s["metric"]["pack"] for s in prometheus.query(
                'jkbms_up{instance="%s"} == 1' % stack.instance)} == PACKS)
        yield stack
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
    assert all(a["job"] == "jkbms" and a["instance"] == stack.instance and a["site"] == SITE
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
    spread = stack.prometheus.query(
        'pack:jkbms_cell_voltage_volts:spread{pack="house",instance="%s"}' % stack.instance)
    assert len(spread) == 1 and 0 < float(spread[0]["value"][1]) < 0.05


def test_recording_rules_agree_with_the_raw_series(stack: Stack) -> None:
    prometheus = stack.prometheus
    only_a = '{instance="%s"}' % stack.instance
    prometheus.poll("recording rules", lambda: len(prometheus.query(
        "pack:jkbms_cell_voltage_volts:spread" + only_a)) == len(PACKS))
    # the recorded spread and the same expression written out, at one instant
    check = prometheus.query(
        "abs(pack:jkbms_cell_voltage_volts:max - pack:jkbms_cell_voltage_volts:min"
        " - pack:jkbms_cell_voltage_volts:spread%s) < 1e-9" % only_a)
    assert {s["metric"]["pack"] for s in check} == PACKS
    # power: garage and sim charge (positive), drain discharges
    power = {s["metric"]["pack"]: float(s["value"][1])
             for s in prometheus.query("pack:jkbms_power_watts:product" + only_a)}
    assert power["garage"] > 0 and power["sim"] > 0 and power["drain"] < 0, power
    assert power["rest"] == 0, power
    imbalance = prometheus.query("pack:jkbms_cell_voltage_volts:spread > 0.1")
    assert {s["metric"]["pack"] for s in imbalance} <= {"sim", "drain"}


# ------------------------------------------------------------- dashboard queries


def grafana_regex(values: List[str]) -> str:
    """A multi-value variable as Grafana's Prometheus data source writes it into a query:
    regex characters escaped with a doubled backslash (a PromQL string holds the regex)."""
    return "(" + "|".join(re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", value)
                          for value in values) + ")"


ALL = {"site": ".*", "instance": ".*", "pack": ".+", "bank": ".+"}


def fill(expr: str, values: Dict[str, str]) -> str:
    """Every variable of ``expr`` replaced, as Grafana does before it sends the query."""
    builtins = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
    for name, value in sorted({**builtins, **values}.items(), key=lambda item: -len(item[0])):
        expr = expr.replace("${%s}" % name, value).replace("$" + name, value)
    assert "$" not in expr, "unfilled variable in %r" % expr
    return expr


def dashboard_targets() -> List[Tuple[str, dict, str]]:
    return list(targets_in_context(load_dashboard()))


def label_values(stack: Stack, query: str, values: Dict[str, str]) -> Set[str]:
    """A variable's ``label_values(selector, label)`` as Grafana asks Prometheus for it."""
    selector, label = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", fill(query, values)).groups()
    document = stack.prometheus.api("label/%s/values" % label, **{"match[]": selector})
    assert document["status"] == "success", document
    return set(document["data"])


def test_variables_list_sites_exporters_packs_and_banks(stack: Stack) -> None:
    variables = {v["name"]: variable_query(v) for v in load_dashboard()["templating"]["list"]
                 if v["type"] == "query"}
    # exporter B's packs have no site label: All (".*") is what finds them
    assert label_values(stack, variables["site"], ALL) == {SITE}
    assert label_values(stack, variables["instance"], ALL) == {stack.instance, stack.other_instance}
    assert label_values(stack, variables["instance"], {**ALL, "site": SITE}) == {stack.instance}
    assert label_values(stack, variables["pack"], ALL) == PACKS | PACKS_B
    only_a = {**ALL, "site": SITE, "instance": grafana_regex([stack.instance])}
    assert label_values(stack, variables["pack"], only_a) == PACKS
    only_b = {**ALL, "instance": grafana_regex([stack.other_instance])}
    assert label_values(stack, variables["pack"], only_b) == PACKS_B
    assert label_values(stack, variables["bank"], ALL) == {BANK}


def run_target(stack: Stack, title: str, target: dict, expr: str, poll: bool = True
               ) -> List[dict]:
    prometheus = stack.prometheus

    def probe() -> Optional[List[dict]]:
        now = time.time()
        if target.get("instant"):
            document = prometheus.api("query", query=expr, time="%.3f" % now)
        else:
            document = prometheus.api("query_range", query=expr, start="%.3f" % (now - 30),
                                      end="%.3f" % now, step="1")
        assert document["status"] == "success", "%s: %r does not run: %s" % (
            title, expr, document.get("error"))
        return document["data"]["result"] or (None if poll else [])

    return prometheus.poll("panel %r query %r" % (title, expr), probe) if poll else probe() or []


@pytest.mark.parametrize("selection", ["all", "some"])
def test_every_dashboard_query_returns_data(stack: Stack, selection: str) -> None:
    """Each panel query, as Grafana would send it, against the live Prometheus.

    ``all`` is the All option of every variable; ``some`` is site home, exporter A, five of
    its packs and its bank, picked by hand: every query still returns data, and only for
    what was picked (exporter B's pack "sim" is named like A's and must not show).
    Every ``{{label}}`` of a legend must exist on the series.
    """
    chosen_packs = sorted(PACKS | PACKS_B) if selection == "all" else [
        "drain", "rack1", "rest", "shed", "sim"]
    if selection == "all":
        values = dict(ALL)
    else:
        values = {"site": grafana_regex([SITE]), "instance": grafana_regex([stack.instance]),
                  "pack": grafana_regex(chosen_packs), "bank": grafana_regex([BANK])}
    # ALERTS in the alerts table appear once the rules have had data
    wait_for_alert(stack, "JkbmsCellOvervoltage", bool)
    targets = dashboard_targets()
    assert len(targets) >= 60
    instances: Set[str] = set()
    sites: Set[Optional[str]] = set()
    for title, target, context in targets:
        result = run_target(stack, title, target, fill(target["expr"], values))
        for series in result:
            labels = series["metric"]
            if labels.get("__name__") != "up":  # `up` has a site only where vmagent adds it
                sites.add(labels.get("site"))
            if context == "pack":
                instances.add(labels.get("instance", ""))
                assert labels.get("pack", "") in set(chosen_packs) | {""}, (title, labels)
            if context == "bank":
                assert labels["bank"] == BANK, (title, labels)
        if selection == "some" and context != "fleet":
            assert instances <= {stack.instance}, (title, result[0]["metric"])
            assert sites <= {SITE}, (title, result[0]["metric"])
        legend = target.get("legendFormat", "")
        for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend):
            missing = [s["metric"] for s in result if label not in s["metric"]]
            assert not missing, "%s: legend {{%s}} missing on %s" % (title, label, missing[:2])
    if selection == "all":
        # All also finds exporter B, whose packs have no site label
        assert {stack.instance, stack.other_instance} <= instances
        assert {SITE, None} <= sites


def _stat_query(title: str) -> Tuple[dict, str]:
    dashboard = load_dashboard()
    (panel,) = [p for p in data_panels(dashboard) if p["title"] == title]
    return panel["targets"][0], panel["targets"][0]["expr"]


def _values(stack: Stack, title: str, values: Dict[str, str]) -> Dict[str, float]:
    target, expr = _stat_query(title)
    return {s["metric"]["pack"]: float(s["value"][1])
            for s in run_target(stack, title, target, fill(expr, values), poll=False)}


def test_alarm_timeline_shows_only_the_bits_that_were_set(stack: Stack) -> None:
    """A JK-PB pack reports 32 alarm bits: the timeline shows none of rack1's (all clear),
    and exactly the two bits shed's BMS set."""
    (panel,) = [p for p in data_panels(load_dashboard()) if p["title"].startswith("BMS alarms")]
    (target,) = panel["targets"]
    only_a = {**ALL, "instance": grafana_regex([stack.instance])}
    assert len(stack.prometheus.query('jkbms_alarm{pack="rack1"}')) >= 30

    def shown(pack: str) -> Set[str]:
        expr = fill(target["expr"], {**only_a, "pack": grafana_regex([pack])})
        return {s["metric"]["alarm"] for s in run_target(stack, panel["title"], target, expr,
                                                         poll=False)}

    assert shown("rack1") == set()
    assert stack.prometheus.poll("shed's alarm bits", lambda: shown("shed")) == {
        "cell_overvoltage", "battery_undertemperature"}


def test_cell_ranking_names_the_driven_cell(stack: Stack) -> None:
    """drain's cell 03 is driven down while the pack discharges near empty, sim's cell 05 up
    while it charges near full: the ranking's columns name them."""
    (panel,) = [p for p in data_panels(load_dashboard()) if p["title"] == "Cell ranking (7 days)"]
    columns = {t["refId"]: t for t in panel["targets"]}
    only_a = {**ALL, "instance": grafana_regex([stack.instance])}

    def column(ref: str, pack: str) -> Dict[str, float]:
        target = columns[ref]
        expr = fill(target["expr"], {**only_a, "pack": grafana_regex([pack])})
        result = run_target(stack, panel["title"], target, expr)
        return {s["metric"]["cell"]: float(s["value"][1]) for s in result}

    near_empty = column("A", "drain")
    assert min(near_empty, key=near_empty.get) == "03" and near_empty["03"] < -100, near_empty
    near_full = column("B", "sim")
    assert max(near_full, key=near_full.get) == "05" and near_full["05"] > 50, near_full
    assert set(column("C", "rest")) == {"%02d" % cell for cell in range(1, 17)}


def test_fleet_overview_has_one_line_per_site(stack: Stack) -> None:
    """The "Sites" table: site home (exporter A) and the packs without a site (exporter B)."""
    (sites,) = [p for p in data_panels(load_dashboard()) if p["title"] == "Sites"]
    columns = {t["refId"]: t for t in sites["targets"]}
    prometheus = stack.prometheus
    wait_for_alert(stack, "JkbmsProtectionTripped", lambda f: any(
        a["alertstate"] == "firing" for a in f))
    at = "%.3f" % time.time()  # one instant for every query: alerts change state

    def at_once(expr: str) -> List[dict]:
        document = prometheus.api("query", query=expr, time=at)
        assert document["status"] == "success", document
        return document["data"]["result"]

    def column(ref: str) -> Dict[Optional[str], float]:
        return {s["metric"].get("site"): float(s["value"][1])
                for s in at_once(fill(columns[ref]["expr"], ALL))}

    socs = {(s["metric"].get("site"), s["metric"]["pack"]): float(s["value"][1])
            for s in at_once("jkbms_state_of_charge_ratio")}
    lowest = column("A")
    assert lowest == {SITE: min(v for (site, _), v in socs.items() if site == SITE),
                      None: socs[(None, "sim")]}, (lowest, socs)
    assert set(column("B")) == {SITE, None}  # worst spread, mV
    assert column("C") == {SITE: 0, None: 1}  # B's ghost pack was never read
    alerts_firing = column("D")
    firing = [a["metric"].get("site") for a in at_once('ALERTS{alertstate="firing"}')]
    assert alerts_firing[SITE] >= 1, alerts_firing  # shed's protection alarms
    assert alerts_firing == {site: firing.count(site) for site in (SITE, None)}, alerts_firing
    assert all(0 <= age < 15 for age in column("E").values())  # 1 s scrapes, a busy machine


def test_a_stale_exporter_never_looks_healthy(stack: Stack) -> None:
    """Last in this module: it stops exporter B."""
    only_b = {**ALL, "instance": grafana_regex([stack.other_instance])}
    # the fleet overview's "Packs down" column, for exporter B (its site: none)
    (sites,) = [p for p in data_panels(load_dashboard()) if p["title"] == "Sites"]
    (down,) = [t for t in sites["targets"] if t["refId"] == "C"]
    fleet_b = fill(down["expr"], only_b)
    # the pack never read: a red "no reading" (NaN) and "never" (-1), never a value
    soc = _values(stack, "State of charge", only_b)
    assert math.isnan(soc["ghost"]) and 0 < soc["sim"] <= 1, soc
    last = _values(stack, "Last good read", only_b)
    assert last["ghost"] == -1 and 0 <= last["sim"] < 15, last
    assert [float(s["value"][1]) for s in stack.prometheus.query(fleet_b)] == [1.0]

    stack.other.stop()
    stopped = time.monotonic()
    # its stat panels go empty at the next scrape (stale), instead of keeping the last value
    stack.prometheus.poll("stale stat panels", lambda: not _values(
        stack, "State of charge", only_b) and not _values(stack, "Pack voltage", only_b),
        within=10)
    # while "last good read" keeps counting from now, and the fleet row counts both packs down
    time.sleep(max(0.0, 3 - (time.monotonic() - stopped)))
    last = _values(stack, "Last good read", only_b)
    assert last["ghost"] == -1 and last["sim"] >= 3, last
    assert [float(s["value"][1]) for s in stack.prometheus.query(fleet_b)] == [2.0]
    # exporter A is untouched
    assert _values(stack, "Last good read", {**ALL, "instance": grafana_regex([stack.instance])})
