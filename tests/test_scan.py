"""`jkbms-exporter scan`: what it finds on simulated ports, and that its snippet is a valid config."""

from __future__ import annotations

import subprocess
import sys
from typing import List


from jkbms_exporter.config import parse_config
from jkbms_exporter.scan import config_snippet, scan_port
from jkbms_exporter.sim.bms import SimulatedBms
from jkbms_exporter.sim.pb_bus import PbBusBms, jk_pb_device
from jkbms_exporter.sim.serve import TcpSimulator




def pb_bus(addresses: List[int], master: bool = False) -> PbBusBms:
    return PbBusBms({a: SimulatedBms(seed=a, device=jk_pb_device(a)) for a in addresses},
                    master=master)


def test_finds_every_pack_on_a_bus_and_the_snippet_is_a_valid_config(servers: List) -> None:
    sim = TcpSimulator(pb_bus([2, 7, 15]), latency=0.02).start()
    servers.append(sim)
    lines: List[str] = []
    found = scan_port(sim.url, lines.append, baud_rates=(115200,), reply_timeout=0.2)
    assert [(f.protocol, f.address) for f in found] == [("jk-pb", 2), ("jk-pb", 7), ("jk-pb", 15)]
    assert found[1].serial_number == jk_pb_device(7).serial_number and found[1].cells == 16
    assert any("JK-PB address 9" in line for line in lines)  # progress for every address
    configs = parse_config(config_snippet(sim.url, found), "snippet.yml", environ={})
    assert [(c.name, c.protocol, c.address, c.url) for c in configs] == [
        ("pack2", "jk-pb", 2, sim.url), ("pack7", "jk-pb", 7, sim.url),
        ("pack15", "jk-pb", 15, sim.url)]


def test_a_bus_with_a_master_is_only_listened_to(servers: List) -> None:
    sim = TcpSimulator(pb_bus([1, 3], master=True), latency=0.02).start()
    servers.append(sim)
    found = scan_port(sim.url, lambda _: None, baud_rates=(115200,))
    assert [(f.address, f.listen_only) for f in found] == [(1, True), (3, True)]
    assert sim.requests_received == 0
    assert "listen-only" in config_snippet(sim.url, found)


def test_finds_a_jk_b_on_the_4e57_protocol(servers: List) -> None:
    sim = TcpSimulator(SimulatedBms(cells=8, seed=3), latency=0.02).start()
    servers.append(sim)
    (found,) = scan_port(sim.url, lambda _: None, baud_rates=(115200,))
    assert (found.protocol, found.address, found.cells) == ("jk-serial", None, 8)
    (config,) = parse_config(config_snippet(sim.url, [found]), environ={})
    assert config.protocol == "jk-serial" and config.address is None


def test_nothing_answers_exit_1_with_advice(servers: List) -> None:
    sim = TcpSimulator(SimulatedBms(seed=4), fault="silent").start()  # a mute gateway
    servers.append(sim)
    result = subprocess.run([sys.executable, "-m", "jkbms_exporter", "scan", sim.url],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "nothing answered" in result.stdout and "Traceback" not in result.stderr
    assert "9600 Bd: JK-PB address 15" in result.stderr  # both baud rates were tried


def test_scan_usage_errors() -> None:
    for args in (["scan"], ["scan", "/dev/x", "--ble"]):
        result = subprocess.run([sys.executable, "-m", "jkbms_exporter", *args],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 2 and result.stderr.count("\n") == 1
