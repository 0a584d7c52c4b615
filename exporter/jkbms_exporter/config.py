"""Which packs to read, and how.

Packs come from ``--device [NAME=]URL`` flags and from a YAML file (``--config.file``),
both into :class:`PackConfig` rows, which :func:`build_packs` turns into
:class:`~jkbms_exporter.pack.Pack` objects sharing one transport (one lock, one bus
pacing) per URL.

The file is validated on start; every error names the file, the line and the field.
String values may use ``${VAR}`` (or ``${VAR:-default}``) to take environment variables.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from .energy import DEFAULT_MAX_GAP, MAX_GAP_RANGE
from .errors import ConfigError
from .links import ble as ble_link
from .links.ble import is_ble_url
from .pack import (CHEMISTRIES, DEFAULT_CHEMISTRY, DEFAULT_READ_TIMEOUT, AutoProtocol,
                   JkSerialProtocol, Pack, ReadProtocol)
from .links.pb_bus import BUS_GAP, DEFAULT_REPLY_TIMEOUT, LISTEN_WINDOW, JkPbProtocol, PbBus
from .links.serial import DEFAULT_BAUDRATE, DEFAULT_MIN_GAP, SerialTransport

#: Pack names become the ``pack`` label: keep them to what reads well in PromQL and URLs.
_PACK_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
#: Label names the exporter or Prometheus already uses.
RESERVED_LABELS = frozenset((
    "pack", "cell", "sensor", "reason", "mosfet", "switch", "alarm", "setting", "port",
    "protocol", "protocol_version", "model", "hardware_version", "software_version",
    "device_id", "manufacture_date", "battery_type", "serial_number", "version",
    "python_version", "job", "instance", "le", "quantile",
))
PROTOCOLS = ("jk-serial", "jk-pb", "auto")
DEFAULT_PROTOCOL = "jk-serial"
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class PackConfig:
    name: str
    url: str
    baudrate: int = DEFAULT_BAUDRATE
    #: Seconds to wait for one complete reply; ``None``: the protocol's default.
    read_timeout: Optional[float] = None
    verify_checksum: bool = True
    protocol: str = DEFAULT_PROTOCOL
    #: JK-PB DIP address 1–15; ``None`` for point-to-point protocols.
    address: Optional[int] = None
    invert_current: bool = False
    labels: Tuple[Tuple[str, str], ...] = ()
    #: Readings further apart are not integrated into the energy counters (seconds).
    energy_max_gap: float = DEFAULT_MAX_GAP
    #: Cell chemistry (``CHEMISTRIES``): the alert rules' fallback protection levels.
    chemistry: str = DEFAULT_CHEMISTRY
    #: Where the definition came from, for error messages (``jkbms.yml:12``, ``--device``).
    origin: str = field(default="", compare=False)


def parse_device_flag(text: str, position: int) -> PackConfig:
    """``[NAME=]URL`` → a pack; ``position`` (1-based) is the default name.

    A URL may itself contain ``=`` (``spy://…?file=x``), so the name is only split off when
    what precedes the first ``=`` is a valid pack name and not part of a URL.
    """
    name, sep, url = text.partition("=")
    if not sep or "/" in name or ":" in name:
        name, url = str(position), text
    if not url:
        raise ConfigError("--device %r has no device path or URL" % text)
    if not _PACK_NAME.fullmatch(name):
        raise ConfigError(
            "pack name %r in --device %r: use letters, digits, '_', '-' or '.'" % (name, text)
        )
    return PackConfig(name=name, url=url, origin="--device %s" % text)


# ----------------------------------------------------------------------------- the YAML file


class _Mapping(dict):  # type: ignore[type-arg]
    """A YAML mapping that remembers the line of itself and of each value."""

    line = 0
    #: line of each key, and of each value (they differ for nested mappings and lists)
    key_lines: Dict[Any, int]
    lines: Dict[Any, int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _Mapping:
    loader.flatten_mapping(node)
    mapping = _Mapping()
    mapping.line = node.start_mark.line + 1
    mapping.lines = {}
    mapping.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise ConfigError("line %d: %r is given twice" % (key_node.start_mark.line + 1, key))
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = value_node.start_mark.line + 1
        mapping.key_lines[key] = key_node.start_mark.line + 1
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Where:
    """Builds ``file:line: field: problem`` messages."""

    def __init__(self, path: str) -> None:
        self.path = path

    def error(self, line: int, where: str, problem: str) -> ConfigError:
        return ConfigError("%s:%d: %s: %s" % (self.path, line, where, problem))


def _expand(value: Any, environ: Mapping[str, str], fail: Any) -> Any:
    """``${VAR}`` / ``${VAR:-default}`` in a string; other values pass through."""
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: "re.Match[str]") -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise fail("environment variable %s is not set" % name)

    return _ENV_REFERENCE.sub(replace, value)


_PACK_KEYS = ("name", "url", "protocol", "address", "baud", "read_timeout", "invert_current",
              "labels", "verify_checksum", "energy_max_gap", "chemistry")
_DEFAULT_KEYS = ("protocol", "baud", "read_timeout", "invert_current", "labels",
                 "verify_checksum", "energy_max_gap", "chemistry")


def _field(raw: Any, kind: str, fail: Any) -> Any:
    """Coerce one (already expanded) value; environment values arrive as strings."""
    if kind == "str":
        if isinstance(raw, (str, int, float)) and not isinstance(raw, bool):
            return str(raw)
        raise fail("expected a string, got %r" % (raw,))
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false", "yes", "no", "1", "0"):
            return raw.lower() in ("true", "yes", "1")
        raise fail("expected true or false, got %r" % (raw,))
    if kind in ("int", "float"):
        if isinstance(raw, bool):
            raise fail("expected a number, got %r" % (raw,))
        try:
            number = int(raw) if kind == "int" else float(raw)
        except (TypeError, ValueError):
            raise fail("expected a%s number, got %r"
                       % (" whole" if kind == "int" else "", raw)) from None
        if kind == "int" and isinstance(raw, float) and raw != int(raw):
            raise fail("expected a whole number, got %r" % (raw,))
        return number
    raise AssertionError(kind)


def _pack_from(mapping: _Mapping, defaults: Mapping[str, Any], index: int, where: _Where,
               environ: Mapping[str, str]) -> PackConfig:
    label = "packs[%d]" % index

    def fail_at(key: str) -> Any:
        line = mapping.lines.get(key, mapping.line)
        return lambda problem: where.error(line, "%s.%s" % (label, key), problem)

    for key in mapping:
        if key not in _PACK_KEYS:
            raise where.error(mapping.key_lines[key], "%s.%s" % (label, key),
                              "unknown field (known: %s)" % ", ".join(_PACK_KEYS))
    values: Dict[str, Any] = {}
    for key in _PACK_KEYS:
        if key in mapping:
            values[key] = _expand(mapping[key], environ, fail_at(key))
        elif key in defaults:
            values[key] = defaults[key]
    for key in ("name", "url"):
        if key not in values or values[key] in (None, ""):
            raise where.error(mapping.line, "%s.%s" % (label, key), "required")
    name = _field(values["name"], "str", fail_at("name"))
    if not _PACK_NAME.fullmatch(name):
        raise fail_at("name")("%r: use letters, digits, '_', '-' or '.'" % name)
    url = _field(values["url"], "str", fail_at("url"))
    protocol = _field(values.get("protocol", DEFAULT_PROTOCOL), "str", fail_at("protocol"))
    if protocol not in PROTOCOLS:
        raise fail_at("protocol")("%r: choose from %s" % (protocol, ", ".join(PROTOCOLS)))
    address = values.get("address")
    if address is not None:
        address = _field(address, "int", fail_at("address"))
        if protocol == "jk-serial":
            raise fail_at("address")("the jk-serial protocol has no addresses (one BMS per port)")
        if not 1 <= address <= 15:
            raise fail_at("address")(
                "%d: JK-PB DIP addresses 1-15 answer requests (0 is the bus master)" % address)
    elif protocol == "jk-pb":
        raise where.error(mapping.line, "%s.address" % label, "required for protocol jk-pb")
    baud = _field(values.get("baud", DEFAULT_BAUDRATE), "int", fail_at("baud"))
    if baud <= 0:
        raise fail_at("baud")("must be greater than 0")
    read_timeout = values.get("read_timeout")
    if read_timeout is not None:
        read_timeout = _field(read_timeout, "float", fail_at("read_timeout"))
        if read_timeout <= 0:
            raise fail_at("read_timeout")("must be greater than 0")
    labels = _labels(values.get("labels") or {}, fail_at("labels"), environ)
    max_gap = _field(values.get("energy_max_gap", DEFAULT_MAX_GAP), "float",
                     fail_at("energy_max_gap"))
    if not MAX_GAP_RANGE[0] <= max_gap <= MAX_GAP_RANGE[1]:  # also refuses nan and inf
        raise fail_at("energy_max_gap")("%r: seconds from %g to %g" % ((max_gap,) + MAX_GAP_RANGE))
    chemistry = _field(values.get("chemistry", DEFAULT_CHEMISTRY), "str", fail_at("chemistry"))
    if chemistry not in CHEMISTRIES:
        raise fail_at("chemistry")("%r: choose from %s" % (chemistry, ", ".join(CHEMISTRIES)))
    return PackConfig(
        name=name,
        url=url,
        baudrate=baud,
        read_timeout=read_timeout,
        verify_checksum=_field(values.get("verify_checksum", True), "bool",
                               fail_at("verify_checksum")),
        protocol=protocol,
        address=address,
        invert_current=_field(values.get("invert_current", False), "bool",
                              fail_at("invert_current")),
        labels=labels,
        energy_max_gap=max_gap,
        chemistry=chemistry,
        origin="%s:%d" % (where.path, mapping.line),
    )


def _labels(raw: Any, fail: Any, environ: Mapping[str, str]) -> Tuple[Tuple[str, str], ...]:
    if not isinstance(raw, dict):
        raise fail("expected a mapping of label names to values")
    labels = []
    for name, value in raw.items():
        if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
            raise fail("%r is not a valid Prometheus label name" % (name,))
        if name in RESERVED_LABELS:
            raise fail("label %r is used by the exporter or Prometheus itself" % name)
        labels.append((name, _field(_expand(value, environ, fail), "str", fail)))
    return tuple(sorted(labels))


def parse_config(text: str, path: str = "<config>",
                 environ: Optional[Mapping[str, str]] = None) -> List[PackConfig]:
    """The packs a configuration file defines (validated; see the module doc)."""
    environ = os.environ if environ is None else environ
    where = _Where(path)
    try:
        document = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as error:
        raise ConfigError("%s:%s" % (path, str(error)[len("line "):])) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problem = getattr(error, "problem", None) or str(error)
        raise where.error(line, "YAML", problem) from None
    if not isinstance(document, _Mapping):
        raise where.error(1, "document", "expected a mapping with a 'packs' list")
    for key in document:
        if key not in ("packs", "defaults"):
            raise where.error(document.key_lines[key], key, "unknown field (known: packs, defaults)")
    defaults = document.get("defaults") or _Mapping()
    if not isinstance(defaults, _Mapping):
        raise where.error(document.lines.get("defaults", 1), "defaults", "expected a mapping")
    for key in defaults:
        if key not in _DEFAULT_KEYS:
            raise where.error(defaults.key_lines[key], "defaults.%s" % key,
                              "unknown field (known: %s)" % ", ".join(_DEFAULT_KEYS))
    expanded_defaults = {
        key: _expand(value, environ,
                     lambda problem, key=key: where.error(defaults.lines[key],
                                                          "defaults.%s" % key, problem))
        for key, value in defaults.items()
    }
    packs = document.get("packs")
    if not isinstance(packs, list) or not packs:
        raise where.error(document.lines.get("packs", document.line), "packs",
                          "expected a non-empty list of packs")
    configs = []
    for index, item in enumerate(packs):
        if not isinstance(item, _Mapping):
            raise where.error(document.lines["packs"], "packs[%d]" % index,
                              "expected a mapping with name and url")
        configs.append(_pack_from(item, expanded_defaults, index, where, environ))
    check_configs(configs)
    return configs


def load_config_file(path: str) -> List[PackConfig]:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise ConfigError("cannot read config file %s: %s" % (path, error.strerror)) from None
    return parse_config(text, path)


# ----------------------------------------------------------------------------- building


def _shares_bus(config: PackConfig) -> bool:
    return config.protocol in ("jk-pb", "auto") and config.address is not None


def check_configs(configs: Sequence[PackConfig]) -> None:
    """Rules across packs: unique names; packs on one URL share a baud rate; a point-to-point
    protocol owns its port; bus addresses are unique."""
    seen: Dict[str, PackConfig] = {}
    by_url: Dict[str, List[PackConfig]] = {}
    for config in configs:
        if config.name in seen:
            raise ConfigError(
                "pack name %r is used twice (%s and %s)"
                % (config.name, seen[config.name].origin or seen[config.name].url,
                   config.origin or config.url)
            )
        seen[config.name] = config
        by_url.setdefault(config.url, []).append(config)
        if config.protocol == "jk-pb" and config.address is None:
            raise ConfigError("pack %s (%s): protocol jk-pb needs an address (DIP 1-15)"
                              % (config.name, config.origin or config.url))
        if is_ble_url(config.url) and (config.protocol == "jk-pb" or config.address is not None):
            raise ConfigError("pack %s (%s): a ble:// pack takes no protocol jk-pb and no address"
                              % (config.name, config.origin or config.url))
    for url, group in by_url.items():
        if len(group) < 2:
            continue
        names = ", ".join(c.name for c in group)
        if is_ble_url(url):
            raise ConfigError("packs %s share %s: a BMS takes one Bluetooth connection, so "
                              "give it one pack" % (names, url))
        if len({c.baudrate for c in group}) > 1:
            raise ConfigError("packs %s on %s ask for different baud rates" % (names, url))
        if not all(_shares_bus(c) for c in group):
            raise ConfigError(
                "packs %s share %s: only jk-pb packs (addresses 1-15) can share a bus; "
                "a jk-serial BMS needs a port of its own" % (names, url))
        addresses = [c.address for c in group]
        if len(set(addresses)) != len(addresses):
            raise ConfigError("packs %s on %s have the same address" % (names, url))


def build_ble_pack(name: str, url: str, read_timeout: float, invert_current: bool,
                   labels: Any = (), **options: Any) -> Pack:
    """:func:`links.ble.build_ble_pack <jkbms_exporter.links.ble.build_ble_pack>`, plus the
    ``ble+sim://`` feature: a simulated board on the fake radio of :mod:`.sim.ble_radio`.
    The links never import the simulators; this composition root does."""
    if url.lower().startswith(ble_link.SIM_SCHEME):
        from .sim.ble_radio import simulated_backend

        try:
            options["backend"] = simulated_backend(ble_link.parse_ble_url(url))
        except ValueError as error:
            raise ConfigError("pack %s: bad BLE URL %r: %s" % (name, url, error)) from None
        options.setdefault("backoff_initial", 0.5)
        options.setdefault("backoff_max", 5.0)
    return ble_link.build_ble_pack(name, url, read_timeout, invert_current, labels, **options)


def build_packs(configs: Sequence[PackConfig]) -> List[Pack]:
    """Packs with one shared transport per URL, and one :class:`PbBus` per JK-PB bus."""
    check_configs(configs)
    transports: Dict[str, SerialTransport] = {}
    buses: Dict[str, PbBus] = {}
    packs: List[Pack] = []
    for config in configs:
        if is_ble_url(config.url):
            packs.append(build_ble_pack(config.name, config.url,
                                        config.read_timeout or DEFAULT_READ_TIMEOUT,
                                        config.invert_current, config.labels, start=False))
            packs[-1].energy_max_gap = config.energy_max_gap
            continue
        transport = transports.get(config.url)
        if transport is None:
            transport = transports[config.url] = SerialTransport(
                config.url, baudrate=config.baudrate,
                min_gap=BUS_GAP if _shares_bus(config) else DEFAULT_MIN_GAP,
            )
        serial = JkSerialProtocol(verify_checksum=config.verify_checksum)
        protocol: ReadProtocol = serial
        read_timeout = config.read_timeout or DEFAULT_READ_TIMEOUT
        if _shares_bus(config):
            bus = buses.get(config.url)
            if bus is None:
                bus = buses[config.url] = PbBus(
                    transport, verify_checksum=config.verify_checksum,
                    reply_timeout=config.read_timeout or DEFAULT_REPLY_TIMEOUT)
            pb = JkPbProtocol(bus, config.address)
            protocol = pb if config.protocol == "jk-pb" else AutoProtocol(serial, pb)
            # one reply may take read_timeout; the pack as a whole may need to listen to a
            # bus master's whole polling cycle
            read_timeout = max(read_timeout, LISTEN_WINDOW + 1.0)
        elif config.protocol == "auto":
            protocol = AutoProtocol(serial, None)
        packs.append(
            Pack(
                name=config.name,
                transport=transport,
                protocol=protocol,
                read_timeout=read_timeout,
                invert_current=config.invert_current,
                labels=config.labels,
                energy_max_gap=config.energy_max_gap,
            )
        )
    for pack, config in zip(packs, configs):  # one pack per configuration, in order
        pack.chemistry = config.chemistry
    # BLE links start connecting only once every pack was built: a ConfigError half-way
    # leaves no radio threads behind
    for pack in packs:
        start = getattr(pack.transport, "start", None)
        if start is not None:
            start()
    return packs
