"""JK-PB inverter BMSs on one RS-485 bus: the glue between :mod:`.jk_pb` and a transport.

One :class:`PbBus` per port, shared by the packs on it (they are read in turn under the
transport's lock, so the bus state needs no lock of its own). Two modes:

* **poll** (packs at DIP addresses 1–15, no master): per scrape one FC 0x10 cell-info
  trigger per pack; the settings and device-info frames, which change rarely, are fetched
  one per scrape while time allows and then refreshed every few minutes. A pack that never
  answers triggers is tried with FC 0x03 block reads instead (spec §6.5), alternating, so an
  absent pack costs one reply timeout per scrape and no retry storm.
Every cell-info record received for a pack — answers to our requests, or heard in listen mode
whether a scrape asks for that pack or not — goes to the listeners :meth:`PbBus.subscribe`
registered for it (the energy counters integrate every record).

* **listen** (a pack at DIP address 0 is bus master and polls the others; it would collide
  with us and stops answering): nothing is sent. What the master's traffic carries is decoded
  and attributed to the pack that sent it; a pack's values are served while younger than
  ``max_age``. The exporter says so in the log and on the landing page.

The bus is checked for a master before it is first polled, every ``probe_interval`` and
after any garbled reply; in listen mode, a whole listen window without any master traffic
switches back to polling.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..defaults import DEFAULT_REPLY_TIMEOUT
from ..protocols import jk02, jk_pb, jk_pb_listen
from ..errors import FrameError, ReadTimeout
from ..reading import READING_AGE_KEY, Reading
from .serial import Framer, SerialTransport

log = logging.getLogger(__name__)

# DEFAULT_REPLY_TIMEOUT (from ..defaults): a JK-PB answers a trigger within ~100 ms (spec
# §5: ~260 ms per battery for two triggers in a master's cycle); waiting longer only makes
# an absent pack costlier.

#: Spec §6.3: at least 120 ms between requests on the bus.
BUS_GAP = 0.12
SETTINGS_REFRESH = 300.0
#: After a settings / device-info frame could not be read, try it again this much later.
EXTRA_RETRY = 30.0
#: A bus with no traffic for this long is free for us to talk (txubelaxu's sniffer: 150 ms).
QUIET_PERIOD = 0.25
PROBE_INTERVAL = 300.0
#: A master polls every pack every ~4.4 s (spec §5); listen at most this long per scrape.
LISTEN_WINDOW = 5.0
#: In listen mode, a pack's values are served while younger than this.
DEFAULT_MAX_AGE = 30.0
#: Reads of a bus's packs this close after a listen belong to the same scrape.
SAME_SCRAPE = 0.2
#: Consecutive failures of one read method before the other is tried.
SWITCH_AFTER = 2

#: ``on_record(monotonic time, reading)`` and ``on_break(monotonic time)`` of a subscriber.
RecordListener = Tuple[Callable[[float, Reading], None], Callable[[float], None]]

EXTRA_FRAMES = (jk02.FRAME_DEVICE_INFO, jk02.FRAME_SETTINGS)


def trigger_framer(address: int) -> Framer:
    """Frames a trigger reply: the 300-byte 55AA frame plus the acknowledgement naming
    ``address`` (308 or 310 bytes; an adapter's echo of the request before it is junk)."""
    minimum = jk02.FRAME_SIZE + jk_pb.ACK_SIZE
    give_up = minimum + 4  # room for the 00 padding around the ACK, then let the parser say why

    def framer(buffer: bytes) -> Tuple[int, Optional[int]]:
        start = buffer.find(jk02.HEADER)
        if start < 0:
            return max(0, len(buffer) - len(jk02.HEADER) + 1), None
        have = len(buffer) - start
        if have < minimum:
            return start, minimum
        if jk_pb.trigger_reply_complete(buffer[start:], address) or have >= give_up:
            return start, have
        return start, have + 1

    return framer


def read_response_framer(request: bytes) -> Framer:
    """Frames an FC 0x03 response ``addr 03 n data(n) crc`` to ``request``, skipping the
    adapter's echo of the request itself."""
    head = request[:2]

    def framer(buffer: bytes) -> Tuple[int, Optional[int]]:
        position = 0
        while True:
            start = buffer.find(head, position)
            if start < 0:
                return max(0, len(buffer) - 1), None
            if buffer[start : start + len(request)] == request:  # our own echo
                position = start + len(request)
                continue
            if len(buffer) - start < 3:
                return start, None
            return start, 5 + buffer[start + 2]

    return framer


@dataclass
class _PackState:
    latest: jk02.LatestFrames = field(default_factory=jk02.LatestFrames)
    #: monotonic time each frame type was last received
    received_at: Dict[int, float] = field(default_factory=dict)
    #: monotonic time a settings / device-info frame is next due (polling only)
    extra_due: Dict[int, float] = field(default_factory=dict)
    method: str = "trigger"
    failures: int = 0
    listeners: List[RecordListener] = field(default_factory=list)


class PbBus:
    """The state of one RS-485 bus of JK-PB packs."""

    def __init__(self, transport: SerialTransport, verify_checksum: bool = True,
                 reply_timeout: float = DEFAULT_REPLY_TIMEOUT, max_age: float = DEFAULT_MAX_AGE,
                 probe_interval: float = PROBE_INTERVAL, listen_window: float = LISTEN_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.transport = transport
        self.verify_checksum = verify_checksum
        self.reply_timeout = reply_timeout
        self.max_age = max_age
        self.probe_interval = probe_interval
        self.listen_window = listen_window
        self._clock = clock
        self.mode = "poll"
        #: settings / device-info frames fetched per read when due (more for a one-shot read)
        self.extras_per_read = 1
        self._probe_due = float("-inf")
        self._listened_at = float("-inf")
        self._packs: Dict[int, _PackState] = {}
        self.addresses: List[int] = []
        #: addresses heard answering the master in listen mode
        self.heard: Dict[int, float] = {}

    def register(self, address: int) -> None:
        if address not in self._packs:
            self._packs[address] = _PackState()
            self.addresses.append(address)

    def state(self, address: int) -> _PackState:
        return self._packs[address]

    def subscribe(self, address: int, on_record: Callable[[float, Reading], None],
                  on_break: Callable[[float], None]) -> None:
        """Hand every cell-info record of ``address`` to ``on_record``; a garbled frame of
        that address to ``on_break``."""
        self._packs[address].listeners.append((on_record, on_break))

    def _received(self, state: _PackState, at: float, reading: Optional[Reading] = None) -> None:
        """A cell-info record arrived for ``state``'s pack: tell the listeners."""
        if state.listeners:
            if reading is None:
                reading = state.latest.reading(jk_pb.PROTOCOL_NAME)
            for on_record, _ in state.listeners:
                on_record(at, reading)

    # ------------------------------------------------------------------ mode

    def _observe(self, duration: float, until_fresh_since: Optional[float] = None
                 ) -> jk_pb_listen.MasterEvidence:
        """Listen without sending for ``duration``; fold every attributed frame into the
        packs' state. With ``until_fresh_since``, stop as soon as every pack on the bus has
        a cell-info frame received after that time."""
        decoder = jk_pb_listen.BusDecoder()
        events: List[jk_pb_listen.BusEvent] = []

        def take(new: List[jk_pb_listen.BusEvent]) -> None:
            events.extend(new)
            self._fold(new)

        def on_chunk(chunk: bytes) -> bool:
            take(decoder.feed(chunk))
            return until_fresh_since is not None and self._all_fresh(until_fresh_since)

        self.transport.listen(duration, on_chunk)
        take(decoder.flush())
        return jk_pb_listen.master_evidence(events)

    def _fold(self, events: Sequence[jk_pb_listen.BusEvent]) -> None:
        now = self._clock()
        for event in events:
            if not isinstance(event, jk_pb_listen.BusFrame) or event.address is None:
                continue
            state = self._packs.get(event.address)
            try:
                decoded = event.decode()
            except FrameError:
                for _, on_break in state.listeners if state is not None else ():
                    on_break(now)  # a record of this pack was lost
                continue
            self.heard[event.address] = now
            if state is not None:
                state.latest = state.latest.with_frame(decoded)
                state.received_at[decoded.frame_type] = now
                if decoded.frame_type == jk02.FRAME_CELL_INFO:
                    self._received(state, now)

    def _all_fresh(self, since: float) -> bool:
        """Every pack heard lately has a cell-info frame from after ``since`` (a pack not
        heard for ``max_age`` is absent: waiting for it would cost every scrape a window)."""
        recent = since - self.max_age
        expected = [a for a in self.addresses if self.heard.get(a, float("-inf")) >= recent]
        return bool(expected) and all(
            self._packs[a].received_at.get(jk02.FRAME_CELL_INFO, float("-inf")) >= since
            for a in expected)

    def listen_for(self, duration: float) -> jk_pb_listen.MasterEvidence:
        """Only listen for ``duration``: who talks on this bus (``scan``)."""
        return self._observe(duration)

    def check_for_master(self) -> None:
        """Listen for a quiet period; another master's traffic switches to listen mode."""
        evidence = self._observe(QUIET_PERIOD)
        self._probe_due = self._clock() + self.probe_interval
        if evidence.bus_in_use and self.mode != "listen":
            self.mode = "listen"
            log.warning(
                "%s: another master is polling this RS-485 bus (a JK-PB at DIP address 0, or "
                "another program): listening only, nothing will be sent. Values come from the "
                "master's traffic; device info is not available this way. To let the exporter "
                "poll instead, set every pack's DIP address to 1-15.", self.transport.url)

    # ------------------------------------------------------------------ reads

    def read(self, address: int, deadline: float) -> Tuple[Reading, bytes]:
        if self.mode == "poll" and self._clock() >= self._probe_due:
            self.check_for_master()
        if self.mode == "listen":
            return self._read_listening(address, deadline)
        return self._read_polling(address, deadline)

    def _read_listening(self, address: int, deadline: float) -> Tuple[Reading, bytes]:
        state = self._packs[address]
        started = self._clock()
        # the first pack of a scrape listens for all of them; the others of the same scrape
        # (read right after it, in turn) use what that listen heard
        if started - self._listened_at > SAME_SCRAPE:
            window = min(self.listen_window, max(0.0, deadline - started))
            evidence = self._observe(window, until_fresh_since=started)
            self._listened_at = self._clock()
            if not evidence.bus_in_use and self._listened_at - started >= self.listen_window:
                self.mode = "poll"
                self._probe_due = self._listened_at + self.probe_interval
                log.info("%s: no master traffic for %.1f s: polling the bus again",
                         self.transport.url, self.listen_window)
        received = state.received_at.get(jk02.FRAME_CELL_INFO)
        if received is None or self._clock() - received > self.max_age:
            raise ReadTimeout(
                "listen-only bus %s: no frame from address %d heard %s" % (
                    self.transport.url, address,
                    "yet" if received is None else "in the last %.0f s" % self.max_age))
        reading = state.latest.reading(jk_pb.PROTOCOL_NAME)
        return _with_source(reading, "listen", self._clock() - received), b""

    def _read_polling(self, address: int, deadline: float) -> Tuple[Reading, bytes]:
        state = self._packs[address]
        try:
            if state.method == "fc03":
                reading, frame = self._read_fc03(address, state, deadline)
            else:
                reading, frame = self._read_triggers(address, state, deadline)
        except (FrameError, ReadTimeout) as error:
            if isinstance(error, FrameError):
                self._probe_due = self._clock()  # garbled: maybe a master started talking
            self._count_failure(state)
            raise
        state.failures = 0
        return reading, frame

    def _count_failure(self, state: _PackState) -> None:
        state.failures += 1
        if state.failures >= SWITCH_AFTER:
            state.method = "fc03" if state.method == "trigger" else "trigger"
            state.failures = 0

    def _reply_timeout(self, address: int, deadline: float) -> float:
        timeout = min(self.reply_timeout, deadline - self._clock())
        if timeout <= 0:
            raise ReadTimeout("scrape time budget used up while reading address %d" % address)
        return timeout

    def _trigger(self, address: int, frame_type: int, deadline: float,
                 raw: Optional[List[bytes]] = None) -> jk02.DecodedFrame:
        timeout = self._reply_timeout(address, deadline)
        request = jk_pb.trigger_request(address, frame_type)
        assert jk_pb.is_read_only_request(request)
        data = self.transport.exchange(request, trigger_framer(address), timeout)
        reply = jk_pb.parse_trigger_reply(data, address, frame_type, self.verify_checksum)
        decoded = reply.decode(self.verify_checksum)
        if raw is not None:  # the frame and its ACK as received (read --raw)
            raw.append(reply.frame + reply.ack)
        return decoded

    def _read_triggers(self, address: int, state: _PackState,
                       deadline: float) -> Tuple[Reading, bytes]:
        raw: List[bytes] = []
        cell_info = self._trigger(address, jk02.FRAME_CELL_INFO, deadline, raw)
        now = self._clock()
        state.latest = state.latest.with_frame(cell_info)
        state.received_at[jk02.FRAME_CELL_INFO] = now
        self._received(state, now)
        # slower-changing frames, one per scrape, when due and the budget allows
        fetched = 0
        for frame_type in EXTRA_FRAMES:
            if fetched >= self.extras_per_read:
                break
            if now < state.extra_due.get(frame_type, float("-inf")):
                continue
            if deadline - self._clock() < self.reply_timeout + self.transport.min_gap:
                break
            try:
                extra = self._trigger(address, frame_type, deadline, raw)
            except (FrameError, ReadTimeout) as error:
                log.debug("address %d: frame type %d not read: %s", address, frame_type, error)
                state.extra_due[frame_type] = self._clock() + EXTRA_RETRY
                break
            state.latest = state.latest.with_frame(extra)
            received = self._clock()
            state.received_at[frame_type] = received
            state.extra_due[frame_type] = received + SETTINGS_REFRESH
            fetched += 1
        return _with_source(state.latest.reading(jk_pb.PROTOCOL_NAME), "trigger"), b"".join(raw)

    def _read_fc03(self, address: int, state: _PackState,
                   deadline: float) -> Tuple[Reading, bytes]:
        responses: List[Tuple[int, bytes]] = []
        raw: List[bytes] = []
        for request in jk_pb.block_read_requests(address, jk_pb.BLOCK_STATUS):
            timeout = self._reply_timeout(address, deadline)
            assert jk_pb.is_read_only_request(request)
            data = self.transport.exchange(request, read_response_framer(request), timeout)
            response = jk_pb.parse_read_response(data, request)
            register = int.from_bytes(request[2:4], "big")
            responses.append((register, response.data))
            raw.append(response.raw)
        status = jk_pb.block_from_responses(jk_pb.BLOCK_STATUS, responses)
        reading = jk_pb.reading_from_blocks(status)
        self._received(state, self._clock(), reading)
        return _with_source(reading, "fc03"), b"".join(raw)


def _with_source(reading: Reading, source: str, age: Optional[float] = None) -> Reading:
    """Record how a reading was obtained, and for heard (not polled) values how old they are."""
    extra = dict(reading.extra)
    extra["source"] = source
    if age is not None:
        extra[READING_AGE_KEY] = round(age, 3)
    return dataclasses.replace(reading, extra=extra)


class JkPbProtocol:
    """One pack at a DIP address on a :class:`PbBus`."""

    name = jk_pb.PROTOCOL_NAME

    def __init__(self, bus: PbBus, address: int) -> None:
        jk_pb.trigger_request(address, jk02.FRAME_CELL_INFO)  # validates 1-15
        self.bus = bus
        self.address = address
        bus.register(address)

    def read(self, transport: SerialTransport, deadline: float) -> Tuple[Reading, bytes]:
        return self.bus.read(self.address, deadline)

    def subscribe(self, transport: SerialTransport, on_record: Callable[[float, Reading], None],
                  on_break: Callable[[float], None]) -> None:
        self.bus.subscribe(self.address, on_record, on_break)


__all__ = ["PbBus", "JkPbProtocol", "trigger_framer", "read_response_framer"]
