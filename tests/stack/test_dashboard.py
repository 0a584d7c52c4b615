"""Structure of grafana/dashboards/jkbms.json (the end-to-end test runs its queries).

The dashboard must work provisioned and imported: every panel and target takes its data
source from the ``datasource`` variable, ``pack`` comes from ``label_values(jkbms_up,
pack)``, the uid is stable. Every panel has a unit and a description, ids are unique,
the grid stays within 24 columns, every rate uses ``$__rate_interval``, and every metric
the dashboard names exists: in the exporter's real /metrics output, in the shipped
recording rules, or in the short list of later-protocol metrics (checked against the
exporter's own metric table).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest
import yaml

from conftest import REPO

DASHBOARD = REPO / "grafana" / "dashboards" / "jkbms.json"
RULES_DIR = REPO / "prometheus" / "rules"
DASHBOARD_UID = "jkbms-exporter"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

#: Emitted by the exporter only for protocols that report them (not the 4E57 simulator).
LATER_PROTOCOL_METRICS = {
    "jkbms_balance_wire_resistance_ohms",
    "jkbms_balance_current_amperes",
    "jkbms_remaining_capacity_coulombs",
    "jkbms_state_of_health_ratio",
}
#: Series Prometheus itself makes.
PROMETHEUS_SERIES = {"up", "ALERTS"}
#: Metrics without a pack label, so no $pack filter.
PACKLESS = {"up", "jkbms_exporter_build_info"}

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
             "unless", "offset", "atan2", "inf", "nan", "Inf", "NaN"}
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
#: Aggregations may put `by (...)` between their name and their argument.
_AGGREGATIONS = {"sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk",
                 "bottomk", "quantile", "count_values"}


# ----------------------------------------------------------------- helpers (shared)


def load_dashboard() -> dict:
    with DASHBOARD.open(encoding="utf-8") as handle:
        return json.load(handle)


def iter_panels(dashboard: dict) -> Iterator[Tuple[dict, Optional[dict]]]:
    """Every panel, with the row it belongs to (rows' nested panels included)."""
    row: Optional[dict] = None
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            row = panel
            yield panel, None
            for inner in panel.get("panels", []):
                yield inner, panel
        else:
            yield panel, row


def data_panels(dashboard: dict) -> List[dict]:
    return [panel for panel, _ in iter_panels(dashboard) if panel.get("type") != "row"]


def selectors(expr: str) -> List[Tuple[str, str]]:
    """(metric name, label matchers text) of every vector selector in a PromQL expression.

    A small scanner, enough for the dashboard's and the rules' PromQL: strings, label
    matchers, ranges, function calls, keywords and grouping label lists are told apart.
    """
    found: List[Tuple[str, str]] = []
    i, n = 0, len(expr)
    while i < n:
        char = expr[i]
        if char in "\"'`":
            end = i + 1
            while end < n and expr[end] != char:
                end += 2 if expr[end] == "\\" else 1
            i = end + 1
            continue
        if char == "[":
            i = expr.index("]", i) + 1
            continue
        if char == "{":  # matchers without a metric name: {__name__=...}; none used here
            raise AssertionError("selector without a metric name in %r" % expr)
        if char == "$":  # a Grafana variable ($pack, ${datasource}, $__rate_interval)
            match = re.match(r"\$(\{[^}]*\}|\w+)", expr[i:])
            i += match.end() if match else 1
            continue
        number = re.match(r"[0-9.][0-9A-Za-z.]*", expr[i:])  # 3600, 0.05, 1e3, 5m
        if number:
            i += number.end()
            continue
        match = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", expr[i:])
        if match is None:
            i += 1
            continue
        word = match.group(0)
        i += match.end()
        rest = expr[i:].lstrip()
        if word in _GROUPING and rest.startswith("("):
            i = expr.index(")", i) + 1
            continue
        if word in _KEYWORDS or word in _AGGREGATIONS:
            continue
        if rest.startswith("("):  # function call
            continue
        matchers = ""
        if rest.startswith("{"):
            start = expr.index("{", i)
            end = start + 1
            while expr[end] != "}":
                if expr[end] == '"':
                    end += 1
                    while expr[end] != '"':
                        end += 2 if expr[end] == "\\" else 1
                end += 1
            matchers = expr[start + 1 : end]
            i = end + 1
        found.append((word, matchers))
    return found


def metric_names(expr: str) -> Set[str]:
    return {name for name, _ in selectors(expr)}


def recorded_names() -> Set[str]:
    names = set()
    for path in RULES_DIR.glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names.update(rule["record"] for rule in group["rules"] if "record" in rule)
    return names


#: What a query needs before it can return data, beyond a pack being read (for stacks that
#: cannot offer everything, e.g. the fleet end-to-end test): metric name -> condition.
_NEEDS = {
    **{name: "jk-pb" for name in LATER_PROTOCOL_METRICS},
    "ALERTS": "an alert",
    "pack:jkbms_time_to_empty_seconds": "a pack discharging",
    "pack:jkbms_time_to_full_seconds": "a pack charging",
    "cell:jkbms_cell_voltage_deviation_volts:avg_near_empty": "a pack discharging near empty",
    "cell:jkbms_cell_voltage_deviation_volts:avg_near_full": "a pack charging near full",
    "cell:jkbms_cell_voltage_deviation_volts:avg_at_rest": "a pack at rest",
}


def data_needs(expr: str) -> Set[str]:
    """The conditions (see ``_NEEDS``) under which ``expr`` returns data; empty: always."""
    needs = {_NEEDS[name] for name in metric_names(expr) if name in _NEEDS}
    if 'bank=~"$bank"' in expr or any(name.startswith("bank:") for name in metric_names(expr)):
        needs.add("a bank label")
    if "@ end()) > 0" in expr:
        needs.add("an alarm bit set")
    if re.search(r"\bor\b", expr) and "ALERTS" in metric_names(expr) and "* 0" in expr:
        needs.discard("an alert")  # the fleet row counts 0 alerts too
    return needs


def exposition_names(text: str) -> Set[str]:
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0))
    return names


