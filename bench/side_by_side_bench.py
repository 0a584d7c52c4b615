"""Side by side with mppsolar on one emulated 16S JK-B BMS (not part of the test suite).

    .venv/bin/python bench/side_by_side_bench.py [--rounds 40] [--mppsolar-venv DIR]
        [--exporter-path DIR]

The BMS is ``bench/uart_emulator.py`` in its own process: it answers 90 ms after a
request and paces request and reply like a 115200 Bd UART, so one read cannot take less
than the *limit* = request wire time + 90 ms + reply wire time (117.1 ms for 16 cells).
mppsolar (PyPI) is installed by this script into a throwaway virtual environment (removed
at the end; ``--mppsolar-venv DIR`` keeps and reuses one): it is no dependency of the
project. Four readers, in interleaved rounds (the order alternates every round), with
200 ms between reads so no one waits out another's bus gap:

1. our HTTP scrape: ``jkbms-exporter serve`` (a subprocess, this checkout) scraped over
   HTTP the way Prometheus asks (OpenMetrics, gzip); time from connect to the last byte
   of the answer; CPU from the exporter's /proc/PID/stat over all scrapes;
2. mppsolar's JKSERIAL read, long-running: one process calling
   ``device.run_command("getBalancerData")`` for every round, as its daemon mode does;
   time and CPU measured inside that process around the call;
3. our one-shot ``read`` (a new process, as a user types it): spawn to exit;
4. mppsolar's CLI (``mpp-solar -P JKSERIAL ... -c getBalancerData``): spawn to exit.

1 and 2 share the first emulated port (mppsolar opens it non-exclusively between our
scrapes); 3 and 4 share the second. Reported: median, p10, p90, median ÷ limit, the
ratio to mppsolar's, CPU per read, and the load average before and after. A failed read
(no answer, or an answer mppsolar could not parse) is counted, and left out of the times.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from uart_emulator import limit_seconds, reply_size  # noqa: E402

ANSWER = 0.09
BAUD = 115200
CELLS = 16
REQUEST_BYTES = 21
GAP = 0.2
PROMETHEUS_REQUEST = (
    "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Prometheus/2.42.0\r\n"
    "Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n"
    "Accept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n"
).encode()

#: Runs in mppsolar's venv: one device, one read per line on stdin, JSON per read on stdout.
MPPSOLAR_DRIVER = r"""
import json, sys, time, logging
logging.disable(logging.CRITICAL)
from mppsolar.helpers import get_device_class
device = get_device_class("jkbms")(name="bench", port=sys.argv[1], protocol="JKSERIAL",
                                   baud=115200, porttype="jkserial")
for line in sys.stdin:
    wall, cpu = time.perf_counter(), time.process_time()
    result = device.run_command("getBalancerData")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    ok = isinstance(result, dict) and "Voltage_Cell16" in result and "ERROR" not in result
    print(json.dumps({"wall": wall, "cpu": cpu, "ok": ok}), flush=True)
