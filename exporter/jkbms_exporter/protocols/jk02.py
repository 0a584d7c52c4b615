"""Codec for the JK02 / JK04 "55 AA EB 90" records of JK boards — no I/O here.

Spec: ``shared/protocol/jk-02-frames.md``; ground truth: ``shared/protocol/vectors/jk02.json``
(and the 55AA payloads inside ``vectors/pb-modbus.json``).

Frame: ``55 AA EB 90 | type | counter | payload … | sum8`` — 300 bytes, little-endian,
byte 299 = (sum of bytes 0…298) & 0xFF. Some BLE modules deliver 320 bytes; the checksum
stays at 299 and the tail is ignored. Frame types: 01 settings, 02 cell info, 03 device
info, 05 logbook. The frame says nothing about its layout generation (JK02_24S, JK02_32S,
JK04): that comes from the device-info frame (:func:`generation_from_device_info`) or the
configuration.

Decoding is table-driven: :data:`CELL_INFO_FIELDS`, :data:`SETTINGS_FIELDS` and
:data:`DEVICE_INFO_FIELDS` hold one row per field for each generation. A decoded frame is a
:class:`DecodedFrame` (values in base units, keyed by row name); :func:`reading_from_frames`
combines the latest cell-info, settings and device-info frames into one
:class:`~jkbms_exporter.reading.Reading`. Values with no ``Reading`` field go to
``Reading.extra`` under their row name, in the row's unit. Passcode fields are never
decoded, stored or encoded.

The encoders (:func:`encode_cell_info`, :func:`encode_settings`,
:func:`encode_device_info`, in :mod:`.jk02_encode`) build the frames a BMS in the state of a
``Reading`` would send; the JK-PB bus simulator uses them. The tables live in
:mod:`.jk02_layout`; both are re-exported here, so ``jk02.X`` names every part of the codec.
The only command frames this module builds are the three read commands (0x96, 0x97, 0xA1):
it never writes to a BMS.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple, Union

from ..errors import (
    BadStartError,
    ChecksumError,
    FrameError,
    LengthMismatchError,
    TruncatedFieldError,
)
from ..reading import NOT_REPORTED_KEY, DeviceInfo, Reading, reading_from_fields, Setting
# Re-exported: the tables, quirks and encoders are part of this codec's interface.
from .jk02_quirks import (  # noqa: F401
    cell_count,
    cell_number,
    decode_text,
    format_manufacture_date,
    parse_manufacture_date,
    signed_power,
    status_bitmask,
    temperature_sensors,
)
from .jk02_encode import (  # noqa: F401
    cell_info_values, device_info_values, encode_cell_info, encode_device_info,
    encode_frame, encode_settings, settings_values,
)
from .jk02_fields import decode_fields, read_field as _read_field  # noqa: F401
from .jk02_layout import (  # noqa: F401
    ALARM_BITS, ALARM_WORD_BITS, CellMaskError, CELL_INFO_FIELDS, CELL_SLOTS, checksum,
    CHECKSUM_OFFSET, _check_generation, COMMAND_CELL_INFO, COMMAND_DEVICE_INFO,
    COMMAND_HEADER, COMMAND_LOGBOOK, COMMAND_SIZE, CONTROL_BITS, COUNTER_OFFSET,
    DEVICE_INFO_FIELDS, Field, fields_for, FRAME_CELL_INFO, FRAME_DEVICE_INFO,
    FRAME_LOGBOOK, FRAME_SETTINGS, FRAME_SIZE, FRAME_TYPE_NAMES, GENERATIONS, HEADER,
    JK02_24S, JK02_32S, JK04, LOGBOOK_COUNT_OFFSET, LOGBOOK_ENTRIES_OFFSET,
    LOGBOOK_ENTRY_SIZE, LOGBOOK_MAX_ENTRIES, MAH, MissingFrameError, PADDED_FRAME_SIZE,
    PROTOCOL_NAME, READ_COMMANDS, SETTINGS_FIELDS, STATUS_BALANCING, STATUS_CHARGE_MOSFET,
    STATUS_DISCHARGE_MOSFET, SWITCH_FIELDS, TEMPERATURE_SENSORS, TYPE_OFFSET,
    UnknownFrameTypeError, UnknownGenerationError,
)


# --------------------------------------------------------------------------- envelope


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded 55AA frame: values in base units keyed by table row name.

    Passcode rows are never decoded, so they are never here.
    """

    frame_type: int
    counter: int
    generation: str
    values: Mapping[str, object]

    @property
    def type_name(self) -> str:
        return FRAME_TYPE_NAMES.get(self.frame_type, "0x%02X" % self.frame_type)


