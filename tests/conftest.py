"""Shared fixtures: the protocol vectors, free ports, a running exporter process, promtool."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parent.parent
#: ../shared beside the checkout (CI puts it there); JKBMS_SHARED overrides.
SHARED = Path(os.environ.get("JKBMS_SHARED", REPO.parent / "shared"))
VECTORS = SHARED / "protocol" / "vectors"


def load_vectors(name: str) -> dict:
    path = VECTORS / name
    if not path.is_file():
        pytest.fail("protocol vectors not found at %s (set JKBMS_SHARED)" % path)
    with path.open() as handle:
        return json.load(handle)


@pytest.fixture(scope="session")
def vectors_4e57() -> dict:
    return load_vectors("4e57.json")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_tool(name: str) -> str:
    """A required external tool; tests/run.sh installs it, so its absence is a failure."""
    path = shutil.which(name)
    if path is None:
        pytest.fail("%s is not installed: run the suite with `bash tests/run.sh`" % name)
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return find_tool("promtool")


def http_get(url: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode("utf-8")


class ExporterProcess:
    """``python -m jkbms_exporter serve …`` on a free port, stopped at the end of the test."""

    def __init__(self, args: List[str], port: Optional[int] = None) -> None:
        self.port = port or free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jkbms_exporter", "serve",
             "--web.listen-address", "127.0.0.1:%d" % self.port, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 15
        while True:
            if self.process.poll() is not None:
                raise AssertionError("exporter exited: %s" % self.process.stderr.read())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError("exporter did not start listening")
                time.sleep(0.05)

    def metrics(self) -> str:
        return http_get(self.url + "/metrics")

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.stderr.read() if self.process.stderr else ""


@pytest.fixture
def start_exporter() -> Iterator:
    started: List[ExporterProcess] = []

    def start(*args: str, port: Optional[int] = None) -> ExporterProcess:
        process = ExporterProcess(list(args), port)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


# ----------------------------------------------------------------------------- shared fixtures

@pytest.fixture
def servers() -> Iterator[List]:
    """Simulators a test starts (anything with ``stop()``); stopped when the test ends."""
    started: List = []
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def cleanup() -> Iterator[List]:
    """Simulators, packs, pollers and exporters a test starts; each is stopped (or closed)
    when the test ends, the last one first."""
    items: List = []
    yield items
    for item in reversed(items):
        (item.stop if hasattr(item, "stop") else item.close)()


# ----------------------------------------------------------------------------- read-only guarantee
# Every simulator (in this process or in an exporter subprocess, which inherits the
# environment) appends each request frame it receives to this file; at the end of the
# session every one of them must be a read request.
_REQUEST_LOG = Path(os.environ.setdefault(
    "JKBMS_SIMULATOR_REQUEST_LOG",
    str(Path(os.environ.get("TMPDIR", "/tmp")) / ("jkbms-requests-%d.log" % os.getpid())),
))
if _REQUEST_LOG.exists():
    _REQUEST_LOG.unlink()


@pytest.fixture
def own_request_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """Simulators started during the test (exporter subprocesses included) log the request
    frames they receive to a file of this test; the fixture's value returns them so far.
    At the end they join the session's log, where all must be read requests."""
    path = tmp_path / "requests.log"
    monkeypatch.setenv("JKBMS_SIMULATOR_REQUEST_LOG", str(path))

    def lines() -> List[str]:
        return path.read_text().split() if path.exists() else []

    yield lines
    if path.exists():
        with _REQUEST_LOG.open("a") as handle:
            handle.write(path.read_text())


def non_read_requests(lines: List[str]) -> List[str]:
    """The logged frames that are not read requests of a protocol we speak."""
    from jkbms_exporter.protocols import jk_pb, jk_serial
    from jkbms_exporter.errors import FrameError

    bad = []
    for line in lines:
        frame = bytes.fromhex(line)
        if jk_pb.is_read_only_request(frame):
            continue
        try:
            request = jk_serial.parse_request(frame)
        except FrameError:
            bad.append(line)
            continue
        if request.command not in jk_serial.READ_COMMANDS:
            bad.append(line)
    return bad


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    lines = _REQUEST_LOG.read_text().split() if _REQUEST_LOG.exists() else []
    bad = non_read_requests(lines)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            "read-only guarantee: %d request frames reached simulators, %d were not reads"
            % (len(lines), len(bad))
        )
    if bad:
        if reporter is not None:
            for line in bad[:10]:
                reporter.write_line("  not a read request: " + line, red=True)
        session.exitstatus = 1
    if _REQUEST_LOG.exists():
        _REQUEST_LOG.unlink()


@pytest.fixture
def simulator() -> Iterator:
    """``simulator(*args)`` starts ``jkbms-exporter simulate ARGS`` on a pseudo-terminal and
    returns its path; every one started is stopped at the end of the test."""
    started: List[subprocess.Popen] = []

    def start(*args: str) -> str:
        sim = subprocess.Popen([sys.executable, "-m", "jkbms_exporter", "simulate", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        started.append(sim)
        return sim.stdout.readline().strip()

    yield start
    for sim in started:
        sim.terminate()
        sim.wait(10)
