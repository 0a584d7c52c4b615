"""``simulate --pty --link PATH`` never replaces or removes what it did not make (issue 12)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jkbms_exporter.sim.bms import SimulatedBms
from jkbms_exporter.sim.serve import LinkRefused, PtySimulator


def simulate_link(path: Path, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jkbms_exporter", "simulate", "--pty",
                           "--link", str(path)], capture_output=True, text=True,
                          timeout=timeout)


def refusal(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("jkbms-exporter: --link: ")
    return line


def leftovers(directory: Path) -> list:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".new"))


def test_a_users_file_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("mine\n")
    assert "already exists (a file)" in refusal(simulate_link(path))
    assert path.read_text() == "mine\n" and not path.is_symlink()
    assert leftovers(tmp_path) == []


def test_a_real_adapters_link_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "usb-1a86_USB_Serial-if00-port0"
    path.symlink_to("../../ttyUSB0")
    assert "a symlink to ../../ttyUSB0" in refusal(simulate_link(path))
    assert os.readlink(path) == "../../ttyUSB0"
    assert leftovers(tmp_path) == []


def test_a_directory_is_refused_and_kept(tmp_path: Path) -> None:
    (tmp_path / "by-id").mkdir()
    (tmp_path / "by-id" / "keep").write_text("x")
    assert "a directory" in refusal(simulate_link(tmp_path / "by-id"))
    assert (tmp_path / "by-id" / "keep").read_text() == "x"


def test_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    line = refusal(simulate_link(tmp_path / "absent" / "ttyJK"))
    assert "does not exist" in line
    assert list(tmp_path.iterdir()) == []


def test_its_own_link_is_removed_on_exit(tmp_path: Path) -> None:
    link = tmp_path / "ttyJK"
    sim = subprocess.Popen([sys.executable, "-m", "jkbms_exporter", "simulate", "--pty",
                            "--link", str(link)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        assert sim.stdout.readline().strip() == str(link)
        assert link.is_symlink() and os.readlink(link).startswith("/dev/")
    finally:
        sim.terminate()
        sim.wait(10)
    assert not os.path.lexists(link) and list(tmp_path.iterdir()) == []


def test_a_link_replaced_by_someone_else_meanwhile_is_left_alone(tmp_path: Path) -> None:
    link = tmp_path / "ttyJK"
    sim = PtySimulator(SimulatedBms(cells=4), link=str(link), latency=0.01).start()
    try:
        link.unlink()
        link.write_text("the user's file now")
        sim.unplug()  # the adapter vanishes: only our own link may go
        assert link.read_text() == "the user's file now"
        with pytest.raises(LinkRefused):
            sim.replug()
    finally:
        sim.stop()
    time.sleep(0.1)
    assert link.read_text() == "the user's file now"
