"""The YAML configuration file: what it accepts, and errors that name file, line and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

from jkbms_exporter.config import ConfigError, PackConfig, load_config_file, parse_config

GOOD = """\
defaults:
  read_timeout: 2
  labels: {site: cabin}
packs:
  - name: house
    url: /dev/ttyUSB0
  - name: garage
    url: socket://${GW_HOST}:${GW_PORT:-8899}
    baud: ${BAUD}
    invert_current: yes
    labels: {room: garage}
"""


def test_a_complete_file() -> None:
    house, garage = parse_config(GOOD, "jkbms.yml", environ={"GW_HOST": "10.1.2.3", "BAUD": "9600"})
    assert house == PackConfig("house", "/dev/ttyUSB0", read_timeout=2.0,
                               labels=(("site", "cabin"),))
    assert garage.url == "socket://10.1.2.3:8899"
    assert garage.baudrate == 9600 and garage.invert_current is True
    # a pack's labels merge with the defaults' (issue 12)
    assert garage.labels == (("room", "garage"), ("site", "cabin"))
    assert house.origin == "jkbms.yml:5"


@pytest.mark.parametrize("text, environ, message", [
    ("packs: []", {}, "jkbms.yml:1: packs: expected a non-empty list"),
    ("packs:\n  - url: /dev/x\n", {}, "jkbms.yml:2: packs[0].name: required"),
    ("packs:\n  - name: a\n    url: /dev/x\n    colour: red\n", {},
     "jkbms.yml:4: packs[0].colour: unknown field"),
    ("packs:\n  - name: a\n    url: /dev/x\n    baud: fast\n", {},
     "jkbms.yml:4: packs[0].baud: 'fast' is not a number: expected a whole number from 300"),
    ("packs:\n  - name: a\n    url: socket://${HOST}:1\n", {},
     "jkbms.yml:3: packs[0].url: environment variable HOST is not set"),
    ("packs:\n  - name: a\n    url: /dev/x\n    protocol: modbus\n", {},
     "jkbms.yml:4: packs[0].protocol: 'modbus': choose from jk-serial, jk-pb, auto"),
    ("packs:\n  - name: a\n    url: /dev/x\n    protocol: jk-pb\n", {},
     "jkbms.yml:2: packs[0].address: required for protocol jk-pb"),
    ("packs:\n  - name: a\n    url: /dev/x\n    protocol: jk-pb\n    address: 0\n", {},
     "jkbms.yml:5: packs[0].address: 0 is out of range: a whole number from 1 to 15"),
    ("packs:\n  - name: a\n    url: /dev/x\n    address: 2\n", {},
     "jkbms.yml:4: packs[0].address: the jk-serial protocol has no addresses"),
    ("packs:\n  - name: a\n    url: /dev/x\n    labels: {job: x}\n", {},
     "jkbms.yml:4: packs[0].labels: label 'job' is used by the exporter or Prometheus"),
    ("packs:\n  - name: a\n    url: /dev/x\n    labels: {1x: y}\n", {},
     "packs[0].labels: '1x' is not a valid Prometheus label name"),
    ("packs:\n  - name: a b\n    url: /dev/x\n", {}, "jkbms.yml:2: packs[0].name: 'a b'"),
    ("packs:\n  - name: a\n    url: /dev/x\n    read_timeout: 0\n", {},
     "jkbms.yml:4: packs[0].read_timeout: 0 is out of range: a number greater than 0"),
    ("packs:\n  - name: a\n    url: /dev/x\n  - name: a\n    url: /dev/y\n", {},
     "pack name 'a' is used twice (jkbms.yml:2 and jkbms.yml:4)"),
    ("packs:\n  - name: a\n    url: /dev/x\n  - name: b\n    url: /dev/x\n", {},
     "a jk-serial BMS needs a port of its own"),
    ("packs:\n  - name: a\n    url: /dev/x\n    protocol: jk-pb\n    address: 1\n"
     "  - name: b\n    url: /dev/x\n    protocol: jk-pb\n    address: 1\n", {},
     "packs a, b on /dev/x have the same address"),
    ("packs:\n  - name: a\n    name: b\n    url: /dev/x\n", {}, "jkbms.yml:3: packs[0]: duplicate key 'name'"),
    ("packs:\n  - name: a\n   url: [\n", {}, "jkbms.yml:3: not valid YAML:"),
    ("- just a list\n", {}, "jkbms.yml:1: document: expected a mapping"),
    ("pack:\n  - name: a\n", {}, "jkbms.yml:1: pack: unknown field (known: packs, defaults)"),
    ("packs:\n  - name: a\n    url: ble://C8:47:80:00:00:01\n    address: 1\n    protocol: jk-pb\n",
     {}, "a ble:// pack takes no protocol jk-pb and no address"),
    ("packs:\n  - name: a\n    url: ble://C8:47:80:00:00:01\n  - name: b\n"
     "    url: ble://C8:47:80:00:00:01\n", {}, "a BMS takes one Bluetooth connection"),
])
def test_errors_name_file_line_and_field(text: str, environ: dict, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "jkbms.yml", environ=environ)
    assert message in str(raised.value)


def test_the_example_file_in_the_repository_is_valid() -> None:
    packs = load_config_file(str(REPO / "jkbms.example.yml"))
    assert [p.name for p in packs] == ["house", "garage"]
    # garage adds room to the defaults' site (labels merge, the pack's value winning)
    assert packs[1].invert_current and dict(packs[1].labels) == {"room": "garage", "site": "home"}
    assert dict(packs[0].labels) == {"site": "home"}


def test_missing_file_is_one_line() -> None:
    with pytest.raises(ConfigError, match="cannot read config file /nonexistent.yml"):
        load_config_file("/nonexistent.yml")


def test_serve_reads_the_file_and_adds_device_flags(start_exporter, tmp_path: Path) -> None:
    config = tmp_path / "jkbms.yml"
    config.write_text("packs:\n  - name: shed\n    url: %s\n    labels: {site: farm}\n"
                      % (tmp_path / "ttyUSB5"))
    exporter = start_exporter("--config.file", str(config), "--simulate")
    text = exporter.metrics()
    assert 'jkbms_up{pack="shed",site="farm"} 0.0' in text
    assert 'jkbms_up{pack="sim",site=""} 1.0' in text


def test_serve_with_a_bad_file_exits_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "jkbms.yml"
    config.write_text("packs:\n  - name: a\n    url: /dev/x\n    baud: -5\n")
    result = subprocess.run([sys.executable, "-m", "jkbms_exporter", "serve", "--config.file",
                             str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == ("jkbms-exporter: %s:4: packs[0].baud: -5 is out of range: "
                                     "a whole number from 300 to 4000000 Bd" % config)


# ----------------------------------------------------------------------------- issue 12: what no test noticed


def one_pack(fields: str, environ: dict = {}) -> PackConfig:  # noqa: B006 - read only
    (config,) = parse_config("packs:\n  - name: p\n" + fields, "jkbms.yml", environ=environ)
    return config


def refused(text: str, environ: dict = {}) -> str:  # noqa: B006 - read only
    with pytest.raises(ConfigError) as failure:
        parse_config(text, "jkbms.yml", environ=environ)
    message = str(failure.value)
    assert "\n" not in message and message.startswith("jkbms.yml:")
    return message


def _exporter_label_names() -> set:
    from jkbms_exporter.metrics import ALL_SPECS

    return {name for spec in ALL_SPECS for name in spec.labels}


@pytest.mark.parametrize("name", sorted(_exporter_label_names() | {"job", "instance", "le",
                                                                     "quantile", "pack"}))
def test_every_label_name_the_exporter_or_prometheus_uses_is_refused(name: str) -> None:
    message = refused("packs:\n  - name: p\n    url: /dev/ttyUSB0\n    labels: {%s: x}\n" % name)
    assert "jkbms.yml:4: packs[0].labels" in message and repr(name) in message


def test_label_names_that_are_free_or_not_prometheus_names() -> None:
    assert one_pack("    url: /dev/ttyUSB0\n    labels: {site: a, rack_2: b}\n").labels == (
        ("rack_2", "b"), ("site", "a"))
    for bad in ("__meta", "2rack", "rack-2"):
        assert "not a valid Prometheus label name" in refused(
            "packs:\n  - name: p\n    url: /dev/ttyUSB0\n    labels: {'%s': x}\n" % bad)


@pytest.mark.parametrize("protocol", ["jk-pb", "auto"])
def test_bus_addresses_are_1_to_15(protocol: str) -> None:
    for address in (1, 15):
        config = one_pack("    url: /dev/ttyUSB0\n    protocol: %s\n    address: %d\n"
                          % (protocol, address))
        assert config.address == address
    for address in (0, 16, -1):
        message = refused("packs:\n  - name: p\n    url: /dev/ttyUSB0\n    protocol: %s\n"
                          "    address: %d\n" % (protocol, address))
        assert "jkbms.yml:5: packs[0].address" in message and "from 1 to 15" in message


BUS = """\
packs:
  - {name: a, url: /dev/ttyUSB0, protocol: jk-pb, address: 1, baud: %s}
  - {name: b, url: /dev/ttyUSB0, protocol: jk-pb, address: 2, baud: %s}
