"""Both YAML loaders (``--config.file`` and ``--web.config.file``) against hostile text:
every mistake is one ConfigError line ``file:line: field: problem``, never a traceback
from inside PyYAML, never unbounded work (issue 12)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jkbms_exporter.config import ConfigError, load_config_file, parse_config
from jkbms_exporter.web.webconfig import load_web_config, web_config_from_text

PACK = "packs:\n  - name: a\n    url: /dev/x\n"

# (text, what the message must contain), for the pack configuration
CONFIG_CASES = [
    (PACK + "    read_timeout: .inf\n", "f.yml:4: packs[0].read_timeout: inf is not a finite"),
    (PACK + "    read_timeout: .nan\n", "f.yml:4: packs[0].read_timeout: nan is not a finite"),
    (PACK + "    read_timeout: 1e308\n", "f.yml:4: packs[0].read_timeout:"),
    (PACK + "    read_timeout: -1.0\n", "greater than 0 and at most 300 s"),
    (PACK + "    baud: .inf\n", "f.yml:4: packs[0].baud: inf is not a finite number"),
    (PACK + "    baud: 99999999999999999999\n", "f.yml:4: packs[0].baud: 99999999999999999999 is "
     "out of range: a whole number from 300 to 4000000 Bd"),
    (PACK + "    baud: [9600]\n", "f.yml:4: packs[0].baud: [9600] is not a number"),
    (PACK + "    baud:\n", "f.yml:4: packs[0].baud: is empty: expected a whole number from 300"),
    (PACK + "    baud: !!int c\n", "f.yml:4: packs[0].baud: 'c' is not a valid !!int"),
    (PACK + "    baud: !!int\n", "f.yml:4: packs[0].baud: '' is not a valid !!int"),
    (PACK + "    read_timeout: !!float\n", "f.yml:4: packs[0].read_timeout: '' is not a valid"),
    (PACK + "    labels: {since: !!timestamp +}\n",
     "f.yml:4: packs[0].labels.since: '+' is not a valid !!timestamp"),
    (PACK + "    labels: {since: !!timestamp 2024-13-01}\n", "packs[0].labels.since:"),
    (PACK + "    labels: {note: \"\\ud800\"}\n", "packs[0].labels.note: contains '\\ud800', a lone "
     "surrogate"),
    ("? -n!e:\n", "f.yml:1: document: a mapping cannot be a key"),
    (PACK + "    ? [a]\n    : 1\n", "f.yml:4: packs[0]: a list cannot be a key"),
    ("[" * 2000, "f.yml:1: not valid YAML: nested more than 32 levels deep"),
    ("a: &x [*x]\n", "f.yml:1: a[0]: an alias refers to a value that contains it"),
    ("packs:\n  - name: a\n    url: \x00\n", "f.yml:3: not valid YAML: character '\\x00'"),
    ("defaults:\n  read_timeout: .nan\n" + PACK, "f.yml:2: defaults.read_timeout: nan"),
    ("defaults:\n  address: 1\n" + PACK, "f.yml:2: defaults.address: unknown field"),
]


@pytest.mark.parametrize("text, message", CONFIG_CASES)
def test_config_mistakes_are_one_line_naming_file_line_and_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "f.yml", environ={})
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_date_like_value_is_text_not_a_crash() -> None:
    (pack,) = parse_config(PACK + "    labels: {installed: 2024-13-01, since: 2024-01-05}\n",
                           "f.yml", environ={})
    assert dict(pack.labels) == {"installed": "2024-13-01", "since": "2024-01-05"}


def test_non_utf8_files_are_one_line_with_the_name(tmp_path: Path) -> None:
    path = tmp_path / "jkbms.yml"
    path.write_bytes(b"packs:\n  - name: caf\xe9\n    url: /dev/x\n")
    for load, prefix in ((load_config_file, ""), (load_web_config, "web config file ")):
        with pytest.raises(ConfigError) as raised:
            load(str(path))
        assert str(raised.value).startswith("%s%s:2: not UTF-8 text (byte 0xE9" % (prefix, path))


def test_deep_nesting_is_refused_at_once() -> None:
    started = time.process_time()
    for text in ("[" * 100000, "a: " + "{a: " * 100000, "- " * 100000):
        with pytest.raises(ConfigError, match="nested more than 32 levels"):
            parse_config(text, "f.yml", environ={})
    assert time.process_time() - started < 5  # unbounded: 1.6 s of CPU per 2000 levels


TLS_INLINE = "tls_server_config:\n  cert: x\n  key: y\n"
HASH_BODY = "abcdefghijklmnopqrstuv" + "A" * 31

WEB_CASES = [
    (TLS_INLINE + "  min_version: [TLS12]\n",
     "w.yml:4: tls_server_config.min_version: ['TLS12'] is not one of TLS10"),
    (TLS_INLINE + "  client_auth_type: {a: 1}\n",
     "w.yml:4: tls_server_config.client_auth_type: {'a': 1} is not one of"),
    ("tls_server_config:\n  cert: \"-----BEGIN CERTIFICATE-----\\ud800\"\n  key: y\n",
     "w.yml:2: tls_server_config.cert: contains '\\ud800', a lone surrogate"),
    ("basic_auth_users:\n  alice: $2b$31$%s\n" % HASH_BODY,
     "w.yml:2: basic_auth_users.alice: bcrypt cost 31 is outside 4..12"),
    ("basic_auth_users:\n  alice: $2b$13$%s\n" % HASH_BODY, "bcrypt cost 13 is outside 4..12"),
    ("basic_auth_users:\n  alice: $2b$03$%s\n" % HASH_BODY, "bcrypt cost 3 is outside 4..12"),
    ("tls_server_config:\n  cert_file: !!int c\n", "w.yml:2: tls_server_config.cert_file: 'c' "
     "is not a valid !!int"),
    ("http_server_config:\n  http2: 2024-13-01\n", "w.yml:2: http_server_config.http2: must "
     "be true or false"),
    ("? -n!e:\n", "w.yml:1: document: a mapping cannot be a key"),
    ("[" * 2000, "w.yml:1: not valid YAML: nested more than 32 levels deep"),
    ("basic_auth_users:\n  alice: x\n  alice: y\n", "w.yml:3: basic_auth_users: duplicate key"),
]


@pytest.mark.parametrize("text, message", WEB_CASES)
def test_web_config_mistakes_are_one_line_naming_file_line_and_field(text: str,
                                                                     message: str) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError) as raised:
        web_config_from_text(text, "w.yml")
    assert str(raised.value).startswith("web config file w.yml:")
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert time.monotonic() - started < 2  # no bcrypt at cost 31 (days), no recursion


def test_the_cli_reports_a_bad_cost_in_one_line_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("basic_auth_users:\n  alice: $2b$31$%s\n" % HASH_BODY)
    result = subprocess.run([sys.executable, "-m", "jkbms_exporter", "serve", "--simulate",
                             "--web.listen-address", "127.0.0.1:0", "--web.config.file",
                             str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line == ("jkbms-exporter: web config file %s:2: basic_auth_users.alice: bcrypt cost "
                    "31 is outside 4..12: every start and every login would take too long "
                    "(cost 12 takes about 2 s on a Raspberry Pi 4, each step doubles it); "
                    "make a hash with htpasswd -nBC 10" % path)


# ----------------------------------------------------------------------------- fuzzing

#: Pieces of YAML: structure, tags, anchors, the fields both files know, and odd values.
TOKENS = [
    "\n", "\n  ", "\n    ", " ", "- ", "? ", ": ", ":", ",", "[", "]", "{", "}", "'", '"', "|",
    ">", "#", "&a ", "*a", "<<: ", "---\n", "...\n", "%YAML 1.1\n", "!!int ", "!!float ",
    "!!timestamp ", "!!binary ", "!!str ", "!!bool ", "!!null ", "!!map ", "!!seq ", "!!set ",
    "!!omap ", "!!python/name:os.system ", "!local ", "packs", "defaults", "name", "url",
    "protocol", "address", "baud", "read_timeout", "labels", "invert_current",
    "verify_checksum", "jk-pb", "auto", "tls_server_config", "http_server_config",
    "basic_auth_users", "headers", "cert", "key", "cert_file", "min_version",
    "client_auth_type", "client_allowed_sans", "cipher_suites", "http2", "TLS12",
    "RequireAndVerifyClientCert", "$2b$31$" + HASH_BODY, "2024-13-01", "2024-01-05 10:00",
    ".inf", "-.inf", ".nan", "1e308", "99999999999999999999", "-1", "0", "0x1F", "0o7",
    "1:30", "1_000", "c", "+", "-n!e", "~", "null", "yes", "\\ud800", "\\x00", "é", "${X}",
    "${X:-9600}", "\t", "\ufeff",
]
YAML_TEXT = st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(text=YAML_TEXT)
def test_fuzz_the_config_loader_raises_only_config_errors(text: str) -> None:
    try:
        parse_config(text, "f.yml", environ={"X": "1"})
    except ConfigError as error:
        assert "\n" not in str(error) and "f.yml" in str(error)


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(text=YAML_TEXT)
def test_fuzz_the_web_config_loader_raises_only_config_errors(text: str) -> None:
    try:
        web_config_from_text(text, "/nonexistent/w.yml")
    except ConfigError as error:
        assert "\n" not in str(error) and str(error).startswith("web config file /nonexistent")
