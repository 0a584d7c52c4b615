"""Listen-only decoding of a JK-PB RS-485 bus owned by a DIP-0 master (spec
``shared/protocol/jk-pb-modbus.md`` §5) — no I/O.

:class:`BusDecoder` splits the traffic into requests, acknowledgements, read responses and
55AA frames attributed to the pack that sent them; :func:`master_evidence` tells whether
someone else is polling; :func:`latest_frames_by_address` folds the frames per pack. The
messages themselves are parsed by :mod:`.jk_pb`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, Iterable, List, Mapping, Optional, Tuple, Union

from . import jk02
from ..errors import FrameError
from .jk_pb import (
    Ack, ACK_SIZE, crc_ok, EXCEPTION_FLAG, EXCEPTION_SIZE, ExceptionResponse,
    FUNCTION_READ_HOLDING, FUNCTION_WRITE_MULTIPLE, GENERATION, MASTER_ADDRESS,
    MAX_MODBUS_ADDRESS, MODBUS_MAX_WRITE_REGISTERS, ModbusRequest, parse_ack,
    parse_request, READ_REQUEST_SIZE, ReadResponse,
)


@dataclass(frozen=True)
class BusFrame:
    """A 55AA frame seen on the bus and the pack address it came from.

    ``attributed_by``: ``ack`` (the acknowledgement after it), ``request`` (only the trigger
    before it; its ACK was lost), ``ack+request`` (both agree), ``none`` (address unknown).
    Address 0 is the master's own broadcast (ACK-shaped trailer ``00 10 16 20 …``, spec §5).
    """

    address: Optional[int]
    frame: bytes
    attributed_by: str
    request_address: Optional[int] = None

    @property
    def frame_type(self) -> int:
        return self.frame[jk02.TYPE_OFFSET]

    def decode(self) -> jk02.DecodedFrame:
        return jk02.decode_frame(self.frame, GENERATION)


BusEvent = Union[ModbusRequest, Ack, ReadResponse, ExceptionResponse, BusFrame]


class BusDecoder:
    """Incremental, pure decoder of RS-485 traffic (no I/O): feed bytes, get events.

    A 55AA frame is held back until what follows it is known, because the acknowledgement
    after it names the sender; :meth:`flush` (call it on a bus silence) releases it and
    gives up on a partial frame. Bytes that are no frame (padding ``00``, noise) are counted
    in :attr:`discarded_bytes`.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pending: Optional[Tuple[bytes, Optional[int]]] = None
        self._last_trigger: Optional[ModbusRequest] = None
        self.discarded_bytes = 0
        self.checksum_errors = 0

    def feed(self, chunk: bytes) -> List[BusEvent]:
        self._buffer += chunk
        return self._run(final=False)

    def flush(self) -> List[BusEvent]:
        events = self._run(final=True)
        events.extend(self._release())
        return events

    # -- internals

    def _release(self, ack: Optional[Ack] = None) -> List[BusEvent]:
        if self._pending is None:
            return []
        frame, requested = self._pending
        self._pending = None
        if ack is not None:
            by = "ack+request" if requested == ack.address else "ack"
            return [BusFrame(ack.address, frame, by, requested)]
        if requested is not None:
            return [BusFrame(requested, frame, "request", requested)]
        return [BusFrame(None, frame, "none")]

    def _on_event(self, event: Union[bytes, BusEvent]) -> List[BusEvent]:
        if isinstance(event, bytes):  # a 55AA frame
            events = self._release()
            trigger = self._last_trigger
            requested = (trigger.address if trigger is not None
                         and trigger.trigger_frame_type == event[jk02.TYPE_OFFSET] else None)
            self._pending = (event, requested)
            self._last_trigger = None
            return events
        if isinstance(event, Ack) and self._pending is not None:
            if event.trigger_frame_type == self._pending[0][jk02.TYPE_OFFSET]:
                return self._release(event) + [event]
        events = self._release()
        if isinstance(event, ModbusRequest):
            self._last_trigger = event if event.trigger_frame_type is not None else None
        elif not isinstance(event, Ack):
            self._last_trigger = None
        return events + [event]

    def _drop(self, count: int) -> None:
        self.discarded_bytes += count
        del self._buffer[:count]

    def _run(self, final: bool) -> List[BusEvent]:
        events: List[BusEvent] = []
        while self._buffer:
            status, item, size = self._parse_head(final)
            if status == "wait":
                break
            if status == "drop":
                self._drop(1)
                continue
            del self._buffer[:size]
            events.extend(self._on_event(item))  # type: ignore[arg-type]
        return events

    def _parse_head(self, final: bool) -> Tuple[str, object, int]:
        buf = self._buffer
        head = bytes(buf[: len(jk02.HEADER)])
        if jk02.HEADER.startswith(head):
            if len(buf) >= jk02.FRAME_SIZE:
                frame = bytes(buf[: jk02.FRAME_SIZE])
                if jk02.checksum(frame) == frame[jk02.CHECKSUM_OFFSET]:
                    return "frame", frame, jk02.FRAME_SIZE
                self.checksum_errors += 1
                return "drop", None, 1
            return ("drop", None, 1) if final else ("wait", None, 0)
        if len(buf) < 2:
            return ("drop", None, 1) if final else ("wait", None, 0)
        address, function = buf[0], buf[1]
        candidates: List[Tuple[int, str]] = []
        if address <= MAX_MODBUS_ADDRESS:
            if function == FUNCTION_READ_HOLDING:
                candidates.append((READ_REQUEST_SIZE, "request"))
                if len(buf) >= 3 and buf[2] and not buf[2] % 2:
                    candidates.append((5 + buf[2], "response"))
            elif function == FUNCTION_WRITE_MULTIPLE:
                candidates.append((ACK_SIZE, "ack"))
                if len(buf) >= 7:
                    count = int.from_bytes(buf[4:6], "big")
                    if 1 <= count <= MODBUS_MAX_WRITE_REGISTERS and buf[6] == 2 * count:
                        candidates.append((9 + buf[6], "request"))
                else:
                    candidates.append((9, "request"))  # size known once byte 6 is here
            elif function in (FUNCTION_READ_HOLDING | EXCEPTION_FLAG,
                              FUNCTION_WRITE_MULTIPLE | EXCEPTION_FLAG):
                candidates.append((EXCEPTION_SIZE, "exception"))
        waiting = False
        for size, kind in sorted(candidates):
            if len(buf) < size:
                waiting = True
                continue
            frame = bytes(buf[:size])
            if not crc_ok(frame):
                continue
            if kind == "request":
                return "event", parse_request(frame), size
            if kind == "ack":
                return "event", parse_ack(frame), size
            if kind == "response":
                return "event", ReadResponse(address, frame[3:-2], frame), size
            return "event", ExceptionResponse(address, function & 0x7F, frame[2], frame), size
        if waiting and not final:
            return "wait", None, 0
        return "drop", None, 1


