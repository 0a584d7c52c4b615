"""Simulated JK-PB packs daisy-chained on one RS-485 bus (Modbus RTU + the "55 AA" trigger
protocol, spec ``shared/protocol/jk-pb-modbus.md``), each a :class:`~.bms.SimulatedBms` at its
DIP address; optionally a DIP-0 master that owns the bus.
"""

from __future__ import annotations

from collections import deque
from typing import Deque, Dict, List, Optional, Tuple

from ..protocols import jk02, jk_pb
from ..errors import FrameError
from ..reading import DeviceInfo
from .bms import KEEP_REQUESTS, SimulatedBms


def jk_pb_device(address: int) -> DeviceInfo:
    """The identity of a simulated JK-PB pack at DIP ``address``."""
    return DeviceInfo(
        protocol=jk_pb.PROTOCOL_NAME,
        model="JK_PB2A16S20P",
        hardware_version="19A",
        software_version="19.09",
        device_id="SimPB%02d" % address,
        manufacture_date="2025-03",
        serial_number="5100%06d" % (424242 + address),
    )


def locate_modbus_request(buffer: bytes) -> Tuple[int, Optional[int]]:
    """Where the next CRC-valid FC 0x03 (8 bytes) or FC 0x10 trigger-sized (11 bytes) Modbus
    request starts in ``buffer``, like a slave's receiver hunting for its frames."""
    sizes = {jk_pb.FUNCTION_READ_HOLDING: jk_pb.READ_REQUEST_SIZE,
             jk_pb.FUNCTION_WRITE_MULTIPLE: jk_pb.TRIGGER_REQUEST_SIZE}
    for start in range(len(buffer)):
        if start + 1 >= len(buffer):
            return start, None
        size = sizes.get(buffer[start + 1])
        if size is None:
            continue
        if len(buffer) - start < size:
            return start, None
        if jk_pb.crc_ok(buffer[start : start + size]):
            return start, size
    return len(buffer), None


class PbBusBms:
    """JK-PB packs daisy-chained on one RS-485 bus, each at its DIP address.

    They answer FC 0x10 triggers with their 55AA frame plus acknowledgement and FC 0x03
    block reads, as in the captures; addresses with no pack stay silent. With ``master``,
    a pack at DIP 0 owns the bus: it answers nobody and :meth:`master_traffic` produces
    what it puts on the wire (its triggers, the packs' replies, its own broadcasts).
    """

    locate = staticmethod(locate_modbus_request)

    def __init__(self, packs: Dict[int, SimulatedBms], padded: bool = False,
                 master: bool = False, answer_fc03: bool = True,
                 answer_triggers: bool = True) -> None:
        for address in packs:
            if not jk_pb.MIN_SLAVE_ADDRESS <= address <= jk_pb.MAX_SLAVE_ADDRESS:
                raise ValueError("DIP address %d: packs answer at 1-15" % address)
        self.packs = dict(packs)
        self.padded = padded
        self.master = master
        self.answer_fc03 = answer_fc03
        self.answer_triggers = answer_triggers
        self.requests: Deque[jk_pb.ModbusRequest] = deque(maxlen=KEEP_REQUESTS)
        self._counter = 0
        self.master_bms = SimulatedBms(cells=16, seed=0, device=jk_pb_device(0))

    def _frame(self, bms: SimulatedBms, frame_type: int) -> bytes:
        self._counter = (self._counter + 1) & 0xFF
        encode = {jk02.FRAME_CELL_INFO: jk02.encode_cell_info,
                  jk02.FRAME_SETTINGS: jk02.encode_settings,
                  jk02.FRAME_DEVICE_INFO: jk02.encode_device_info}[frame_type]
        return encode(bms.reading(), jk_pb.GENERATION, self._counter)

    def handle(self, frame: bytes) -> Optional[bytes]:
        try:
            request = jk_pb.parse_request(frame)
        except FrameError:
            return None
        self.requests.append(request)
        bms = self.packs.get(request.address)
        if bms is None or self.master:
            return None  # absent, or the master owns the bus and the slaves answer only it
        if request.trigger_frame_type is not None:
            if not self.answer_triggers:
                return None
            reply = self._frame(bms, request.trigger_frame_type)
            return jk_pb.encode_trigger_reply(request.address, reply, self.padded)
        if request.function == jk_pb.FUNCTION_READ_HOLDING and self.answer_fc03:
            for block, frame_type in jk_pb.FRAME_TYPE_BY_BLOCK.items():
                offset = request.register - block
                if 0 <= offset < 0x200:
                    _, data = jk_pb.frame_to_block(self._frame(bms, frame_type))
                    data = data.ljust(offset + 2 * request.count, b"\x00")
                    return jk_pb.encode_read_response(
                        request.address, data[offset : offset + 2 * request.count])
        return None  # a write, or a register nobody has: a real pack ignores it too

    def master_traffic(self) -> List[Tuple[bytes, float]]:
        """One polling cycle of a DIP-0 master: (bytes on the wire, pause after them)."""
        pieces: List[Tuple[bytes, float]] = []
        for address in range(1, jk_pb.MAX_SLAVE_ADDRESS + 1):
            request = jk_pb.trigger_request(address, jk02.FRAME_CELL_INFO)
            bms = self.packs.get(address)
            if bms is None:
                pieces.append((request, 0.02))  # probed, nobody answers
                continue
            pieces.append((request, 0.03))
            pieces.append((jk_pb.encode_trigger_reply(
                address, self._frame(bms, jk02.FRAME_CELL_INFO), self.padded), 0.05))
            settings = jk_pb.trigger_request(address, jk02.FRAME_SETTINGS)
            pieces.append((settings, 0.03))
            pieces.append((jk_pb.encode_trigger_reply(
                address, self._frame(bms, jk02.FRAME_SETTINGS), self.padded), 0.05))
        own = self._frame(self.master_bms, jk02.FRAME_CELL_INFO)
        pieces.append((own + jk_pb.encode_ack(jk_pb.MASTER_ADDRESS, jk_pb.TRIGGER_CELL_INFO), 0.2))
        return pieces
