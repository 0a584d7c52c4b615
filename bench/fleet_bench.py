"""Fleet benchmark: many sites writing into one central VictoriaMetrics (not part of the suite).

    .venv/bin/python bench/fleet_bench.py [--sites 50] [--packs-per-site 4]
                                          [--interval 15] [--duration 600]

What is real and what is not:

* real: the central side as deploy/fleet/central runs it (Debian's VictoriaMetrics,
  vmauth with TLS and one user per site, vmalert evaluating prometheus/rules/*.yml every
  15 s, Alertmanager), and one real vmagent per site with the shipped edge flags and
  vmagent.yml (TLS, basic auth, disk buffer, site label, instance prefix);
* generated: what the vmagents scrape. Two real exporters (``serve --simulate``, a 16S
  JK-B pack; ``serve --simulate --simulate.protocol jk-pb``, a 16S JK-PB pack) are
  scraped once; their exposition is then served by this process for every site, 2 JK-B
  and 2 JK-PB packs per site (``--packs-per-site``), each pack's gauges on a slow random
  walk at the BMS's resolution (cell voltages 1 mV steps within ±20 mV, current,
  temperatures, SOC) and its counters growing, so the store compresses data that moves.
* disk per pack-day: a short live run has not merged its parts yet, so a day of
  ``--backfill-packs`` packs (same generator) is imported into a fresh store, flushed and
  merged, and its size measured.

Measured over ``--duration`` seconds after one minute of warm-up: series in the store,
samples/s ingested, CPU (share of one core) and resident memory of every central process,
the store's disk use per pack-day, and the query time of the dashboard's fleet overview
row and of the whole dashboard for one site. Then the same figures scaled on paper.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import List, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "stack"), str(ROOT / "exporter")]

from conftest import ExporterProcess  # noqa: E402
from fleet_stack import (Alertmanager, Certificates, VictoriaMetrics, VmAgent,  # noqa: E402
                         VmAlert, VmAuth, metric_sum)
from test_dashboard import data_panels, iter_panels, load_dashboard  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
DASHBOARD: dict = {}
SAMPLE = re.compile(r"^(\w+)(\{[^}]*\})? (\S+)$")


# ------------------------------------------------------------------- the exposition


def capture(args: List[str]) -> List[Tuple[str, str, float]]:
    """(name, labels, value) of a real exporter's /metrics, pack label left as {PACK}."""
    exporter = ExporterProcess(args + ["--log.level", "warn"])
    try:
        time.sleep(2)
        text = exporter.metrics()
    finally:
        exporter.stop()
    lines = []
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and 'pack="' in (match.group(2) or ""):
            labels = re.sub(r'pack="[^"]*"', 'pack="{PACK}"', match.group(2))
            lines.append((match.group(1), labels, float(match.group(3))))
    return lines


#: (resolution the BMS reports, largest distance from the captured value) of the gauges
#: that move; a value takes a step of one resolution up or down on about a third of scrapes.
MOVES = (("cell_voltage", 0.001, 0.02), ("pack_voltage_volts", 0.01, 0.3),
         ("current_amperes", 0.01, 5.0), ("_celsius", 0.1, 2.0), ("state_of_charge", 0.01, 0.1))


def walk(name: str, base: float, value: float) -> float:
    """One scrape's step of a slowly moving gauge (a random walk held near its base)."""
    for part, step, span in MOVES:
        if part in name:
            if random.random() < 0.33:
                value += random.choice((-step, step))
                value = min(max(value, base - span), base + span)
            return round(value, 3)
    return value


class Pack:
    def __init__(self, name: str, template: List[Tuple[str, str, float]]) -> None:
        self.name = name
        self.template = [(n, labels.replace("{PACK}", name), v) for n, labels, v in template]
        self.values = [v for _, _, v in template]

    def render(self) -> str:
        out = []
        for i, (name, labels, base) in enumerate(self.template):
            value = self.values[i] = step(name, base, self.values[i])
            out.append("%s%s %s" % (name, labels, repr(value)))
        return "\n".join(out) + "\n"


