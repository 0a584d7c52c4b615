"""The password register 0xB2: never shown, never encoded (read --raw, the simulator)."""

from __future__ import annotations


def _reply_with_password(password: bytes) -> bytes:
    from jkbms_exporter.protocols import jk_serial
    from jkbms_exporter.sim.bms import SimulatedBms

    reply = jk_serial.encode_reading(SimulatedBms(cells=4, seed=1).reading())
    info = jk_serial.parse_envelope(reply).info + bytes((jk_serial.PASSWORD_TAG,)) + password
    return jk_serial._build_frame(jk_serial.COMMAND_READ_ALL, jk_serial.SOURCE_BMS,
                                  jk_serial.TRANSPORT_REPLY, info)


def test_redact_password_zeroes_it_and_keeps_a_valid_checksum_valid() -> None:
    from jkbms_exporter.protocols import jk_serial

    frame = _reply_with_password(b"secret1234")
    assert b"secret1234" in frame
    redacted = jk_serial.redact_password(frame)
    assert b"secret1234" not in redacted and len(redacted) == len(frame)
    assert redacted[frame.index(b"secret1234"):][:10] == bytes(10)
    # only the password and the checksum changed; the frame still decodes, with checksum
    changed = [i for i, (a, b) in enumerate(zip(frame, redacted)) if a != b]
    assert all(frame.index(b"secret1234") <= i < frame.index(b"secret1234") + 10
               or i >= len(frame) - 4 for i in changed)
    assert jk_serial.decode_reply(redacted).cells == 4
    # a frame whose checksum was wrong stays wrong (nothing is made to look valid)
    broken = frame[:-1] + bytes(((frame[-1] + 1) & 0xFF,))
    redacted_broken = jk_serial.redact_password(broken)
    assert b"secret1234" not in redacted_broken and redacted_broken[-4:] == broken[-4:]
    # what does not walk is returned as it is
    assert jk_serial.redact_password(b"NW\x00") == b"NW\x00"


def test_the_encoder_puts_a_zero_password_only_where_a_bms_sends_one() -> None:
    from jkbms_exporter.protocols import jk_serial
    from jkbms_exporter.sim.bms import SimulatedBms

    registers = jk_serial.reading_to_registers(SimulatedBms(cells=4, seed=1).reading())

    def tags(regs: dict) -> list:
        return [tag for tag, _, _ in jk_serial.walk_layout(jk_serial.encode_registers(regs), 0)]

    # between its neighbours 0xB1 and 0xB3, as a BMS sends it, always zeros
    assert jk_serial.PASSWORD_TAG in tags(registers)
    # without the neighbours and without a password register: none
    alone = {tag: value for tag, value in registers.items() if tag not in (0xB1, 0xB3)}
    assert jk_serial.PASSWORD_TAG not in tags(alone)
    # a password given is never encoded, only its zero placeholder
    given = dict(alone)
    given[jk_serial.PASSWORD_TAG] = b"secret1234"
    assert jk_serial.PASSWORD_TAG in tags(given)
    assert b"secret1234" not in jk_serial.encode_registers(given)
