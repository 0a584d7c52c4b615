"""The command that adds an optional extra (``ble``, ``web``) to *this* installation.

The package is not on a package index, so ``pip install 'jkbms-exporter[ble]'`` would fail
for most users. What works depends on how the running copy was installed: from a checkout
into a virtual environment (editable or not), with pipx, or in the container image (which
is rebuilt with its ``EXTRAS`` build argument). The facts come from the interpreter, the
package's own metadata (``direct_url.json``, ``Requires-Dist``) and the image's environment.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple
from urllib.parse import unquote, urlparse

DISTRIBUTION = "jkbms-exporter"
#: Set by the Dockerfile in the image: extras are added by rebuilding it.
IMAGE_ENV = "JKBMS_EXPORTER_IMAGE"
#: What the image installs unless told otherwise (Dockerfile ``ARG EXTRAS``).
IMAGE_DEFAULT_EXTRAS = ("web",)


@dataclass(frozen=True)
class Installation:
    """How the running copy was installed (only what the command depends on)."""

    python: str
    in_image: bool = False
    pipx: bool = False
    #: The checkout it was installed from, when installed from a local directory.
    source_dir: Optional[str] = None
    editable: bool = False
    #: The requirements each extra adds, e.g. ``{"ble": ("bleak>=0.22",)}``.
    extra_requirements: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()


def _metadata() -> Tuple[Optional[dict], Tuple[Tuple[str, Tuple[str, ...]], ...]]:
    """(direct_url.json, requirements per extra) of the installed distribution."""
    try:
        from importlib import metadata
        distribution = metadata.distribution(DISTRIBUTION)
    except Exception:  # not installed (run from a source tree), broken metadata
        return None, ()
    try:
        direct_url = json.loads(distribution.read_text("direct_url.json") or "null")
    except ValueError:
        direct_url = None
    extras: dict = {}
    for requirement in distribution.requires or ():
        spec, _, marker = requirement.partition(";")
        if "extra ==" in marker:
            extra = marker.split("extra ==", 1)[1].strip().strip("'\"")
            extras.setdefault(extra, []).append(spec.strip())
    return direct_url, tuple((name, tuple(specs)) for name, specs in extras.items())


def this_installation() -> Installation:
    direct_url, extras = _metadata()
    source_dir = None
    editable = False
    if isinstance(direct_url, dict) and str(direct_url.get("url", "")).startswith("file://"):
        path = unquote(urlparse(direct_url["url"]).path)
        if Path(path).is_dir():
            source_dir = path
            editable = bool((direct_url.get("dir_info") or {}).get("editable"))
    if direct_url is None and source_dir is None:  # run from a checkout, not installed
        root = Path(__file__).resolve().parents[2]
        pyproject = root / "pyproject.toml"
        if pyproject.is_file() and 'name = "%s"' % DISTRIBUTION in pyproject.read_text():
            source_dir = str(root)
    return Installation(
        python=sys.executable or "python3",
        in_image=os.environ.get(IMAGE_ENV) == "1",
        pipx=(Path(sys.prefix) / "pipx_metadata.json").is_file(),
        source_dir=source_dir,
        editable=editable,
        extra_requirements=extras,
    )


def install_command(extra: str, installation: Optional[Installation] = None) -> str:
    """One line: the command (and where to run it) that adds ``extra`` here."""
    where = installation or this_installation()
    if where.in_image:
        extras = ",".join(IMAGE_DEFAULT_EXTRAS + (() if extra in IMAGE_DEFAULT_EXTRAS
                                                   else (extra,)))
        return ("rebuild the image with it: docker build --build-arg EXTRAS=%s . (with compose: "
                "JKBMS_EXTRAS=%s in .env, then docker compose build exporter)" % (extras, extras))
    requirements = " ".join(shlex.quote(r) for r in dict(where.extra_requirements).get(extra, ()))
    target = shlex.quote("%s[%s]" % (where.source_dir or DISTRIBUTION, extra))
    if where.pipx:  # (extras unknown: reinstall from where it came from)
        return ("pipx inject %s %s" % (DISTRIBUTION, requirements) if requirements
                else "pipx install --force %s" % target)
    pip = "%s -m pip install " % shlex.quote(where.python)
    if where.source_dir is None and requirements:  # e.g. installed from a wheel file
        return pip + requirements
    return pip + ("-e " if where.editable else "") + target
