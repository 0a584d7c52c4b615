"""4E57 requests: byte-exact read requests, and the read-only guarantee (spec §3, §4)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from jkbms_exporter.protocols import jk_serial
from jkbms_exporter.errors import FrameError

from test_jk_serial_helpers import byte_sum16, frame_by_id, frames, spec_section, vectors

PACKAGE = Path(jk_serial.__file__).resolve().parent.parent  # the whole package

#: Spec §4 "Worked examples (verified)": request bytes up to 0x68 → checksum bytes.
SPEC_WORKED_EXAMPLES = {
    "read all, source PC": ("4E 57 00 13 00 00 00 00 06 03 00 00 00 00 00 00 68", "00 00 01 29"),
    "read all, source GPS": ("4E 57 00 13 00 00 00 00 06 02 00 00 00 00 00 00 68", "00 00 01 28"),
    "read 0x83": ("4E 57 00 13 00 00 00 00 03 03 00 83 00 00 00 00 68", "00 00 01 A9"),
    "20-byte read all": ("4E 57 00 12 00 00 00 00 06 03 00 00 00 00 00 68", "00 00 01 28"),
    "activation": ("4E 57 00 13 00 00 00 00 01 03 00 00 00 00 00 00 68", "00 00 01 24"),
}


def test_worked_examples_are_the_ones_in_the_spec():
    # guard against the table above drifting from spec §4
    section = spec_section("## 4. Checksum")
    for body, check in SPEC_WORKED_EXAMPLES.values():
        assert "`%s`" % body in section and "`%s`" % check in section


@pytest.mark.parametrize("name", sorted(SPEC_WORKED_EXAMPLES))
def test_checksum_of_the_spec_worked_examples(name):
    body, check = (bytes.fromhex(part) for part in SPEC_WORKED_EXAMPLES[name])
    assert jk_serial.checksum(body).to_bytes(4, "big") == check


def test_read_all_request_is_the_vector_request_byte_for_byte():
    requests = vectors()["generic_requests"]
    assert jk_serial.read_all_request() == bytes.fromhex(requests["read_all_21_byte"])
    assert jk_serial.read_all_request(source=0x02) == bytes.fromhex(
        requests["read_all_21_byte_gps_source"]
    )
    body, check = SPEC_WORKED_EXAMPLES["read all, source PC"]
    assert jk_serial.read_all_request() == bytes.fromhex(body + check)


def test_read_all_request_shape():
    request = jk_serial.read_all_request()
    assert len(request) == 21
    assert request[:2] == b"\x4e\x57"
    assert int.from_bytes(request[2:4], "big") == 0x13 == len(request) - 2
    assert request[8] == 0x06 and request[9] == 0x03 and request[10] == 0x00
    assert request[11] == 0x00  # data id "all"
    assert request[-5] == 0x68 and request[-4:-2] == b"\0\0"
    assert int.from_bytes(request[-2:], "big") == byte_sum16(request[:-4])


def test_read_single_register_is_the_vector_request_byte_for_byte():
    requests = vectors()["generic_requests"]
    assert jk_serial.read_register_request(0x83) == bytes.fromhex(requests["read_single_register_0x83"])
    body, check = SPEC_WORKED_EXAMPLES["read 0x83"]
    assert jk_serial.read_register_request(0x83) == bytes.fromhex(body + check)


def test_read_register_zero_is_the_request_of_the_mppsolar_capture():
    # the vector's note quotes the request its source builds: command 03, register 00
    notes = " ".join(frame_by_id("mppsolar_14s_b1a20s15p_11261")["notes"])
    quoted = re.search(r"\(((?:[0-9A-F]{2} ){20}[0-9A-F]{2})\)", notes).group(1)
    assert jk_serial.read_register_request(0x00) == bytes.fromhex(quoted)


def test_every_request_recorded_next_to_a_vector_is_one_we_build():
    ours = {jk_serial.read_all_request(source).hex() for source in range(4)}
    ours |= {jk_serial.read_register_request(0, source).hex() for source in range(4)}
    for frame in frames():
        if frame.get("request_hex"):
            assert frame["request_hex"] in ours, frame["id"]


@pytest.mark.parametrize("tag", sorted(set(range(0x80, 0xC1)) & set(jk_serial.REGISTER_BY_TAG) - {0xB2}))
def test_every_readable_register_can_be_requested(tag):
    request = jk_serial.read_register_request(tag)
    assert request[8] == 0x03 and request[10] == 0x00 and request[11] == tag
    assert int.from_bytes(request[-2:], "big") == byte_sum16(request[:-4])
    assert jk_serial.parse_request(request).register == tag


@pytest.mark.parametrize("tag", [0xBB, 0xBC, 0xBD, 0xBE, 0xBF])
def test_write_only_tags_are_refused(tag):
    # spec §6.4: restart, factory reset, remote upgrade, GPS power-off/restore
    with pytest.raises(ValueError):
        jk_serial.read_register_request(tag)


@pytest.mark.parametrize("tag", [0xB2, 0x88, 0x8D, 0x01, 0x78, 0xC1, 0xFF, -1, 256])
def test_password_unknown_and_impossible_tags_are_refused(tag):
    with pytest.raises(ValueError):
        jk_serial.read_register_request(tag)


def test_only_read_commands_are_known():
    assert jk_serial.READ_COMMANDS == {0x03, 0x06}
    assert jk_serial.COMMAND_READ_ALL == 0x06 and jk_serial.COMMAND_READ_REGISTER == 0x03


def test_no_frame_with_another_command_can_be_built():
    # not as a request, and not as a "reply" the simulator could be made to send either
    for command in range(256):
        if command in (0x03, 0x06):
            continue
        with pytest.raises(ValueError):
            jk_serial._build_frame(command, jk_serial.SOURCE_PC, jk_serial.TRANSPORT_REQUEST, b"\0")
        with pytest.raises(ValueError):
            jk_serial.encode_reply({0x83: 1}, command=command)


def test_encoder_refuses_write_only_and_unknown_tags():
    for tag in (0xBB, 0xBC, 0xBD, 0xBE, 0xBF, 0x88, 0x00):
        with pytest.raises(ValueError):
            jk_serial.encode_registers({tag: 1})


def test_parse_request_reads_every_request_form_the_spec_lists():
    requests = vectors()["generic_requests"]
    parsed = {name: jk_serial.parse_request(bytes.fromhex(text)) for name, text in requests.items()}
    assert parsed["read_all_21_byte"] == jk_serial.Request(command=6, source=3, register=0)
    assert parsed["read_all_21_byte_gps_source"] == jk_serial.Request(command=6, source=2, register=0)
    # OpenDTU-OnBattery's 20-byte form has no data id
    assert parsed["read_all_20_byte_variant_without_data_id"] == jk_serial.Request(6, 3, None)
    assert parsed["read_single_register_0x83"] == jk_serial.Request(3, 3, 0x83)


def test_parse_request_rejects_a_reply():
    reply = bytes.fromhex(frame_by_id("esphome_14s_h6")["response_hex"])
    with pytest.raises(FrameError):
        jk_serial.parse_request(reply)


# ----------------------------------------------------------------------------- static scan

def _package_sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def _literal_bytes(node: ast.AST):
    """The bytes a literal spells, if it can spell wire bytes: a bytes literal, a string of
    hex digits (``"4e57…"``, ``"4E 57 …"``), or a list/tuple of small ints."""
    if isinstance(node, ast.Constant) and isinstance(node.value, bytes):
        return node.value
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        compact = re.sub(r"[\s:,]|0x", "", node.value, flags=re.I)
        if re.fullmatch(r"(?:[0-9a-fA-F]{2})+", compact):
            return bytes.fromhex(compact)
    if isinstance(node, (ast.List, ast.Tuple)) and node.elts and all(
        isinstance(item, ast.Constant) and type(item.value) is int and 0 <= item.value <= 255
        for item in node.elts
    ):
        return bytes(item.value for item in node.elts)
    return None


def test_static_no_module_spells_a_4e57_frame_or_calls_the_builder_from_outside():
    """No literal anywhere in the package spells more of a 4E57 frame than the bare start
    marker (``jk_serial.START``), and nothing outside the codec (jk_serial and its frame
    module) calls its frame builder: every frame the package can put on a wire goes
    through ``_build_frame``, which only takes 0x03/0x06 (tested above)."""
    offenders = []
    for path, tree in _package_sources():
        for node in ast.walk(tree):
            data = _literal_bytes(node)
            if data is not None and b"\x4e\x57" in data and len(data) > 2:
                offenders.append("%s:%d literal %r" % (path.name, node.lineno, data))
            if (
                path.name not in ("jk_serial.py", "jk_serial_frame.py")
                and isinstance(node, (ast.Attribute, ast.Name))
                and getattr(node, "attr", getattr(node, "id", "")) == "_build_frame"
            ):
                offenders.append("%s:%d uses _build_frame" % (path.name, node.lineno))
    assert not offenders


def test_static_scan_would_see_a_hand_made_write_frame():
    # the scanner itself must be able to fail
    for source in ('WRITE = b"\\x4e\\x57\\x00\\x14\\x00\\x00\\x00\\x00\\x02"',
                   'WRITE = "4E 57 00 14 00 00 00 00 02 03 00 90"',
                   "WRITE = [0x4E, 0x57, 0x00, 0x14]"):
        node = ast.parse(source).body[0].value
        data = _literal_bytes(node)
        assert data is not None and b"\x4e\x57" in data and len(data) > 2


def test_static_codec_builds_frames_only_through_the_guarded_builder():
    trees = {name: ast.parse((PACKAGE / "protocols" / name).read_text(encoding="utf-8"))
             for name in ("jk_serial.py", "jk_serial_frame.py")}
    functions = {(name, node.name): node for name, tree in trees.items()
                 for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    builder = functions["jk_serial_frame.py", "_build_frame"]
    assert ("jk_serial.py", "_build_frame") not in functions  # one builder, re-exported
    # its first statement refuses commands outside READ_COMMANDS
    guard = builder.body[1] if isinstance(builder.body[0], ast.Expr) else builder.body[0]
    assert isinstance(guard, ast.If)
    assert "READ_COMMANDS" in ast.dump(guard.test) and isinstance(guard.body[0], ast.Raise)
    # START (the 4E 57 marker) is only put into a byte buffer there
    users = [
        key for key, function in functions.items()
        for node in ast.walk(function)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("bytearray", "bytes")
        and any(isinstance(arg, ast.Name) and arg.id == "START" for arg in node.args)
    ]
    assert users == [("jk_serial_frame.py", "_build_frame")]
    tree = trees["jk_serial_frame.py"]
    # and every COMMAND_* constant of the codec is a read
    commands = {
        target.id: node.value.value
        for node in tree.body if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name) and target.id.startswith("COMMAND_")
    }
    assert set(commands.values()) == {0x03, 0x06}
