"""The replies of many local serial ports, received together on one thread.

A scrape writes the request of every port at once (:meth:`SerialTransport.send_ahead`);
the replies then come in together too. Received by one thread per port, each reply's
last bytes, decoding and rendering would wait for the interpreter in turn, every port
thread waking cold; here one thread waits on all the ports with one ``select`` and hands
each frame on (:func:`receive_together`'s ``on_frame``) the moment it is whole, while
the other ports' bytes keep arriving in their drivers' buffers.

Each port's reply is given up on exactly as :meth:`SerialTransport.exchange` gives up:
the same :class:`~.serial.Reception` checks the deadline and a stalled frame, and a port
error closes the port (reopened with backoff by a later read). POSIX only: it reads the
ports' file descriptors, which pyserial opens non-blocking.
"""

from __future__ import annotations

import select
import time
from typing import Callable, Dict, Iterable, Tuple

from ..errors import JkbmsError
from .serial import PORT_ERRORS, REPLY_TAIL_BYTES, Reception, read_ready

#: Longest one wait may take (deadlines and stalls are waited for exactly).
_LONGEST_WAIT = 1.0
#: Longest sleep through a reply's wire time (as the exchange's, half the idle timeout).
_LONGEST_SLEEP = 0.15


def receive_together(receptions: Iterable[Reception],
                     on_frame: Callable[[Reception, bytes], None],
                     on_error: Callable[[Reception, JkbmsError], None]) -> None:
    """Receive every reception's reply; call ``on_frame(reception, frame)`` for each whole
    frame and ``on_error(reception, error)`` for each reply given up on, as they happen.
    Returns once every reception has had one of the two."""
    pending: Dict[int, Reception] = {r.transport.fileno(): r for r in receptions}
    clock = time.monotonic
    while pending:
        now = clock()
        for fd, reception in list(pending.items()):
            try:
                reception.check(now)
            except JkbmsError as error:
                del pending[fd]
                reception.transport.gave_up()
                on_error(reception, error)
        if not pending:
            return
        sleep, wait = _waits(pending.values(), now)
        if sleep > 0.001:  # every reply is still on the wire: nothing to read sooner
            time.sleep(min(sleep, wait, _LONGEST_SLEEP))
            wait = 0.0
        ready = select.select(list(pending), (), (), wait)[0]
        for fd in ready:
            reception = pending[fd]
            try:
                chunk = read_ready(fd)
            except PORT_ERRORS as error:
                del pending[fd]
                on_error(reception, reception.transport.read_failed(error))
                continue
            frame = reception.add(chunk) if chunk else None
            if frame is not None:
                del pending[fd]
                on_frame(reception, frame)


def _waits(receptions: Iterable[Reception], now: float) -> Tuple[float, float]:
    """(sleep, wait): how long every reply's bytes are surely still on the wire (0 if any
    reply's length is not known yet, or its last :data:`~.serial.REPLY_TAIL_BYTES` may be
    arriving: bytes cannot come faster than the wire), and how long a wait may take
    before a deadline passes or a stall must be noticed."""
    sleep = wait = _LONGEST_WAIT
    for reception in receptions:
        transport = reception.transport
        wait = min(wait, reception.deadline - now)
        if len(reception.buffer) > 1:  # started: a stall is noticed on time
            wait = min(wait, reception.last_byte + transport.frame_idle_timeout - now)
        if reception.size is None:
            sleep = 0.0
            continue
        on_wire = reception.size - len(reception.buffer) - REPLY_TAIL_BYTES
        sleep = min(sleep, reception.last_byte + on_wire * 10.0 / transport.baudrate - now)
    return max(0.0, sleep), max(0.0, wait)