def check_frame(frame: bytes, verify_checksum: bool = True) -> bytes:
    """Validate header, size and checksum; return the 300 meaningful bytes (spec §2)."""
    frame = bytes(frame)
    if len(frame) < len(HEADER) or frame[: len(HEADER)] != HEADER:
        raise BadStartError("frame starts with %s, expected 55 AA EB 90"
                            % frame[: len(HEADER)].hex(" ").upper(), 0)
    if not FRAME_SIZE <= len(frame) <= PADDED_FRAME_SIZE:
        raise LengthMismatchError(
            "55AA frame is %d bytes, expected %d (or up to %d padded)"
            % (len(frame), FRAME_SIZE, PADDED_FRAME_SIZE)
        )
    frame = frame[:FRAME_SIZE]
    if verify_checksum and checksum(frame) != frame[CHECKSUM_OFFSET]:
        raise ChecksumError(expected=checksum(frame), received=frame[CHECKSUM_OFFSET])
    return frame


def frame_type_of(frame: bytes) -> int:
    """Byte 4 of a frame (no validation beyond its presence)."""
    if len(frame) <= TYPE_OFFSET:
        raise TruncatedFieldError("frame too short to hold a frame type", len(frame))
    return frame[TYPE_OFFSET]


def _decode_logbook(frame: bytes) -> Dict[str, object]:
    """Spec §8: u32 entry count at 6, then ≤ 50 entries of (u32 timestamp s, u8 event code)
    from offset 11 (vector logbook_jk02_32s: 4 entries, codes 0x01 boot … 0x1C)."""
    count = int.from_bytes(frame[LOGBOOK_COUNT_OFFSET : LOGBOOK_COUNT_OFFSET + 4], "little")
    entries = []
    for index in range(min(count, LOGBOOK_MAX_ENTRIES)):
        start = LOGBOOK_ENTRIES_OFFSET + index * LOGBOOK_ENTRY_SIZE
        entries.append((int.from_bytes(frame[start : start + 4], "little"), frame[start + 4]))
    return {"log_count": count, "log_entries": tuple(entries)}


def decode_frame(frame: bytes, generation: str, verify_checksum: bool = True) -> DecodedFrame:
    """Decode any 55AA frame with the tables of ``generation``."""
    _check_generation(generation)
    frame = check_frame(frame, verify_checksum)
    frame_type = frame[TYPE_OFFSET]
    if frame_type == FRAME_LOGBOOK:
        values = _decode_logbook(frame)
    else:
        values = decode_fields(frame, fields_for(frame_type, generation))
    return DecodedFrame(frame_type, frame[COUNTER_OFFSET], generation, values)


# --------------------------------------------------------------------------- generation


def _major(version: str) -> Optional[int]:
    match = re.match(r"\s*[Hh]?(\d+)", version)
    return int(match.group(1)) if match else None


