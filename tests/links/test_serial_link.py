"""Real pyserial over a real pseudo-terminal and a real TCP socket, against simulated BMSs.

Replayed frames are real captures from vectors/4e57.json, so what the exporter decodes
is compared with the values the vector file lists, not with our own encoder's output.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, List

import pytest
import serial

from jkbms_exporter.protocols import jk_serial
from jkbms_exporter.config import PackConfig, build_packs
from jkbms_exporter.errors import (
    ChecksumError,
    IncompleteFrameError,
    ReadTimeout,
    TransportError,
    reason_of,
)
from jkbms_exporter.pack import JkSerialProtocol, Pack
from jkbms_exporter.sim.bms import ReplayBms, SimulatedBms
from jkbms_exporter.sim.serve import FAULTS, PtySimulator, TcpSimulator, apply_fault
from jkbms_exporter.links.serial import SerialTransport


@pytest.fixture(scope="module")
def frame_16s(vectors_4e57: dict) -> dict:
    (vector,) = [v for v in vectors_4e57["frames"] if v["id"] == "opendtu_16s_b1a24s15p_1"]
    return vector




def make_pack(url: str, read_timeout: float = 1.0, **transport_options: object) -> Pack:
    transport = SerialTransport(url, **transport_options)  # type: ignore[arg-type]
    transport.record_sent = True
    return Pack("p", transport, JkSerialProtocol(), read_timeout)


def assert_matches_vector(reading: jk_serial.Reading, vector: dict) -> None:
    expected = vector["expected"]
    assert reading.cell_voltages_volts == pytest.approx(expected["cell_voltages_v"])
    assert reading.pack_voltage_volts == pytest.approx(expected["total_voltage_v"])
    assert reading.current_amperes == pytest.approx(expected["current_a"])
    assert reading.state_of_charge_ratio == pytest.approx(expected["soc_percent"] / 100)


def only_reads(pack: Pack) -> None:
    assert pack.transport.sent, "nothing was sent"
    for request in pack.transport.sent:
        assert jk_serial.parse_request(request).command in jk_serial.READ_COMMANDS


def read_until_up(pack: Pack, within: float) -> jk_serial.Reading:
    """Read again and again (as scrapes would) until a read succeeds."""
    deadline = time.monotonic() + within
    while True:
        try:
            return pack.read()[0]
        except (TransportError, ReadTimeout, IncompleteFrameError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# ----------------------------------------------------------------------------- happy paths


def test_reads_a_real_frame_over_a_pseudo_terminal(servers: List, frame_16s: dict) -> None:
    sim = PtySimulator(ReplayBms([bytes.fromhex(frame_16s["response_hex"])])).start()
    servers.append(sim)
    pack = make_pack(sim.path)
    reading, frame = pack.read()
    assert frame.hex() == frame_16s["response_hex"]
    assert_matches_vector(reading, frame_16s)
    only_reads(pack)
    pack.close()


def test_reads_a_real_frame_over_a_tcp_gateway(servers: List, frame_16s: dict) -> None:
    sim = TcpSimulator(ReplayBms([bytes.fromhex(frame_16s["response_hex"])])).start()
    servers.append(sim)
    pack = make_pack(sim.url)
    reading, _ = pack.read()
    assert_matches_vector(reading, frame_16s)
    only_reads(pack)
    pack.close()


def test_read_returns_when_the_frame_is_complete_not_at_the_deadline(servers: List) -> None:
    sim = PtySimulator(SimulatedBms(cells=16, seed=1)).start()
    servers.append(sim)
    pack = make_pack(sim.path, read_timeout=5.0)
    started = time.monotonic()
    reading, _ = pack.read()
    # length-driven framing: far below the 5 s deadline (the BMS answers after ~90 ms)
    assert time.monotonic() - started < 2.0
    assert reading.cells == 16
    pack.close()


def test_requests_on_one_port_keep_the_bms_gap(servers: List) -> None:
    sim = TcpSimulator(SimulatedBms(cells=4, seed=2), latency=0.0, baudrate=None).start()
    servers.append(sim)
    transport = SerialTransport(sim.url, min_gap=0.1)
    sent_at: List[float] = []
    original = transport.exchange

    def timed(request: bytes, framer: Callable, timeout: float) -> bytes:
        frame = original(request, framer, timeout)
        sent_at.append(time.monotonic())
        return frame

    transport.exchange = timed  # type: ignore[assignment]
    pack = Pack("p", transport, JkSerialProtocol(), 1.0)
    for _ in range(3):
        pack.read()
    gaps = [b - a for a, b in zip(sent_at, sent_at[1:])]
    assert all(gap >= 0.1 for gap in gaps), gaps
    pack.close()


def test_packs_on_one_url_share_one_transport_and_lock() -> None:

    a, b, c = build_packs([PackConfig("a", "socket://127.0.0.1:1", protocol="jk-pb", address=1),
                           PackConfig("b", "socket://127.0.0.1:1", protocol="jk-pb", address=2),
                           PackConfig("c", "socket://127.0.0.1:2")])
    assert a.transport is b.transport and a.transport.lock is b.transport.lock
    assert c.transport is not a.transport


# ----------------------------------------------------------------------------- faults


@pytest.mark.parametrize("fault, error, reason", [
    ("silent", ReadTimeout, "timeout"),
    ("partial", IncompleteFrameError, "malformed"),
    ("bad-checksum", ChecksumError, "checksum"),
    ("bad-length", IncompleteFrameError, "malformed"),
    ("trickle", ReadTimeout, "timeout"),
])
def test_a_faulty_reply_is_a_specific_error_then_the_link_recovers(
        servers: List, fault: str, error: type, reason: str) -> None:
    sim = TcpSimulator(SimulatedBms(cells=8, seed=3), latency=0.01, fault=fault).start()
    servers.append(sim)
    pack = make_pack(sim.url, read_timeout=1.0)
    with pytest.raises(error) as raised:
        pack.read()
    assert reason_of(raised.value) == reason
    sim.fault = "none"
    reading = read_until_up(pack, within=6.0)  # a trickle may still be draining
    assert reading.cells == 8
    only_reads(pack)
    pack.close()


@pytest.mark.parametrize("fault", ["junk-before", "chunked", "trailing-junk"])
def test_recoverable_line_faults_still_give_a_reading(servers: List, fault: str) -> None:
    sim = PtySimulator(SimulatedBms(cells=16, seed=4), latency=0.01, fault=fault).start()
    servers.append(sim)
    # "chunked" sends ~75 pieces with pauses of up to 20 ms (~0.8 s in all): a loaded
    # machine's sleeps overshoot, so give the reply room beyond the 1 s default
    pack = make_pack(sim.path, read_timeout=3.0)
    for _ in range(3):  # and the junk of one reply never spoils the next
        assert pack.read()[0].cells == 16
    pack.close()


def test_every_fault_is_covered_here() -> None:
    covered = {"none", "silent", "partial", "bad-checksum", "bad-length", "trickle",
               "junk-before", "chunked", "trailing-junk"}
    assert covered == set(FAULTS)
    with pytest.raises(ValueError):
        apply_fault("no-such-fault", b"", __import__("random").Random())


def test_unplugged_adapter_is_io_error_and_comes_back_on_the_same_path(
        servers: List, tmp_path: Path) -> None:
    link = str(tmp_path / "usb-FTDI_FT232R_A10KABCD-if00-port0")
    sim = PtySimulator(SimulatedBms(cells=16, seed=5), link=link, latency=0.01).start()
    servers.append(sim)
    pack = make_pack(link)
    assert pack.read()[0].cells == 16
    sim.unplug()
    with pytest.raises(TransportError) as raised:
        pack.read()
    assert reason_of(raised.value) == "io"
    assert not pack.transport.is_open
    with pytest.raises(TransportError):  # still gone: reopening fails cleanly
        pack.read()
    sim.replug()
    assert read_until_up(pack, within=8.0).cells == 16
    pack.close()


def test_tcp_gateway_reset_is_io_error_and_recovers_on_the_same_port(servers: List) -> None:
    sim = TcpSimulator(SimulatedBms(cells=16, seed=6), latency=0.01).start()
    servers.append(sim)
    pack = make_pack(sim.url)
    assert pack.read()[0].cells == 16
    sim.reset()
    with pytest.raises((TransportError, ReadTimeout)) as raised:
        for _ in range(3):  # a reset socket fails at the latest on the second exchange
            pack.read()
    assert reason_of(raised.value) in ("io", "timeout")
    sim.restore()
    assert read_until_up(pack, within=8.0).cells == 16
    pack.close()


def test_single_client_gateway_busy_then_free(servers: List) -> None:
    sim = TcpSimulator(SimulatedBms(cells=4, seed=7), latency=0.01, max_clients=1).start()
    servers.append(sim)
    other = serial.serial_for_url(sim.url, timeout=0.2)  # another tool holds the gateway
    time.sleep(0.2)
    pack = make_pack(sim.url)
    with pytest.raises((TransportError, ReadTimeout)):
        for _ in range(3):
            pack.read()
    assert sim.rejected_clients >= 1
    other.close()
    assert read_until_up(pack, within=8.0).cells == 4
    pack.close()


def test_missing_device_is_a_clear_io_error(tmp_path: Path) -> None:
    pack = make_pack(str(tmp_path / "ttyUSB9"))
    with pytest.raises(TransportError) as raised:
        pack.read()
    assert "ttyUSB9" in str(raised.value)
    assert reason_of(raised.value) == "io"


def test_reopen_backs_off_and_is_capped(tmp_path: Path) -> None:
    now = [100.0]
    transport = SerialTransport(str(tmp_path / "gone"), clock=lambda: now[0])
    waits = []
    for _ in range(8):
        with pytest.raises(TransportError):
            transport._open()
        waits.append(transport._retry_at - now[0])
        with pytest.raises(TransportError, match="next attempt"):
            transport._open()  # inside the backoff window: no open attempt at all
        now[0] = transport._retry_at
    assert waits[0] == pytest.approx(0.5)
    assert waits == sorted(waits) and waits[-1] == pytest.approx(5.0)


def test_second_exporter_cannot_open_the_same_serial_port(servers: List) -> None:
    sim = PtySimulator(SimulatedBms(cells=4, seed=8), latency=0.01).start()
    servers.append(sim)
    first, second = make_pack(sim.path), make_pack(sim.path)
    first.read()
    with pytest.raises(TransportError, match="(?i)lock"):
        second.read()
    first.close()


def test_a_paced_reply_is_slept_through_not_woken_for_chunk_by_chunk(
        servers: List, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the header tells the length, the receive loop sleeps through the missing
    bytes' wire time (less a tail): a 16S reply paced at 115200 Bd in 32-byte chunks
    (~10 of them) costs a handful of reads of the port, not one wake-up per chunk
    (issue 13: with many ports, fewer threads contend while replies arrive)."""
    sim = PtySimulator(SimulatedBms(cells=16, seed=3), latency=0.02).start()  # paced
    servers.append(sim)
    transport = SerialTransport(sim.path)
    port = transport._open()
    reads: List[int] = []
    os_read = os.read

    def counted(fd: int, size: int) -> bytes:
        data = os_read(fd, size)
        if fd == port.fd:
            reads.append(len(data))
        return data

    monkeypatch.setattr(os, "read", counted)  # pyserial reads the port with os.read
    try:
        frame = transport.exchange(jk_serial.read_all_request(), jk_serial.locate_frame, 2.0)
    finally:
        transport.close()
    assert len(frame) == sum(reads) > 32 * 8  # the whole reply came in those reads
    assert len(reads) <= 6, reads  # the header, the bulk after the sleep, the tail (11 without)
