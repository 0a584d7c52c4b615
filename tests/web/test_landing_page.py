"""The landing page in a real headless browser (Debian's chromium), and its bus traffic.

One exporter reads packs behind simulated TCP gateways: a healthy pack, one 150 mV out of
balance, one with alarm bits set, a silent one, a JK-PB bus with two packs, and a JK04 board
over simulated Bluetooth. The page is loaded without any scrape before it, and what the
browser shows after the page's script has run (it refreshes the pack cards by itself) is
checked.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from conftest import find_tool

#: Virtual milliseconds the browser runs the page's timers for (two refreshes of 5 s).
BUDGET_MS = 12000


def start_gateway(*args: str) -> "subprocess.Popen[str]":
    """``simulate --listen`` on a free port; its first output line is its URL."""
    return subprocess.Popen(
        [sys.executable, "-m", "jkbms_exporter", "simulate", "--listen", "127.0.0.1:0",
         "--log.level", "warn", *args], stdout=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def gateways() -> Iterator[Dict[str, str]]:
    started = {
        "house": start_gateway(),
        "shed": start_gateway("--scenario", "imbalance"),
        "cabin": start_gateway("--scenario", "alarms"),
        "garage": start_gateway("--fault", "silent"),
        "rack": start_gateway("--protocol", "jk-pb", "--addresses", "1,2"),
    }
    try:
        urls = {name: process.stdout.readline().strip() for name, process in started.items()}
        assert all(url.startswith("socket://") for url in urls.values()), urls
        yield urls
    finally:
        for process in started.values():
            process.terminate()
            process.wait(10)


def config_file(tmp_path: Path, urls: Dict[str, str]) -> str:
    lines = ["packs:"]
    for name in ("house", "shed", "cabin", "garage"):
        lines += ["  - name: %s" % name, "    url: %s" % urls[name]]
    for address in (1, 2):
        lines += ["  - name: rack%d" % address, "    url: %s" % urls["rack"],
                  "    protocol: jk-pb", "    address: %d" % address]
    # a JK04 board (simulated BLE): no SOC, current, temperatures or alarm bits
    lines += ["  - name: old", "    url: ble+sim://old?generation=JK04&cells=8&interval=0.05"]
    path = tmp_path / "jkbms.yml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def chromium(url: str, profile: Path, *extra: str) -> str:
    result = subprocess.run(
        [find_tool("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--user-data-dir=%s" % profile,
         "--virtual-time-budget=%d" % BUDGET_MS, *extra, url],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


class Node:
    def __init__(self, tag: str, attrs: Dict[str, str]) -> None:
        self.tag, self.attrs = tag, attrs
        self.children: List["Node"] = []
        self.text_parts: List[str] = []

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def find_all(self, test) -> List["Node"]:
        found = [self] if test(self) else []
        for child in self.children:
            found += child.find_all(test)
        return found

    def classes(self) -> List[str]:
        return self.attrs.get("class", "").split()


class Dom(HTMLParser):
    """The rendered DOM as a tree; each node's text includes its descendants' text."""

    VOID = {"meta", "br", "img", "input", "link", "hr"}

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.root = Node("#root", {})
        self._stack = [self.root]
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self._stack[-1].children.append(node)
        if tag not in self.VOID:
            self._stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self._stack) - 1, 0, -1):
            if self._stack[depth].tag == tag:
                del self._stack[depth:]
                break

    def handle_data(self, data: str) -> None:
        for node in self._stack:
            node.text_parts.append(data)

    def by_id(self, name: str) -> Node:
        (node,) = self.root.find_all(lambda n: n.attrs.get("id") == name)
        return node


def value(card: Node, key: str) -> str:
    (node,) = card.find_all(lambda n: n.attrs.get("data-key") == key)
    return " ".join(node.text.split())


def cells(card: Node) -> List[Node]:
    return card.find_all(lambda n: "cell" in n.classes())


def band(cell: Node) -> int:
    return int([c for c in cell.classes() if re.fullmatch(r"d\d", c)][0][1:])


def test_landing_page_in_a_browser(start_exporter, gateways, tmp_path: Path) -> None:
    exporter = start_exporter("--config.file", config_file(tmp_path, gateways),
                              "--min-interval", "0.1", "--read-timeout", "0.5")
    dom = Dom(chromium(exporter.url + "/", tmp_path / "profile", "--dump-dom"))

    # The page's script ran and refreshed the cards by itself (twice in 12 virtual s).
    packs = dom.by_id("packs")
    assert int(packs.attrs.get("data-refreshes", "0")) >= 2
    assert dom.by_id("updated").text.startswith("Updated ")
    cards = {node.attrs["data-pack"]: node for node in packs.find_all(
        lambda n: n.tag == "section" and "pack" in n.classes())}
    assert list(cards) == ["house", "shed", "cabin", "garage", "rack1", "rack2", "old"]

    # Live values on the first visit (nothing had scraped /metrics).
    house = cards["house"]
    assert house.attrs["data-state"] == "up"
    assert re.fullmatch(r"SOC \d+ %", value(house, "soc"))
    assert re.fullmatch(r"Voltage \d\d\.\d\d V", value(house, "voltage"))
    assert re.fullmatch(r"Current [+-]\d+\.\d\d A (charging|discharging|idle) \([+-]\d+ W\)",
                        value(house, "current"))
    assert value(house, "temperatures") == \
        "Temperatures mosfet %s °C · battery1 %s °C · battery2 %s °C" % tuple(
            re.findall(r"(-?\d+) °C", value(house, "temperatures")))
    assert value(house, "alarms") == "Alarms none"
    assert "last good read" in house.text and "never" not in house.text

    # Cells on a fixed mV scale: the healthy pack (spread under 20 mV) stays pale, the
    # 150 mV one reaches the strongest band at both ends.
    assert len(cells(house)) == 16 and max(band(c) for c in cells(house)) <= 1
    shed = cells(cards["shed"])
    assert band(shed[0]) == 4 and "hi" in shed[0].classes()
    assert band(shed[-1]) == 4 and "lo" in shed[-1].classes()
    assert re.search(r"spread 1(4[4-9]|5[0-6]) mV", cards["shed"].text)  # 150 mV ± noise

    assert value(cards["cabin"], "alarms") == \
        "Alarms battery undertemperature, cell overvoltage"

    garage = cards["garage"]
    assert garage.attrs["data-state"] == "down"
    (reason,) = garage.find_all(lambda n: "err" in n.classes())
    assert reason.text == "no answer"
    (error,) = garage.find_all(lambda n: "errtext" in n.classes())
    assert 10 < len(error.text) <= 80 and gateways["garage"] not in error.text
    assert gateways["garage"] in error.attrs["title"]  # the whole error text on hover
    assert "last good read never" in " ".join(garage.text.split())
    assert not cells(garage)

    for address in (1, 2):
        rack = cards["rack%d" % address]
        assert rack.attrs["data-state"] == "up"
        port = " ".join(rack.find_all(lambda n: "meta" in n.classes())[0].text.split())
        assert port.startswith("Port %s address %d " % (gateways["rack"], address))
        assert len(cells(rack)) == 16

    old = cards["old"]
    assert old.attrs["data-state"] == "up" and len(cells(old)) == 8
    for key in ("soc", "current", "temperatures", "alarms"):
        assert value(old, key).endswith(" not reported"), key
    assert re.fullmatch(r"Voltage \d\d\.\d\d V", value(old, "voltage"))


def test_open_pages_read_at_most_once_per_refresh_period(start_exporter,
                                                         own_request_log) -> None:
    """However often pages load or refresh, the packs are read once per 5 s period, even
    with --min-interval far below it; the health endpoints never read."""
    exporter = start_exporter("--simulate", "--min-interval", "0.1")
    assert own_request_log() == []
    started = time.monotonic()
    for page in ("/", "/", "/-/packs", "/-/packs", "/-/ready", "/"):
        with urllib.request.urlopen(exporter.url + page, timeout=10) as response:
            response.read()
        time.sleep(0.15)  # past --min-interval each time
    assert time.monotonic() - started < 4.5
    assert len(own_request_log()) == 1
    assert 'jkbms_up{pack="sim"} 1.0' in exporter.metrics()  # a scrape reads as before
    assert len(own_request_log()) == 2


def test_the_page_refreshes_behind_basic_auth(start_exporter, tmp_path: Path) -> None:
    """Opened as http://user:password@host/ (fetch refuses URLs with credentials; the
    refresh must still get through, with the credentials the browser keeps)."""
    import bcrypt

    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  alice: %s\n"
                   % bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode())
    exporter = start_exporter("--simulate", "--web.config.file", str(web))
    url = exporter.url.replace("http://", "http://alice:secret@") + "/"
    dom = Dom(chromium(url, tmp_path / "profile", "--dump-dom"))
    assert dom.by_id("updated").text.startswith("Updated "), dom.by_id("updated").text
    assert int(dom.by_id("packs").attrs.get("data-refreshes", "0")) >= 2