def generation_from_versions(model: str, hardware: str, software: str) -> str:
    """Layout generation from device-info strings (spec §1 and README's hardware table).

    * JK-PB models are all JK02_32S.
    * A three-part software version (``3.3.0``, ``8.0.3M``) is JK04: the spec's "hardware
      ≤ 3.0" rule misses the JK-B5A24S hw 8.X sw 8.0.3M that the README and vector
      settings_jk04_b5a24s list as JK04, while every JK02 capture has two parts (10.07 …).
    * hardware ≤ 3 → JK04, 6–10 → JK02_24S, ≥ 11 → JK02_32S.
    """
    if re.match(r"JK[-_]?PB", model.upper()):
        return JK02_32S
    if re.fullmatch(r"\d+\.\d+\.\d+\w*", software.strip()):
        return JK04
    major = _major(hardware)
    if major is None:
        raise UnknownGenerationError("cannot tell the generation from hardware version %r" % hardware)
    if major <= 3:
        return JK04
    if 6 <= major <= 10:
        return JK02_24S
    if major >= 11:
        return JK02_32S
    raise UnknownGenerationError(
        "hardware version %r is in no known generation; configure it explicitly" % hardware
    )


def generation_from_device_info(device_info: Union[bytes, DecodedFrame],
                                verify_checksum: bool = True) -> str:
    """Generation of the board that sent this device-info frame (type 03, same layout in
    every generation)."""
    if not isinstance(device_info, DecodedFrame):
        device_info = decode_frame(device_info, JK02_24S, verify_checksum)
    if device_info.frame_type != FRAME_DEVICE_INFO:
        raise FrameError("frame type 0x%02X is not a device-info frame" % device_info.frame_type,
                         TYPE_OFFSET)
    values = device_info.values
    return generation_from_versions(
        str(values["model"]), str(values["hardware_version"]), str(values["software_version"])
    )


def select_generation(configured: Optional[str] = None,
                      device_info: Union[bytes, DecodedFrame, None] = None) -> str:
    """The configured generation if any, else the one the device-info frame implies."""
    if configured:
        key = configured.upper()
        if key not in GENERATIONS:
            raise ValueError("unknown generation %r (one of %s)" % (configured, ", ".join(GENERATIONS)))
        return key
    if device_info is None:
        raise UnknownGenerationError("no generation configured and no device-info frame yet")
    return generation_from_device_info(device_info)


def guess_generation(cell_info: bytes) -> str:
    """Heuristic for a cell-info frame alone — prefer the device-info frame.

    JK04 sends float32 cells: byte 9 is the exponent byte of cell 1 (0x40 for 2–4 V),
    impossible as the high byte of cell 2 in millivolts. Otherwise byte 287 is non-zero on
    32S boards (dbus-serialbattery; 0 on cell_info_jk02_24s_v10, 254 on all 32S captures).
    ESPHome dropped auto-detection as unreliable (spec §1).
    """
    frame = check_frame(cell_info, verify_checksum=False)
    if frame[TYPE_OFFSET] != FRAME_CELL_INFO:
        raise FrameError("not a cell-info frame", TYPE_OFFSET)
    if frame[9] in (0x3F, 0x40):
        return JK04
    return JK02_32S if frame[287] else JK02_24S


# --------------------------------------------------------------------------- frames → Reading


def _alarms(bitmask: int, generation: str) -> Dict[str, bool]:
    return {name: bool(bitmask >> bit & 1)
            for bit, name in enumerate(ALARM_BITS[: ALARM_WORD_BITS[generation]])}


_CELL_INFO_IN_READING = frozenset((
    "cell_voltages", "cell_resistances", "pack_voltage", "current", "alarm_bitmask",
    "balance_current", "state_of_charge", "remaining_capacity", "nominal_capacity",
    "charge_cycles", "cycle_capacity", "state_of_health", "runtime", "charge_mosfet",
    "discharge_mosfet", "mosfet_temperature", "battery1_temperature", "battery2_temperature",
    "battery3_temperature", "battery4_temperature",
))
#: JK04 frames have no such field; the Reading holds a placeholder (NaN, 0, False) and
#: ``extra["not_reported"]`` lists them.
_JK04_NOT_REPORTED = (
    "current_amperes", "state_of_charge_ratio", "charge_cycles", "cycle_capacity_coulombs",
    "charge_mosfet_on", "discharge_mosfet_on", "alarm_bitmask", "temperatures_celsius",
)


