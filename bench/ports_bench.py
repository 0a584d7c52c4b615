"""N packs on N separate ports against one pack (not part of the test suite).

    .venv/bin/python bench/ports_bench.py [--rounds 40] [--packs 1 8 16]
        [--exporter-path DIR]

Every pack is a 16S JK-B BMS on its own pseudo-terminal, served by
``bench/uart_emulator.py`` in its own process (90 ms answer, request and reply paced
like a 115200 Bd UART: one read cannot take less than 117.1 ms). One real exporter
(``jkbms-exporter serve``, a subprocess, this checkout) per pack count, all running at
once; this process scrapes them over HTTP the way Prometheus asks (OpenMetrics, gzip) in
interleaved rounds (the order rotates every round), 200 ms apart. Reported per exporter:
median, p10, p90 scrape time, the ratio of medians to the one-pack exporter's, CPU per
scrape (from /proc/PID/stat), RSS after the last scrape, and the load average.

Targets (issue 13): 8 packs <= 1.03 x one pack, 16 packs <= 1.05 x; RSS <= 30 MB with 16.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from side_by_side_bench import (  # noqa: E402
    ANSWER,
    BAUD,
    CELLS,
    REQUEST_BYTES,
    cpu_seconds,
    http_scrape,
    load,
    pack_up,
    start_emulator,
    start_exporter,
)
from uart_emulator import limit_seconds, reply_size  # noqa: E402

GAP = 0.2


def rss_mb(pid: int) -> float:
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--packs", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--exporter-path", default=str(BENCH.parent / "exporter"))
    args = parser.parse_args()
    counts = args.packs
    limit = limit_seconds(ANSWER, BAUD, REQUEST_BYTES, reply_size(CELLS))
    print("one read's limit: %.1f ms (%d-byte request, %.0f ms answer, %d-byte reply, %d Bd);"
          " Python %s" % (limit * 1000, REQUEST_BYTES, ANSWER * 1000, reply_size(CELLS), BAUD,
                          sys.version.split()[0]))
    print("before: " + load(), flush=True)
    emulator, paths = start_emulator(sum(counts))
    exporters = {}
    try:
        position = 0
        for count in counts:
            exporters[count] = start_exporter(args.exporter_path, paths[position : position + count])
            position += count
        times: Dict[int, List[float]] = {count: [] for count in counts}
        failures = dict.fromkeys(counts, 0)

        def scrape(count: int) -> None:
            took, answer = http_scrape(exporters[count][1])
            if not all(pack_up(answer, "bms%d" % i) for i in range(1, count + 1)):
                failures[count] += 1
            times[count].append(took)

        for _ in range(3):  # warm-up
            for count in counts:
                scrape(count)
                time.sleep(GAP)
        for values in times.values():
            del values[:]
        cpu_before = {count: cpu_seconds(exporters[count][0].pid) for count in counts}
        for round_number in range(args.rounds):
            shift = round_number % len(counts)
            for count in counts[shift:] + counts[:shift]:
                scrape(count)
                time.sleep(GAP)
        cpu = {count: (cpu_seconds(exporters[count][0].pid) - cpu_before[count]) / args.rounds
               for count in counts}
        rss = {count: rss_mb(exporters[count][0].pid) for count in counts}
    finally:
        for process, _ in exporters.values():
            process.terminate()
            process.wait(10)
        emulator.stdin.close()  # type: ignore[union-attr]
        emulator.wait(10)
    print("after:  " + load())
    base = statistics.median(times[counts[0]])
    for count in counts:
        ordered = sorted(times[count])
        median = statistics.median(ordered)
        print("%2d pack(s) on %2d port(s): median %6.1f ms (p10 %6.1f, p90 %6.1f) = %.3f x limit,"
              " %.3f x %d pack(s); CPU %.2f ms per scrape; RSS %.1f MB; failed scrapes %d"
              % (count, count, median * 1000, ordered[len(ordered) // 10] * 1000,
                 ordered[(9 * len(ordered)) // 10] * 1000, median / limit, median / base,
                 counts[0], cpu[count] * 1000, rss[count], failures[count]))
    print("%d interleaved rounds, %.0f ms apart" % (args.rounds, GAP * 1000))


if __name__ == "__main__":
    main()