# ------------------------------------------------------------------------ the tests


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return load_dashboard()


def test_scanner_finds_metrics_not_functions_labels_or_strings() -> None:
    expr = ('sum by (pack, reason) (rate(jkbms_read_errors_total{pack=~"$pack"}[$__rate_interval])) '
            '* 60 or label_replace(jkbms_setting_volts{pack=~"$pack"}, "unit", "V", "", "") '
            'and on (instance, pack) up offset 5m unless ALERTS{alertname="x{y}"} / 3.6e3')
    assert selectors(expr) == [
        ("jkbms_read_errors_total", 'pack=~"$pack"'),
        ("jkbms_setting_volts", 'pack=~"$pack"'),
        ("up", ""),
        ("ALERTS", 'alertname="x{y}"'),
    ]


def test_identity_is_stable_and_importable(dashboard: dict) -> None:
    assert dashboard["uid"] == DASHBOARD_UID
    assert dashboard.get("id") is None, "an id ties the file to one Grafana database"
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int) and 36 <= dashboard["schemaVersion"] <= 42
    # no __inputs: provisioning would not substitute them (grafana/grafana#10786)
    assert "__inputs" not in dashboard
    assert "DS_PROMETHEUS" not in DASHBOARD.read_text(encoding="utf-8")


def _variables(dashboard: dict) -> Dict[str, dict]:
    return {var["name"]: var for var in dashboard["templating"]["list"]}


def variable_query(variable: dict) -> str:
    query = variable["query"]
    return query["query"] if isinstance(query, dict) else query


#: (variable, its label_values query, the value that "All" stands for). site and bank are
#: optional labels: site's All must match series without the label (``.*``); a bank row
#: must stay empty for packs without a bank (``.+``).
VARIABLES = [
    ("site", 'label_values(jkbms_up, site)', ".*"),
    ("instance", 'label_values(jkbms_up{site=~"$site"}, instance)', ".*"),
    ("pack", 'label_values(jkbms_up{site=~"$site",instance=~"$instance"}, pack)', ".+"),
    ("bank", 'label_values(jkbms_up{site=~"$site"}, bank)', ".+"),
]


