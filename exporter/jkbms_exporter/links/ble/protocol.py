"""Readings from the frames a :class:`~.link.BleTransport` keeps, and the
:class:`~jkbms_exporter.pack.Pack` of a ``ble://`` URL (the exporter's path: Pack → collector).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Mapping, Optional, Tuple

from ...protocols import jk02
from ...errors import ConfigError, FrameError
from ...pack import Pack
from ...reading import READING_AGE_KEY, Reading
from .url import DEFAULT_MAX_AGE, parse_ble_url, SIM_SCHEME
from .backend import BleakMissingError, BleBackend, default_backend, missing_bleak
from .link import BleFrames, BleTransport

log = logging.getLogger(__package__)  # one logger for the whole BLE link


#: Key of ``Reading.extra``: seconds between the BMS sending the cell-info frame and the read.
AGE_KEY = READING_AGE_KEY

def _config_error(message: str) -> Exception:
    return ConfigError(message)


# ----------------------------------------------------------------------------- protocol


class Jk02BleProtocol:
    """Readings from the frames a :class:`BleTransport` keeps (no request per scrape).

    The generation comes from ``generation`` (the URL) or the device-info frame; when a
    BMS sent no device-info frame, :func:`jk02.guess_generation` decides (logged once).
    """

    name = jk02.PROTOCOL_NAME

    def __init__(self, generation: Optional[str] = None, max_age: float = DEFAULT_MAX_AGE) -> None:
        if generation is not None:
            generation = jk02.select_generation(generation)
        if not max_age > 0:
            raise ValueError("max_age must be more than 0 seconds")
        self.generation = generation
        self.max_age = max_age
        self._guess_logged = False

    def read(self, transport: BleTransport, deadline: float) -> Tuple[Reading, bytes]:
        frames = transport.wait_for_cell_info(self.max_age, deadline)
        reading = self._decode(transport, frames)
        extra = dict(reading.extra)
        extra[AGE_KEY] = round(frames.cell_info_age, 3)
        return dataclasses.replace(reading, extra=extra), frames.cell_info

    def subscribe(self, transport: BleTransport, on_record: Callable[[float, Reading], None],
                  on_break: Callable[[float], None]) -> None:
        """Every cell-info record the link receives, decoded, to ``on_record`` (the energy
        counters integrate them all, not only the scraped ones)."""

        def on_cell_info(frames: BleFrames, at: float) -> None:
            try:
                reading = self._decode(transport, frames)
            except FrameError as error:
                log.debug("BLE %s: record not decoded: %s", transport.url, error)
                on_break(at)
                return
            on_record(at, reading)

        transport.subscribe(on_cell_info, on_break)

    def _decode(self, transport: BleTransport, frames: BleFrames) -> Reading:
        if self.generation is not None or frames.device_info is not None:
            generation = jk02.select_generation(self.generation, frames.device_info)
        else:
            generation = jk02.guess_generation(frames.cell_info)
            if not self._guess_logged:
                self._guess_logged = True
                log.warning("BLE %s sent no device-info frame: guessing generation %s from "
                            "the cell-info frame; add ?generation=… to the URL to be sure",
                            transport.url, generation)
        return jk02.reading_from_frames(
            jk02.decode_frame(frames.cell_info, generation),
            None if frames.settings is None else jk02.decode_frame(frames.settings, generation),
            None if frames.device_info is None else jk02.decode_frame(frames.device_info,
                                                                      generation),
        )


def reading_age(reading: Reading) -> Optional[float]:
    """Seconds the data of a BLE reading was old when read; ``None`` for other protocols."""
    value = reading.extra.get(AGE_KEY)
    return None if value is None else float(value)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- packs


def _labels(labels: Any) -> Tuple[Tuple[str, str], ...]:
    if not labels:
        return ()
    if isinstance(labels, Mapping):
        return tuple(sorted((str(k), str(v)) for k, v in labels.items()))
    return tuple((str(k), str(v)) for k, v in labels)


def build_ble_pack(name: str, url: str, read_timeout: float, invert_current: bool,
                   labels: Any = (), *, backend: Optional[BleBackend] = None,
                   start: bool = True, **transport_options: Any) -> Pack:
    """A :class:`Pack` reading a BMS over BLE (``ble://``), or over ``backend``.

    Raises :class:`~jkbms_exporter.errors.ConfigError` (one line) on a bad URL or when
    bleak is missing. ``start`` begins connecting at once (the first scrape then has a
    chance); ``transport_options`` go to :class:`BleTransport`. A ``ble+sim://`` URL needs
    the simulated radio as ``backend``: the links never import the simulators, the
    composition root does (:func:`jkbms_exporter.config.build_ble_pack`).
    """
    try:
        target = parse_ble_url(url)
    except ValueError as error:
        raise _config_error("pack %s: bad BLE URL %r: %s" % (name, url, error)) from None
    if target.simulated and backend is None:
        raise _config_error("pack %s: %s URLs are served by the exporter's simulator "
                            "(jkbms_exporter.config.build_ble_pack)" % (name, SIM_SCHEME))
    if backend is None:
        try:
            backend = default_backend()
        except BleakMissingError:
            raise _config_error("pack %s (%s): %s" % (name, url, missing_bleak())) from None
    transport = BleTransport(target, backend, **transport_options)
    protocol = Jk02BleProtocol(None if target.simulated else target.generation, target.max_age)
    pack = Pack(name=name, transport=transport,  # type: ignore[arg-type]
                protocol=protocol, read_timeout=read_timeout,
                invert_current=invert_current, labels=_labels(labels))
    if start:
        transport.start()
    return pack
