"""The many-sites configs (deploy/fleet/) checked by the tools that will read them.

* ``vmagent -dryRun`` accepts the edge scrape config and rejects a broken one;
* ``vmalert -dryRun`` accepts every rule file of ours (the central side evaluates them with
  vmalert, not Prometheus) and rejects a broken one;
* ``docker-compose config`` accepts both compose files, which pin their images, need the
  site's name and URL, and keep the store unpublished behind vmauth;
* ``promtool check config`` accepts the Prometheus agent alternative;
* Alertmanager groups by site; the fleet alert has its unit tests and texts.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

from conftest import REPO, find_tool
from fleet_stack import (ALERTMANAGER_CONFIG, CENTRAL_COMPOSE, EDGE_COMPOSE, EDGE_SCRAPE_CONFIG,
                         FLEET, RULES_GLOB)

EDGE_ENV = {"JKBMS_SITE": "cabin-north",
            "CENTRAL_WRITE_URL": "https://metrics.example.org:8427/api/v1/write"}
FLEET_RULES = REPO / "prometheus" / "rules" / "jkbms-fleet.rules.yml"
FLEET_RULE_TESTS = REPO / "prometheus" / "tests" / "jkbms-fleet.rules.test.yml"


def run(argv: List[str], env: Dict[str, str] = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=str(cwd),
                          env=dict(os.environ, **(env or {})))


# ---------------------------------------------------------------------------- vmagent


def vmagent_dry_run(config: Path) -> subprocess.CompletedProcess:
    return run([find_tool("vmagent"), "-dryRun", "-promscrape.config=%s" % config,
                "-loggerLevel=ERROR"], env={"JKBMS_SITE": "cabin-north"})


def test_vmagent_dry_run_accepts_the_edge_scrape_config() -> None:
    result = vmagent_dry_run(EDGE_SCRAPE_CONFIG)
    assert result.returncode == 0, result.stderr


def test_vmagent_dry_run_rejects_a_broken_scrape_config(tmp_path: Path) -> None:
    broken = tmp_path / "vmagent.yml"
    broken.write_text(EDGE_SCRAPE_CONFIG.read_text().replace("relabel_configs:", "relabel_config:"))
    result = vmagent_dry_run(broken)
    assert result.returncode != 0
    assert "relabel_config" in result.stderr


def test_edge_scrape_job_is_jkbms_and_prefixes_the_instance_with_the_site() -> None:
    (job,) = yaml.safe_load(EDGE_SCRAPE_CONFIG.read_text())["scrape_configs"]
    assert job["job_name"] == "jkbms"  # JkbmsExporterDown and JkbmsSiteSilent look for it
    assert job["static_configs"] == [{"targets": ["exporter:10025"]}]
    assert job["relabel_configs"] == [{"source_labels": ["__address__"],
                                       "target_label": "instance",
                                       "replacement": "%{JKBMS_SITE}/$1"}]


# ---------------------------------------------------------------------------- vmalert


def vmalert_dry_run(*rules: str) -> subprocess.CompletedProcess:
    return run([find_tool("vmalert"), "-dryRun", *["-rule=%s" % rule for rule in rules],
                "-loggerLevel=ERROR"])


def test_vmalert_dry_run_accepts_every_rule_file() -> None:
    result = vmalert_dry_run(RULES_GLOB)
    assert result.returncode == 0, result.stdout + result.stderr


def test_vmalert_dry_run_rejects_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(FLEET_RULES.read_text().replace("count by (site) (max_over_time(up",
                                                      "count by (site) (max_over_time(up (", 1))
    result = vmalert_dry_run(str(broken))
    assert result.returncode != 0
    assert "JkbmsSiteSilent" in result.stdout + result.stderr


# ------------------------------------------------------------------------ compose files


def compose_config(compose: Path, env: Dict[str, str]) -> subprocess.CompletedProcess:
    return run([find_tool("docker-compose"), "-f", str(compose), "config"], env=env,
               cwd=compose.parent)


@pytest.mark.parametrize("compose, env", [(EDGE_COMPOSE, EDGE_ENV), (CENTRAL_COMPOSE, {})],
                         ids=["edge", "central"])
def test_docker_compose_config_accepts_the_compose_file(compose: Path, env: Dict[str, str]) -> None:
    result = compose_config(compose, env)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name, service in services.items():
        if "build" not in service:  # pinned: a tag that is a version, never latest
            assert re.search(r":v?\d+\.\d+\.\d+$", service["image"]), (name, service["image"])


def test_edge_compose_needs_the_site_and_the_central_url() -> None:
    for missing in EDGE_ENV:
        env = {**EDGE_ENV, missing: ""}
        result = compose_config(EDGE_COMPOSE, env)
        assert result.returncode != 0
        assert missing in result.stderr


def test_edge_flags_buffer_on_disk_with_a_cap_and_label_the_site() -> None:
    result = compose_config(EDGE_COMPOSE, EDGE_ENV)
    command = yaml.safe_load(result.stdout)["services"]["vmagent"]["command"]
    flags = dict(argument.lstrip("-").split("=", 1) for argument in command)
    assert flags["remoteWrite.label"] == "site=cabin-north"
    assert flags["remoteWrite.url"] == EDGE_ENV["CENTRAL_WRITE_URL"]
    assert flags["remoteWrite.basicAuth.username"] == "cabin-north"
    assert flags["remoteWrite.tmpDataPath"] == "/vmagent-buffer"
    assert flags["remoteWrite.maxDiskUsagePerURL"] == "1GB"
    assert "remoteWrite.basicAuth.password" not in flags  # a file, not the command line


def test_central_store_is_only_reachable_through_vmauth() -> None:
    services = yaml.safe_load(compose_config(CENTRAL_COMPOSE, {}).stdout)["services"]
    assert "ports" not in services["victoriametrics"]
    vmauth = services["vmauth"]["command"]
    assert "-tls" in vmauth
    auth = yaml.safe_load((FLEET / "central" / "auth.example.yml").read_text())
    for user in auth["users"]:
        assert [m["src_paths"] for m in user["url_map"]] == [["/api/v1/write"]]
    vmalert = services["vmalert"]["command"]
    assert "-rule=/etc/vmalert/rules/*.yml" in vmalert
    # the repository's own rule files, resolved from the compose file's directory
    assert "%s:/etc/vmalert/rules:ro" % (REPO / "prometheus" / "rules") in services["vmalert"]["volumes"]


def test_secrets_are_ignored_by_git() -> None:
    for part, names in (("edge", ["secrets/remote-write-password", ".env"]),
                        ("central", ["auth.yml", "certs/server.key", ".env"])):
        for name in names:
            result = run(["git", "check-ignore", "-q", str(FLEET / part / name)])
            assert result.returncode == 0, "%s/%s is not ignored" % (part, name)


# ------------------------------------------------------------- the agent alternative


def test_promtool_accepts_the_prometheus_agent_config(promtool: str) -> None:
    config = FLEET / "prometheus-agent" / "prometheus.yml"
    result = run([promtool, "check", "config", str(config)])
    assert result.returncode == 0, result.stdout + result.stderr
    document = yaml.safe_load(config.read_text())
    assert document["global"]["external_labels"]["site"] == "cabin-north"
    assert "rule_files" not in document and "alerting" not in document  # agent mode has none


# --------------------------------------------------------- Alertmanager, fleet alert


def test_alertmanager_groups_by_site() -> None:
    route = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())["route"]
    assert "site" in route["group_by"]
    result = run([find_tool("amtool"), "check-config", str(ALERTMANAGER_CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_fleet_alert_unit_tests_pass_and_can_fail(promtool: str, tmp_path: Path) -> None:
    result = run([promtool, "test", "rules", str(FLEET_RULE_TESTS)])
    assert result.returncode == 0, result.stdout + result.stderr
    # a shorter silence window: the "pending only at 12 minutes" case notices
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    text = FLEET_RULES.read_text()
    assert text.count('site!=""}[10m]') == 1
    (tmp_path / "rules" / FLEET_RULES.name).write_text(text.replace('site!=""}[10m]', 'site!=""}[5m]'))
    shutil.copy(FLEET_RULE_TESTS, tmp_path / "tests")
    result = run([promtool, "test", "rules", str(tmp_path / "tests" / FLEET_RULE_TESTS.name)])
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr


def test_site_silent_alert_names_the_site_and_says_what_to_check() -> None:
    (group,) = yaml.safe_load(FLEET_RULES.read_text())["groups"]
    (rule,) = group["rules"]
    assert rule["alert"] == "JkbmsSiteSilent" and rule["labels"]["severity"] == "critical"
    assert "$labels.site" in rule["annotations"]["summary"]
    assert re.search(r"\bCheck\b", rule["annotations"]["description"])
