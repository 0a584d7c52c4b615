"""Real processes of the many-sites deployment (deploy/fleet/), on loopback.

Each service is started with the command line of its compose file: the ``command:`` list
of deploy/fleet/{edge,central}/docker-compose.yml, ``${VAR}`` expanded, container paths and
host names mapped to temporary files and loopback ports. So the flags the suite runs are
the flags users deploy (the binaries are Debian's VictoriaMetrics 1.79.5, the images pin a
newer release).
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode
from pathlib import Path
from typing import Callable, Dict, List, Optional

import yaml

from conftest import REPO, ExporterProcess, find_tool, free_port

FLEET = REPO / "deploy" / "fleet"
EDGE_COMPOSE = FLEET / "edge" / "docker-compose.yml"
CENTRAL_COMPOSE = FLEET / "central" / "docker-compose.yml"
EDGE_SCRAPE_CONFIG = FLEET / "edge" / "vmagent.yml"
AUTH_EXAMPLE = FLEET / "central" / "auth.example.yml"
RULES_GLOB = str(REPO / "prometheus" / "rules" / "*.yml")
ALERTMANAGER_CONFIG = REPO / "alertmanager" / "alertmanager.yml"

_VARIABLE = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def expand(text: str, env: Dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}``."""
    def one(match: "re.Match[str]") -> str:
        name, kind, rest = match.groups()
        if env.get(name):
            return env[name]
        if kind == "-":
            return rest
        raise AssertionError("compose needs %s: %s" % (name, rest))
    return _VARIABLE.sub(one, text)


def compose_command(compose: Path, service: str, env: Dict[str, str],
                    paths: Dict[str, str]) -> List[str]:
    """The service's ``command:`` with variables expanded and ``paths`` replaced
    (longest first: container paths and host names → local files and ports)."""
    command = yaml.safe_load(compose.read_text())["services"][service]["command"]
    result = []
    for argument in command:
        argument = expand(argument, env)
        for old in sorted(paths, key=len, reverse=True):
            argument = argument.replace(old, paths[old])
        result.append(argument)
    return result


# ------------------------------------------------------------------------------ TLS