"""


def load() -> str:
    return "load average %s" % " ".join("%.2f" % x for x in os.getloadavg())


def start_emulator(ports: int) -> Tuple[subprocess.Popen, List[str]]:
    emulator = subprocess.Popen(
        [sys.executable, str(BENCH / "uart_emulator.py"), "--ports", str(ports),
         "--answer", str(ANSWER), "--baud", str(BAUD), "--cells", str(CELLS)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    paths = []
    while True:
        line = emulator.stdout.readline().strip()  # type: ignore[union-attr]
        if not line:
            break
        paths.append(line)
    return emulator, paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_scrape(port: int) -> Tuple[float, bytes]:
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(PROMETHEUS_REQUEST)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return time.perf_counter() - started, b"".join(chunks)


def pack_up(answer: bytes, pack: str = "bms1") -> bool:
    """An HTTP answer of 200 whose (gzipped) metrics say the pack is up."""
    head, _, body = answer.partition(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        return False
    if b"content-encoding: gzip" in head.lower():
        body = gzip.decompress(body)
    return ('jkbms_up{pack="%s"} 1.0' % pack).encode() in body


def cpu_seconds(pid: int) -> float:
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_exporter(exporter_path: str, devices: List[str]) -> Tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "jkbms_exporter", "serve", "--min-interval", "0",
               "--web.listen-address", "127.0.0.1:%d" % port, "--log.level", "error"]
    for index, device in enumerate(devices, start=1):
        command += ["--device", "bms%d=%s" % (index, device)]
    exporter = subprocess.Popen(command, env=dict(os.environ, PYTHONPATH=exporter_path))
    deadline = time.monotonic() + 30
    while True:
        try:
            _, body = http_scrape(port)
            if b" 200 " in body.split(b"\r\n", 1)[0]:
                return exporter, port
        except OSError:
            pass
        if time.monotonic() > deadline or exporter.poll() is not None:
            raise RuntimeError("exporter did not start")
        time.sleep(0.2)


def timed_child(command: List[str], env: Optional[Dict[str, str]] = None
                ) -> Tuple[float, float, str]:
    """Wall time spawn → exit, the child's CPU time, and why it failed ("" for exit 0)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env, timeout=60)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    error = "" if result.returncode == 0 else (
        result.stderr.decode(errors="replace").strip() or "exit status %d" % result.returncode)
    return wall, cpu, error


