"""Soak benchmark (not part of the test suite): the exporter under a random fault schedule.

    .venv/bin/python bench/soak_bench.py [--minutes 30] [--seed 1]
    .venv/bin/python bench/soak_bench.py --packs 16 --scrapes 100000 --interval 0 \
        --latency 0 --no-pacing --no-faults --min-interval 0.1   # memory, many scrapes, fast

Runs the real exporter as a subprocess (`jkbms-exporter serve`) reading 4 simulated packs,
each behind its own TCP serial gateway in this process, with BMS-like answer latency (90 ms)
and 115200 Bd pacing. Every pack follows its own random schedule: healthy for 5–40 s, then a
random fault for 2–15 s (every simulator link fault, or the gateway resetting and coming
back). This process scrapes /metrics every 100 ms (or back to back when a scrape takes
longer) and reports:

- success ratio on healthy intervals: scrapes of a pack whose link had been healthy for at
  least the recovery allowance (the longest reopen backoff, 5 s, plus one scrape), up == 1;
- p50 / p99 / max scrape time;
- the exporter's RSS and open file descriptors at start and at end, and its RSS along
  the way (after 1 000 scrapes, at 10 %, 50 % and 100 % of the run): flat means no growth
  from the 10 % mark on.

``--packs``, ``--interval`` (0: back to back), ``--latency`` (the BMS's answer time),
``--no-pacing``, ``--no-faults``, ``--min-interval`` (the exporter's) and ``--scrapes`` (stop
after that many instead of after ``--minutes``) make a fast memory soak of many packs. A
port allows one read per 100 ms (the vendor's gap), so 100 000 scrapes that all read take
~3 h; with ``--min-interval 0.1`` the scrapes in between reuse the last read and 100 000
scrapes (~10 reads per second per port among them) fit in a fraction of that.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "exporter"))

from jkbms_exporter.sim.bms import SimulatedBms  # noqa: E402
from jkbms_exporter.sim.serve import FAULTS, TcpSimulator  # noqa: E402

PACKS = 4
RECOVERY_ALLOWANCE = 5.0 + 0.5  # max reopen backoff + a scrape
LINK_FAULTS = [f for f in FAULTS if f != "none"] + ["reset"]


class ScheduledPack:
    def __init__(self, name: str, rng: random.Random, latency: float = 0.09,
                 pacing: bool = True) -> None:
        self.name = name
        self.rng = rng
        self.sim = TcpSimulator(SimulatedBms(cells=16, seed=rng.randrange(10**6)),
                                latency=latency,
                                baudrate=115200 if pacing else None).start()
        self.fault = "none"
        self.healthy_since = time.monotonic()
        self.faults_started: Dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _set(self, fault: str) -> None:
        if fault == "reset":
            self.sim.reset()
        elif self.fault == "reset":
            self.sim.restore()
        if fault != "reset":
            self.sim.fault = fault
        if fault == "none":
            self.healthy_since = time.monotonic()
        else:
            self.faults_started[fault] = self.faults_started.get(fault, 0) + 1
        self.fault = fault

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._stop.wait(self.rng.uniform(5, 40)):
                return
            self._set(self.rng.choice(LINK_FAULTS))
            if self._stop.wait(self.rng.uniform(2, 15)):
                return
            self._set("none")

    def healthy_for(self) -> float:
        return time.monotonic() - self.healthy_since if self.fault == "none" else -1.0

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self.fault == "reset":
            self.sim.restore()
        self.sim.stop()


def proc_status(pid: int) -> str:
    rss = next(line.split()[1] for line in Path("/proc/%d/status" % pid).read_text().splitlines()
               if line.startswith("VmRSS:"))
    fds = len(os.listdir("/proc/%d/fd" % pid))
    threads = len(os.listdir("/proc/%d/task" % pid))
    return "RSS %.1f MB, open fds %d, threads %d" % (int(rss) / 1024, fds, threads)


def parse_up(text: str) -> Dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line.startswith("jkbms_up{"):
            name = line.split('pack="', 1)[1].split('"', 1)[0]
            values[name] = float(line.rsplit(" ", 1)[1])
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--port", type=int, default=19025)
    parser.add_argument("--packs", type=int, default=PACKS)
    parser.add_argument("--scrapes", type=int, default=0,
                        help="stop after this many scrapes (default: run --minutes)")
    parser.add_argument("--interval", type=float, default=0.1,
                        help="seconds from one scrape's start to the next (default: 0.1)")
    parser.add_argument("--latency", type=float, default=0.09,
                        help="the simulated BMS's answer time (default: 0.09)")
    parser.add_argument("--no-pacing", dest="pacing", action="store_false",
                        help="send replies at once instead of at 115200 Bd")
    parser.add_argument("--no-faults", dest="faults", action="store_false",
                        help="no fault schedule: every pack stays healthy")
    parser.add_argument("--min-interval", type=float, default=0.0,
                        help="the exporter's --min-interval (default 0: every scrape reads; a "
                        "port allows one read per 100 ms, so 0.1 lets scrapes in between "
                        "reuse the last read)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    packs = [ScheduledPack("pack%d" % i, random.Random(rng.random()), args.latency, args.pacing)
             for i in range(1, args.packs + 1)]
    command = [sys.executable, "-m", "jkbms_exporter", "serve",
               "--min-interval", str(args.min_interval),
               "--web.listen-address", "127.0.0.1:%d" % args.port, "--log.level", "error"]
    for pack in packs:
        command += ["--device", "%s=%s" % (pack.name, pack.sim.url)]
    exporter = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    url = "http://127.0.0.1:%d/metrics" % args.port
    deadline = time.monotonic() + 10
    while True:
        try:
            urllib.request.urlopen(url, timeout=10).read()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    start_status = proc_status(exporter.pid)
    if args.faults:
        for pack in packs:
            pack.start()
    marks = sorted({1000, args.scrapes // 10, args.scrapes // 2} - {0}) if args.scrapes else []
    rss_along: List[str] = []

    durations: List[float] = []
    healthy_ok = healthy_total = 0
    failed_scrapes = 0
    end = time.monotonic() + args.minutes * 60
    next_report = time.monotonic() + 60
    started = time.monotonic()
    while (len(durations) < args.scrapes) if args.scrapes else (time.monotonic() < end):
        began = time.monotonic()
        healthy = {p.name: p.healthy_for() >= RECOVERY_ALLOWANCE for p in packs}
        try:
            text = urllib.request.urlopen(url, timeout=15).read().decode()
        except OSError:
            failed_scrapes += 1
            continue
        took = time.monotonic() - began
        durations.append(took)
        if len(durations) in marks:
            rss_along.append("after %d scrapes: %s" % (len(durations), proc_status(exporter.pid)))
        ups = parse_up(text)
        for pack in packs:  # healthy before and after the scrape
            if healthy[pack.name] and pack.healthy_for() >= RECOVERY_ALLOWANCE:
                healthy_total += 1
                healthy_ok += ups.get(pack.name) == 1.0
        if time.monotonic() > next_report:
            next_report += 60
            print("  %4.0f s: %d scrapes, healthy success %d/%d, %s" % (
                time.monotonic() - started, len(durations), healthy_ok,
                healthy_total, proc_status(exporter.pid)), flush=True)
        time.sleep(max(0.0, args.interval - took))

    end_status = proc_status(exporter.pid)
    exporter.terminate()
    exporter.wait(10)
    faults: Dict[str, int] = {}
    for pack in packs:
        pack.stop()
        for fault, count in pack.faults_started.items():
            faults[fault] = faults.get(fault, 0) + count
    ordered = sorted(durations)
    print("soak: %.1f min, %d packs, %d scrapes (%d failed HTTP requests); BMS answer %g s,"
          " %s, faults %s" % ((time.monotonic() - started) / 60, args.packs, len(durations),
                              failed_scrapes, args.latency,
                              "paced at 115200 Bd" if args.pacing else "not paced",
                              "on" if args.faults else "off"))
    print("faults injected: " + ", ".join("%s %d" % kv for kv in sorted(faults.items())))
    print("success ratio on healthy intervals: %d/%d = %.4f"
          % (healthy_ok, healthy_total, healthy_ok / max(1, healthy_total)))
    print("scrape time: p50 %.1f ms, p99 %.1f ms, max %.1f ms" % (
        statistics.median(ordered) * 1000, ordered[int(0.99 * (len(ordered) - 1))] * 1000,
        ordered[-1] * 1000))
    print("exporter at start: " + start_status)
    for line in rss_along:
        print("exporter " + line)
    print("exporter at end:   " + end_status)


if __name__ == "__main__":
    main()