@dataclass(frozen=True)
class MasterEvidence:
    """What observed traffic says about who owns the bus (spec §5)."""

    #: Trigger requests (0x1620/0x161E/0x161C) that we did not send.
    trigger_requests: int
    #: Any other request we did not send (FC03 reads, writes) — another host is talking.
    other_requests: int
    #: 55AA frames from address 0: the DIP-0 master's own broadcasts.
    master_broadcasts: int
    polled_addresses: FrozenSet[int]
    #: Addresses whose frames were seen, with the master (0) when it broadcast.
    answering_addresses: FrozenSet[int]

    @property
    def master_present(self) -> bool:
        """A JK master (DIP 0) is polling: its triggers or its own broadcasts were seen."""
        return self.trigger_requests > 0 or self.master_broadcasts > 0

    @property
    def bus_in_use(self) -> bool:
        """Someone else sends requests: we must only listen."""
        return self.master_present or self.other_requests > 0


def master_evidence(events: Iterable[BusEvent], own_requests: Iterable[bytes] = ()) -> MasterEvidence:
    """Tally bus events; requests equal to one of ``own_requests`` (our own, echoed by the
    adapter) are not evidence of anyone else."""
    own = {bytes(raw) for raw in own_requests}
    triggers = others = broadcasts = 0
    polled = set()
    answering = set()
    for event in events:
        if isinstance(event, ModbusRequest):
            if event.raw in own:
                continue
            if event.trigger_frame_type is not None:
                triggers += 1
                polled.add(event.address)
            else:
                others += 1
        elif isinstance(event, BusFrame) and event.address is not None:
            answering.add(event.address)
            if event.address == MASTER_ADDRESS:
                broadcasts += 1
    return MasterEvidence(triggers, others, broadcasts, frozenset(polled), frozenset(answering))


def latest_frames_by_address(events: Iterable[BusEvent],
                             latest: Optional[Mapping[int, jk02.LatestFrames]] = None
                             ) -> Dict[int, jk02.LatestFrames]:
    """Fold attributed bus frames into the latest frames of every pack (listen-only mode).

    A frame of a type no table knows is skipped, so one odd frame cannot hide the others.
    """
    result: Dict[int, jk02.LatestFrames] = dict(latest or {})
    for event in events:
        if isinstance(event, BusFrame) and event.address is not None:
            try:
                frame = event.decode()
            except FrameError:
                continue
            result[event.address] = result.get(event.address, jk02.LatestFrames()).with_frame(frame)
    return result
