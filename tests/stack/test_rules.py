"""The shipped Prometheus configuration and rules, checked with the real promtool.

* ``promtool check config`` / ``check rules`` accept prometheus/prometheus.yml and every
  rule file;
* ``promtool test rules`` passes prometheus/tests/*.test.yml, and those unit tests show
  every alert of the issue firing and not firing;
* the unit tests can fail: rule files with a threshold, a ``for`` or a guard broken are
  rejected by them;
* every alert has a severity, a summary naming the pack (and the cell for cell alerts)
  and a description.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

from conftest import REPO

PROMETHEUS_DIR = REPO / "prometheus"
RULES_DIR = PROMETHEUS_DIR / "rules"
RULE_TESTS_DIR = PROMETHEUS_DIR / "tests"
RULES_FILE = RULES_DIR / "jkbms.rules.yml"

REQUIRED_ALERTS = {
    "JkbmsCellOvervoltage",
    "JkbmsCellNearOvervoltageProtection",
    "JkbmsCellUndervoltage",
    "JkbmsCellNearUndervoltageProtection",
    "JkbmsCellImbalance",
    "JkbmsChargingBelowFreezing",
    "JkbmsTemperatureHigh",
    "JkbmsStateOfChargeLow",
    "JkbmsAlarmActive",
    "JkbmsMosfetOff",
    "JkbmsPackDown",
    "JkbmsReadErrors",
    "JkbmsExporterDown",
}
#: jkbms-fleet.rules.yml (many sites); tested in test_fleet_configs.py
FLEET_ALERTS = {"JkbmsSiteSilent"}
CELL_ALERTS = {name for name in REQUIRED_ALERTS if name.startswith("JkbmsCell") and "Imbalance" not in name}
REQUIRED_RECORDS = {
    "pack:jkbms_cell_voltage_volts:min",
    "pack:jkbms_cell_voltage_volts:max",
    "pack:jkbms_cell_voltage_volts:avg",
    "pack:jkbms_cell_voltage_volts:spread",
    "pack:jkbms_power_watts:product",
}


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=str(cwd), capture_output=True, text=True, timeout=120)


def rule_files() -> List[Path]:
    files = sorted(RULES_DIR.glob("*.yml"))
    assert files, "no rule files in %s" % RULES_DIR
    return files


def rule_test_files() -> List[Path]:
    files = sorted(RULE_TESTS_DIR.glob("*.test.yml"))
    assert files, "no promtool unit tests in %s" % RULE_TESTS_DIR
    return files


def all_rules() -> List[dict]:
    rules = []
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(group["rules"])
    return rules


def alert_rules() -> Dict[str, List[dict]]:
    by_name: Dict[str, List[dict]] = {}
    for rule in all_rules():
        if "alert" in rule:
            by_name.setdefault(rule["alert"], []).append(rule)
    return by_name


# ------------------------------------------------------------------------- promtool


def test_promtool_check_config_accepts_the_stack_config(promtool: str) -> None:
    result = run(promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    # the rule_files glob really found the rules (check config checks them too)
    assert "jkbms.rules.yml" in result.stdout + result.stderr


def test_promtool_check_rules(promtool: str) -> None:
    result = run(promtool, "check", "rules", *map(str, rule_files()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", *map(str, rule_test_files()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# ------------------------------------------------------ the unit tests can fail

MUTATIONS = {
    # the warning threshold of over-voltage moved up: the 3.62 V case no longer fires
    "threshold": ("expr: jkbms_cell_voltage_volts > 3.60\n", "expr: jkbms_cell_voltage_volts > 3.63\n"),
    # no `for` on under-voltage: the momentary dip under load would page
    "for": ("expr: jkbms_cell_voltage_volts < 2.50\n        for: 1m\n",
            "expr: jkbms_cell_voltage_volts < 2.50\n        for: 0s\n"),
    # MOSFET alert without the "switched off on purpose" guard
    "guard": ('jkbms_mosfet_on{mosfet="charge"} == 0\n          unless',
              'jkbms_mosfet_on{mosfet="charge"} == 0\n          or'),
    # summary without the cell
    "summary": ("Pack {{ $labels.pack }} cell {{ $labels.cell }} is at {{ $value | printf \"%.3f\" }} V (below 2.80 V)",
                "Pack {{ $labels.pack }} is at {{ $value | printf \"%.3f\" }} V (below 2.80 V)"),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_unit_tests_reject_a_broken_rule(promtool: str, tmp_path: Path, mutation: str) -> None:
    old, new = MUTATIONS[mutation]
    text = RULES_FILE.read_text()
    assert text.count(old) == 1, "mutation %r no longer applies to the rules file" % mutation
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / RULES_FILE.name).write_text(text.replace(old, new))
    shutil.copytree(RULE_TESTS_DIR, tmp_path / "tests")
    check = run(promtool, "check", "rules", str(tmp_path / "rules" / RULES_FILE.name))
    assert check.returncode == 0, "the mutated file must still be valid: " + check.stdout + check.stderr
    result = run(promtool, "test", "rules", *[str(tmp_path / "tests" / p.name) for p in rule_test_files()])
    assert result.returncode != 0, "promtool unit tests did not notice mutation %r" % mutation
    assert "FAILED" in result.stdout + result.stderr


# --------------------------------------------------------------- rule contents


def test_every_required_alert_and_recording_rule_exists() -> None:
    alerts = alert_rules()
    expected = REQUIRED_ALERTS | FLEET_ALERTS
    assert set(alerts) == expected, "missing: %s, unexpected: %s" % (
        sorted(expected - set(alerts)), sorted(set(alerts) - expected))
    records = {rule["record"] for rule in all_rules() if "record" in rule}
    assert REQUIRED_RECORDS <= records


@pytest.mark.parametrize("name", sorted(REQUIRED_ALERTS))
def test_alert_has_severity_summary_and_description(name: str) -> None:
    for rule in alert_rules()[name]:
        assert rule.get("labels", {}).get("severity") in {"warning", "critical"}, rule
        annotations = rule.get("annotations", {})
        summary, description = annotations.get("summary", ""), annotations.get("description", "")
        if name != "JkbmsExporterDown":  # that one is about a target, not a pack
            assert "$labels.pack" in summary, (name, summary)
        if name in CELL_ALERTS:
            assert "$labels.cell" in summary, (name, summary)
        assert len(description.split()) >= 15, "%s: description should say what to check" % name
        assert re.search(r"(?i)\b(check|stop|reduce|disconnect|start charging|charge the)\b",
                         description), "%s: description should say what to do" % name


def test_two_severities_where_the_issue_gives_two_thresholds() -> None:
    alerts = alert_rules()

    def thresholds(name: str) -> Dict[str, str]:
        return {rule["labels"]["severity"]: rule["expr"] for rule in alerts[name]}

    assert "> 3.60" in thresholds("JkbmsCellOvervoltage")["warning"]
    assert "> 3.65" in thresholds("JkbmsCellOvervoltage")["critical"]
    assert "< 2.80" in thresholds("JkbmsCellUndervoltage")["warning"]
    assert "< 2.50" in thresholds("JkbmsCellUndervoltage")["critical"]
    assert "> 0.050" in thresholds("JkbmsCellImbalance")["warning"]
    assert "> 0.100" in thresholds("JkbmsCellImbalance")["critical"]
    assert "> 45" in thresholds("JkbmsTemperatureHigh")["warning"]
    assert "> 55" in thresholds("JkbmsTemperatureHigh")["critical"]
    # the near-protection alerts follow the BMS's own settings, 50 mV away
    (near_high,) = alerts["JkbmsCellNearOvervoltageProtection"]
    assert 'setting="cell_overvoltage_protection"' in near_high["expr"] and "- 0.050" in near_high["expr"]
    (near_low,) = alerts["JkbmsCellNearUndervoltageProtection"]
    assert 'setting="cell_undervoltage_protection"' in near_low["expr"] and "+ 0.050" in near_low["expr"]


def test_unit_tests_show_every_alert_firing_and_not_firing() -> None:
    firing, quiet = set(), set()
    for path in rule_test_files():
        document = yaml.safe_load(path.read_text())
        for case in document["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
                for expected in check.get("exp_alerts") or []:
                    # the full rendered texts are compared, not just the labels
                    assert set(expected.get("exp_annotations", {})) == {"summary", "description"}
    assert REQUIRED_ALERTS - firing == set(), "never shown firing"
    assert REQUIRED_ALERTS - quiet == set(), "never shown not firing"


def test_rules_avoid_promql_that_prometheus_2_42_and_3_disagree_on() -> None:
    # holt_winters was renamed in 3.0; newer functions are unknown to 2.42 (promtool
    # check rules catches those, this catches the rename and experimental ones).
    for rule in all_rules():
        assert not re.search(r"\b(holt_winters|double_exponential_smoothing|info|sort_by_label"
                             r"|limitk|limit_ratio)\s*\(", rule["expr"]), rule["expr"]


# -------------------------------------------------------- other chemistries (README)

#: The sed recipes of the README section "Alert thresholds (NMC / LTO packs)": each
#: threshold number sits once in its expr line and in its texts as "N.NN V".
CHEMISTRY_RECIPES = {
    "nmc": ("s/3\\.60 V/4.15 V/g; s/> 3\\.60$/> 4.15/; s/3\\.65 V/4.20 V/g; s/> 3\\.65$/> 4.20/; "
            "s/2\\.80 V/3.30 V/g; s/< 2\\.80$/< 3.30/; s/2\\.50 V/3.00 V/g; s/< 2\\.50$/< 3.00/",
            {"warning_high": 4.15, "critical_high": 4.20, "warning_low": 3.30, "critical_low": 3.00}),
    "lto": ("s/2\\.80 V/2.00 V/g; s/< 2\\.80$/< 2.00/; s/2\\.50 V/1.80 V/g; s/< 2\\.50$/< 1.80/; "
            "s/3\\.60 V/2.75 V/g; s/> 3\\.60$/> 2.75/; s/3\\.65 V/2.85 V/g; s/> 3\\.65$/> 2.85/",
            {"warning_high": 2.75, "critical_high": 2.85, "warning_low": 2.00, "critical_low": 1.80}),
}


@pytest.mark.parametrize("chemistry", sorted(CHEMISTRY_RECIPES))
def test_readme_threshold_recipe_changes_expressions_and_texts(promtool: str, tmp_path: Path,
                                                               chemistry: str) -> None:
    script, expected = CHEMISTRY_RECIPES[chemistry]
    path = tmp_path / RULES_FILE.name
    shutil.copy(RULES_FILE, path)
    result = run(find_sed(), "-i", "-e", script, str(path))
    assert result.returncode == 0, result.stderr
    assert run(promtool, "check", "rules", str(path)).returncode == 0
    rules = [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]
             if r.get("alert") in ("JkbmsCellOvervoltage", "JkbmsCellUndervoltage")]
    found = {}
    for rule in rules:
        value = float(re.search(r"[<>] ([0-9.]+)", rule["expr"]).group(1))
        high = "Overvoltage" in rule["alert"]
        key = "%s_%s" % (rule["labels"]["severity"], "high" if high else "low")
        found[key] = value
        # the texts name the new limit, never the LiFePO4 one
        texts = rule["annotations"]["summary"] + rule["annotations"]["description"]
        assert "%.2f V" % value in texts, (chemistry, rule["alert"], texts)
        assert not re.search(r"\b(3\.60|3\.65|2\.80|2\.50) V", texts.replace("%.2f V" % value, "")), texts
    assert found == expected


def find_sed() -> str:
    from conftest import find_tool

    return find_tool("sed")