def mppsolar_venv(keep: Optional[str]) -> Tuple[Path, Optional[str]]:
    """(venv directory, directory to remove at the end or None)."""
    if keep and (Path(keep) / "bin" / "mpp-solar").exists():
        return Path(keep), None
    directory = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="mppsolar-venv-"))
    subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True)
    subprocess.run([str(directory / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                    "mppsolar"], check=True)
    return directory, None if keep else str(directory)


def summary(name: str, times: List[float], limit: float, cpu: Optional[float],
            reference: Optional[float] = None) -> str:
    ordered = sorted(times)
    median = statistics.median(ordered)
    text = "%-44s median %6.1f ms (p10 %6.1f, p90 %6.1f) = %.3f x limit" % (
        name, median * 1000, ordered[len(ordered) // 10] * 1000,
        ordered[(9 * len(ordered)) // 10] * 1000, median / limit)
    if reference:
        text += ", %.3f x mppsolar's" % (median / reference)
    if cpu is not None:
        text += "; CPU %.2f ms per read" % (cpu * 1000)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--mppsolar-venv", metavar="DIR",
                        help="keep mppsolar's virtual environment here (reused if present)")
    parser.add_argument("--exporter-path", default=str(BENCH.parent / "exporter"),
                        help="the package to measure (default: this checkout)")
    parser.add_argument("--no-one-shot", dest="one_shot", action="store_false",
                        help="skip the one-shot commands (3 and 4)")
    args = parser.parse_args()

    venv, remove = mppsolar_venv(args.mppsolar_venv)
    version = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import importlib.metadata as m; print(m.version('mppsolar'))"],
                             capture_output=True, text=True).stdout.strip()
    limit = limit_seconds(ANSWER, BAUD, REQUEST_BYTES, reply_size(CELLS))
    print("limit: %d-byte request + %.0f ms answer + %d-byte reply at %d Bd = %.1f ms; "
          "mppsolar %s; Python %s" % (REQUEST_BYTES, ANSWER * 1000, reply_size(CELLS), BAUD,
                                      limit * 1000, version, sys.version.split()[0]))
    print("before: " + load(), flush=True)
    emulator, (shared, one_shot) = start_emulator(2)
    exporter, http_port = start_exporter(args.exporter_path, [shared])
    driver = subprocess.Popen([str(venv / "bin" / "python"), "-c", MPPSOLAR_DRIVER, shared],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    env = dict(os.environ, PYTHONPATH=args.exporter_path)
    ours_scrape: List[float] = []
    mpp_read: List[float] = []
    mpp_read_cpu: List[float] = []
    ours_oneshot: List[Tuple[float, float]] = []
    mpp_cli: List[Tuple[float, float]] = []
    failures: Dict[str, int] = {}

    def scrape() -> None:
        took, answer = http_scrape(http_port)
        if not pack_up(answer):
            failures["scrape"] = failures.get("scrape", 0) + 1
        ours_scrape.append(took)

    def mpp() -> None:
        driver.stdin.write("read\n")  # type: ignore[union-attr]
        driver.stdin.flush()  # type: ignore[union-attr]
        result = json.loads(driver.stdout.readline())  # type: ignore[union-attr]
        if not result["ok"]:  # not a read: timed separately from the reads
            failures["mppsolar"] = failures.get("mppsolar", 0) + 1
            return
        mpp_read.append(result["wall"])
        mpp_read_cpu.append(result["cpu"])

    def read_once() -> None:
        wall, cpu, error = timed_child(
            [sys.executable, "-m", "jkbms_exporter", "read", one_shot], env)
        failures["read"] = failures.get("read", 0) + bool(error)
        ours_oneshot.append((wall, cpu))

    def mpp_once() -> None:
        wall, cpu, error = timed_child([str(venv / "bin" / "mpp-solar"), "-p", one_shot, "-P",
                                        "JKSERIAL", "--porttype", "jkserial", "-b", str(BAUD),
                                        "-c", "getBalancerData"])
        failures["mpp-solar cli"] = failures.get("mpp-solar cli", 0) + bool(error)
        mpp_cli.append((wall, cpu))

    try:
        for _ in range(3):  # warm-up: ports opened, caches filled
            scrape()
            time.sleep(GAP)
            mpp()
            time.sleep(GAP)
        del ours_scrape[:], mpp_read[:], mpp_read_cpu[:]
        cpu_before = cpu_seconds(exporter.pid)
        for round_number in range(args.rounds):
            steps: List[Callable[[], None]] = [scrape, mpp]
            if args.one_shot:
                steps += [read_once, mpp_once]
            if round_number % 2:
                steps.reverse()
            for step in steps:
                step()
                time.sleep(GAP)
        scrape_cpu = (cpu_seconds(exporter.pid) - cpu_before) / args.rounds
    finally:
        exporter.terminate()
        exporter.wait(10)
        driver.stdin.close()  # type: ignore[union-attr]
        driver.wait(10)
        emulator.stdin.close()  # type: ignore[union-attr]
        emulator.wait(10)
        if remove:
            shutil.rmtree(remove, ignore_errors=True)
    print("after:  " + load())
    mpp_median = statistics.median(mpp_read)
    print(summary("1. our HTTP scrape (OpenMetrics, gzip)", ours_scrape, limit, scrape_cpu,
                  mpp_median))
    print(summary("2. mppsolar JKSERIAL read, long-running", mpp_read, limit,
                  statistics.median(mpp_read_cpu)))
    if args.one_shot:
        cli_median = statistics.median(t for t, _ in mpp_cli)
        print(summary("3. our one-shot `read` (new process)", [t for t, _ in ours_oneshot],
                      limit, statistics.median(c for _, c in ours_oneshot), cli_median))
        print(summary("4. mppsolar CLI (new process)", [t for t, _ in mpp_cli], limit,
                      statistics.median(c for _, c in mpp_cli)))
        answer_and_wire = limit
        print("   one-shot target: `read` <= 1.8 x (answer + wire) = %.1f ms"
              % (1.8 * answer_and_wire * 1000))
    print("%d rounds; failed reads (left out of the times): %s" % (args.rounds, failures))
    if failures.get("mppsolar"):
        print("   mppsolar's reads fail when the reply's first bytes come later than its fixed"
              " 100 ms sleep after the request: it then tests a None buffer and gives up")


if __name__ == "__main__":
    main()
