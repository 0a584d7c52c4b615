"""Install hints name a command that works for how the exporter was installed."""

from __future__ import annotations

import shlex
import subprocess
import sys

from conftest import REPO

from jkbms_exporter.install import IMAGE_ENV, Installation, install_command, this_installation


def test_this_checkout_venv_gets_its_own_pip_and_path() -> None:
    """The suite runs from an editable install of this checkout (tests/run.sh)."""
    here = this_installation()
    assert (here.python, here.source_dir, here.editable, here.in_image, here.pipx) == (
        sys.executable, str(REPO), True, False, False)
    assert dict(here.extra_requirements)["ble"] == ("bleak>=0.22",)
    command = shlex.split(install_command("ble"))
    assert command == [sys.executable, "-m", "pip", "install", "-e", "%s[ble]" % REPO]
    assert "jkbms-exporter[" not in install_command("web")  # no index entry exists


def test_a_copy_installed_from_a_checkout_is_reinstalled_from_it() -> None:
    copy = Installation(python="/opt/jkbms-exporter/bin/python", source_dir="/src/jk bms")
    assert install_command("web", copy) == \
        "/opt/jkbms-exporter/bin/python -m pip install '/src/jk bms[web]'"


def test_a_copy_installed_from_a_wheel_gets_the_extras_requirements() -> None:
    wheel = Installation(python="/usr/bin/python3",
                         extra_requirements=(("web", ("bcrypt>=4",)),))
    assert install_command("web", wheel) == "/usr/bin/python3 -m pip install 'bcrypt>=4'"


def test_run_from_the_checkout_without_installing_names_the_checkout(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-S", "-c", "import sys; sys.path.insert(0, %r); "
         "from jkbms_exporter.install import install_command; print(install_command('ble'))"
         % str(REPO / "exporter")],
        env={"PATH": "/usr/bin:/bin"}, cwd=str(tmp_path), capture_output=True, text=True,
        timeout=30)
    assert result.stdout.strip() == "%s -m pip install '%s[ble]'" % (sys.executable, REPO), \
        result.stderr


def test_pipx_injects_the_extras_requirements() -> None:
    pipx = Installation(python="/home/pi/.local/share/pipx/venvs/jkbms-exporter/bin/python",
                        pipx=True, source_dir="/home/pi/jkbms-exporter",
                        extra_requirements=(("ble", ("bleak>=0.22",)),))
    assert install_command("ble", pipx) == "pipx inject jkbms-exporter 'bleak>=0.22'"
    assert install_command("web", pipx) == \
        "pipx install --force '/home/pi/jkbms-exporter[web]'"


def test_the_image_is_rebuilt_with_its_extras_argument() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from jkbms_exporter.install import install_command; "
         "print(install_command('ble'))"],
        env={"PATH": "/usr/bin:/bin", IMAGE_ENV: "1"}, capture_output=True, text=True,
        timeout=30)
    assert result.stdout.strip() == (
        "rebuild the image with it: docker build --build-arg EXTRAS=web,ble . (with compose: "
        "JKBMS_EXTRAS=web,ble in .env, then docker compose build exporter)")