#: Rows a cell-info frame must provide for a Reading (FC03 blocks may cover less).
_REQUIRED_CELL_INFO = {
    generation: tuple(
        row.name for row in CELL_INFO_FIELDS[generation]
        if row.name in _CELL_INFO_IN_READING | {"enabled_cells_bitmask", "balancer_action",
                                                "power_magnitude"}
        and not row.name.startswith(("battery3", "battery4"))
    )
    for generation in GENERATIONS
}


def _require(frame: Optional[DecodedFrame], frame_type: int, what: str) -> None:
    if frame is not None and frame.frame_type != frame_type:
        raise FrameError("%s argument is a %s frame" % (what, frame.type_name))


def reading_from_frames(cell_info: DecodedFrame, settings: Optional[DecodedFrame] = None,
                        device_info: Optional[DecodedFrame] = None,
                        protocol: str = PROTOCOL_NAME) -> Reading:
    """Combine the latest cell-info frame with the latest settings and device-info frames.

    Settings and switches come only from a settings frame, identification only from a
    device-info frame; without them those parts are empty.
    """
    _require(cell_info, FRAME_CELL_INFO, "cell_info")
    _require(settings, FRAME_SETTINGS, "settings")
    _require(device_info, FRAME_DEVICE_INFO, "device_info")
    generation = cell_info.generation
    values = cell_info.values
    missing = [name for name in _REQUIRED_CELL_INFO[generation] if name not in values]
    if missing:
        raise FrameError("cell-info values lack %s" % ", ".join(missing))
    count = cell_count(int(values["enabled_cells_bitmask"]), CELL_SLOTS[generation])  # type: ignore[arg-type]
    cells = tuple(float(v) for v in values["cell_voltages"][:count])  # type: ignore[index]
    resistances = tuple(float(v) for v in values["cell_resistances"][:count])  # type: ignore[index]
    balancer_action = int(values["balancer_action"])  # type: ignore[arg-type]
    balancing = balancer_action != 0
    extra: Dict[str, object] = {"generation": generation, "frame_counter": cell_info.counter}
    extra.update((k, v) for k, v in values.items() if k not in _CELL_INFO_IN_READING)
    for index_row, key in (("highest_cell_index", "highest_cell"), ("lowest_cell_index", "lowest_cell")):
        if index_row in extra:
            extra[key] = cell_number(int(extra.pop(index_row)))  # type: ignore[arg-type]

    if generation == JK04:
        # spec §7: no pack voltage or current field — sum the cells
        pack_voltage = round(sum(cells), 6)
        current = math.nan
        soc = math.nan
        cycles, cycle_capacity = 0, math.nan
        charge_on = discharge_on = False
        alarm_bits, alarms = 0, {}
        temperatures: Dict[str, float] = {}
        runtime: Optional[float] = float(values["runtime"])  # type: ignore[arg-type]
        nominal = remaining = soh = None
        extra[NOT_REPORTED_KEY] = _JK04_NOT_REPORTED
    else:
        pack_voltage = float(values["pack_voltage"])  # type: ignore[arg-type]
        current = float(values["current"]) + 0.0  # type: ignore[arg-type]
        soc = float(values["state_of_charge"])  # type: ignore[arg-type]
        cycles = int(values["charge_cycles"])  # type: ignore[arg-type]
        cycle_capacity = float(values["cycle_capacity"])  # type: ignore[arg-type]
        charge_on = bool(values["charge_mosfet"])
        discharge_on = bool(values["discharge_mosfet"])
        alarm_bits = int(values["alarm_bitmask"])  # type: ignore[arg-type]
        alarms = _alarms(alarm_bits, generation)
        temperatures = temperature_sensors(values)
        runtime = float(values["runtime"])  # type: ignore[arg-type]
        nominal = float(values["nominal_capacity"])  # type: ignore[arg-type]
        remaining = float(values["remaining_capacity"])  # type: ignore[arg-type]
        soh = float(values["state_of_health"])  # type: ignore[arg-type]
        extra["power"] = signed_power(float(extra.pop("power_magnitude")), current)  # type: ignore[arg-type]

    settings_list: Tuple[Setting, ...] = ()
    switches: Dict[str, bool] = {}
    if settings is not None:
        rows = fields_for(FRAME_SETTINGS, settings.generation)
        svalues = settings.values
        settings_list = tuple(
            Setting(row.name, row.unit, float(svalues[row.name]))  # type: ignore[arg-type]
            for row in rows if row.setting and row.name in svalues
        )
        setting_names = {row.name for row in rows if row.setting}
        for row_name, switch in SWITCH_FIELDS:
            if row_name in svalues:
                switches[switch] = bool(svalues[row_name])
        if "control_bitmask" in svalues:
            control = int(svalues["control_bitmask"])  # type: ignore[arg-type]
            for bit, name in enumerate(CONTROL_BITS):
                switches[name] = bool(control >> bit & 1)
        switch_rows = {name for name, _ in SWITCH_FIELDS}
        extra.update((k, v) for k, v in svalues.items()
                     if k not in setting_names and k not in switch_rows)

    device = DeviceInfo(protocol=protocol, protocol_version=generation)
    if device_info is not None:
        dvalues = device_info.values
        device = DeviceInfo(
            protocol=protocol,
            protocol_version=generation,
            model=str(dvalues.get("model", "")),
            hardware_version=str(dvalues.get("hardware_version", "")),
            software_version=str(dvalues.get("software_version", "")),
            device_id=str(dvalues.get("device_name", "")),
            manufacture_date=format_manufacture_date(str(dvalues.get("manufacture_date", ""))),
            serial_number=str(dvalues.get("serial_number", "")),
        )
        in_device = {"model", "hardware_version", "software_version", "device_name",
                     "manufacture_date", "serial_number"}
        extra.update((k, v) for k, v in dvalues.items() if k not in in_device)

    return reading_from_fields(
        cell_voltages_volts=cells,
        pack_voltage_volts=pack_voltage,
        current_amperes=current,
        state_of_charge_ratio=soc,
        temperatures_celsius=temperatures,
        charge_cycles=cycles,
        cycle_capacity_coulombs=cycle_capacity,
        runtime_seconds=runtime,
        nominal_capacity_coulombs=nominal,
        actual_capacity_coulombs=None,
        charge_mosfet_on=charge_on,
        discharge_mosfet_on=discharge_on,
        balancing=balancing,
        switches_enabled=switches,
        alarm_bitmask=alarm_bits,
        alarms=alarms,
        status_bitmask=status_bitmask(charge_on, discharge_on, balancing),
        settings=settings_list,
        device=device,
        extra=extra,
        cell_resistances_ohms=resistances,
        balance_current_amperes=float(values["balance_current"]) + 0.0,  # type: ignore[arg-type]
        remaining_capacity_coulombs=remaining,
        state_of_health_ratio=soh,
    )


