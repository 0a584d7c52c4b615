"""The one-shot ``read``, spawn to exit, against an emulated 16S JK-B BMS (not part of the tests).

    .venv/bin/python bench/read_bench.py [--runs 40] [--exporter-path DIR] [--json]
        [--callgrind] [--no-bytecode-cache]

The BMS is ``bench/uart_emulator.py`` in its own process: it answers 90 ms after a
request and paces request and reply like a 115200 Bd UART, so one read cannot take less
than the *limit* = request wire time + 90 ms + reply wire time (117.1 ms for 16 cells);
issue 13's target for a one-shot ``read`` is 1.8 x that limit. Each run is a new
``python -m jkbms_exporter read PORT`` process, as a user types it (``--json`` adds that
flag), 200 ms apart; reported: median, p10, p90 of spawn-to-exit, median ÷ limit, the
child's CPU time, and the load average before and after (timings are only comparable at
a similar load).

The package runs from its compiled bytecode, as after ``pip install`` (which compiles it):
the child's ``.pyc`` files go to a temporary ``PYTHONPYCACHEPREFIX``, filled by a warm-up
read. ``--no-bytecode-cache`` runs with ``PYTHONDONTWRITEBYTECODE=1`` instead (as this
project's development shells and Docker image set it for the checkout), so every run also
compiles the source of every module it imports: the cost of importing more than needed,
doubled.

``--callgrind`` instead counts the instructions of one whole ``read`` process (every
thread, start-up and imports included) with ``valgrind --tool=callgrind``, and of the same
process stopped the moment its request is written (pyserial's ``Serial.write`` patched to
exit: the work before the BMS can start answering, which no answer time hides). Run with
``PYTHONHASHSEED=0``: repeatable on a busy machine, so the figures to compare before and
after a change. ``--exporter-path`` runs
another checkout's package (e.g. an export of main) for a before/after comparison.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from side_by_side_bench import (  # noqa: E402
    ANSWER, BAUD, CELLS, GAP, REQUEST_BYTES, load, start_emulator, timed_child,
)
from uart_emulator import limit_seconds, reply_size  # noqa: E402

TARGET_FACTOR = 1.8
#: ``python -c`` this, then ``read PORT``: the read stops as its first request is written.
UNTIL_REQUEST = (
    "import os, sys\n"
    "import serial.serialposix as posix\n"
    "write = posix.Serial.write\n"
    "def write_and_exit(self, data):\n"
    "    write(self, data)\n"
    "    os._exit(0)\n"
    "posix.Serial.write = write_and_exit\n"
    "from jkbms_exporter.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def timed_read(command: List[str], env: dict) -> Tuple[float, float]:
    """Wall time spawn → exit and the child's CPU time; raises if the read failed."""
    wall, cpu, error = timed_child(command, env)
    if error:
        raise RuntimeError("read failed: %s" % error)
    return wall, cpu


def instructions(command: List[str], env: dict) -> int:
    """Every instruction of one whole process (all threads), counted by callgrind."""
    out = tempfile.NamedTemporaryFile(prefix="callgrind.", delete=False)
    out.close()
    try:
        result = subprocess.run(["valgrind", "--tool=callgrind",
                                 "--callgrind-out-file=" + out.name] + command,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env=env, timeout=600)
    finally:
        os.unlink(out.name)
    match = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or not match:
        raise RuntimeError("no callgrind total (exit %d):\n%s"
                           % (result.returncode, result.stderr[-2000:]))
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--exporter-path", default=str(BENCH.parent / "exporter"),
                        help="the package to measure (default: this checkout)")
    parser.add_argument("--json", action="store_true", help="time `read --json`")
    parser.add_argument("--callgrind", action="store_true",
                        help="count instructions instead (one read, and one until its request)")
    parser.add_argument("--no-bytecode-cache", dest="bytecode_cache", action="store_false",
                        help="compile every imported module's source in every run")
    args = parser.parse_args()

    env = dict(os.environ, PYTHONPATH=args.exporter_path)
    cache = tempfile.TemporaryDirectory(prefix="read-bench-pyc-")
    if args.bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = cache.name
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    limit = limit_seconds(ANSWER, BAUD, REQUEST_BYTES, reply_size(CELLS))
    emulator, (port,) = start_emulator(1)
    command = [sys.executable, "-m", "jkbms_exporter", "read", port] + \
        (["--json"] if args.json else [])
    print("%s (%s); limit %.1f ms, target <= %.1f ms; %s"
          % (" ".join(["read"] + command[4:]),
             "bytecode cached" if args.bytecode_cache else "no bytecode cache: compiles",
             limit * 1000, TARGET_FACTOR * limit * 1000, load()), flush=True)
    try:
        timed_read(command, env)  # warm-up: the .pyc files are written, the caches filled
        if args.callgrind:
            env["PYTHONHASHSEED"] = "0"
            whole = instructions(command, env)
            until = instructions([sys.executable, "-c", UNTIL_REQUEST] + command[3:], env)
            print("instructions of one whole `read` process: %d; until its request is "
                  "written: %d" % (whole, until))
            return
        runs = []
        for _ in range(args.runs):
            runs.append(timed_read(command, env))
            time.sleep(GAP)
    finally:
        emulator.stdin.close()  # type: ignore[union-attr]
        emulator.wait(10)
        cache.cleanup()
    walls = sorted(wall for wall, _ in runs)
    median = statistics.median(walls)
    print("%d runs: median %.1f ms (p10 %.1f, p90 %.1f) = %.3f x limit (target <= %.1f); "
          "CPU %.1f ms per read; after: %s"
          % (len(walls), median * 1000, walls[len(walls) // 10] * 1000,
             walls[(9 * len(walls)) // 10] * 1000, median / limit, TARGET_FACTOR,
             statistics.median(cpu for _, cpu in runs) * 1000, load()))


if __name__ == "__main__":
    main()