def test_datasource_site_instance_pack_and_bank_variables(dashboard: dict) -> None:
    variables = _variables(dashboard)
    assert list(variables) == ["datasource", "site", "instance", "pack", "bank"]
    source = variables["datasource"]
    assert source["type"] == "datasource" and source["query"] == "prometheus"
    for name, query, all_value in VARIABLES:
        variable = variables[name]
        assert variable["type"] == "query" and variable["datasource"] == DATASOURCE, name
        assert variable_query(variable) == query, name
        assert variable["multi"] is True and variable["includeAll"] is True, name
        assert variable["allValue"] == all_value, name
        assert variable["refresh"] in (1, 2), name
        assert variable["current"]["value"] == ["$__all"], name


def test_every_panel_and_target_uses_the_datasource_variable(dashboard: dict) -> None:
    for panel in data_panels(dashboard):
        assert panel.get("datasource") == DATASOURCE, panel["title"]
        assert panel.get("targets"), "%s has no query" % panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource") == DATASOURCE, (panel["title"], target)
    # and no other data source uid anywhere in the file
    uids = re.findall(r'"uid":\s*"([^"]*)"', DASHBOARD.read_text(encoding="utf-8"))
    assert set(uids) <= {DASHBOARD_UID, "${datasource}", "-- Grafana --"}, set(uids)


def test_every_panel_has_title_description_and_unit(dashboard: dict) -> None:
    for panel in data_panels(dashboard):
        assert panel.get("title"), panel
        assert len(panel.get("description", "").split()) >= 5, panel["title"]
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        assert unit, "%s has no unit" % panel["title"]


def test_ids_unique_and_grid_within_24_columns(dashboard: dict) -> None:
    ids = [panel["id"] for panel, _ in iter_panels(dashboard)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel, _ in iter_panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["y"] >= 0 and grid["w"] > 0 and grid["h"] > 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def _overlaps(a: dict, b: dict) -> bool:
    return (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
            and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])


def test_panels_do_not_overlap(dashboard: dict) -> None:
    layers: Dict[object, List[dict]] = {}
    for panel, row in iter_panels(dashboard):
        collapsed = row is not None and row.get("collapsed")
        layers.setdefault(id(row) if collapsed else "top", []).append(panel)
    for panels in layers.values():
        for index, first in enumerate(panels):
            for second in panels[index + 1 :]:
                assert not _overlaps(first["gridPos"], second["gridPos"]), (
                    first["title"], second["title"])


def panel_context(row: Optional[dict]) -> str:
    """"fleet" (one line per site), "bank" (repeated per bank) or "pack" (everything else)."""
    if row is not None and row.get("repeat") == "bank":
        return "bank"
    if row is not None and row["title"].startswith("Fleet"):
        return "fleet"
    return "pack"


def targets_in_context(dashboard: dict) -> Iterator[Tuple[str, dict, str]]:
    for panel, row in iter_panels(dashboard):
        if panel["type"] != "row":
            for target in panel["targets"]:
                yield panel["title"], target, panel_context(row)


def groupings(expr: str) -> List[Tuple[str, Set[str]]]:
    return [(word, {label.strip() for label in labels.split(",") if label.strip()})
            for word, labels in re.findall(r"\b(by|without|on|ignoring)\s*\(([^)]*)\)", expr)]


SITE = 'site=~"$site"'
INSTANCE = 'instance=~"$instance"'
PACK = 'pack=~"$pack"'
BANK = 'bank=~"$bank"'


def test_rates_use_rate_interval(dashboard: dict) -> None:
    for panel in data_panels(dashboard):
        for target in panel["targets"]:
            expr = target["expr"]
            for call in re.finditer(r"\b(rate|irate|increase)\s*\(", expr):
                window = re.match(r"[^\[]*\[([^\]]*)\]", expr[call.end():]).group(1)
                allowed = {"$__rate_interval"}
                if call.group(1) == "increase":
                    allowed.add("$__range")
                    if panel.get("interval") == "1d":  # the energy-per-day bars
                        allowed.add("$__interval")
                assert window in allowed, (panel["title"], expr)


