"""The package's rooms keep their shape (issue 14): read every module's imports with ``ast``.

* no import cycle between modules (imports inside functions count too);
* ``protocols/`` (the codecs) import only ``reading``, ``errors`` and each other, and no
  standard module that does I/O;
* ``links/`` never import ``sim/``, ``web/``, ``cli`` or ``config``;
* only the composition root (``cli``, ``config``) and the simulators themselves import
  ``sim/``;
* no module is over 600 lines.

Each rule is also run once against a small package made to break it, so the test can fail.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest

import jkbms_exporter

PACKAGE_DIR = Path(jkbms_exporter.__file__).resolve().parent
MAX_LINES = 600
#: Modules over the limit that an open issue is splitting: path → who. The entry must go when
#: the module is split (the test says so), so the list cannot go stale.
OVERSIZE_UNTIL_SPLIT: dict = {}
#: Standard modules that do I/O: a codec must not need them.
IO_MODULES = {"os", "io", "socket", "select", "selectors", "serial", "threading", "asyncio",
              "subprocess", "signal", "time", "logging", "termios", "tty", "pty", "http",
              "urllib", "ssl", "shutil", "tempfile", "pathlib"}


def module_name(package_dir: Path, path: Path) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_of(package_dir: Path) -> Dict[str, Path]:
    return {module_name(package_dir, path): path for path in sorted(package_dir.rglob("*.py"))}


def _resolve(modules: Dict[str, Path], current: str, is_package: bool, node: ast.ImportFrom,
             alias: str) -> Optional[str]:
    if node.level:
        base = current.split(".") if is_package else current.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    candidate = "%s.%s" % (target, alias) if target else alias
    if candidate in modules:  # ``from . import jk02``: a submodule
        return candidate
    return target if target in modules else None


def import_graph(package_dir: Path) -> Dict[str, Set[str]]:
    """Module → the modules of the package (and the outside top-level modules, prefixed
    ``stdlib:``) it imports anywhere in its body."""
    modules = modules_of(package_dir)
    root = package_dir.name
    graph: Dict[str, Set[str]] = {}
    for name, path in modules.items():
        edges: Set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == root:
                        edges.add(alias.name if alias.name in modules else root)
                    else:
                        edges.add("stdlib:" + alias.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom):
                if node.module == "__future__":
                    continue
                if not node.level and (node.module or "").split(".")[0] != root:
                    edges.add("stdlib:" + (node.module or "").split(".")[0])
                    continue
                for alias in node.names:
                    target = _resolve(modules, name, path.name == "__init__.py", node, alias.name)
                    if target is not None:
                        edges.add(target)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def layer_violations(package_dir: Path) -> List[str]:
    root = package_dir.name
    graph = import_graph(package_dir)
    found: List[str] = []

    def room(module: str) -> str:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else ""

    for module, edges in sorted(graph.items()):
        own = room(module)
        for target in sorted(edges):
            if target.startswith("stdlib:"):
                if own == "protocols" and target[len("stdlib:"):] in IO_MODULES:
                    found.append("%s imports %s: codecs do no I/O" % (module, target[7:]))
                continue
            other = room(target)
            if own == "protocols" and other not in ("protocols", "reading", "errors"):
                found.append("%s imports %s: codecs import only reading, errors, protocols"
                             % (module, target))
            if own == "links" and other in ("sim", "web", "cli", "config"):
                found.append("%s imports %s: links never import %s" % (module, target, other))
            if other == "sim" and own not in ("sim", "cli", "config"):
                found.append("%s imports %s: only cli and config (the composition root) reach "
                             "the simulators" % (module, target))
    cycle = find_cycle(graph)
    if cycle:
        found.append("import cycle: " + " → ".join(cycle))
    assert root  # the package name is the first part of every module
    return found


def oversize(package_dir: Path, allowed: Dict[str, str]) -> List[str]:
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir).as_posix()
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES and relative not in allowed:
            found.append("%s has %d lines (> %d): split it by responsibility"
                         % (relative, lines, MAX_LINES))
        if lines <= MAX_LINES and relative in allowed:
            found.append("%s is %d lines now: remove it from OVERSIZE_UNTIL_SPLIT in "
                         "tests/test_layers.py" % (relative, lines))
    return found


# ----------------------------------------------------------------------------- the package


def test_the_package_keeps_its_layers_and_has_no_import_cycle() -> None:
    assert layer_violations(PACKAGE_DIR) == []


def test_no_module_is_over_600_lines() -> None:
    assert oversize(PACKAGE_DIR, OVERSIZE_UNTIL_SPLIT) == []


def test_the_graph_sees_the_imports_it_must() -> None:
    # a check that finds no edge passes everything: these edges exist in the real package
    graph = import_graph(PACKAGE_DIR)
    assert "jkbms_exporter.protocols.jk02" in graph["jkbms_exporter.protocols.jk_pb"]
    assert "jkbms_exporter.links.ble.url" in graph["jkbms_exporter.links.ble.link"]
    assert "jkbms_exporter.sim.ble_radio" in graph["jkbms_exporter.config"]  # the lazy import
    assert "jkbms_exporter.links.ble" in graph["jkbms_exporter.sim.ble_board"]
    assert len(graph) > 30


# ----------------------------------------------------------------------------- can it fail?


def _package(tmp_path: Path, files: Dict[str, str]) -> Path:
    root = tmp_path / "jkbms_exporter"
    base = {"__init__.py": "", "reading.py": "", "errors.py": "", "config.py": "", "cli.py": "",
            "protocols/__init__.py": "", "protocols/codec.py": "from ..reading import X\n",
            "links/__init__.py": "", "links/serial.py": "from ..protocols import codec\n",
            "sim/__init__.py": "", "sim/board.py": "from ..protocols import codec\n",
            "web/__init__.py": "", "web/server.py": "", "collector.py": ""}
    base.update(files)
    for name, text in base.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_a_clean_small_package_passes(tmp_path: Path) -> None:
    assert layer_violations(_package(tmp_path, {"config.py": "from .sim import board\n"})) == []


@pytest.mark.parametrize("files, complaint", [
    ({"errors.py": "from . import reading\n", "reading.py": "def f():\n    from . import errors\n"},
     "import cycle"),
    ({"protocols/codec.py": "from ..links import serial\n"}, "codecs import only"),
    ({"protocols/codec.py": "import socket\n"}, "codecs do no I/O"),
    ({"links/serial.py": "from ..sim.board import Board\n"}, "links never import sim"),
    ({"links/serial.py": "def f():\n    from .. import config\n"}, "links never import config"),
    ({"collector.py": "from .sim import board\n"}, "only cli and config"),
    ({"web/server.py": "import jkbms_exporter.sim.board\n"}, "only cli and config"),
])
def test_each_rule_catches_a_deliberate_violation(tmp_path: Path, files: Dict[str, str],
                                                   complaint: str) -> None:
    found = layer_violations(_package(tmp_path, files))
    assert any(complaint in line for line in found), found


def test_the_size_rule_catches_a_long_module_and_a_stale_exemption(tmp_path: Path) -> None:
    root = _package(tmp_path, {"collector.py": "x = 1\n" * 601, "cli.py": "x = 1\n"})
    found = oversize(root, {"cli.py": "being split"})
    assert any(line.startswith("collector.py has 601 lines") for line in found), found
    assert any(line.startswith("cli.py is 1 lines now") for line in found), found
