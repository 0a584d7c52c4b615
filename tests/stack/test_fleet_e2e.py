"""Many sites end to end: three simulated sites push through TLS and basic auth into one
central VictoriaMetrics; vmalert evaluates our rule files there and alerts a real
Alertmanager; every dashboard query, for one site, returns that site's data only.

=====  ========================================================  ==================
site   exporter (simulated packs)                                 scenario
=====  ========================================================  ==================
north  ``serve --simulate``: JK-B pack ``sim``                    cell-overvoltage
south  ``serve --simulate --simulate.protocol jk-pb``: JK-PB bus  normal
       with packs ``sim1`` and ``sim2``
east   ``serve --simulate``: JK-B pack ``sim`` (same name as      normal
       north's pack, same exporter command line)
=====  ========================================================  ==================

Each site runs its own vmagent with the shipped edge flags and vmagent.yml (1 s scrape
interval), writing to vmauth (https, a CA made for the test, one user per site), which
passes the writes to VictoriaMetrics. vmalert (shipped central flags, 1 s evaluation) and
Alertmanager (the shipped alertmanager.yml) complete the central side.
"""

from __future__ import annotations

import re
import time
from contextlib import ExitStack
from typing import Dict, Iterator, List, Set

import pytest

from fleet_stack import (Alertmanager, Certificates, Site, VictoriaMetrics, VmAlert, VmAuth,
                         poll)
from test_dashboard import data_needs, data_panels, load_dashboard, metric_names

pytestmark = pytest.mark.slow

SITES = {
    "north": (["--simulate", "--simulate.scenario", "cell-overvoltage"], {"sim"}),
    "south": (["--simulate", "--simulate.protocol", "jk-pb", "--simulate.packs", "2"],
              {"sim1", "sim2"}),
    "east": (["--simulate"], {"sim"}),
}
#: From the store's start: data of every site, the critical over-voltage alert (30 s `for`).
DEADLINE = 100.0


class Fleet:
    def __init__(self, store: VictoriaMetrics, vmalert: VmAlert, alertmanager: Alertmanager,
                 sites: Dict[str, Site]) -> None:
        self.store = store
        self.vmalert = vmalert
        self.alertmanager = alertmanager
        self.sites = sites
        self.deadline = time.monotonic() + DEADLINE

    def poll(self, what: str, probe, interval: float = 0.5, at_least: float = 1.0):
        """``probe()`` until truthy: until the module's deadline, but ``at_least`` seconds."""
        return poll(what, probe, max(at_least, self.deadline - time.monotonic()), interval,
                    lambda: "vmalert log:\n%s\nstore log:\n%s" % (self.vmalert.log(),
                                                                   self.store.log()))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("fleet")
    certificates = Certificates(workdir / "certs")
    passwords = {site: "password-of-%s" % site for site in SITES}
    with ExitStack() as stack:
        def started(thing):
            stack.callback(thing.stop)
            return thing

        store = started(VictoriaMetrics(workdir))
        vmauth = started(VmAuth(workdir, store, certificates, passwords))
        alertmanager = started(Alertmanager(workdir))
        vmalert = started(VmAlert(workdir, store, alertmanager.url))
        sites = {name: started(Site(workdir, name, args, vmauth.write_url, passwords[name],
                                    certificates.ca))
                 for name, (args, _) in SITES.items()}
        fleet = Fleet(store, vmalert, alertmanager, sites)
        expected = {(site, pack) for site, (_, packs) in SITES.items() for pack in packs}
        fleet.poll("every site's packs in the central store", lambda: {
            (s["metric"].get("site"), s["metric"]["pack"])
            for s in store.query("jkbms_up == 1")} == expected)
        yield fleet


# ------------------------------------------------------------------------- the data


def test_each_site_arrives_with_its_site_label_and_a_unique_instance(fleet: Fleet) -> None:
    series = fleet.store.query('up{job="jkbms"}')
    by_site = {s["metric"]["site"]: s["metric"]["instance"] for s in series}
    assert set(by_site) == set(SITES), series
    for site, instance in by_site.items():
        port = fleet.sites[site].exporter.port
        assert instance == "%s/127.0.0.1:%d" % (site, port)
    # north's and east's packs share the name "sim": two series, told apart by site
    sims = fleet.store.query('jkbms_cell_voltage_volts{pack="sim", cell="05"}')
    assert sorted(s["metric"]["site"] for s in sims) == ["east", "north"]


def test_every_rule_of_ours_evaluates_without_error_in_vmalert(fleet: Fleet) -> None:
    # the recording rules write into the store, per site and pack
    fleet.poll("recorded spread of every pack", lambda: len(fleet.store.query(
        "pack:jkbms_cell_voltage_volts:spread")) == 4)
    groups = fleet.vmalert.api_rules()
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) >= 20
    errors = [(rule["name"], rule["lastError"]) for rule in rules if rule.get("lastError")]
    assert errors == []


# ------------------------------------------------------------------------ the alerts