def decode_reading(cell_info: bytes, generation: str, verify_checksum: bool = True,
                   settings: Optional[bytes] = None, device_info: Optional[bytes] = None) -> Reading:
    """Decode raw frames (a cell-info frame and optionally the others) into a Reading."""
    return reading_from_frames(
        decode_frame(cell_info, generation, verify_checksum),
        None if settings is None else decode_frame(settings, generation, verify_checksum),
        None if device_info is None else decode_frame(device_info, generation, verify_checksum),
    )


@dataclass(frozen=True)
class LatestFrames:
    """The latest decoded frame of each kind from one BMS; :meth:`with_frame` returns the
    updated copy, :meth:`reading` the combined Reading."""

    cell_info: Optional[DecodedFrame] = None
    settings: Optional[DecodedFrame] = None
    device_info: Optional[DecodedFrame] = None

    def with_frame(self, frame: DecodedFrame) -> "LatestFrames":
        if frame.frame_type == FRAME_CELL_INFO:
            return LatestFrames(frame, self.settings, self.device_info)
        if frame.frame_type == FRAME_SETTINGS:
            return LatestFrames(self.cell_info, frame, self.device_info)
        if frame.frame_type == FRAME_DEVICE_INFO:
            return LatestFrames(self.cell_info, self.settings, frame)
        return self  # logbook frames are not part of a reading

    def reading(self, protocol: str = PROTOCOL_NAME) -> Reading:
        if self.cell_info is None:
            raise MissingFrameError("no cell-info frame received yet")
        return reading_from_frames(self.cell_info, self.settings, self.device_info, protocol)


