"""The alternative edge: Prometheus in agent mode with deploy/fleet/prometheus-agent/prometheus.yml
(target, URL and secret paths pointed at loopback and temporary files) writing through
vmauth (TLS, basic auth) into VictoriaMetrics: the series arrive with the site label and
the site-prefixed instance, like vmagent's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import ExporterProcess, find_tool, free_port
from fleet_stack import FLEET, Certificates, Service, VictoriaMetrics, VmAuth, poll

pytestmark = pytest.mark.slow

AGENT_CONFIG = FLEET / "prometheus-agent" / "prometheus.yml"


class PrometheusAgent(Service):
    name = "prometheus-agent"
    health_path = "/-/ready"

    def __init__(self, workdir: Path, config: Path) -> None:
        port = free_port()
        argv = [find_tool("prometheus"), "--enable-feature=agent", "--config.file=%s" % config,
                "--storage.agent.path=%s" % (workdir / "agent-wal"),
                "--web.listen-address=127.0.0.1:%d" % port, "--log.level=warn"]
        super().__init__(workdir, argv, port)


def test_prometheus_agent_config_delivers_with_site_and_instance(tmp_path: Path) -> None:
    certificates = Certificates(tmp_path / "certs")
    config = yaml.safe_load(AGENT_CONFIG.read_text())
    site = config["global"]["external_labels"]["site"]
    (tmp_path / "password").write_text("agent-secret")
    started = []
    try:
        store = VictoriaMetrics(tmp_path)
        started.append(store)
        vmauth = VmAuth(tmp_path, store, certificates, {site: "agent-secret"})
        started.append(vmauth)
        exporter = ExporterProcess(["--simulate", "--log.level", "warn"])
        started.append(exporter)
        config["global"]["scrape_interval"] = "1s"
        config["global"]["scrape_timeout"] = "1s"
        config["scrape_configs"][0]["static_configs"][0]["targets"] = [
            "127.0.0.1:%d" % exporter.port]
        (remote,) = config["remote_write"]
        remote["url"] = vmauth.write_url
        remote["basic_auth"]["password_file"] = str(tmp_path / "password")
        remote["tls_config"]["ca_file"] = str(certificates.ca)
        path = tmp_path / "prometheus.yml"
        path.write_text(json.dumps(config, indent=2))
        agent = PrometheusAgent(tmp_path, path)
        started.append(agent)
        found = poll("the agent's samples in the store",
                     lambda: store.query('jkbms_up{site="%s"}' % site), 30, log=agent.log)
        assert [s["metric"]["instance"] for s in found] == ["%s/127.0.0.1:%d" % (site, exporter.port)]
        assert [s["metric"]["pack"] for s in found] == ["sim"]
    finally:
        for thing in reversed(started):
            thing.stop()