class Certificates:
    """A throwaway CA and a server certificate for 127.0.0.1, made with openssl now."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = directory / "ca.crt"
        self.cert = directory / "server.crt"
        self.key = directory / "server.key"
        openssl = find_tool("openssl")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        for command in (
            [openssl, "req", "-x509", *ec, "-keyout", str(directory / "ca.key"),
             "-out", str(self.ca), "-days", "1", "-subj", "/CN=jkbms fleet test CA"],
            [openssl, "req", *ec, "-keyout", str(self.key), "-out", str(directory / "server.csr"),
             "-subj", "/CN=127.0.0.1"],
            [openssl, "x509", "-req", "-in", str(directory / "server.csr"), "-CA", str(self.ca),
             "-CAkey", str(directory / "ca.key"), "-CAcreateserial", "-out", str(self.cert),
             "-days", "1", "-extfile", str(directory / "san.ext")],
        ):
            result = subprocess.run(command, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


# ------------------------------------------------------------------------ processes


class Service:
    """A binary on a loopback port with its log in a file; ``stop`` / ``start`` again."""

    name = "service"
    health_path = "/health"

    def __init__(self, workdir: Path, argv: List[str], port: int,
                 env: Optional[Dict[str, str]] = None, scheme: str = "http",
                 context: Optional[ssl.SSLContext] = None,
                 authorization: Optional[str] = None) -> None:
        self.workdir = workdir
        self.argv = argv
        self.port = port
        self.url = "%s://127.0.0.1:%d" % (scheme, port)
        self.env = env
        self.context = context
        self.authorization = authorization
        self.log_path = workdir / ("%s-%d.log" % (self.name, port))
        self.process: Optional[subprocess.Popen] = None
        self.start()

    def start(self) -> None:
        environment = dict(os.environ, **(self.env or {}))
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                            env=environment)
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise AssertionError("%s exited:\n%s" % (self.name, self.log()))
            try:
                self.get(self.health_path, timeout=2)
                return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("%s not healthy after 30 s:\n%s" % (self.name, self.log()))
            time.sleep(0.1)

    def get(self, path: str, timeout: float = 10, **params: str) -> str:
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        request = urllib.request.Request(url)
        if self.authorization:
            request.add_header("Authorization", self.authorization)
        with urllib.request.urlopen(request, timeout=timeout, context=self.context) as response:
            return response.read().decode("utf-8")

    def log(self) -> str:
        return self.log_path.read_text()[-4000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class VictoriaMetrics(Service):
    name = "victoria-metrics"

    def __init__(self, workdir: Path, certificates: Optional[Certificates] = None,
                 user: Optional[str] = None, password: str = "") -> None:
        """With ``certificates`` and ``user``: the store's own TLS and basic auth flags
        (``-tls``, ``-httpAuth.*``) instead of vmauth in front."""
        port = free_port()
        data = workdir / ("vm-data-%d" % port)
        argv = [find_tool("victoria-metrics"), *compose_command(
            CENTRAL_COMPOSE, "victoriametrics", {},
            {"/storage": str(data), ":8428": "127.0.0.1:%d" % port}),
            # the tests look at data seconds old: no 30 s query delay, no rollup cache
            "-search.latencyOffset=0s", "-search.disableCache", "-loggerLevel=WARN"]
        if certificates and user:
            argv += ["-tls", "-tlsCertFile=%s" % certificates.cert,
                     "-tlsKeyFile=%s" % certificates.key,
                     "-httpAuth.username=%s" % user, "-httpAuth.password=%s" % password]
            super().__init__(workdir, argv, port, scheme="https", context=certificates.context(),
                             authorization=basic_auth(user, password))
        else:
            super().__init__(workdir, argv, port)
        self.write_url = self.url + "/api/v1/write"

    def api(self, path: str, **params: str) -> dict:
        try:
            body = self.get("/api/v1/" + path, **params)
        except urllib.error.HTTPError as error:  # a query that does not run: 422 + JSON
            body = error.read().decode("utf-8")
        return json.loads(body)

    def query(self, expr: str, **params: str) -> List[dict]:
        document = self.api("query", query=expr, **params)
        assert document["status"] == "success", (expr, document)
        return document["data"]["result"]

    def export(self, match: str, start: float, end: float) -> List[dict]:
        """Raw samples (no lookback, no dedup by the query engine): one JSON line per series."""
        body = self.get("/api/v1/export", **{"match[]": match, "start": "%.3f" % start,
                                             "end": "%.3f" % end})
        return [json.loads(line) for line in body.splitlines() if line.strip()]


class VmAuth(Service):
    name = "vmauth"

    def __init__(self, workdir: Path, store: VictoriaMetrics, certificates: Certificates,
                 passwords: Dict[str, str]) -> None:
        """auth.example.yml with these site users and passwords, in front of ``store``."""
        port = free_port()
        example = yaml.safe_load(AUTH_EXAMPLE.read_text())
        template = example["users"][0]
        users = []
        for site, password in passwords.items():
            user = json.loads(json.dumps(template).replace(
                "http://victoriametrics:8428", store.url))
            user.update(username=site, password=password)
            users.append(user)
        config = workdir / "auth.yml"
        config.write_text(json.dumps({"users": users}, indent=2))
        argv = [find_tool("vmauth"), *compose_command(CENTRAL_COMPOSE, "vmauth", {}, {
            "/etc/vmauth/auth.yml": str(config),
            "/etc/vmauth/certs/server.crt": str(certificates.cert),
            "/etc/vmauth/certs/server.key": str(certificates.key),
            ":8427": "127.0.0.1:%d" % port}), "-loggerLevel=WARN"]
        super().__init__(workdir, argv, port, scheme="https", context=certificates.context())
        self.write_url = self.url + "/api/v1/write"


class VmAgent(Service):
    """One site's vmagent: the shipped vmagent.yml (scrape interval and target changed for
    the test) and the shipped compose flags."""

    name = "vmagent"

    def __init__(self, workdir: Path, site: str, targets: List[str], write_url: str,
                 password: str, ca_file: Path, interval: str = "1s") -> None:
        port = free_port()
        directory = workdir / ("site-" + site)
        (directory / "secrets").mkdir(parents=True, exist_ok=True)
        self.password_file = directory / "secrets" / "remote-write-password"
        self.set_password(password)
        config = yaml.safe_load(EDGE_SCRAPE_CONFIG.read_text())
        config["global"].update(scrape_interval=interval, scrape_timeout=interval)
        (job,) = config["scrape_configs"]
        job["static_configs"][0]["targets"] = targets
        scrape_config = directory / "vmagent.yml"
        scrape_config.write_text(json.dumps(config, indent=2))
        self.buffer = directory / "buffer"
        env = {"JKBMS_SITE": site, "CENTRAL_WRITE_URL": write_url,
               "CENTRAL_CA_FILE": str(ca_file)}
        argv = [find_tool("vmagent"), *compose_command(EDGE_COMPOSE, "vmagent", env, {
            "/etc/vmagent/vmagent.yml": str(scrape_config),
            "/etc/vmagent/secrets": str(directory / "secrets"),
            "/vmagent-buffer": str(self.buffer),
            ":8429": "127.0.0.1:%d" % port}), "-loggerLevel=WARN"]
        self.site = site
        super().__init__(workdir, argv, port, env=env)

    def set_password(self, password: str) -> None:
        """vmagent re-reads the password file every second."""
        self.password_file.write_text(password)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric of vmagent's own /metrics page over the series matching labels."""
        return metric_sum(self.get("/metrics"), name, **labels)