def test_every_query_filters_on_site_instance_and_pack_or_bank(dashboard: dict) -> None:
    """So two exporters with a pack named alike, or two sites, are never mixed."""
    checked = 0
    for title, target, context in targets_in_context(dashboard):
        for name, matchers in selectors(target["expr"]):
            checked += 1
            where = (title, name, target["expr"])
            if name == "jkbms_exporter_build_info":
                continue  # only tells which jobs are jkbms exporters: `and on (job)`
            # `up` lacks `site` when the site comes from the exporter's own configuration:
            # those exporters are found through their packs' site instead.
            assert SITE in matchers or (name == "up" and 'site=""' in matchers), where
            if context == "bank":
                # bank series are summed over the bank's exporters and packs
                assert BANK in matchers and INSTANCE not in matchers, where
                continue
            assert INSTANCE in matchers, where
            if context == "pack" and name not in PACKLESS:
                # ALERTS without a pack: an exporter down, a site gone silent
                assert PACK in matchers or (name == "ALERTS" and 'pack=""' in matchers), where
    assert checked >= 60


def test_aggregations_and_matching_keep_site_and_instance(dashboard: dict) -> None:
    for title, target, context in targets_in_context(dashboard):
        for word, labels in groupings(target["expr"]):
            if word in ("without", "ignoring"):
                assert not labels & {"site", "pack"} or context == "bank", (title, target["expr"])
                continue
            if context == "fleet":
                assert labels == {"site"}, (title, target["expr"])
            elif labels != {"job"}:  # `and on (job)`: which jobs are jkbms exporters
                assert {"site", "instance"} <= labels or labels == {"instance", "job"}, (
                    title, target["expr"])


def test_every_metric_exists(dashboard: dict, start_exporter) -> None:
    from jkbms_exporter import metrics

    exporter = start_exporter("--simulate")
    emitted = exposition_names(exporter.metrics())
    assert "jkbms_cell_voltage_volts" in emitted  # the scrape really worked
    declared = {spec.full_name for spec in metrics.ALL_SPECS}
    # the later-protocol names are real exporter metrics, only not emitted for 4E57
    assert LATER_PROTOCOL_METRICS <= declared
    assert not LATER_PROTOCOL_METRICS & emitted, "simulator emits them now: drop the exception"
    recorded = recorded_names()
    known = emitted | recorded | LATER_PROTOCOL_METRICS | PROMETHEUS_SERIES
    used: Set[str] = set()
    for panel in data_panels(dashboard):
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, (panel["title"], target["expr"])
            unknown = names - known
            assert not unknown, "%s: unknown metrics %s" % (panel["title"], sorted(unknown))
            used |= names
    # the dashboard shows the rules' derived series instead of recomputing them
    assert SHOWN_RECORDINGS <= recorded
    assert SHOWN_RECORDINGS <= used, "recording rules not shown: %s" % sorted(
        SHOWN_RECORDINGS - used)


#: Recording rules made for people to look at (the others are steps of the alerts).
SHOWN_RECORDINGS = {
    "pack:jkbms_cell_voltage_volts:min", "pack:jkbms_cell_voltage_volts:max",
    "pack:jkbms_cell_voltage_volts:avg", "pack:jkbms_cell_voltage_volts:spread",
    "pack:jkbms_power_watts:product",
    "pack:jkbms_time_to_empty_seconds", "pack:jkbms_time_to_full_seconds",
    "cell:jkbms_cell_voltage_deviation_volts",
    "cell:jkbms_cell_voltage_deviation_volts:avg_near_empty",
    "cell:jkbms_cell_voltage_deviation_volts:avg_near_full",
    "cell:jkbms_cell_voltage_deviation_volts:avg_at_rest",
    "bank:jkbms_state_of_charge_ratio:capacity_weighted", "bank:jkbms_current_amperes:sum",
    "bank:jkbms_power_watts:sum", "bank:jkbms_charge_power_watts:rate5m",
    "bank:jkbms_discharge_power_watts:rate5m", "bank:jkbms_cell_voltage_volts:min",
    "bank:jkbms_cell_voltage_volts:max",
}


def _panels_querying(dashboard: dict, kind: str, metric: str) -> List[dict]:
    return [panel for panel in data_panels(dashboard) if panel["type"] == kind
            and any(metric in metric_names(t["expr"]) for t in panel["targets"])]


