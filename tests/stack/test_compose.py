"""docker-compose.yml, the Dockerfile, .env.example, Grafana provisioning, Alertmanager.

There is no Docker engine here, so the stack is proven the next-best way:

* Debian's ``docker-compose config`` accepts the compose file, with defaults and with the
  .env switch to a real device; images are pinned, serial devices are mapped re-plug safe,
  data lives in named volumes;
* the paths, hosts and ports that the services, prometheus.yml and the Grafana
  provisioning use for each other all agree;
* the command compose gives the exporter runs (the "real device" being a simulated BMS
  behind a TCP gateway), and the image's CMD and HEALTHCHECK work against a real exporter;
* ``amtool check-config`` accepts alertmanager/alertmanager.yml.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import yaml

from conftest import REPO, find_tool
from test_stack_e2e import Simulator

COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
SERVICES = {"exporter", "prometheus", "alertmanager", "grafana"}


def compose_config(tmp_path: Path, env_text: str = "") -> dict:
    """``docker-compose config`` with only ``env_text`` as the .env file."""
    env_file = tmp_path / "compose.env"
    env_file.write_text(env_text)
    clean = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR") if key in os.environ}
    result = subprocess.run(
        [find_tool("docker-compose"), "--env-file", str(env_file), "-f", str(COMPOSE_FILE),
         "config"], cwd=str(REPO), env=clean, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return compose_config(tmp_path_factory.mktemp("compose"))


def command(service: dict) -> List[str]:
    value = service["command"]
    return shlex.split(value) if isinstance(value, str) else list(value)


def mounts(service: dict) -> List[Tuple[str, str]]:
    """(source, target) of every volume, short or long syntax."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        found.append((source, target))
    return found


def host_path(service: dict, container_path: str) -> Path:
    """Where a path inside the container comes from on the host (bind mounts only)."""
    best = None
    for source, target in mounts(service):
        if source.startswith("/") and (container_path == target or container_path.startswith(target + "/")):
            if best is None or len(target) > len(best[1]):
                best = (source, target)
    assert best is not None, "%s is not bind-mounted" % container_path
    return Path(best[0] + container_path[len(best[1]):])


def published(service: dict) -> Dict[int, str]:
    """container port → published port (as text)."""
    ports = {}
    for port in service.get("ports", []):
        if isinstance(port, str):
            parts = port.split("/")[0].split(":")
            ports[int(parts[-1])] = parts[-2]
        else:
            ports[int(port["target"])] = str(port["published"])
    return ports


# ---------------------------------------------------------------------- compose


def test_compose_config_accepts_the_file(config: dict) -> None:
    assert set(config["services"]) == SERVICES
    # simulate mode when nothing is configured
    assert command(config["services"]["exporter"]) == ["serve", "--simulate"]


def test_images_pinned_to_exact_versions(config: dict) -> None:
    images = {name: service.get("image", "") for name, service in config["services"].items()}
    assert re.fullmatch(r"prom/prometheus:v3\.\d+\.\d+", images["prometheus"]), images
    assert re.fullmatch(r"prom/alertmanager:v0\.\d+\.\d+", images["alertmanager"]), images
    assert re.fullmatch(r"grafana/grafana:13\.\d+\.\d+", images["grafana"]), images
    exporter = config["services"]["exporter"]
    assert Path(exporter["build"]["context"]) == REPO
    assert "latest" not in json.dumps(images)


def test_serial_devices_survive_replugging(config: dict) -> None:
    exporter = config["services"]["exporter"]
    assert ("/dev", "/dev") in mounts(exporter)
    rules = exporter.get("device_cgroup_rules", [])
    assert "c 188:* rmw" in rules and "c 166:* rmw" in rules  # ttyUSB*, ttyACM*
    assert "devices" not in exporter, "a fixed devices: entry breaks when the adapter re-plugs"
    assert not exporter.get("privileged")
    assert exporter.get("group_add") == ["dialout"]


def test_data_in_named_volumes(config: dict) -> None:
    declared = set(config.get("volumes", {}))
    for service, path in (("prometheus", "/prometheus"), ("grafana", "/var/lib/grafana"),
                          ("alertmanager", "/alertmanager")):
        sources = [source for source, target in mounts(config["services"][service]) if target == path]
        assert sources and sources[0] in declared, (service, sources, declared)


