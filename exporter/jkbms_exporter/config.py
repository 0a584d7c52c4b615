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
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from . import ranges
from .defaults import DEFAULT_MAX_GAP, DEFAULT_PROTOCOL, PROTOCOLS
from .errors import ConfigError
from .links import ble as ble_link
from .links.ble import is_ble_url
from .pack import (CHEMISTRIES, DEFAULT_CHEMISTRY, DEFAULT_READ_TIMEOUT, AutoProtocol,
                   JkSerialProtocol, Pack, ReadProtocol)
from .links.serial import DEFAULT_BAUDRATE, DEFAULT_MIN_GAP, SerialTransport, check_url

if TYPE_CHECKING:  # PyYAML is loaded only to read a config file: `read` starts faster
    from . import yamlfile

#: Pack names become the ``pack`` label: keep them to what reads well in PromQL and URLs.
_PACK_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
#: Label names the exporter or Prometheus already uses.
RESERVED_LABELS = frozenset((
    "pack", "cell", "sensor", "reason", "mosfet", "switch", "alarm", "setting", "port",
    "protocol", "protocol_version", "model", "hardware_version", "software_version",
    "device_id", "manufacture_date", "battery_type", "serial_number", "version",
    "python_version", "chemistry", "job", "instance", "le", "quantile",
))
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


@dataclass(frozen=True)
class Field:
    """One field of a pack in the file: its kind and what values it allows."""

    #: ``str``, ``bool``, ``int``, ``float`` or ``labels``
    kind: str
    #: numbers: the allowed range (ranges.py; the README's table lists the same)
    allowed: Optional[ranges.Range] = None
    #: strings: the allowed values (empty: any)
    choices: Tuple[str, ...] = ()
    #: may also be given under ``defaults:`` for every pack
    in_defaults: bool = True
    #: the PackConfig attribute it fills (default: the field's own name)
    attribute: str = ""
    #: further check of the value: raises ValueError saying what is wrong
    check: Optional[Callable[[Any], None]] = None


#: Every field a pack may have. A new field is one row here plus its PackConfig attribute.
PACK_FIELDS: Dict[str, Field] = {
    "name": Field("str", in_defaults=False),
    "url": Field("str", in_defaults=False, check=check_url),
    "protocol": Field("str", choices=PROTOCOLS),
    "address": Field("int", ranges.PB_ADDRESS, in_defaults=False),
    "baud": Field("int", ranges.BAUD, attribute="baudrate"),
    "read_timeout": Field("float", ranges.READ_TIMEOUT),
    "invert_current": Field("bool"),
    "labels": Field("labels"),
    "verify_checksum": Field("bool"),
    "energy_max_gap": Field("float", ranges.ENERGY_MAX_GAP),
    "chemistry": Field("str", choices=CHEMISTRIES),
}
_REQUIRED = ("name", "url")


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


def _coerce(spec: Field, raw: Any, fail: Any, environ: Mapping[str, str]) -> Any:
    """One value of a field (environment values arrive as strings) → what PackConfig takes."""
    if spec.kind == "labels":
        return _labels({} if raw is None else raw, fail, environ)
    raw = _expand(raw, environ, fail)
    if raw is None or raw == "":
        expected = (spec.allowed.describe() if spec.allowed is not None else
                    "true or false" if spec.kind == "bool" else
                    "one of " + ", ".join(spec.choices) if spec.choices else "a string")
        raise fail("is empty: expected %s (or leave the field out)" % expected)
    if spec.kind == "str":
        if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
            raise fail("expected a string, got %s" % _kind(raw))
        text = str(raw)
        if spec.choices and text not in spec.choices:
            raise fail("%r: choose from %s" % (text, ", ".join(spec.choices)))
        if spec.check is not None:
            try:
                spec.check(text)
            except ValueError as error:
                raise fail(str(error)) from None
        return text
    if spec.kind == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false", "yes", "no", "1", "0"):
            return raw.lower() in ("true", "yes", "1")
        raise fail("expected true or false, got %s" % _kind(raw))
    assert spec.allowed is not None, spec
    try:
        return spec.allowed.check(raw)
    except ValueError as error:
        raise fail(str(error)) from None