def _the_panel(dashboard: dict, title: str) -> dict:
    (panel,) = [p for p in data_panels(dashboard) if p["title"] == title]
    return panel


# (panel type, metric it must show, unit) for every panel the issues ask for
REQUIRED_PANELS = [
    ("stat", "jkbms_state_of_charge_ratio", "percentunit"),
    ("stat", "jkbms_pack_voltage_volts", "volt"),
    ("stat", "jkbms_current_amperes", "amp"),
    ("stat", "pack:jkbms_power_watts:product", "watt"),
    ("stat", "pack:jkbms_cell_voltage_volts:spread", "mvolt"),
    ("stat", "jkbms_charge_cycles_total", "none"),
    ("stat", "jkbms_last_success_timestamp_seconds", "s"),
    ("stat", "pack:jkbms_time_to_empty_seconds", "dtdurations"),
    ("stat", "pack:jkbms_time_to_full_seconds", "dtdurations"),
    ("stat", "jkbms_charge_energy_joules_total", "kwatth"),
    ("stat", "jkbms_discharge_energy_joules_total", "kwatth"),
    ("stat", "jkbms_charge_coulombs_total", "amph"),
    ("stat", "jkbms_discharge_coulombs_total", "amph"),
    ("timeseries", "jkbms_charge_energy_joules_total", "kwatth"),
    ("timeseries", "jkbms_discharge_energy_joules_total", "kwatth"),
    ("table", "cell:jkbms_cell_voltage_deviation_volts:avg_near_empty", "mvolt"),
    ("timeseries", "cell:jkbms_cell_voltage_deviation_volts", "mvolt"),
    ("stat", "bank:jkbms_state_of_charge_ratio:capacity_weighted", "percentunit"),
    ("stat", "bank:jkbms_cell_voltage_volts:min", "volt"),
    ("stat", "bank:jkbms_cell_voltage_volts:max", "volt"),
    ("timeseries", "bank:jkbms_charge_power_watts:rate5m", "watt"),
    ("bargauge", "jkbms_cell_voltage_volts", "volt"),
    ("bargauge", "jkbms_balance_wire_resistance_ohms", "ohm"),
    ("timeseries", "jkbms_cell_voltage_volts", "volt"),
    ("timeseries", "pack:jkbms_cell_voltage_volts:spread", "mvolt"),
    ("timeseries", "jkbms_temperature_celsius", "celsius"),
    ("timeseries", "jkbms_current_amperes", "amp"),
    ("timeseries", "pack:jkbms_power_watts:product", "watt"),
    ("state-timeline", "jkbms_mosfet_on", None),
    ("state-timeline", "jkbms_balancing", None),
    ("state-timeline", "jkbms_alarm", None),
    ("table", "jkbms_setting_volts", None),
    ("table", "jkbms_device_info", None),
    ("table", "jkbms_state_of_charge_ratio", None),  # the fleet overview
    ("state-timeline", "jkbms_up", None),
    ("timeseries", "jkbms_read_errors_total", "cpm"),
    ("timeseries", "jkbms_scrape_duration_seconds", "s"),
    ("stat", "up", None),
]


@pytest.mark.parametrize("kind,metric,unit", REQUIRED_PANELS,
                         ids=["%s-%s" % (k, m) for k, m, _ in REQUIRED_PANELS])
def test_required_panel_present(dashboard: dict, kind: str, metric: str, unit: Optional[str]) -> None:
    panels = _panels_querying(dashboard, kind, metric)
    assert panels, "no %s panel shows %s" % (kind, metric)
    if unit:
        assert any(p["fieldConfig"]["defaults"]["unit"] == unit for p in panels), [
            p["fieldConfig"]["defaults"]["unit"] for p in panels]


# ------------------------------------------------------- never healthy-looking when stale


