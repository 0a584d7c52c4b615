"""Instructions per scrape, counted by valgrind's callgrind (not part of the test suite).

    .venv/bin/python bench/instructions_bench.py [--packs 1] [--scrapes 20 220]
        [--format prometheus|plain] [--exporter-path DIR]

Wall-clock and CPU timings are noisy on a shared machine; instruction counts are not.
The real exporter (``python -m jkbms_exporter serve``) runs under
``valgrind --tool=callgrind``, reading 16S packs simulated in this process behind
pseudo-terminals (no answer latency, no pacing: only the exporter's work is counted).
This process scrapes ``/metrics`` over HTTP, then stops the exporter with SIGTERM; callgrind
reports every instruction of every thread. Two runs with different scrape counts cancel
start-up and shut-down:

    instructions per scrape = (total(many) - total(few)) / (many - few)

``--format prometheus`` asks the way Prometheus 2.x does (OpenMetrics preferred, gzip);
``plain`` like ``curl`` (text 0.0.4, no compression). ``--exporter-path`` runs another
checkout's package (e.g. an export of main) for a before/after comparison.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "exporter"))

from jkbms_exporter.sim.bms import SimulatedBms  # noqa: E402
from jkbms_exporter.sim.serve import PtySimulator  # noqa: E402

PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
              "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
    "User-Agent": "Prometheus/2.42.0",
    "X-Prometheus-Scrape-Timeout-Seconds": "10",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def counted_run(exporter_path: str, devices: List[str], scrapes: int, headers: dict) -> int:
    """Total instructions of one exporter process serving ``scrapes`` scrapes."""
    port = free_port()
    out = tempfile.NamedTemporaryFile(prefix="callgrind.", delete=False)
    out.close()
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out.name,
               sys.executable, "-m", "jkbms_exporter", "serve", "--min-interval", "0",
               "--web.listen-address", "127.0.0.1:%d" % port, "--log.level", "error"]
    for index, device in enumerate(devices, start=1):
        command += ["--device", "p%d=%s" % (index, device)]
    env = dict(os.environ, PYTHONPATH=exporter_path)
    exporter = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    url = "http://127.0.0.1:%d/metrics" % port
    try:
        deadline = time.monotonic() + 300
        while True:  # python under valgrind starts slowly
            try:
                urllib.request.urlopen(url, timeout=60).read()
                break
            except OSError:
                if time.monotonic() > deadline or exporter.poll() is not None:
                    raise
                time.sleep(0.5)
        for _ in range(scrapes):
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=60) as response:
                body = response.read()
            assert body, "empty scrape"
    finally:
        exporter.send_signal(signal.SIGTERM)
        _, err = exporter.communicate(timeout=300)
        os.unlink(out.name)
    match = re.search(r"Collected : (\d+)", err)
    if not match:
        raise RuntimeError("no callgrind total in:\n" + err[-2000:])
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packs", type=int, default=1, help="16S packs, one port each")
    parser.add_argument("--scrapes", type=int, nargs=2, default=(20, 220), metavar=("FEW", "MANY"))
    parser.add_argument("--format", choices=("prometheus", "plain"), default="prometheus")
    parser.add_argument("--exporter-path",
                        default=str(Path(__file__).resolve().parent.parent / "exporter"))
    args = parser.parse_args()
    headers = PROMETHEUS_HEADERS if args.format == "prometheus" else {}
    sims = [PtySimulator(SimulatedBms(cells=16, seed=i), latency=0.0, baudrate=None).start()
            for i in range(args.packs)]
    try:
        devices = [sim.path for sim in sims]
        few, many = args.scrapes
        total_few = counted_run(args.exporter_path, devices, few, headers)
        total_many = counted_run(args.exporter_path, devices, many, headers)
    finally:
        for sim in sims:
            sim.stop()
    per_scrape = (total_many - total_few) / (many - few)
    print("instructions per scrape (%s, %d x 16S on %d port(s), %s): %.0f"
          " [totals %d after %d scrapes, %d after %d]"
          % (args.exporter_path, args.packs, args.packs, args.format, per_scrape,
             total_few, few, total_many, many))


if __name__ == "__main__":
    main()