def test_services_find_each_other(config: dict) -> None:
    services = config["services"]
    prometheus_args = command(services["prometheus"])
    prometheus_config = [a.split("=", 1)[1] for a in prometheus_args if a.startswith("--config.file=")][0]
    scrape = yaml.safe_load(host_path(services["prometheus"], prometheus_config).read_text())
    # the rule files the config names are inside the mounted directory
    assert scrape["rule_files"] == ["rules/*.yml"]
    (job,) = [j for j in scrape["scrape_configs"] if j["job_name"] == "jkbms"]
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host == "exporter" and int(port) in published(services["exporter"])
    from jkbms_exporter.web.server import DEFAULT_PORT
    assert int(port) == DEFAULT_PORT  # what the image listens on
    (alertmanager,) = scrape["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanager == "alertmanager:9093"
    alertmanager_args = command(services["alertmanager"])
    am_config = [a.split("=", 1)[1] for a in alertmanager_args if a.startswith("--config.file=")][0]
    assert host_path(services["alertmanager"], am_config).is_file()

    grafana = services["grafana"]
    assert published(grafana)[3000] == "3000"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path(grafana, home) == REPO / "grafana" / "dashboards" / "jkbms.json"
    datasources = yaml.safe_load(host_path(
        grafana, "/etc/grafana/provisioning/datasources/jkbms.yml").read_text())["datasources"]
    (prom,) = [d for d in datasources if d["type"] == "prometheus"]
    assert prom["uid"] == "prometheus" and prom["isDefault"] is True
    assert prom["url"] == "http://prometheus:9090"
    assert prom["jsonData"]["timeInterval"] == scrape["global"]["scrape_interval"]
    (am,) = [d for d in datasources if d["type"] == "alertmanager"]
    assert am["url"] == "http://alertmanager:9093"
    providers = yaml.safe_load(host_path(
        grafana, "/etc/grafana/provisioning/dashboards/jkbms.yml").read_text())["providers"]
    (provider,) = providers
    assert (host_path(grafana, provider["options"]["path"]) / "jkbms.json").is_file()


def test_env_example_documents_every_variable() -> None:
    used = set(re.findall(r"\$\{(\w+)", COMPOSE_FILE.read_text()))
    documented = set(re.findall(r"^#?(\w+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert used == documented, "undocumented: %s, unused: %s" % (
        sorted(used - documented), sorted(documented - used))


def test_env_example_device_lines_are_valid_exporter_commands(tmp_path: Path) -> None:
    from jkbms_exporter.cli import build_parser

    examples = re.findall(r"^#(JKBMS_ARGS=.*)$", ENV_EXAMPLE.read_text(), re.MULTILINE)
    assert len(examples) >= 3
    for line in examples:
        args = command(compose_config(tmp_path, line + "\n")["services"]["exporter"])
        parsed = build_parser().parse_args(args)
        assert parsed.command == "serve" and not parsed.simulate, line
        assert parsed.device or parsed.config_file, line
        assert all("/dev/serial/by-id/" in d or d.split("=", 1)[1].startswith("socket://")
                   for d in parsed.device), "recommend by-id paths: %s" % line
        if parsed.config_file:  # the file the example names is the one compose mounts
            targets = [t for _, t in mounts(compose_config(tmp_path, "")["services"]["exporter"])]
            assert parsed.config_file in targets, (parsed.config_file, targets)


def test_config_file_switch_reads_the_mounted_file(tmp_path: Path, start_exporter) -> None:
    """JKBMS_CONFIG + JKBMS_ARGS=--config.file: the packs of the user's file are read."""
    simulator = Simulator("normal")
    try:
        user_file = tmp_path / "jkbms.yml"
        user_file.write_text("packs:\n  - name: cabin\n    url: %s\n    labels:\n"
                             "      site: lake\n" % simulator.url)
        config = compose_config(tmp_path, "JKBMS_CONFIG=%s\nJKBMS_ARGS=--config.file "
                                "/etc/jkbms/jkbms.yml\n" % user_file)
        exporter_service = config["services"]["exporter"]
        args = command(exporter_service)
        index = args.index("--config.file") + 1
        args[index] = str(host_path(exporter_service, args[index]))  # where it is on the host
        assert args[index] == str(user_file)
        text = start_exporter(*args[1:]).metrics()
        assert re.search(r'jkbms_up\{pack="cabin",site="lake"\} 1\.0', text), text[:2000]
    finally:
        simulator.stop()
    # by default the example file is mounted (and not used), so the mount never dangles
    default = compose_config(tmp_path, "")["services"]["exporter"]
    assert host_path(default, "/etc/jkbms/jkbms.yml").is_file()


def test_env_switch_reads_a_real_device(tmp_path: Path, start_exporter) -> None:
    """JKBMS_ARGS from .env reaches the exporter: a BMS behind a TCP gateway becomes pack house."""
    simulator = Simulator("normal")
    try:
        config = compose_config(tmp_path, "JKBMS_ARGS=--device house=%s\n" % simulator.url)
        args = command(config["services"]["exporter"])
        assert args[0] == "serve" and "--simulate" not in args
        exporter = start_exporter(*args[1:])
        text = exporter.metrics()
        assert 'jkbms_up{pack="house"} 1.0' in text
        assert 'pack="sim"' not in text
    finally:
        simulator.stop()


# ----------------------------------------------------------------------- image


def dockerfile_instructions() -> List[Tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def final_stage() -> List[Tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_dockerfile_slim_multiarch_base_and_non_root_dialout_user() -> None:
    instructions = dockerfile_instructions()
    args = dict(rest.split("=", 1) for keyword, rest in instructions if keyword == "ARG" and "=" in rest)
    bases = [rest.split()[0] for keyword, rest in instructions if keyword == "FROM"]
    for base in bases:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        # the official python image is published for amd64, arm64 and arm/v7
        assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", image), image
    assert not any("--platform" in rest for keyword, rest in instructions if keyword == "FROM")
    stage = final_stage()
    (user,) = [rest for keyword, rest in stage if keyword == "USER"]
    uid, _, gid = user.partition(":")
    assert uid not in ("", "0", "root") and gid == "20"  # 20 = dialout in Debian images
    run = " ".join(rest for keyword, rest in stage if keyword == "RUN")
    assert re.search(r"useradd .*--uid %s .*--gid dialout" % uid, run), run
    # no compiler in the runtime image
    assert "build-essential" not in run


def test_dockerfile_entrypoint_and_healthcheck_work(start_exporter, own_request_log,
                                                   config: dict) -> None:
    """The image's and compose's health checks pass against a real exporter, fail once it
    is gone, and never make the exporter read the BMS."""
    from jkbms_exporter.web.server import DEFAULT_PORT

    stage = dict((keyword, rest) for keyword, rest in final_stage())
    assert stage["EXPOSE"] == str(DEFAULT_PORT)
    assert json.loads(stage["ENTRYPOINT"]) == ["jkbms-exporter"]
    cmd = json.loads(stage["CMD"])
    assert cmd == ["serve", "--simulate"]
    health = stage["HEALTHCHECK"]
    image_probe = json.loads(health.split("CMD", 1)[1])
    compose_probe = config["services"]["exporter"]["healthcheck"]["test"]
    assert compose_probe[0] == "CMD"
    probes = [image_probe, compose_probe[1:]]
    for probe in probes:
        assert probe[0] == "python" and "/-/healthy" in probe[-1] and "/metrics" not in probe[-1]
    exporter = start_exporter(*cmd[1:], "--min-interval", "0.1")
    # the image listens on DEFAULT_PORT; here the exporter has a free port instead
    argvs = [[sys.executable] + [a.replace(str(DEFAULT_PORT), str(exporter.port))
                                 for a in probe[1:]] for probe in probes]
    for _ in range(2):
        for argv in argvs:
            assert subprocess.run(argv, timeout=30).returncode == 0
        time.sleep(0.2)  # past --min-interval
    assert own_request_log() == [], "a health check made the exporter read the BMS"
    exporter.stop()
    for argv in argvs:
        assert subprocess.run(argv, capture_output=True, timeout=30).returncode != 0


def test_image_extras_are_a_build_argument(config: dict) -> None:
    """EXTRAS (Dockerfile) is set from JKBMS_EXTRAS (.env) in compose, default web."""
    args = dict(rest.split("=", 1) for keyword, rest in dockerfile_instructions()
                if keyword == "ARG" and "=" in rest)
    assert args["EXTRAS"] == "web"
    assert config["services"]["exporter"]["build"]["args"] == {"EXTRAS": "web"}
    run = " ".join(rest for keyword, rest in dockerfile_instructions() if keyword == "RUN")
    assert "[${EXTRAS}]" in run
    # in the image, install hints say to rebuild with EXTRAS (tests/test_install.py)
    from jkbms_exporter.install import IMAGE_ENV
    env = " ".join(rest for keyword, rest in final_stage() if keyword == "ENV")
    assert "%s=1" % IMAGE_ENV in env.split()


def _ignored(name: str, patterns: List[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.rstrip("/")
        if fnmatch.fnmatchcase(name, body):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_build_copies_and_nothing_else() -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    top_level = [p for p in patterns if "/" not in p.lstrip("!").rstrip("/")]
    copied = set()
    for keyword, rest in dockerfile_instructions():
        if keyword == "COPY" and not rest.startswith("--from"):
            copied.update(rest.split()[:-1])
    assert copied == {"pyproject.toml", "README.md", "exporter"}, copied
    for name in copied:
        assert not _ignored(name, top_level), "%s is needed by the build" % name
    for name in (".git", ".venv", "tests", "grafana", "prometheus", ".env", "bench"):
        assert _ignored(name, top_level), "%s should stay out of the build context" % name


# ---------------------------------------------------------------- alertmanager


def test_amtool_accepts_alertmanager_config() -> None:
    path = REPO / "alertmanager" / "alertmanager.yml"
    result = subprocess.run([find_tool("amtool"), "check-config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alertmanager_routes_to_a_documented_placeholder_and_inhibits_known_alerts() -> None:
    config = yaml.safe_load((REPO / "alertmanager" / "alertmanager.yml").read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers
    text = (REPO / "alertmanager" / "alertmanager.yml").read_text()
    assert "PLACEHOLDER" in text
    for example in ("email_configs", "telegram_configs", "webhook_configs"):
        assert "# %s:" % example in text
    rules = yaml.safe_load((REPO / "prometheus" / "rules" / "jkbms.rules.yml").read_text())
    alert_names = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    for inhibit in config["inhibit_rules"]:
        for matcher in inhibit.get("source_matchers", []) + inhibit.get("target_matchers", []):
            match = re.fullmatch(r'alertname="(\w+)"', matcher)
            if match:
                assert match.group(1) in alert_names, matcher