def test_no_panel_carries_an_old_value_forward(dashboard: dict) -> None:
    """Stat and bar gauge panels ask for the value now (an instant query: nothing once the
    series went stale) and show the last value, never the last non-null one of the range;
    each says what an empty answer means."""
    assert "lastNotNull" not in DASHBOARD.read_text(encoding="utf-8")
    for panel in data_panels(dashboard):
        calcs = panel.get("options", {}).get("reduceOptions", {}).get("calcs")
        if panel["type"] in ("stat", "bargauge"):
            assert calcs == ["last"], panel["title"]
            assert all(t["instant"] and not t["range"] for t in panel["targets"]), panel["title"]
            assert panel["fieldConfig"]["defaults"].get("noValue"), panel["title"]
        if panel["type"] == "timeseries":
            assert panel["fieldConfig"]["defaults"].get("custom", {}).get(
                "spanNulls", False) is False, panel["title"]


def test_pack_stats_turn_red_while_the_read_fails(dashboard: dict) -> None:
    """A pack value stat shows a red "no reading" (NaN) instead of its last value."""
    shown = 0
    for panel in _panels_in_pack_rows(dashboard, "stat"):
        expr = panel["targets"][0]["expr"]
        if "jkbms_up" not in expr or "time()" in expr:
            continue
        shown += 1
        assert re.search(r'or on \(site, instance, pack\) \(jkbms_up\{[^}]*\} == 0\) \* NaN$',
                         expr), (panel["title"], expr)
        (nan,) = [m for m in panel["fieldConfig"]["defaults"]["mappings"] if m["type"] == "special"]
        assert nan["options"]["match"] == "nan" and nan["options"]["result"]["color"] == "red"
    assert shown >= 7


def _panels_in_pack_rows(dashboard: dict, kind: str) -> List[dict]:
    return [panel for panel, row in iter_panels(dashboard) if panel["type"] == kind
            and row is not None and row.get("repeat") == "pack"]


def test_last_good_read_counts_from_now_and_says_never(dashboard: dict) -> None:
    panel = _the_panel(dashboard, "Last good read")
    (target,) = panel["targets"]
    assert target["expr"].startswith(
        "time() - last_over_time(jkbms_last_success_timestamp_seconds{")
    # a pack never read has jkbms_up but no timestamp: -1, shown as a red "never"
    assert target["expr"].endswith("* 0 - 1)")
    defaults = panel["fieldConfig"]["defaults"]
    (mapping,) = defaults["mappings"]
    assert mapping["options"]["-1"]["text"] == "never"
    assert mapping["options"]["-1"]["color"] == "red"
    steps = [(s["value"], s["color"]) for s in defaults["thresholds"]["steps"]]
    assert steps[0] == (None, "green") and steps[-1][1] == "red"
    assert steps[-1][0] <= 120, "red only after 2 minutes: a few 15 s scrape intervals"


# ---------------------------------------------------------------------- readable panels


def test_cell_spread_in_whole_millivolts(dashboard: dict) -> None:
    for panel in (_panels_querying(dashboard, "stat", "pack:jkbms_cell_voltage_volts:spread")
                  + _panels_querying(dashboard, "timeseries", "pack:jkbms_cell_voltage_volts:spread")):
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["unit"] == "mvolt" and defaults["decimals"] == 0, panel["title"]
        assert all("* 1000" in t["expr"] for t in panel["targets"]), panel["title"]
        values = [s["value"] for s in defaults["thresholds"]["steps"][1:]]
        assert values and all(v >= 10 for v in values), "thresholds in mV: %s" % values


def test_balance_wire_resistance_panel(dashboard: dict) -> None:
    (panel,) = _panels_querying(dashboard, "bargauge", "jkbms_balance_wire_resistance_ohms")
    assert "balance wire" in panel["title"].lower()
    assert "not the cell's internal resistance" in panel["description"].lower()
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults["unit"] == "ohm"
    steps = [(s["value"], s["color"]) for s in defaults["thresholds"]["steps"]]
    assert steps[0] == (None, "green")
    # typical leads are 0.05-0.2 ohm: none of them orange, a doubled one red
    assert 0.2 <= steps[1][0] < steps[-1][0] <= 0.5 and steps[-1][1] == "red"
    assert "jkbms_cell_resistance_ohms" not in DASHBOARD.read_text(encoding="utf-8")


