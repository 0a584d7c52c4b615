"""Requests written ahead and replies received together, on real pseudo-terminals.

Every port is a real pty behind a simulated BMS; the transports are real pyserial ports.
What ``receive_together`` reports for each fault must be what ``exchange`` reports for it
on its own (same error types, same messages), and the frames it hands on must be the
whole replies.
"""

from __future__ import annotations

import time
from typing import Dict, List, Tuple

import pytest

from jkbms_exporter.errors import IncompleteFrameError, JkbmsError, ReadTimeout, TransportError
from jkbms_exporter.links import serial as serial_link
from jkbms_exporter.links.serial import Reception, SerialTransport
from jkbms_exporter.links.serial_together import receive_together
from jkbms_exporter.protocols import jk_serial
from jkbms_exporter.sim.bms import SimulatedBms
from jkbms_exporter.sim.serve import PtySimulator

REQUEST = jk_serial.read_all_request()


@pytest.fixture
def sims() -> List[PtySimulator]:
    started: List[PtySimulator] = []
    yield started
    for sim in started:
        sim.stop()


def opened(sims: List[PtySimulator], fault: str = "none", latency: float = 0.05,
           cells: int = 8) -> Tuple[PtySimulator, SerialTransport]:
    """A simulator on a pty, and a transport that has read it once (the port is open)."""
    sim = PtySimulator(SimulatedBms(cells=cells, seed=len(sims) + 1), latency=latency).start()
    sims.append(sim)
    transport = SerialTransport(sim.path, min_gap=0.0)
    transport.record_sent = True
    jk_serial.decode_reply(transport.exchange(REQUEST, jk_serial.locate_frame, 2.0))
    sim.fault = fault
    return sim, transport


def together(transports: List[SerialTransport], timeout: float = 1.0
             ) -> Dict[SerialTransport, object]:
    """Each transport's frame (bytes) or error, received together."""
    receptions = []
    for transport in transports:
        assert transport.send_ahead(REQUEST)
        reception = transport.ahead_reception(REQUEST, jk_serial.locate_frame, timeout)
        assert isinstance(reception, Reception)
        receptions.append(reception)
    outcome: Dict[SerialTransport, object] = {}

    def on_frame(reception: Reception, frame: bytes) -> None:
        assert reception.transport not in outcome
        outcome[reception.transport] = frame

    def on_error(reception: Reception, error: JkbmsError) -> None:
        assert reception.transport not in outcome
        outcome[reception.transport] = error

    receive_together(receptions, on_frame, on_error)
    assert set(outcome) == set(transports)
    return outcome


def test_the_replies_of_several_ports_come_in_together(sims: List) -> None:
    transports = [opened(sims, latency=0.3, cells=cells)[1] for cells in (4, 8, 16, 24)]
    started = time.monotonic()
    outcome = together(transports)
    took = time.monotonic() - started
    for transport, cells in zip(transports, (4, 8, 16, 24)):
        frame = outcome[transport]
        assert isinstance(frame, bytes)
        assert jk_serial.decode_reply(frame).cells == cells
        assert transport.sent == [REQUEST, REQUEST]  # one to open, one ahead: no more
    # four BMSs answering after 0.3 s each: waited for together, not one after another
    assert took < 0.9, took


@pytest.mark.parametrize("fault, error, message", [
    ("silent", ReadTimeout, "no complete reply from %s within 0.60 s (0 bytes received)"),
    ("partial", IncompleteFrameError, "reply from %s stopped after"),
])
def test_a_faulty_port_is_given_up_as_exchange_gives_up_and_the_others_are_read(
        sims: List, fault: str, error: type, message: str) -> None:
    _, good = opened(sims)
    _, bad = opened(sims, fault=fault)
    outcome = together([good, bad], timeout=0.6)
    assert isinstance(outcome[good], bytes)
    assert isinstance(outcome[bad], error)
    assert str(outcome[bad]).startswith(message % bad.url)
    # the same fault, read by exchange alone, is the same error
    with pytest.raises(error) as alone:
        bad.exchange(REQUEST, jk_serial.locate_frame, 0.6)
    assert str(alone.value).split(" after ")[0] == str(outcome[bad]).split(" after ")[0]


@pytest.mark.parametrize("fault", ["junk-before", "trailing-junk", "chunked"])
def test_line_noise_is_dropped_and_the_frame_is_whole(sims: List, fault: str) -> None:
    _, noisy = opened(sims, fault=fault)
    frame = together([noisy], timeout=2.0)[noisy]
    assert isinstance(frame, bytes)
    assert jk_serial.decode_reply(frame).cells == 8


def test_an_unplugged_port_is_an_io_error_and_is_closed(sims: List) -> None:
    sim, gone = opened(sims, latency=0.3)
    _, good = opened(sims)
    assert gone.send_ahead(REQUEST) and good.send_ahead(REQUEST)
    receptions = [t.ahead_reception(REQUEST, jk_serial.locate_frame, 1.0) for t in (gone, good)]
    sim.unplug()  # the adapter goes while its BMS thinks
    outcome: Dict[SerialTransport, object] = {}
    receive_together(receptions,  # type: ignore[arg-type]
                     lambda r, frame: outcome.__setitem__(r.transport, frame),
                     lambda r, error: outcome.__setitem__(r.transport, error))
    assert isinstance(outcome[good], bytes)
    assert isinstance(outcome[gone], TransportError)
    assert str(outcome[gone]).startswith("reading from %s failed" % gone.url)
    assert not gone.is_open  # reopened (with backoff) by a later read


def test_send_ahead_writes_only_when_that_costs_no_wait(sims: List) -> None:
    sim = PtySimulator(SimulatedBms(cells=4, seed=9), latency=0.02).start()
    sims.append(sim)
    transport = SerialTransport(sim.path, min_gap=0.5)
    transport.record_sent = True
    assert not transport.send_ahead(REQUEST)  # not open yet: opening is the read's job
    transport.exchange(REQUEST, jk_serial.locate_frame, 2.0)
    assert not transport.send_ahead(REQUEST)  # within the gap after the last exchange
    assert transport.sent == [REQUEST]
    time.sleep(0.5)
    assert transport.send_ahead(REQUEST)
    transport.exchange(REQUEST, jk_serial.locate_frame, 2.0)  # takes the reply, no write
    assert transport.sent == [REQUEST, REQUEST]


def test_a_request_written_ahead_too_long_ago_is_written_again(
        sims: List, monkeypatch: pytest.MonkeyPatch) -> None:
    _, transport = opened(sims)
    monkeypatch.setattr(serial_link, "AHEAD_LIFETIME", 0.05)
    assert transport.send_ahead(REQUEST)
    time.sleep(0.2)  # its reply is in the buffer by now, but stale
    assert transport.ahead_reception(REQUEST, jk_serial.locate_frame, 1.0) is None
    frame = transport.exchange(REQUEST, jk_serial.locate_frame, 2.0)
    assert jk_serial.decode_reply(frame).cells == 8
    assert transport.sent == [REQUEST, REQUEST, REQUEST]  # open, ahead, and again
