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


def test_datasource_and_pack_variables(dashboard: dict) -> None:
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    source = variables["datasource"]
    assert source["type"] == "datasource" and source["query"] == "prometheus"
    pack = variables["pack"]
    assert pack["type"] == "query"
    assert pack["datasource"] == DATASOURCE
    query = pack["query"]["query"] if isinstance(pack["query"], dict) else pack["query"]
    assert re.fullmatch(r"label_values\(\s*jkbms_up\s*,\s*pack\s*\)", query)
    assert pack["multi"] is True and pack["includeAll"] is True
    assert pack["allValue"] == ".+"
    assert pack["refresh"] in (1, 2)


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


def test_rates_use_rate_interval_and_queries_filter_by_pack(dashboard: dict) -> None:
    for panel in data_panels(dashboard):
        for target in panel["targets"]:
            expr = target["expr"]
            for call in re.finditer(r"\b(rate|irate|increase)\s*\(", expr):
                window = re.match(r"[^\[]*\[([^\]]*)\]", expr[call.end():]).group(1)
                allowed = {"$__rate_interval"} | ({"$__range"} if call.group(1) == "increase" else set())
                assert window in allowed, (panel["title"], expr)
            for name, matchers in selectors(expr):
                if name in PACKLESS:
                    continue
                if name == "ALERTS" and 'alertname="JkbmsExporterDown"' in matchers:
                    continue  # the one alert without a pack
                assert 'pack=~"$pack"' in matchers, (panel["title"], expr)


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
    # the dashboard shares the rules' derived series instead of recomputing them (the other
    # recording rules are steps of the alerts, or issue 9's, shown by the dashboard's next landing)
    shown = {name for name in recorded if name.startswith("pack:jkbms_cell_voltage_volts:")}
    shown.add("pack:jkbms_power_watts:product")
    assert shown <= used, "recording rules not shown: %s" % sorted(shown - used)


def _panels_querying(dashboard: dict, kind: str, metric: str) -> List[dict]:
    return [panel for panel in data_panels(dashboard) if panel["type"] == kind
            and any(metric in metric_names(t["expr"]) for t in panel["targets"])]


# (panel type, metric it must show, unit) for every panel the issue asks for
REQUIRED_PANELS = [
    ("stat", "jkbms_state_of_charge_ratio", "percentunit"),
    ("stat", "jkbms_pack_voltage_volts", "volt"),
    ("stat", "jkbms_current_amperes", "amp"),
    ("stat", "pack:jkbms_power_watts:product", "watt"),
    ("stat", "pack:jkbms_cell_voltage_volts:spread", "volt"),
    ("stat", "jkbms_charge_cycles_total", "none"),
    ("stat", "jkbms_last_success_timestamp_seconds", "s"),
    ("bargauge", "jkbms_cell_voltage_volts", "volt"),
    ("timeseries", "jkbms_cell_voltage_volts", "volt"),
    ("timeseries", "pack:jkbms_cell_voltage_volts:spread", "volt"),
    ("timeseries", "jkbms_temperature_celsius", "celsius"),
    ("timeseries", "jkbms_current_amperes", "amp"),
    ("timeseries", "pack:jkbms_power_watts:product", "watt"),
    ("state-timeline", "jkbms_mosfet_on", None),
    ("state-timeline", "jkbms_balancing", None),
    ("state-timeline", "jkbms_alarm", None),
    ("table", "jkbms_setting_volts", None),
    ("table", "jkbms_device_info", None),
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
    assert repeated, "no row repeated per pack"
    for panel, row in iter_panels(dashboard):
        if row is not None and row.get("repeat") == "pack" and panel["type"] != "row":
            assert all('pack=~"$pack"' in t["expr"] for t in panel["targets"]), panel["title"]
