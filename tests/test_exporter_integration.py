"""The exporter as users run it: a subprocess, real HTTP, the real promtool."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from typing import Dict, List

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ExporterProcess, free_port, http_get

from jkbms_exporter import __version__

#: The public interface listed in the core issue: name → label names besides `pack`.
PUBLIC_METRICS: Dict[str, set] = {
    "jkbms_up": set(),
    "jkbms_scrape_duration_seconds": set(),
    "jkbms_last_success_timestamp_seconds": set(),
    "jkbms_read_errors_total": {"reason"},
    "jkbms_charge_energy_joules_total": set(),
    "jkbms_discharge_energy_joules_total": set(),
    "jkbms_charge_coulombs_total": set(),
    "jkbms_discharge_coulombs_total": set(),
    "jkbms_energy_skipped_seconds_total": {"reason"},
    "jkbms_cells": set(),
    "jkbms_cell_voltage_volts": {"cell"},
    "jkbms_pack_voltage_volts": set(),
    "jkbms_current_amperes": set(),
    "jkbms_state_of_charge_ratio": set(),
    "jkbms_temperature_celsius": {"sensor"},
    "jkbms_charge_cycles_total": set(),
    "jkbms_cycle_capacity_coulombs_total": set(),
    "jkbms_runtime_seconds_total": set(),
    "jkbms_nominal_capacity_coulombs": set(),
    "jkbms_actual_capacity_coulombs": set(),
    "jkbms_mosfet_on": {"mosfet"},
    "jkbms_balancing": set(),
    "jkbms_switch_enabled": {"switch"},
    "jkbms_alarm": {"alarm"},
    "jkbms_alarm_bitmask": set(),
    "jkbms_status_bitmask": set(),
    "jkbms_setting_volts": {"setting"},
    "jkbms_setting_amperes": {"setting"},
    "jkbms_setting_celsius": {"setting"},
    "jkbms_setting_seconds": {"setting"},
    "jkbms_setting_ratio": {"setting"},
    "jkbms_device_info": {"port", "protocol", "protocol_version", "model", "hardware_version",
                          "software_version", "device_id", "manufacture_date", "battery_type",
                          "serial_number"},
}

#: Series only some packs have (the JK02 quantities, and the age of streamed values).
PROTOCOL_DEPENDENT = {"jkbms_balance_wire_resistance_ohms", "jkbms_balance_current_amperes",
                      "jkbms_remaining_capacity_coulombs", "jkbms_state_of_health_ratio",
                      "jkbms_reading_age_seconds"}

ALARMS = {"low_capacity", "mosfet_overtemperature", "charge_overvoltage",
          "discharge_undervoltage", "battery_overtemperature", "charge_overcurrent",
          "discharge_overcurrent", "cell_voltage_difference", "battery_box_overtemperature",
          "battery_undertemperature", "cell_overvoltage", "cell_undervoltage",
          "protection_309_a", "protection_309_b"}

REQUIRED_SETTINGS = {"cell_overvoltage_protection", "cell_overvoltage_recovery",
                     "cell_undervoltage_protection", "cell_undervoltage_recovery",
                     "cell_voltage_difference_protection", "balance_start",
                     "charge_overcurrent_protection", "discharge_overcurrent_protection",
                     "charge_undertemperature_protection",
                     "discharge_undertemperature_protection", "low_capacity_alarm"}


def samples_of(text: str) -> List:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


@pytest.fixture(scope="module")
def simulated() -> ExporterProcess:
    process = ExporterProcess(["--simulate", "--simulate.cells", "16"])
    yield process
    process.stop()


@pytest.fixture(scope="module")
def metrics_text(simulated: ExporterProcess) -> str:
    return simulated.metrics()


def test_every_public_metric_is_exposed_with_its_labels(metrics_text: str) -> None:
    by_name: Dict[str, List] = {}
    for sample in samples_of(metrics_text):
        by_name.setdefault(sample.name, []).append(sample)
    for name, labels in PUBLIC_METRICS.items():
        assert name in by_name, name
        for sample in by_name[name]:
            assert set(sample.labels) == labels | {"pack"}, (name, sample.labels)
            assert sample.labels["pack"] == "sim"
    # a polled 4E57 pack has none of the protocol-dependent series
    assert not PROTOCOL_DEPENDENT & set(by_name)
    build = by_name["jkbms_exporter_build_info"]
    assert len(build) == 1 and build[0].labels["version"] == __version__
    assert "pack" not in build[0].labels


def test_cells_are_zero_padded_and_complete(metrics_text: str) -> None:
    cells = [s.labels["cell"] for s in samples_of(metrics_text)
             if s.name == "jkbms_cell_voltage_volts"]
    assert cells == ["%02d" % i for i in range(1, 17)]
    volts = [s.value for s in samples_of(metrics_text) if s.name == "jkbms_cell_voltage_volts"]
    assert all(2.5 < v < 3.65 for v in volts)


def test_alarms_settings_sensors_and_counters(metrics_text: str) -> None:
    samples = samples_of(metrics_text)
    alarms = {s.labels["alarm"]: s.value for s in samples if s.name == "jkbms_alarm"}
    assert set(alarms) == ALARMS and set(alarms.values()) == {0.0}
    settings = {s.labels["setting"]: s.value for s in samples if s.name.startswith("jkbms_setting_")}
    assert REQUIRED_SETTINGS <= set(settings)
    assert settings["cell_overvoltage_protection"] == pytest.approx(3.65)
    assert settings["low_capacity_alarm"] == pytest.approx(0.2)  # a ratio, not percent
    assert "password" not in metrics_text
    sensors = {s.labels["sensor"] for s in samples if s.name == "jkbms_temperature_celsius"}
    assert sensors == {"mosfet", "battery1", "battery2"}
    errors = {s.labels["reason"]: s.value for s in samples if s.name == "jkbms_read_errors_total"}
    assert errors == {"timeout": 0, "checksum": 0, "malformed": 0, "io": 0}


def test_promtool_check_metrics_is_clean(metrics_text: str, promtool: str) -> None:
    result = subprocess.run([promtool, "check", "metrics"], input=metrics_text,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


def test_openmetrics_format_is_served(simulated: ExporterProcess) -> None:
    request = urllib.request.Request(simulated.url + "/metrics",
                                     headers={"Accept": "application/openmetrics-text"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read().decode()
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")
    assert 'jkbms_read_errors_total{pack="sim",reason="io"} 0.0' in body


def test_landing_page_and_unknown_paths(simulated: ExporterProcess) -> None:
    simulated.metrics()  # so the page has a reading to show
    page = http_get(simulated.url + "/")
    assert __version__ in page and 'href="/metrics"' in page
    assert "sim" in page and ">up<" in page
    assert "spread" in page and " V" in page  # cell voltages at a glance
    with pytest.raises(urllib.error.HTTPError) as raised:
        http_get(simulated.url + "/nope")
    assert raised.value.code == 404
    head = urllib.request.Request(simulated.url + "/metrics", method="HEAD")
    with urllib.request.urlopen(head, timeout=10) as response:
        assert response.status == 200 and response.read() == b""


def test_named_device_over_a_tcp_gateway(start_exporter, tmp_path) -> None:
    port = free_port()
    gateway = subprocess.Popen(
        [__import__("sys").executable, "-m", "jkbms_exporter", "simulate",
         "--listen", "127.0.0.1:%d" % port, "--cells", "8", "--scenario", "cell-overvoltage"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert gateway.stdout.readline().strip() == "socket://127.0.0.1:%d" % port
        exporter = start_exporter("--device", "house=socket://127.0.0.1:%d" % port,
                                  "--web.telemetry-path", "/jk")
        text = http_get(exporter.url + "/jk")
        samples = samples_of(text)
        up = [s for s in samples if s.name == "jkbms_up"]
        assert [(s.labels["pack"], s.value) for s in up] == [("house", 1.0)]
        cells = {s.labels["cell"]: s.value for s in samples if s.name == "jkbms_cell_voltage_volts"}
        assert len(cells) == 8 and cells["05"] > 3.5  # the over-voltage scenario's cell
        info = [s for s in samples if s.name == "jkbms_device_info"][0]
        assert info.labels["port"] == "socket://127.0.0.1:%d" % port
    finally:
        gateway.terminate()
        gateway.wait(10)


def test_missing_device_is_reported_down_and_the_exporter_keeps_serving(start_exporter,
                                                                        tmp_path) -> None:
    exporter = start_exporter("--device", "ghost=%s" % (tmp_path / "ttyUSB7"), "--simulate")
    for _ in range(2):
        samples = samples_of(exporter.metrics())
        up = {s.labels["pack"]: s.value for s in samples if s.name == "jkbms_up"}
        assert up == {"ghost": 0.0, "sim": 1.0}
    io_errors = [s.value for s in samples if s.name == "jkbms_read_errors_total"
                 and s.labels == {"pack": "ghost", "reason": "io"}]
    assert io_errors and io_errors[0] >= 1
    log = exporter.stop()
    assert "ttyUSB7" in log and "Traceback" not in log