def _kind(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return "a %s" % ("mapping" if isinstance(value, dict) else "list")
    return repr(value)


def _pack_from(mapping: yamlfile.Mapping, defaults: Mapping[str, Any], index: int,
               source: yamlfile.YamlFile, environ: Mapping[str, str]) -> PackConfig:
    label = "packs[%d]" % index

    def fail_at(key: str) -> Any:
        line = mapping.lines.get(key, mapping.line)
        return lambda problem: source.error(line, "%s.%s" % (label, key), problem)

    for key in mapping:
        if key not in PACK_FIELDS:
            raise source.error(mapping.key_lines[key], "%s.%s" % (label, key),
                               "unknown field (known: %s)" % ", ".join(PACK_FIELDS))
    for key in _REQUIRED:
        if key not in mapping or mapping[key] in (None, ""):
            raise source.error(mapping.lines.get(key, mapping.line), "%s.%s" % (label, key),
                               "required")
    values = dict(defaults)
    for key, raw in mapping.items():
        values[key] = _coerce(PACK_FIELDS[key], raw, fail_at(key), environ)
    # labels merge: the pack's own value wins per label name
    values["labels"] = tuple(sorted({**dict(defaults.get("labels", ())),
                                     **dict(values.get("labels", ()))}.items()))
    if not _PACK_NAME.fullmatch(values["name"]):
        raise fail_at("name")("%r: use letters, digits, '_', '-' or '.'" % values["name"])
    protocol = values.get("protocol", DEFAULT_PROTOCOL)
    if "address" in values and protocol == "jk-serial":
        raise fail_at("address")("the jk-serial protocol has no addresses (one BMS per port)")
    if "address" not in values and protocol == "jk-pb":
        raise source.error(mapping.line, "%s.address" % label, "required for protocol jk-pb")
    return PackConfig(origin="%s:%d" % (source.path, mapping.line), **{
        PACK_FIELDS[key].attribute or key: value for key, value in values.items()})


def _labels(raw: Any, fail: Any, environ: Mapping[str, str]) -> Tuple[Tuple[str, str], ...]:
    if not isinstance(raw, dict):
        raise fail("expected a mapping of label names to values")
    labels = []
    for name, value in raw.items():
        if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
            raise fail("%r is not a valid Prometheus label name" % (name,))
        if name in RESERVED_LABELS:
            raise fail("label %r is used by the exporter or Prometheus itself" % name)
        value = _expand(value, environ, fail)
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise fail("label %s: expected a string, got %s" % (name, _kind(value)))
        labels.append((name, str(value)))
    return tuple(sorted(labels))


def parse_config(text: str, path: str = "<config>",
                 environ: Optional[Mapping[str, str]] = None) -> List[PackConfig]:
    """The packs a configuration file defines (validated; see the module doc)."""
    from . import yamlfile

    environ = os.environ if environ is None else environ
    source = yamlfile.YamlFile(path)
    document = source.load(text)
    if not isinstance(document, yamlfile.Mapping):
        raise source.error(1, "document", "expected a mapping with a 'packs' list")
    for key in document:
        if key not in ("packs", "defaults"):
            raise source.error(document.key_lines[key], str(key),
                               "unknown field (known: packs, defaults)")
    defaults = document.get("defaults")
    if defaults is None:
        defaults = yamlfile.Mapping()
        defaults.lines = {}
    if not isinstance(defaults, yamlfile.Mapping):
        raise source.error(document.lines.get("defaults", 1), "defaults", "expected a mapping")
    known = [key for key, spec in PACK_FIELDS.items() if spec.in_defaults]
    coerced_defaults = {}
    for key, raw in defaults.items():
        if key not in known:
            raise source.error(defaults.key_lines[key], "defaults.%s" % key,
                               "unknown field (known: %s)" % ", ".join(known))
        fail = (lambda problem, key=key: source.error(defaults.lines[key], "defaults.%s" % key,
                                                      problem))
        coerced_defaults[key] = _coerce(PACK_FIELDS[key], raw, fail, environ)
    packs = document.get("packs")
    if not isinstance(packs, list) or not packs:
        raise source.error(document.lines.get("packs", document.line), "packs",
                           "expected a non-empty list of packs")
    configs = []
    for index, item in enumerate(packs):
        if not isinstance(item, yamlfile.Mapping):
            raise source.error(packs.lines[index], "packs[%d]" % index,
                               "expected a mapping with name and url")
        configs.append(_pack_from(item, coerced_defaults, index, source, environ))
    check_configs(configs)
    return configs


def load_config_file(path: str) -> List[PackConfig]:
    from . import yamlfile

    source = yamlfile.YamlFile(path)
    return parse_config(source.read(), path)


# ----------------------------------------------------------------------------- building


def _shares_bus(config: PackConfig) -> bool:
    return config.protocol in ("jk-pb", "auto") and config.address is not None


def check_configs(configs: Sequence[PackConfig]) -> None:
    """Rules across packs: unique names; packs on one URL share a baud rate; a point-to-point
    protocol owns its port; bus addresses are unique."""
    seen: Dict[str, PackConfig] = {}
    by_url: Dict[str, List[PackConfig]] = {}
    for config in configs:
        try:
            check_url(config.url)
        except ValueError as error:
            raise ConfigError(str(error)) from None
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


def build_packs(configs: Sequence[PackConfig],
                opened: Optional[Mapping[str, SerialTransport]] = None) -> List[Pack]:
    """Packs with one shared transport per URL, and one :class:`PbBus` per JK-PB bus.

    ``opened``: transports already made, by URL, used instead of new ones (a one-shot
    ``read`` opens its port and sends its request before it builds its pack); each must be
    what this function would make for the URL.
    """
    check_configs(configs)
    if any(_shares_bus(config) for config in configs):  # a jk-serial read never needs it
        from .links.pb_bus import BUS_GAP, DEFAULT_REPLY_TIMEOUT, LISTEN_WINDOW, JkPbProtocol, PbBus
    transports: Dict[str, SerialTransport] = dict(opened or {})
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