"""


def test_packs_on_one_bus_must_agree_on_the_baud_rate() -> None:
    a, b = parse_config(BUS % (9600, 9600), "jkbms.yml")
    assert a.baudrate == b.baudrate == 9600
    with pytest.raises(ConfigError, match="packs a, b on /dev/ttyUSB0 ask for different baud"):
        parse_config(BUS % (9600, 115200), "jkbms.yml")
    # packs on different ports may differ
    text = BUS.replace("url: /dev/ttyUSB0, protocol: jk-pb, address: 2",
                       "url: /dev/ttyUSB1, protocol: jk-pb, address: 2")
    assert [c.baudrate for c in parse_config(text % (9600, 115200), "jkbms.yml")] == [9600, 115200]


@pytest.mark.parametrize("text, expected", [
    ("true", True), ("True", True), ("yes", True), ("1", True),
    ("false", False), ("FALSE", False), ("no", False), ("0", False),
])
def test_booleans_from_environment_variables(text: str, expected: bool) -> None:
    config = one_pack("    url: /dev/ttyUSB0\n    invert_current: ${INVERT}\n"
                      "    verify_checksum: ${CHECK}\n", {"INVERT": text, "CHECK": text})
    assert config.invert_current is expected and config.verify_checksum is expected


@pytest.mark.parametrize("text", ["maybe", "", "2", "on"])
def test_a_boolean_variable_that_is_neither_is_refused(text: str) -> None:
    message = refused("packs:\n  - name: p\n    url: /dev/ttyUSB0\n    invert_current: ${INVERT}\n",
                      {"INVERT": text})
    assert "jkbms.yml:4: packs[0].invert_current" in message and "true or false" in message


@pytest.mark.parametrize("value", ["[a, b]", "{host: a}", "[]", "true"])
def test_a_url_that_is_not_a_string_is_refused(value: str) -> None:
    message = refused("packs:\n  - name: p\n    url: %s\n" % value)
    assert "jkbms.yml:3: packs[0].url" in message and "expected a string" in message


@pytest.mark.parametrize("flag, name, url", [
    ("/dev/ttyUSB0", "3", "/dev/ttyUSB0"),
    ("COM3", "3", "COM3"),
    ("house=/dev/ttyUSB0", "house", "/dev/ttyUSB0"),
    ("socket://gw:8899", "3", "socket://gw:8899"),
    ("spy:///dev/ttyUSB0?file=log.txt", "3", "spy:///dev/ttyUSB0?file=log.txt"),
    ("a.b=socket://gw:8899", "a.b", "socket://gw:8899"),
])
def test_device_flags_name_their_pack_or_take_the_position(flag: str, name: str, url: str) -> None:
    from jkbms_exporter.config import parse_device_flag

    config = parse_device_flag(flag, 3)
    assert (config.name, config.url) == (name, url)


@pytest.mark.parametrize("flag", ["house=", "", "bad name=/dev/ttyUSB0"])
def test_device_flags_without_a_url_or_with_a_bad_name_are_one_line(flag: str) -> None:
    from jkbms_exporter.config import parse_device_flag

    with pytest.raises(ConfigError) as failure:
        parse_device_flag(flag, 1)
    assert "--device" in str(failure.value) and "\n" not in str(failure.value)


def test_protocols_built_for_each_kind_of_pack() -> None:
    from jkbms_exporter.config import build_packs
    from jkbms_exporter.pack import AutoProtocol, JkSerialProtocol

    packs = build_packs([
        PackConfig("plain", "socket://127.0.0.1:1"),
        PackConfig("auto", "socket://127.0.0.1:2", protocol="auto"),
        PackConfig("bus", "socket://127.0.0.1:3", protocol="auto", address=2),
        PackConfig("pb", "socket://127.0.0.1:4", protocol="jk-pb", address=3, read_timeout=0.5),
    ])
    try:
        plain, auto, bus, pb = packs
        assert type(plain.protocol) is JkSerialProtocol and plain.read_timeout == 1.0
        assert type(auto.protocol) is AutoProtocol
        assert [type(c).__name__ for c in auto.protocol.candidates] == ["JkSerialProtocol"]
        assert [type(c).__name__ for c in bus.protocol.candidates] == ["JkSerialProtocol",
                                                                      "JkPbProtocol"]
        assert type(pb.protocol).__name__ == "JkPbProtocol"
        # a bus pack may have to listen to a master's whole polling cycle
        from jkbms_exporter.links.pb_bus import LISTEN_WINDOW

        assert pb.read_timeout == bus.read_timeout == LISTEN_WINDOW + 1.0
    finally:
        for pack in packs:
            pack.close()


def test_a_simulated_ble_pack_gets_the_fake_radio_and_quick_reconnects() -> None:
    from jkbms_exporter.config import build_ble_pack
    from jkbms_exporter.links import ble
    from jkbms_exporter.sim.ble_radio import FakeBleBackend

    pack = build_ble_pack("demo", "ble+sim://demo?cells=4", 2.0, False, (), start=False)
    try:
        assert isinstance(pack.transport.backend, FakeBleBackend)
        # the fake radio reconnects within seconds, not the real link's minute
        assert (pack.transport.backoff_initial, pack.transport.backoff_max) == (0.5, 5.0)
    finally:
        pack.close()
    # the link alone never reaches the simulator
    with pytest.raises(ConfigError, match="simulator"):
        ble.build_ble_pack("demo", "ble+sim://demo?cells=4", 2.0, False, (), start=False)