def test_over_voltage_alert_at_alertmanager_names_site_pack_and_cell(fleet: Fleet) -> None:
    def firing() -> List[dict]:
        return [a for a in fleet.alertmanager.alerts()
                if a["labels"]["alertname"] == "JkbmsCellOvervoltage"
                and a["labels"].get("severity") == "critical"]

    alerts = fleet.poll("critical JkbmsCellOvervoltage at Alertmanager", firing, interval=1)
    assert [(a["labels"]["site"], a["labels"]["pack"], a["labels"]["cell"]) for a in alerts] \
        == [("north", "sim", "05")]
    (alert,) = alerts
    assert alert["labels"]["instance"].startswith("north/")
    assert "Pack sim cell 05 is at 3." in alert["annotations"]["summary"]
    # east's pack is also called "sim": it has no over-voltage alert of any kind
    assert not [a for a in fleet.alertmanager.alerts() if a["labels"].get("site") != "north"
                and a["labels"]["alertname"].startswith("JkbmsCellOvervoltage")]
    # Alertmanager groups by site (alertmanager/alertmanager.yml)
    groups = [g for g in fleet.alertmanager.groups()
              if g["labels"].get("alertname") == "JkbmsCellOvervoltage"]
    assert [g["labels"].get("site") for g in groups] == ["north"], groups


def test_cell_alerts_only_for_the_troubled_pack_of_its_own_site(fleet: Fleet) -> None:
    # Rules match a pack's series with its settings on (site, instance, pack): north's and east's
    # "sim" must not collide (a duplicate match is an evaluation error, see above; a wrong
    # one a false alert at healthy east).
    def cell_alerts() -> Set[tuple]:
        return {(a["labels"].get("site"), a["labels"].get("pack"), a["labels"].get("cell"))
                for a in fleet.vmalert.api_alerts()
                if a["labels"]["alertname"].startswith("JkbmsCell")}

    fleet.poll("pending or firing cell alerts", cell_alerts)
    found = cell_alerts()
    assert {(site, pack) for site, pack, _ in found} == {("north", "sim")}, found
    assert {cell for _, _, cell in found} <= {"05", None}, found  # None: pack-wide alerts


# ------------------------------------------------------------- dashboard, one site


def fill(expr: str, site: str) -> str:
    """A panel query as Grafana sends it with one site picked: the other variables at
    All (their allValue), the built-in intervals replaced."""
    values = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
    for variable in load_dashboard()["templating"]["list"]:
        values[variable["name"]] = variable.get("allValue") or ".*"
    values["site"] = re.escape(site)
    for name in sorted(values, key=len, reverse=True):
        expr = re.sub(r"\$\{%s(?::\w+)?\}|\$%s\b" % (name, name), values[name], expr)
    assert "$" not in expr, "unfilled variable in %r" % expr
    return expr


def test_site_variable_lists_every_site(fleet: Fleet) -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    query = variables["site"]["query"]
    query = query["query"] if isinstance(query, dict) else query
    match = re.fullmatch(r"label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)", query)
    assert match, query
    selector, label = match.groups()
    document = fleet.store.api("label/%s/values" % label, **{"match[]": selector})
    assert set(document["data"]) == set(SITES)


def series_of_other_sites(result: List[dict], site: str) -> List[dict]:
    """Series that carry another site's site label, instance or pack name."""
    packs = SITES[site][1]
    return [s["metric"] for s in result
            if s["metric"].get("site", site) != site
            or not s["metric"].get("instance", site + "/").startswith(site + "/")
            or s["metric"].get("pack", next(iter(packs))) not in packs]


def run_query(fleet: Fleet, target: dict, expr: str) -> List[dict]:
    now = time.time()
    if target.get("instant"):
        document = fleet.store.api("query", query=expr, time="%.3f" % now)
    else:
        document = fleet.store.api("query_range", query=expr, start="%.3f" % (now - 30),
                                   end="%.3f" % now, step="1")
    assert document["status"] == "success", "%r does not run: %s" % (expr, document.get("error"))
    return document["data"]["result"]


def nonzero(result: List[dict]) -> List[dict]:
    return [s for s in result
            if any(float(v) != 0 for _, v in s.get("values", [s.get("value", [0, "0"])]))]


@pytest.mark.parametrize("site", sorted(SITES))
def test_every_dashboard_query_for_one_site_returns_that_sites_data_only(
        fleet: Fleet, site: str) -> None:
    """The site picked at the top, everything else at All. Each query returns only series
    of that site, and data unless it waits for something this site does not have (see
    test_dashboard.data_needs: JK-PB data only at south, alerts, a bank label ...); the
    same query for a site that does not exist returns nothing (or only zeros)."""
    fleet.poll("an alert in the store's ALERTS", lambda: fleet.store.query("ALERTS"))
    targets = [(panel["title"], target) for panel in data_panels(load_dashboard())
               for target in panel["targets"]]
    exposition = fleet.sites[site].exporter.metrics()
    with_data = 0
    for title, target in targets:
        expr = fill(target["expr"], site)
        needs = data_needs(target["expr"]) - ({"jk-pb"} if site == "south" else set())
        # what only the other protocol has (JK-PB: no actual capacity, no
        # cell_voltage_difference_protection setting)
        needs |= {"setting %s" % name for name in re.findall(r'setting="(\w+)"', expr)
                  if 'setting="%s"' % name not in exposition}
        needs |= {name for name in metric_names(expr)
                  if name.startswith("jkbms_") and "\n%s{" % name not in exposition}
        if needs:
            result = run_query(fleet, target, expr)
        else:
            result = fleet.poll("panel %r for site %s: %r" % (title, site, expr),
                                lambda: run_query(fleet, target, expr), at_least=30)
        with_data += bool(result)
        assert series_of_other_sites(result, site) == [], (title, expr)
        elsewhere = nonzero(run_query(fleet, target, fill(target["expr"], "nowhere")))
        assert elsewhere == [], "%s: %r ignores the site variable" % (title, target["expr"])
    assert with_data >= 20
