#!/usr/bin/env python3
"""Mutation testing, a developer's tool (not collected by pytest, not part of CI).

Would the tests notice if the code were wrong? This script makes sampled small mistakes
(*mutants*) in a module — an operator or comparison swapped, a constant off by one, a
``continue`` turned ``break``, an index off by one, a statement deleted, ``and``/``or``
swapped, a ``not`` dropped — and runs the tests that cover the module against each, in a
copy of the package (the checkout is never touched). A mutant is *killed* when a test fails
(or hangs past the timeout), *survived* when every test passes. Survivors inside log calls,
``raise`` messages, ``__repr__`` and the like are reported as *equivalent-suspected*: they
change only text no test should pin. The score is killed / (killed + survived).

    .venv/bin/python tests/mutate.py jk_serial metrics    # named targets (see TARGETS)
    .venv/bin/python tests/mutate.py all --sample 60      # every target
    .venv/bin/python tests/mutate.py metrics --list       # show the sampled mutants only
    .venv/bin/python tests/mutate.py --files exporter/jkbms_exporter/pack.py \\
        --tests tests/test_faults.py

It runs one pytest at a time (``-x``, niced), so it keeps to one core; a 60-mutant run of a
codec takes a few minutes. ``JKBMS_SHARED`` must point at the shared vectors as for the
suite (default: ``../shared`` beside the checkout).
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "exporter" / "jkbms_exporter"

#: name → (module files under the package, test files that cover them)
TARGETS: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...]]] = {
    "jk_serial": (("protocols/jk_serial.py", "protocols/jk_serial_layout.py",
                   "protocols/jk_serial_quirks.py", "protocols/jk_serial_reading.py"),
                  ("tests/protocols/test_jk_serial_envelope.py",
                   "tests/protocols/test_jk_serial_helpers.py",
                   "tests/protocols/test_jk_serial_password.py",
                   "tests/protocols/test_jk_serial_registers.py",
                   "tests/protocols/test_jk_serial_requests.py",
                   "tests/protocols/test_jk_serial_roundtrip.py",
                   "tests/protocols/test_jk_serial_vectors.py")),
    "jk_pb": (("protocols/jk_pb.py", "protocols/jk_pb_listen.py"),
              ("tests/protocols/test_jk_pb.py",)),
    "jk02": (("protocols/jk02.py", "protocols/jk02_layout.py", "protocols/jk02_quirks.py",
              "protocols/jk02_encode.py"),
             ("tests/protocols/test_jk02.py",)),
    "config": (("config.py",), ("tests/test_config.py",)),
    "collector": (("collector.py",), ("tests/test_collector.py",)),
    "metrics": (("metrics.py",), ("tests/test_metrics.py",)),
}

_BINOPS = {ast.Add: "-", ast.Sub: "+", ast.Mult: "/", ast.Div: "*", ast.FloorDiv: "/",
           ast.Mod: "//", ast.LShift: ">>", ast.RShift: "<<", ast.BitOr: "&", ast.BitAnd: "|",
           ast.BitXor: "|", ast.Pow: "*"}
_BINOP_TEXT = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
               ast.Mod: "%", ast.LShift: "<<", ast.RShift: ">>", ast.BitOr: "|",
               ast.BitAnd: "&", ast.BitXor: "^", ast.Pow: "**"}
_CMPOPS = {ast.Lt: "<=", ast.LtE: "<", ast.Gt: ">=", ast.GtE: ">", ast.Eq: "!=",
           ast.NotEq: "==", ast.In: "not in", ast.NotIn: "in", ast.Is: "is not",
           ast.IsNot: "is"}
_CMP_TEXT = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==",
             ast.NotEq: "!=", ast.In: "in", ast.NotIn: "not in", ast.Is: "is",
             ast.IsNot: "is not"}
#: Calls whose arguments are only text for people: mutants there are likely equivalent.
_TEXT_CALLS = {"debug", "info", "warning", "error", "exception", "critical", "progress",
               "print"}


@dataclass(frozen=True)
class Mutant:
    path: str  # relative to the package
    line: int
    kind: str
    #: (start offset, end offset, replacement) in the file's text
    start: int
    end: int
    replacement: str
    original: str
    suspect: bool  # in text-only code: an equivalent mutant is likely

    @property
    def label(self) -> str:
        return "%s:%d %s: %r → %r" % (self.path, self.line, self.kind,
                                     self.original.strip()[:40], self.replacement.strip()[:40])


class _Offsets:
    def __init__(self, text: str) -> None:
        self.starts = [0]
        for line in text.splitlines(keepends=True):
            self.starts.append(self.starts[-1] + len(line.encode("utf-8")))
        self.raw = text.encode("utf-8")

    def at(self, line: int, col: int) -> int:
        return self.starts[line - 1] + col  # col is a UTF-8 byte offset in ast


def _parents(tree: ast.AST) -> Dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _suspect(node: ast.AST, parents: Dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Raise):
            return True
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in _TEXT_CALLS:
                return True
        if isinstance(node, ast.FunctionDef) and node.name in ("__repr__", "__str__"):
            return True
    return False


def _in_function(node: ast.AST, parents: Dict[ast.AST, ast.AST]) -> bool:
    """Deleting a module-level statement only breaks the import: not worth a mutant."""
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return True
    return False


def _skip(node: ast.AST, parents: Dict[ast.AST, ast.AST]) -> bool:
    """Annotations, docstrings, decorators and ``__all__``: not behaviour."""
    child = node
    while child in parents:
        parent = parents[child]
        if isinstance(parent, (ast.AnnAssign,)) and child is parent.annotation:
            return True
        if isinstance(parent, ast.arg) and child is parent.annotation:
            return True
        if isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                child is parent.returns or child in parent.decorator_list):
            return True
        if isinstance(parent, (ast.Import, ast.ImportFrom)):
            return True
        child = parent
    return False


def mutants_of(relative: str) -> List[Mutant]:
    path = PACKAGE / relative
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    parents = _parents(tree)
    off = _Offsets(text)
    raw = off.raw
    found: List[Mutant] = []

    def span(node: ast.AST) -> Tuple[int, int]:
        return (off.at(node.lineno, node.col_offset),  # type: ignore[attr-defined]
                off.at(node.end_lineno, node.end_col_offset))  # type: ignore[attr-defined]

    def add(node: ast.AST, kind: str, start: int, end: int, replacement: str) -> None:
        original = raw[start:end].decode("utf-8")
        if original == replacement:
            return
        found.append(Mutant(relative, node.lineno, kind, start, end,  # type: ignore[attr-defined]
                            replacement, original, _suspect(node, parents)))

    def between(left: ast.AST, right: ast.AST, token: str) -> Optional[Tuple[int, int]]:
        gap_start, gap_end = span(left)[1], span(right)[0]
        gap = raw[gap_start:gap_end].decode("utf-8")
        index = gap.find(token)
        if index < 0:
            return None
        start = gap_start + len(gap[:index].encode("utf-8"))
        return start, start + len(token.encode("utf-8"))

    for node in ast.walk(tree):
        if _skip(node, parents):
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            where = between(node.left, node.right, _BINOP_TEXT[type(node.op)])
            if where:
                add(node, "operator", where[0], where[1], _BINOPS[type(node.op)])
        elif isinstance(node, ast.AugAssign) and type(node.op) in _BINOPS:
            where = between(node.target, node.value, _BINOP_TEXT[type(node.op)] + "=")
            if where:
                add(node, "operator", where[0], where[1], _BINOPS[type(node.op)] + "=")
        elif isinstance(node, ast.Compare):
            left = node.left
            for op, right in zip(node.ops, node.comparators):
                where = between(left, right, _CMP_TEXT[type(op)])
                if where:
                    add(node, "comparison", where[0], where[1], _CMPOPS[type(op)])
                left = right
        elif isinstance(node, ast.BoolOp):
            token = "and" if isinstance(node.op, ast.And) else "or"
            where = between(node.values[0], node.values[1], token)
            if where:
                add(node, "boolean", where[0], where[1], "or" if token == "and" else "and")
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            start, end = span(node)
            add(node, "negation", start, end, "(" + raw[slice(*span(node.operand))].decode() + ")")
        elif isinstance(node, ast.Constant) and not isinstance(node.value, str):
            start, end = span(node)
            value = node.value
            if isinstance(value, bool):
                add(node, "constant", start, end, repr(not value))
            elif isinstance(value, int):
                add(node, "constant", start, end, repr(value + 1))
            elif isinstance(value, float):
                add(node, "constant", start, end, repr(value * 1.5 + 1.0))
        elif isinstance(node, ast.Continue):
            add(node, "continue→break", *span(node), "break")
        elif isinstance(node, ast.Break):
            add(node, "break→continue", *span(node), "continue")
        elif isinstance(node, ast.Subscript) and not isinstance(node.slice, ast.Slice):
            index = node.slice
            if isinstance(index, (ast.Name, ast.Constant, ast.BinOp)) and not (
                    isinstance(index, ast.Constant) and isinstance(index.value, str)):
                start, end = span(index)
                add(node, "index+1", start, end, "(%s) + 1" % raw[start:end].decode())
        elif isinstance(node, ast.Slice):
            for bound in (node.lower, node.upper):
                if bound is not None:
                    start, end = span(bound)
                    add(node, "slice+1", start, end, "(%s) + 1" % raw[start:end].decode())
        if isinstance(node, (ast.Expr, ast.Assign, ast.AugAssign, ast.Return)) and not (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) and (
                _in_function(node, parents)):
            start, end = span(node)
            add(node, "delete", start, end, "pass")
    return found


def _valid(text: str) -> bool:
    try:
        compile(text, "<mutant>", "exec")
    except SyntaxError:
        return False
    return True


def run_tests(copy_root: Path, tests: Sequence[str], timeout: float, nice: int = 10) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy_root) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.setdefault("JKBMS_SHARED", str(REPO.parent / "shared"))
    command = ["nice", "-n", str(nice), sys.executable, "-m", "pytest", "-x", "-q",
               "-p", "no:cacheprovider", "-p", "no:randomly", *tests]
    try:
        result = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "killed"  # a hang is noticed too
    return "survived" if result.returncode == 0 else "killed"


def evaluate(name: str, files: Sequence[str], tests: Sequence[str], sample: int, seed: int,
             list_only: bool, verbose: bool, nice: int = 10) -> Tuple[int, int, int]:
    candidates = [m for relative in files for m in mutants_of(relative)]
    rng = random.Random(seed)
    chosen = rng.sample(candidates, min(sample, len(candidates)))
    chosen.sort(key=lambda m: (m.path, m.start))
    print("== %s: %d candidate mutants, %d sampled (seed %d); tests: %s"
          % (name, len(candidates), len(chosen), seed, " ".join(tests)), flush=True)
    if list_only:
        for mutant in chosen:
            print("   " + mutant.label)
        return 0, 0, 0
    with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
        copy_root = Path(tmp)
        shutil.copytree(PACKAGE, copy_root / "jkbms_exporter",
                        ignore=shutil.ignore_patterns("__pycache__"))
        started = time.monotonic()
        baseline = run_tests(copy_root, tests, timeout=900, nice=nice)
        took = time.monotonic() - started
        if baseline != "survived":
            print("   the tests fail without any mutant: fix that first")
            return 0, 0, 0
        timeout = max(30.0, 3 * took + 10)
        killed = survived = suspects = done = 0
        for mutant in chosen:
            target = copy_root / "jkbms_exporter" / mutant.path
            original = target.read_bytes()
            mutated = (original[: mutant.start] + mutant.replacement.encode("utf-8")
                       + original[mutant.end:])
            if not _valid(mutated.decode("utf-8")):
                continue
            target.write_bytes(mutated)
            try:
                verdict = run_tests(copy_root, tests, timeout, nice)
            finally:
                target.write_bytes(original)
            done += 1
            if verbose or done % 10 == 0:
                print("   … %d/%d mutants run" % (done, len(chosen)), flush=True)
            if verdict == "killed":
                killed += 1
                if verbose:
                    print("   killed    " + mutant.label)
            elif mutant.suspect:
                suspects += 1
                print("   equivalent-suspected " + mutant.label, flush=True)
            else:
                survived += 1
                print("   SURVIVED  " + mutant.label, flush=True)
    counted = killed + survived
    score = 100.0 * killed / counted if counted else 100.0
    print("== %s: killed %d, survived %d, equivalent-suspected %d: %.0f %% of %d killed"
          % (name, killed, survived, suspects, score, counted), flush=True)
    return killed, survived, suspects


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", nargs="*", help="some of %s, or all" % ", ".join(TARGETS))
    parser.add_argument("--files", nargs="+", help="module files (instead of a target)")
    parser.add_argument("--tests", nargs="+", help="test files to run (with --files)")
    parser.add_argument("--sample", type=int, default=60, help="mutants per target (60)")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--list", action="store_true", help="only list the sampled mutants")
    parser.add_argument("--nice", type=int, default=10, help="niceness of the test runs (10)")
    parser.add_argument("-v", "--verbose", action="store_true", help="list killed mutants too")
    args = parser.parse_args(argv)
    jobs: List[Tuple[str, Sequence[str], Sequence[str]]] = []
    if args.files:
        if not args.tests:
            parser.error("--files needs --tests")
        files = [str(Path(f).resolve().relative_to(PACKAGE)) for f in args.files]
        jobs.append(("+".join(files), files, args.tests))
    elif args.target == ["all"]:
        jobs = [(name, files, tests) for name, (files, tests) in TARGETS.items()]
    elif args.target and all(name in TARGETS for name in args.target):
        jobs = [(name,) + TARGETS[name] for name in args.target]
    else:
        parser.error("name a target (%s, all) or --files and --tests" % ", ".join(TARGETS))
    for name, files, tests in jobs:
        evaluate(name, files, tests, args.sample, args.seed, args.list, args.verbose, args.nice)
    return 0


if __name__ == "__main__":
    sys.exit(main())
