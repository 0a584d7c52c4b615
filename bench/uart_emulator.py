"""A JK-B BMS (4E57) that answers like one on a real UART, for timing benchmarks.

    python bench/uart_emulator.py --ports 16 [--answer 0.09] [--baud 115200] [--cells 16]

Runs in its own process (so neither reader under test shares its interpreter) and serves
``--ports`` pseudo-terminals from one thread; it prints their paths, one per line, then
an empty line, and runs until stdin closes. On every whole 4E57 read request (read-all
0x06, or read-register 0x03 as mppsolar sends it) it waits, in real time:

1. the request's own wire time (the bytes reach a pty at once; a UART needs 10 bit times
   per byte, 8N1), then
2. ``--answer`` seconds, the BMS's think time, then
3. sends the read-all reply in 32-byte pieces, each written the moment its last byte
   would have left the UART, so the last byte arrives exactly at
   request wire + answer + reply wire: the *physical limit* of one read.

Deadlines are absolute (no drift from the sleeps). The replies are 8 recorded frames per
port, in turn, from the project's simulated BMS (values change from read to read).
"""

from __future__ import annotations

import argparse
import heapq
import os
import select
import sys
import time
import tty
from pathlib import Path
from typing import Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "exporter"))

from jkbms_exporter.protocols import jk_serial  # noqa: E402
from jkbms_exporter.sim.bms import SimulatedBms  # noqa: E402

PIECE = 32
FRAMES_PER_PORT = 8


def byte_time(baud: int) -> float:
    return 10.0 / baud


def limit_seconds(answer: float, baud: int, request_bytes: int, reply_bytes: int) -> float:
    """Request wire time + answer time + reply wire time."""
    return (request_bytes + reply_bytes) * byte_time(baud) + answer


def reply_size(cells: int) -> int:
    return len(jk_serial.encode_reading(SimulatedBms(cells=cells, seed=0).reading()))


def serve(ports: int, answer: float, baud: int, cells: int) -> None:
    bt = byte_time(baud)
    masters: List[int] = []
    paths: List[str] = []
    for _ in range(ports):
        master, slave = os.openpty()
        tty.setraw(slave)
        masters.append(master)
        paths.append(os.ttyname(slave))
        # the slave stays open here too, so a reader closing it never hangs the pty up
    frames: Dict[int, List[bytes]] = {}
    for index, master in enumerate(masters):
        bms = SimulatedBms(cells=cells, seed=index + 1)
        frames[master] = [jk_serial.encode_reading(bms.reading()) for _ in range(FRAMES_PER_PORT)]
    sent = dict.fromkeys(masters, 0)
    buffers = {master: bytearray() for master in masters}
    schedule: List[Tuple[float, int, int, bytes]] = []  # (when, order, fd, bytes)
    order = 0
    print("\n".join(paths) + "\n", flush=True)
    while True:
        timeout = max(0.0, schedule[0][0] - time.monotonic()) if schedule else 1.0
        ready, _, _ = select.select(masters + [sys.stdin.fileno()], [], [], timeout)
        for fd in ready:
            if fd == sys.stdin.fileno():
                if not os.read(fd, 4096):
                    return
                continue
            try:
                data = os.read(fd, 4096)
            except OSError:
                continue  # no reader has the slave open
            arrived = time.monotonic()
            buffer = buffers[fd]
            buffer += data
            while True:
                start, size = jk_serial.locate_frame(bytes(buffer))
                del buffer[:start]
                if size is None or len(buffer) < size:
                    break
                request = bytes(buffer[:size])
                del buffer[:size]
                if request[8] not in jk_serial.READ_COMMANDS:
                    continue  # this BMS only ever answers reads
                reply = frames[fd][sent[fd] % FRAMES_PER_PORT]
                sent[fd] += 1
                begins = arrived + len(request) * bt + answer
                for offset in range(0, len(reply), PIECE):
                    piece = reply[offset : offset + PIECE]
                    order += 1
                    heapq.heappush(schedule, (begins + (offset + len(piece)) * bt, order, fd,
                                              piece))
        now = time.monotonic()
        while schedule and schedule[0][0] <= now:
            _, _, fd, piece = heapq.heappop(schedule)
            os.write(fd, piece)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ports", type=int, default=1)
    parser.add_argument("--answer", type=float, default=0.09)
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--cells", type=int, default=16)
    args = parser.parse_args()
    serve(args.ports, args.answer, args.baud, args.cells)


if __name__ == "__main__":
    main()