# --------------------------------------------------------------------------- stream assembly


@dataclass(frozen=True)
class AssemblerStats:
    frames: int = 0
    #: Bytes thrown away that were neither a frame nor padding (stray bytes, broken frames).
    discarded_bytes: int = 0
    #: Up to 20 bytes right after a frame (320-byte BLE frames, spec §2).
    padding_bytes: int = 0
    checksum_errors: int = 0


class FrameAssembler:
    """Incremental framer: feed byte chunks, get whole validated 300-byte frames.

    Bytes before a header are discarded; a header whose 300 bytes fail the checksum loses
    its first byte and the search goes on (a later header inside it may be the real frame).
    With ``restart_on_header`` (BLE: "start a new buffer whenever a notification begins
    with the header", spec §2) a chunk that starts with the header drops a half-received
    frame at once instead of after 300 bytes.
    """

    def __init__(self, restart_on_header: bool = False) -> None:
        self._buffer = bytearray()
        self._restart = restart_on_header
        self._frames = 0
        self._discarded = 0
        self._padding = 0
        self._checksum_errors = 0
        self._pad_allowance = 0

    @property
    def stats(self) -> AssemblerStats:
        return AssemblerStats(self._frames, self._discarded, self._padding, self._checksum_errors)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def _drop(self, count: int) -> None:
        padding = min(count, self._pad_allowance)
        self._pad_allowance -= padding
        self._padding += padding
        self._discarded += count - padding
        del self._buffer[:count]

    def feed(self, chunk: bytes) -> List[bytes]:
        if self._restart and bytes(chunk[: len(HEADER)]) == HEADER and self._buffer:
            self._drop(len(self._buffer))
        self._buffer += chunk
        frames: List[bytes] = []
        while True:
            start = self._buffer.find(HEADER)
            if start < 0:
                keep = 0
                for size in range(len(HEADER) - 1, 0, -1):
                    if self._buffer.endswith(HEADER[:size]):
                        keep = size
                        break
                self._drop(len(self._buffer) - keep)
                return frames
            if start:
                self._drop(start)
            self._pad_allowance = 0
            if len(self._buffer) < FRAME_SIZE:
                return frames
            frame = bytes(self._buffer[:FRAME_SIZE])
            if checksum(frame) == frame[CHECKSUM_OFFSET]:
                frames.append(frame)
                self._frames += 1
                del self._buffer[:FRAME_SIZE]
                self._pad_allowance = PADDED_FRAME_SIZE - FRAME_SIZE
            else:
                self._checksum_errors += 1
                self._drop(1)

    def flush(self) -> None:
        """Forget a partial frame (e.g. after a link drop); its bytes count as discarded."""
        self._drop(len(self._buffer))


# --------------------------------------------------------------------------- BLE commands


def command_frame(command: int) -> bytes:
    """One of the three 20-byte read commands (spec §2); nothing else can be built here."""
    if command not in READ_COMMANDS:
        raise ValueError("0x%02X is not a read command (0x96, 0x97, 0xA1)" % command)
    body = bytearray(COMMAND_SIZE)
    body[:4] = COMMAND_HEADER
    body[4] = command
    body[COMMAND_SIZE - 1] = sum(body[: COMMAND_SIZE - 1]) & 0xFF
    return bytes(body)


def is_read_only_command(frame: bytes) -> bool:
    """True only for the exact bytes :func:`command_frame` builds (BLE register writes use
    the same shape with the register as command byte)."""
    return any(bytes(frame) == command_frame(command) for command in READ_COMMANDS)