def test_alarm_timeline_shows_only_bits_set_in_the_range(dashboard: dict) -> None:
    (panel,) = _panels_querying(dashboard, "state-timeline", "jkbms_alarm")
    (target,) = panel["targets"]
    assert re.search(r"and on \(site, instance, pack, alarm\) \(max_over_time\(jkbms_alarm\{[^}]*\}"
                     r"\[\$__range\] @ end\(\)\) > 0\)$", target["expr"]), target["expr"]
    assert "no alarm" in panel["fieldConfig"]["defaults"]["noValue"].lower()


def test_switch_settings_are_not_shown_as_warnings(dashboard: dict) -> None:
    (panel,) = _panels_querying(dashboard, "state-timeline", "jkbms_switch_enabled")
    (switches,) = [t for t in panel["targets"] if "jkbms_switch_enabled" in t["expr"]]
    (mosfets,) = [t for t in panel["targets"] if "jkbms_mosfet_on" in t["expr"]]
    overrides = {o["matcher"]["options"]: o for o in panel["fieldConfig"]["overrides"]
                 if o["matcher"]["id"] == "byFrameRefID"}
    (mapping,) = [p["value"] for p in overrides[switches["refId"]]["properties"]
                  if p["id"] == "mappings"]
    colours = {option["color"] for m in mapping for option in m["options"].values()}
    assert not colours & {"orange", "red", "yellow", "dark-red", "dark-orange"}, colours
    assert mosfets["refId"] not in overrides  # a MOSFET that is OFF stays orange
    defaults = panel["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert defaults["0"]["color"] == "orange" and defaults["1"]["color"] == "green"


def test_panels_only_some_protocols_fill_say_so(dashboard: dict) -> None:
    """A 4E57-only user sees why a panel is empty: its title names the protocols and its
    empty text says who reports it."""
    found = 0
    for panel in data_panels(dashboard):
        names = set().union(*(metric_names(t["expr"]) for t in panel["targets"]))
        if names & LATER_PROTOCOL_METRICS:
            found += 1
            assert "JK-PB" in panel["title"], panel["title"]
            assert "JK-PB" in panel["fieldConfig"]["defaults"]["noValue"], panel["title"]
    assert found >= 4


# ------------------------------------------------------------------ energy, cells, banks


def test_energy_per_day_bars(dashboard: dict) -> None:
    bars = _panels_querying(dashboard, "timeseries", "jkbms_charge_energy_joules_total")
    assert len(bars) == 2  # per pack and per bank
    for panel in bars:
        assert panel["interval"] == "1d" and panel["timeFrom"] == "7d", panel["title"]
        custom = panel["fieldConfig"]["defaults"]["custom"]
        assert custom["drawStyle"] == "bars" and custom["barAlignment"] == -1
        charged, discharged = panel["targets"]
        assert "increase(jkbms_charge_energy_joules_total{" in charged["expr"]
        assert discharged["expr"].startswith("-") and "jkbms_discharge_energy" in discharged["expr"]
        assert all(t["expr"].endswith("/ 3.6e6") for t in panel["targets"])  # J -> kWh
    today = _the_panel(dashboard, "Energy today")
    assert today["timeFrom"] == "now/d"
    assert all("[$__range]" in t["expr"] for t in today["targets"])


def test_cell_ranking_table_averages_seven_days(dashboard: dict) -> None:
    panel = _the_panel(dashboard, "Cell ranking (7 days)")
    rules = [re.match(r"avg_over_time\(([\w:]+)\{[^}]*\}\[7d\]\) \* 1000$", t["expr"]).group(1)
             for t in panel["targets"]]
    assert rules == ["cell:jkbms_cell_voltage_deviation_volts:avg_near_empty",
                     "cell:jkbms_cell_voltage_deviation_volts:avg_near_full",
                     "cell:jkbms_cell_voltage_deviation_volts:avg_at_rest",
                     "cell:jkbms_cell_voltage_deviation_volts"]
    assert all(t["instant"] and t["format"] == "table" for t in panel["targets"])
    assert [t["id"] for t in panel["transformations"]][0] == "merge"
    names = [p["value"] for o in panel["fieldConfig"]["overrides"] for p in o["properties"]
             if p["id"] == "displayName"]
    assert panel["options"]["sortBy"] == [{"displayName": names[0], "desc": False}]


def test_bank_row_repeats_per_bank_and_is_collapsed(dashboard: dict) -> None:
    (bank_row,) = [p for p in dashboard["panels"] if p.get("repeat") == "bank"]
    # with no bank label Grafana still draws one row ("All"): collapsed, it stays one line
    assert bank_row["collapsed"] is True and "no pack has one" in bank_row["title"]
    assert len(bank_row["panels"]) >= 6


def test_fleet_overview_one_line_per_site(dashboard: dict) -> None:
    (row,) = [p for p in dashboard["panels"] if p["type"] == "row" and p["title"].startswith("Fleet")]
    assert row["gridPos"]["y"] == 0 and not row["collapsed"]
    (table,) = [p for p, r in iter_panels(dashboard) if r is row]
    assert table["type"] == "table"
    columns = [next(p["value"] for p in o["properties"] if p["id"] == "displayName")
               for o in table["fieldConfig"]["overrides"]]
    assert columns == ["Lowest SOC", "Worst cell spread", "Packs down", "Alerts firing",
                       "Last seen"]
    exprs = [t["expr"] for t in table["targets"]]
    assert all(t["instant"] and t["format"] == "table" for t in table["targets"])
    assert exprs[0].startswith("min by (site) (jkbms_state_of_charge_ratio{")
    assert exprs[1].startswith("max by (site) (pack:jkbms_cell_voltage_volts:spread{")
    assert "jkbms_up" in exprs[2] and 'ALERTS{alertstate="firing"' in exprs[3]
    assert exprs[4].startswith("time() - max by (site) (last_over_time(")
    assert [t["id"] for t in table["transformations"]][0] == "merge"


def test_cell_bar_gauge_has_lifepo4_bands(dashboard: dict) -> None:
    (gauge,) = _panels_querying(dashboard, "bargauge", "jkbms_cell_voltage_volts")
    defaults = gauge["fieldConfig"]["defaults"]
    assert (defaults["min"], defaults["max"]) == (2.5, 3.65)
    steps = [(s["value"], s["color"]) for s in defaults["thresholds"]["steps"]]
    values = [value for value, _ in steps[1:]]
    assert values == sorted(values) and {2.8, 3.0, 3.6} <= set(values)
    colour = dict(steps)
    assert colour[3.0] == "green" and colour[3.6] == "red" and steps[0][1] == "red"
    assert all("{{cell}}" in t["legendFormat"] for t in gauge["targets"])


def test_temperature_panel_marks_freezing(dashboard: dict) -> None:
    (panel,) = _panels_querying(dashboard, "timeseries", "jkbms_temperature_celsius")
    defaults = panel["fieldConfig"]["defaults"]
    assert 0 in [s["value"] for s in defaults["thresholds"]["steps"]]
    assert defaults["custom"]["thresholdsStyle"]["mode"] in ("line", "dashed", "line+area")


def test_per_pack_rows_repeat_over_pack(dashboard: dict) -> None:
    repeated = [panel for panel in dashboard["panels"]
                if panel["type"] == "row" and panel.get("repeat") == "pack"]
    assert len(repeated) == 1, "one row repeated per pack"
    inside = _panels_in_pack_rows(dashboard, "stat")
    assert len(inside) >= 10


def test_data_needs_name_every_condition_some_panel_waits_for(dashboard: dict) -> None:
    """``data_needs`` (used by end-to-end tests whose stack lacks e.g. banks or JK-PB packs)
    knows every condition and no stale one."""
    needs = [data_needs(target["expr"]) for _, target, _ in targets_in_context(dashboard)]
    seen = set().union(*needs)
    assert seen == set(_NEEDS.values()) | {"a bank label", "an alarm bit set"}, seen
    assert sum(1 for n in needs if not n) >= 40  # most queries need only a pack being read


def test_every_alert_the_dashboard_names_exists(dashboard: dict) -> None:
    """Descriptions point users to alerts by name: those names must be the rules' names."""
    alerts = set()
    for path in RULES_DIR.glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            alerts.update(rule["alert"] for rule in group["rules"] if "alert" in rule)
    named = set(re.findall(r"\bJkbms[A-Z]\w+", DASHBOARD.read_text(encoding="utf-8")))
    assert len(named) >= 8
    assert named <= alerts, "no such alert: %s" % sorted(named - alerts)