class VmAlert(Service):
    name = "vmalert"

    def __init__(self, workdir: Path, store: VictoriaMetrics, alertmanager_url: str) -> None:
        port = free_port()
        argv = [find_tool("vmalert"), *compose_command(CENTRAL_COMPOSE, "vmalert", {}, {
            "/etc/vmalert/rules/*.yml": RULES_GLOB,
            "http://victoriametrics:8428": store.url,
            "http://alertmanager:9093": alertmanager_url,
            ":8880": "127.0.0.1:%d" % port}),
            # seconds instead of 15 s between evaluations; the rules' `for` stay as shipped
            "-evaluationInterval=1s", "-loggerLevel=WARN"]
        super().__init__(workdir, argv, port)

    def api_rules(self) -> List[dict]:
        """Rule groups with each rule's last evaluation error."""
        return json.loads(self.get("/api/v1/rules"))["data"]["groups"]

    def api_alerts(self) -> List[dict]:
        """Pending and firing alerts."""
        return json.loads(self.get("/api/v1/alerts"))["data"]["alerts"]


class Alertmanager(Service):
    """Debian's prometheus-alertmanager (package of the same name, which tests/run.sh
    installs for amtool)."""

    name = "alertmanager"
    health_path = "/-/ready"

    def __init__(self, workdir: Path) -> None:
        port = free_port()
        argv = [find_tool("prometheus-alertmanager"), "--config.file=%s" % ALERTMANAGER_CONFIG,
                "--storage.path=%s" % (workdir / "alertmanager"),
                "--web.listen-address=127.0.0.1:%d" % port, "--cluster.listen-address=",
                "--log.level=warn"]
        super().__init__(workdir, argv, port)

    def alerts(self) -> List[dict]:
        return json.loads(self.get("/api/v2/alerts"))

    def groups(self) -> List[dict]:
        return json.loads(self.get("/api/v2/alerts/groups"))


class Site:
    """An exporter with simulated packs and the site's vmagent."""

    def __init__(self, workdir: Path, name: str, exporter_args: List[str], write_url: str,
                 password: str, ca_file: Path) -> None:
        self.name = name
        self.exporter = ExporterProcess(exporter_args + ["--log.level", "warn"])
        try:
            self.vmagent = VmAgent(workdir, name, ["127.0.0.1:%d" % self.exporter.port],
                                   write_url, password, ca_file)
        except BaseException:
            self.exporter.stop()
            raise

    def stop(self) -> None:
        self.vmagent.stop()
        self.exporter.stop()


def metric_sum(exposition: str, name: str, **labels: str) -> float:
    """Sum of one metric's samples in a /metrics text, over the series matching labels."""
    total = 0.0
    for line in exposition.splitlines():
        match = re.match(r"(\w+)(\{[^}]*\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(match.group(3))
    return total


def basic_auth(user: str, password: str) -> str:
    return "Basic " + b64encode(("%s:%s" % (user, password)).encode()).decode()


def poll(what: str, probe: Callable[[], object], timeout: float, interval: float = 0.5,
         log: Callable[[], str] = lambda: "") -> object:
    """``probe()`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("%s: not after %.0f s\n%s" % (what, timeout, log()))
        time.sleep(interval)
