"""Scrape benchmarks for the core exporter (not part of the test suite).

    .venv/bin/python bench/scrape_bench.py [--scrapes 10000] [--latency-scrapes 40]

1. Wall time of an HTTP scrape of one 16S pack whose BMS answers after 90 ms, with the
   reply paced at 115200 Bd (291 bytes ≈ 25 ms on the wire), through a real pseudo-terminal.
   Target: at most 90 ms + wire time + 15 ms.
2. CPU per scrape, decode + exposition, for a 16S frame (process time, no I/O). Target < 2 ms.
3. Resident memory and open file descriptors over N real scrapes (HTTP → collector →
   pyserial → pty → simulator, no answer latency). Target < 40 MB and flat.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "exporter"))

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from jkbms_exporter.protocols import jk_serial
from jkbms_exporter.collector import JkbmsCollector, Poller  # noqa: E402
from jkbms_exporter.web.server import ExporterApp, make_http_server, serve_in_thread  # noqa: E402
from jkbms_exporter.pack import JkSerialProtocol, Pack  # noqa: E402
from jkbms_exporter.sim.bms import SimulatedBms  # noqa: E402
from jkbms_exporter.sim.serve import PtySimulator  # noqa: E402
from jkbms_exporter.links.serial import SerialTransport  # noqa: E402

BAUD = 115200


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def serve(pack: Pack) -> Tuple[object, Poller, str]:
    poller = Poller([pack], min_interval=0)
    registry = CollectorRegistry()
    registry.register(JkbmsCollector(poller))
    server = make_http_server(ExporterApp(registry, poller), "127.0.0.1:0")
    serve_in_thread(server)
    return server, poller, "http://127.0.0.1:%d/metrics" % server.server_address[1]


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bench_latency(scrapes: int) -> None:
    sim = PtySimulator(SimulatedBms(cells=16, seed=1), latency=0.09, baudrate=BAUD).start()
    pack = Pack("house", SerialTransport(sim.path), JkSerialProtocol(), 2.0)
    server, poller, url = serve(pack)
    frame_bytes = len(jk_serial.encode_reading(SimulatedBms(cells=16, seed=1).reading()))
    wire = frame_bytes * 10 / BAUD
    get(url)  # open the port
    times = []
    for _ in range(scrapes):
        time.sleep(0.15)  # Prometheus scrapes every few seconds: the 100 ms bus gap is over
        started = time.perf_counter()
        body = get(url)
        times.append(time.perf_counter() - started)
        assert b'jkbms_up{pack="house"} 1.0' in body
    limit = 0.090 + wire + 0.015
    print("1. scrape wall time, 16S, BMS latency 90 ms, %d-byte reply paced at %d Bd "
          "(wire %.1f ms), %d scrapes:" % (frame_bytes, BAUD, wire * 1000, scrapes))
    print("   min %.1f ms, p50 %.1f ms, p95 %.1f ms, max %.1f ms; target <= %.1f ms -> %s"
          % (min(times) * 1000, statistics.median(times) * 1000, percentile(times, 0.95) * 1000,
             max(times) * 1000, limit * 1000,
             "met (p50)" if statistics.median(times) <= limit else "NOT met"))
    server.shutdown()
    poller.close()
    sim.stop()


class _FixedFrameTransport:
    """Returns one recorded frame: isolates decode + exposition CPU from any I/O."""

    def __init__(self, frame: bytes) -> None:
        import threading

        self.url = "bench://fixed"
        self.lock = threading.Lock()
        self.frame = frame

    def exchange(self, request: bytes, framer: object, timeout: float) -> bytes:
        return self.frame

    def close(self) -> None:
        pass


def bench_cpu(iterations: int) -> None:
    frame = jk_serial.encode_reading(SimulatedBms(cells=16, seed=2).reading())
    pack = Pack("house", _FixedFrameTransport(frame), JkSerialProtocol(), 1.0)  # type: ignore[arg-type]
    poller = Poller([pack], min_interval=0)
    registry = CollectorRegistry()
    registry.register(JkbmsCollector(poller))
    for _ in range(200):
        generate_latest(registry)
    started = time.process_time()
    for _ in range(iterations):
        generate_latest(registry)
    per_scrape = (time.process_time() - started) / iterations
    started = time.process_time()
    for _ in range(iterations):
        jk_serial.decode_reply(frame)
    per_decode = (time.process_time() - started) / iterations
    print("2. CPU per scrape (decode + collector + text exposition), 16S, %d scrapes: %.3f ms "
          "(decode alone %.3f ms); target < 2 ms -> %s"
          % (iterations, per_scrape * 1000, per_decode * 1000,
             "met" if per_scrape < 0.002 else "NOT met"))
    poller.close()


def bench_memory(scrapes: int) -> None:
    sim = PtySimulator(SimulatedBms(cells=16, seed=3), latency=0.0, baudrate=None).start()
    pack = Pack("house", SerialTransport(sim.path, min_gap=0.0), JkSerialProtocol(), 2.0)
    server, poller, url = serve(pack)
    get(url)
    marks = []
    started = time.monotonic()
    for i in range(1, scrapes + 1):
        body = get(url)
        if i in (1, 100, scrapes // 10, scrapes // 2, scrapes):
            marks.append((i, rss_mb(), open_fds()))
    elapsed = time.monotonic() - started
    assert b'jkbms_up{pack="house"} 1.0' in body
    print("3. memory over %d real scrapes (HTTP + pyserial + pty, %.1f s, %.1f ms each):"
          % (scrapes, elapsed, elapsed / scrapes * 1000))
    for i, rss, fds in marks:
        print("   after %6d scrapes: RSS %.1f MB, open fds %d" % (i, rss, fds))
    growth = marks[-1][1] - marks[1][1]
    print("   RSS growth from scrape 100 to %d: %+.1f MB; peak %.1f MB; target < 40 MB and flat"
          " -> %s" % (scrapes, growth, max(m[1] for m in marks),
                      "met" if max(m[1] for m in marks) < 40 and growth < 2 else "NOT met"))
    server.shutdown()
    poller.close()
    sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-scrapes", type=int, default=40)
    parser.add_argument("--cpu-iterations", type=int, default=2000)
    parser.add_argument("--scrapes", type=int, default=10000)
    args = parser.parse_args()
    print("Python %s, %s" % (sys.version.split()[0], os.uname().machine))
    bench_latency(args.latency_scrapes)
    bench_cpu(args.cpu_iterations)
    bench_memory(args.scrapes)


if __name__ == "__main__":
    main()
