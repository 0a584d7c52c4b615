"""Bus benchmarks for JK-PB and multi-port set-ups (not part of the test suite).

    .venv/bin/python bench/bus_bench.py [--scrapes 20]

Every link is a real pseudo-terminal with replies paced at 115200 Bd.

1. 15 JK-PB packs on one RS-485 bus: scrape time against its limit, the sum over packs of
   the required bus gap (120 ms) + request wire time + the pack's answer time + reply wire
   time (300-byte frame + 8-byte ACK). Steady state (cell-info triggers only).
2. One absent pack among them: extra scrape time (target: at most its reply timeout,
   0.5 s, once per scrape) and requests sent to it per scrape (target: 1).
3. 4 JK-B packs (4E57, 90 ms answer time) on 4 separate ports against one pack alone.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import List, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "exporter"))

from jkbms_exporter.protocols import jk02, jk_pb, jk_serial
from jkbms_exporter.collector import Poller  # noqa: E402
from jkbms_exporter.config import PackConfig, build_packs  # noqa: E402
from jkbms_exporter.links.pb_bus import BUS_GAP, DEFAULT_REPLY_TIMEOUT  # noqa: E402
from jkbms_exporter.sim.bms import SimulatedBms  # noqa: E402
from jkbms_exporter.sim.pb_bus import PbBusBms, jk_pb_device  # noqa: E402
from jkbms_exporter.sim.serve import PtySimulator  # noqa: E402

BAUD = 115200
PB_ANSWER = 0.05
JKB_ANSWER = 0.09


def wire(nbytes: int) -> float:
    return nbytes * 10 / BAUD


def scrape_times(poller: Poller, scrapes: int, warmup: int) -> Tuple[List[float], object]:
    snapshot = None
    for _ in range(warmup):
        poller.poll()
    times = []
    for _ in range(scrapes):
        time.sleep(0.05)
        started = time.perf_counter()
        snapshot = poller.poll()
        times.append(time.perf_counter() - started)
    return times, snapshot


def pb_bus(present: Sequence[int], configured: Sequence[int], scrapes: int
           ) -> Tuple[List[float], object, PbBusBms]:
    bms = PbBusBms({a: SimulatedBms(cells=16, seed=a, device=jk_pb_device(a)) for a in present})
    sim = PtySimulator(bms, latency=PB_ANSWER, baudrate=BAUD).start()
    packs = build_packs([PackConfig("p%d" % a, sim.path, protocol="jk-pb", address=a)
                         for a in configured])
    poller = Poller(packs, min_interval=0, scrape_timeout=30)
    try:
        # warm-up: master probe, device-info and settings frames of every pack
        times, snapshot = scrape_times(poller, scrapes, warmup=3)
    finally:
        poller.close()
        sim.stop()
    return times, snapshot, bms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scrapes", type=int, default=20)
    args = parser.parse_args()

    all15 = list(range(1, 16))
    request = len(jk_pb.trigger_request(1, jk02.FRAME_CELL_INFO))
    per_pack = BUS_GAP + wire(request) + PB_ANSWER + wire(jk02.FRAME_SIZE + jk_pb.ACK_SIZE)
    limit = 15 * per_pack
    times, snapshot, _ = pb_bus(all15, all15, args.scrapes)
    assert all(r.up for r in snapshot.results), [r.error for r in snapshot.results if not r.up]
    p50 = statistics.median(times)
    print("1. 15 JK-PB packs on one bus, %d scrapes: p50 %.3f s, min %.3f s, max %.3f s"
          % (len(times), p50, min(times), max(times)))
    print("   limit = 15 x (gap %.0f ms + request %.1f ms + answer %.0f ms + reply %.1f ms) "
          "= %.3f s; ratio p50/limit = %.3f"
          % (BUS_GAP * 1000, wire(request) * 1000, PB_ANSWER * 1000,
             wire(jk02.FRAME_SIZE + jk_pb.ACK_SIZE) * 1000, limit, p50 / limit))

    present14 = list(range(1, 15))
    base, _, _ = pb_bus(present14, present14, args.scrapes)
    with_absent, snapshot, bms = pb_bus(present14, all15, args.scrapes)
    absent = [r for r in snapshot.results if r.name == "p15"][0]
    # the simulator keeps the last 100 requests: compare with a present pack, which gets
    # exactly one cell-info trigger per scrape in the steady state
    to_absent = sum(1 for r in bms.requests if r.address == 15)
    to_present = sum(1 for r in bms.requests if r.address == 1)
    extra = statistics.median(with_absent) - statistics.median(base)
    print("2. absent pack at address 15 among 14: scrape p50 %.3f s vs %.3f s without it: "
          "+%.3f s (reply timeout %.1f s + one bus gap); reason %s; requests to it per "
          "request to a present pack: %d/%d"
          % (statistics.median(with_absent), statistics.median(base), extra,
             DEFAULT_REPLY_TIMEOUT, absent.reason, to_absent, to_present))

    one = PtySimulator(SimulatedBms(cells=16, seed=1), latency=JKB_ANSWER, baudrate=BAUD).start()
    four = [PtySimulator(SimulatedBms(cells=16, seed=i), latency=JKB_ANSWER, baudrate=BAUD).start()
            for i in range(4)]
    try:
        poller = Poller(build_packs([PackConfig("one", one.path)]), min_interval=0)
        single, _ = scrape_times(poller, args.scrapes, warmup=1)
        poller.close()
        poller = Poller(build_packs([PackConfig("p%d" % i, s.path) for i, s in enumerate(four)]),
                        min_interval=0)
        parallel, snapshot = scrape_times(poller, args.scrapes, warmup=1)
        poller.close()
    finally:
        for sim in [one] + four:
            sim.stop()
    assert all(r.up for r in snapshot.results)
    frame = len(jk_serial.encode_reading(SimulatedBms(cells=16, seed=1).reading()))
    print("3. 4 JK-B packs on 4 ports: scrape p50 %.3f s vs one pack %.3f s: ratio %.2f "
          "(one pack's limit: answer 90 ms + wire %.1f ms)"
          % (statistics.median(parallel), statistics.median(single),
             statistics.median(parallel) / statistics.median(single), wire(frame) * 1000))


if __name__ == "__main__":
    main()
