"""Which packs to read, and how: parsed from ``--device`` flags into :class:`PackConfig`
rows, then built into :class:`~jkbms_exporter.pack.Pack` objects that share one transport
(one lock, one bus pacing) per URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Sequence

from .pack import DEFAULT_READ_TIMEOUT, JkSerialProtocol, Pack
from .transport import DEFAULT_BAUDRATE, SerialTransport

#: Pack names become the ``pack`` label: keep them to what reads well in PromQL and URLs.
_PACK_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


class ConfigError(ValueError):
    """A pack definition that cannot work; the message names the offending value."""


@dataclass(frozen=True)
class PackConfig:
    name: str
    url: str
    baudrate: int = DEFAULT_BAUDRATE
    read_timeout: float = DEFAULT_READ_TIMEOUT
    verify_checksum: bool = True


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
    return PackConfig(name=name, url=url)


def check_unique(configs: Sequence[PackConfig]) -> None:
    seen: Dict[str, PackConfig] = {}
    for config in configs:
        if config.name in seen:
            raise ConfigError(
                "pack name %r is used twice (%s and %s)"
                % (config.name, seen[config.name].url, config.url)
            )
        seen[config.name] = config


def build_packs(configs: Sequence[PackConfig]) -> List[Pack]:
    """Packs with one shared :class:`SerialTransport` per URL."""
    check_unique(configs)
    transports: Dict[str, SerialTransport] = {}
    packs: List[Pack] = []
    for config in configs:
        transport = transports.get(config.url)
        if transport is None:
            transport = transports[config.url] = SerialTransport(
                config.url, baudrate=config.baudrate
            )
        elif transport.baudrate != config.baudrate:
            raise ConfigError(
                "packs on %s ask for different baud rates (%d and %d)"
                % (config.url, transport.baudrate, config.baudrate)
            )
        packs.append(
            Pack(
                name=config.name,
                transport=transport,
                protocol=JkSerialProtocol(verify_checksum=config.verify_checksum),
                read_timeout=config.read_timeout,
            )
        )
    return packs
