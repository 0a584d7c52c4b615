"""``/-/healthy`` and ``/-/ready``: answered over real HTTP without a byte to the BMS."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Tuple


def fetch(url: str, method: str = "GET") -> Tuple[int, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_health_endpoints_never_read_the_bms(start_exporter, own_request_log) -> None:
    exporter = start_exporter("--simulate", "--min-interval", "0.1")
    assert fetch(exporter.url + "/-/healthy") == (200, "jkbms-exporter is Healthy.\n")
    status, text = fetch(exporter.url + "/-/ready")
    assert status == 503 and "sim" in text  # nothing read yet: says which pack
    assert fetch(exporter.url + "/-/ready", "HEAD") == (503, "")
    time.sleep(0.3)  # past --min-interval: a read would happen now if these caused one
    for _ in range(5):
        assert fetch(exporter.url + "/-/healthy")[0] == 200
        assert fetch(exporter.url + "/-/ready")[0] == 503
    assert own_request_log() == []

    assert 'jkbms_up{pack="sim"} 1.0' in exporter.metrics()
    read = own_request_log()
    assert len(read) == 1  # the log does see a scrape's read
    assert fetch(exporter.url + "/-/ready") == (200, "jkbms-exporter is Ready.\n")
    time.sleep(0.3)
    for _ in range(5):
        assert fetch(exporter.url + "/-/healthy")[0] == 200
        assert fetch(exporter.url + "/-/ready")[0] == 200
    assert own_request_log() == read


def test_ready_waits_for_every_pack_and_health_needs_only_the_server(
        start_exporter, own_request_log) -> None:
    exporter = start_exporter("--simulate", "--simulate.fault", "silent",
                              "--read-timeout", "0.3")
    assert 'jkbms_up{pack="sim"} 0.0' in exporter.metrics()
    status, text = fetch(exporter.url + "/-/ready")
    assert status == 503 and "no good read yet of sim" in text
    assert fetch(exporter.url + "/-/healthy")[0] == 200
    assert len(own_request_log()) >= 1
