"""The per-pack ``chemistry`` of the configuration file, exported as ``jkbms_chemistry_info``
so that the alert rules can fall back to that chemistry's protection levels."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jkbms_exporter.config import parse_config
from jkbms_exporter.errors import ConfigError


def chemistry_samples(text: str) -> dict:
    return {sample.labels["pack"]: sample.labels["chemistry"]
            for family in text_string_to_metric_families(text) if family.name == "jkbms_chemistry_info"
            for sample in family.samples if sample.value == 1}


def test_default_is_lifepo4_and_defaults_and_packs_set_it() -> None:
    packs = parse_config("packs:\n  - name: a\n    url: /dev/x\n")
    assert packs[0].chemistry == "lifepo4"
    packs = parse_config("defaults:\n  chemistry: lto\npacks:\n  - name: a\n    url: /dev/x\n"
                         "  - name: b\n    url: /dev/y\n    chemistry: nmc\n")
    assert [p.chemistry for p in packs] == ["lto", "nmc"]


@pytest.mark.parametrize("value", ["LiFePO4x", "li-ion", "1", "[lfp]"])
def test_an_unknown_chemistry_names_file_line_and_field(value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config("packs:\n  - name: a\n    url: /dev/x\n    chemistry: %s\n" % value, "jkbms.yml")
    message = str(raised.value)
    assert message.startswith("jkbms.yml:4: packs[0].chemistry:"), message
    if not value.startswith("["):
        assert "choose from lifepo4, nmc, lto" in message


def test_every_pack_exports_its_chemistry_even_when_unread(start_exporter, tmp_path: Path) -> None:
    config = tmp_path / "jkbms.yml"
    config.write_text("packs:\n  - name: house\n    url: %s\n    chemistry: nmc\n"
                      "  - name: shed\n    url: %s\n" % (tmp_path / "ttyUSB0", tmp_path / "ttyUSB1"))
    exporter = start_exporter("--config.file", str(config), "--simulate")
    assert chemistry_samples(exporter.metrics()) == {"house": "nmc", "shed": "lifepo4",
                                                      "sim": "lifepo4"}