def step(name: str, base: float, value: float) -> float:
    if name.endswith("_total") and base > 0:  # energy, charge, runtime: growing counters
        return value + round(abs(random.gauss(base * 1e-6, base * 1e-7)), 1)
    return walk(name, base, value)


def serve_site(packs: List[Pack]) -> Tuple[ThreadingHTTPServer, int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = "".join(pack.render() for pack in packs).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


# -------------------------------------------------------------------- measurements


def cpu_seconds(pid: int) -> float:
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def vm_metric(store: VictoriaMetrics, name: str) -> float:
    return metric_sum(store.get("/metrics"), name)


def fill(expr: str, site: str) -> str:
    """Variables as Grafana fills them: ``site`` as given, the others at All."""
    values = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
    for variable in DASHBOARD["templating"]["list"]:
        values[variable["name"]] = variable.get("allValue") or ".*"
    values["site"] = site
    for name in sorted(values, key=len, reverse=True):
        expr = re.sub(r"\$\{%s(?::\w+)?\}|\$%s\b" % (name, name), values[name], expr)
    return expr


def fleet_targets() -> Tuple[str, List[dict]]:
    """The fleet overview row's queries, or the whole dashboard if it has no such row."""
    dashboard = DASHBOARD
    for panel, _ in iter_panels(dashboard):
        if panel.get("type") == "row" and "fleet" in panel.get("title", "").lower():
            row = panel["title"]
            inner = panel.get("panels") or [p for p, r in iter_panels(dashboard)
                                            if r is panel and p.get("type") != "row"]
            return row, [t for p in inner for t in p.get("targets", [])]
    return "", []


def time_queries(store: VictoriaMetrics, targets: List[dict], site: str, window: float,
                 repeat: int = 5) -> Tuple[float, float, int]:
    """Median and worst wall time (ms) of running all targets once, and series returned."""
    runs, series = [], 0
    for _ in range(repeat):
        now = time.time()
        began = time.perf_counter()
        series = 0
        for target in targets:
            expr = fill(target["expr"], site)
            if target.get("instant"):
                result = store.api("query", query=expr, time="%.3f" % now)
            else:
                result = store.api("query_range", query=expr, start="%.3f" % (now - window),
                                   end="%.3f" % now, step="15")
            series += len(result.get("data", {}).get("result", []))
        runs.append((time.perf_counter() - began) * 1000)
    return statistics.median(runs), max(runs), series


def backfill(workdir: Path, templates: List[List[Tuple[str, str, float]]], packs: int,
             days: float, interval: int) -> Tuple[int, int]:
    """A fresh store fed ``days`` of ``packs`` packs (the random walk above, one sample per
    ``interval``) through the import API, flushed and merged: (bytes on disk, samples)."""
    (workdir / "backfill").mkdir()
    store = VictoriaMetrics(workdir / "backfill")
    try:
        data = workdir / "backfill" / ("vm-data-%d" % store.port)
        empty = du(data)
        labels = '{job="jkbms",site="backfill",instance="backfill/127.0.0.1:10025",'
        generated = [Pack("pack%d" % n, [(name, l.replace("{", labels, 1), v)
                                         for name, l, v in templates[n % len(templates)]])
                     for n in range(packs)]
        end = int(time.time()) - 3600
        steps = int(days * 86400 / interval)
        samples = 0
        for first in range(0, steps, 240):
            lines = []
            for i in range(first, min(first + 240, steps)):
                stamp = (end - (steps - i) * interval) * 1000
                for pack in generated:
                    lines += ["%s %d" % (line, stamp) for line in pack.render().splitlines()]
            samples += len(lines)
            request = urllib.request.Request(store.url + "/api/v1/import/prometheus",
                                             data=("\n".join(lines) + "\n").encode())
            urllib.request.urlopen(request, timeout=120).read()
        store.get("/internal/force_flush")
        for partition in sorted({time.strftime("%Y_%m", time.gmtime(end - d * 86400))
                                 for d in range(int(days) + 2)}):
            store.get("/internal/force_merge", partition_prefix=partition)
        size, stable = du(data), 0
        while stable < 3:  # merges run in the background: wait until the size settles
            time.sleep(5)
            now = du(data)
            stable = stable + 1 if now == size else 0
            size = now
        return size - empty, samples
    finally:
        store.stop()


# ---------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, default=50)
    parser.add_argument("--packs-per-site", type=int, default=4)
    parser.add_argument("--interval", type=int, default=15, help="scrape interval, seconds")
    parser.add_argument("--duration", type=float, default=600, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=60)
    parser.add_argument("--backfill-packs", type=int, default=4,
                        help="packs of the disk measurement (a day imported at once)")
    parser.add_argument("--backfill-days", type=float, default=1.0)
    parser.add_argument("--dashboard", type=Path, help="dashboard JSON whose queries are timed"
                        " (default: grafana/dashboards/jkbms.json)")
    options = parser.parse_args()
    global DASHBOARD
    DASHBOARD = json.loads(options.dashboard.read_text()) if options.dashboard else load_dashboard()

    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    print("workdir %s; load average before: %s" % (workdir, Path("/proc/loadavg").read_text().split()[:3]))
    jk_b = capture(["--simulate"])
    jk_pb = capture(["--simulate", "--simulate.protocol", "jk-pb", "--simulate.packs", "1"])
    print("series per pack from the real exporters: JK-B 16S %d, JK-PB 16S %d" % (len(jk_b), len(jk_pb)))

    sites = ["site-%02d" % i for i in range(options.sites)]
    passwords = {site: "bench-%s-%d" % (site, random.randrange(10 ** 9)) for site in sites}
    certificates = Certificates(workdir / "certs")
    started: List[object] = []
    try:
        store = VictoriaMetrics(workdir)
        started.append(store)
        vmauth = VmAuth(workdir, store, certificates, passwords)
        started.append(vmauth)
        alertmanager = Alertmanager(workdir)
        started.append(alertmanager)
        vmalert = VmAlert(workdir, store, alertmanager.url)
        # as deployed: every 15 s (VmAlert sets 1 s for the tests; the last flag wins)
        vmalert.stop()
        vmalert.argv.append("-evaluationInterval=%ds" % options.interval)
        vmalert.start()
        started.append(vmalert)
        agents = []
        for site in sites:
            packs = [Pack("pack%d" % n, jk_b if n % 2 == 0 else jk_pb)
                     for n in range(options.packs_per_site)]
            _, port = serve_site(packs)
            agent = VmAgent(workdir, site, ["127.0.0.1:%d" % port], vmauth.write_url,
                            passwords[site], certificates.ca, interval="%ds" % options.interval)
            started.append(agent)
            agents.append(agent)
        packs_total = options.sites * options.packs_per_site
        print("%d sites x %d packs = %d packs, %d vmagents, scrape interval %d s"
              % (options.sites, options.packs_per_site, packs_total, len(agents), options.interval))

        time.sleep(options.warmup)
        central = {"victoria-metrics": store, "vmauth": vmauth, "vmalert": vmalert}
        cpu0 = {name: cpu_seconds(s.process.pid) for name, s in central.items()}
        edge_cpu0 = sum(cpu_seconds(a.process.pid) for a in agents)
        rows0 = vm_metric(store, "vm_rows_inserted_total")
        t0 = time.time()
        peak = {name: 0.0 for name in central}
        while time.time() - t0 < options.duration:
            time.sleep(10)
            for name, s in central.items():
                peak[name] = max(peak[name], rss_mb(s.process.pid))
        elapsed = time.time() - t0
        rows = vm_metric(store, "vm_rows_inserted_total") - rows0
        cpu = {name: (cpu_seconds(s.process.pid) - cpu0[name]) / elapsed
               for name, s in central.items()}
        edge_cpu = (sum(cpu_seconds(a.process.pid) for a in agents) - edge_cpu0) / elapsed
        edge_rss = statistics.mean(rss_mb(a.process.pid) for a in agents)
        # what a site's disk buffer holds per sample: the blocks vmagent sends (and would
        # keep on disk while the central store is unreachable) are the same bytes
        block_bytes = sum(a.metric("vmagent_remotewrite_block_size_bytes_sum") for a in agents)
        block_rows = sum(a.metric("vmagent_remotewrite_block_size_rows_sum") for a in agents)

        series = json.loads(store.get("/api/v1/series/count"))["data"][0]
        pack_series = store.query('count({__name__=~"jkbms_.*|pack:.*", pack!=""})')
        per_pack = float(pack_series[0]["value"][1]) / packs_total if pack_series else float("nan")
        store.get("/internal/force_flush")
        time.sleep(2)
        total_rows = vm_metric(store, "vm_rows_inserted_total")
        disk = du(workdir / [p.name for p in workdir.iterdir() if p.name.startswith("vm-data")][0])
        bytes_per_sample = disk / total_rows
        samples_per_pack_day = per_pack * 86400 / options.interval
        pack_day = bytes_per_sample * samples_per_pack_day

        row, targets = fleet_targets()
        fleet_times = time_queries(store, targets, ".*", 3600) if targets else None
        all_targets = [t for p in data_panels(DASHBOARD) for t in p.get("targets", [])]
        site_times = time_queries(store, all_targets, "site-07", 3600)

        print("\n== measured (%.0f s after %.0f s warm-up), load average now: %s"
              % (elapsed, options.warmup, " ".join(Path("/proc/loadavg").read_text().split()[:3])))
        print("series in the store: %d (%.0f per pack, recording rules included)" % (series, per_pack))
        print("samples/s ingested: %.0f (vmagents + vmalert's recording rules)" % (rows / elapsed))
        for name in central:
            print("%-17s CPU %5.1f %% of a core, RSS now %6.1f MB, peak %6.1f MB"
                  % (name, 100 * cpu[name], rss_mb(central[name].process.pid), peak[name]))
        print("edge: %d vmagents together CPU %.1f %% of a core, RSS %.1f MB each on average"
              % (len(agents), 100 * edge_cpu, edge_rss))
        block_rows = block_rows or float("nan")  # a run too short to send anything
        site_day = block_bytes / block_rows * per_pack * options.packs_per_site * 86400 / options.interval
        print("edge buffer: %.1f bytes/sample sent; a site of %d packs fills %.0f MB a day of"
              " outage, 1 GB lasts %.0f days" % (block_bytes / block_rows, options.packs_per_site,
                                                  site_day / 1e6, 1e9 / site_day))
        print("disk, live run: %.2f MB for %d samples = %.2f bytes/sample (parts not merged yet)"
              % (disk / 1e6, total_rows, bytes_per_sample))
        print("disk per pack-day, live run: %.2f MB (%.0f samples per pack per day)"
              % (pack_day / 1e6, samples_per_pack_day))
        began = time.perf_counter()
        size, imported = backfill(workdir, [jk_b, jk_pb], options.backfill_packs,
                                  options.backfill_days, options.interval)
        pack_day = size / (options.backfill_packs * options.backfill_days)
        print("disk per pack-day, %g day(s) of %d packs imported, flushed and merged: %.3f MB"
              " (%.2f bytes/sample, %d samples, %.0f s)"
              % (options.backfill_days, options.backfill_packs, pack_day / 1e6, size / imported,
                 imported, time.perf_counter() - began))
        if fleet_times:
            print("fleet row %r, %d queries, all sites, last hour: median %.0f ms, worst %.0f ms, %d series"
                  % (row, len(targets), *fleet_times))
        else:
            print("the dashboard has no fleet overview row (yet): not timed")
        print("whole dashboard, one site, %d queries, last hour: median %.0f ms, worst %.0f ms"
              % (len(all_targets), *site_times[:2]))

        print("\n== on paper (linear scaling of the figures above)")
        cores_per_kss = (cpu["victoria-metrics"] + cpu["vmauth"]) / (rows / elapsed / 1000)
        for packs in (packs_total, 2500, 10000):
            rate = per_pack * packs / options.interval
            print("%6d packs: %8.0f active series, %7.0f samples/s, store+vmauth %.2f cores,"
                  " disk %.1f GB/year"
                  % (packs, per_pack * packs, rate, cores_per_kss * rate / 1000,
                     pack_day * packs * 365 / 1e9))
    finally:
        for thing in reversed(started):
            thing.stop()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
