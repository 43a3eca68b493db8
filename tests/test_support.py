"""Test helpers live in one package, tests/support/, and bench/ imports them as a package does.

A test module that imports another test module runs that module's tests' imports (and
its fixtures' names) wherever it is imported, and hides a helper where nobody looks for
one; bench/ editing sys.path would make its imports work only when run as a script.
"""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.support.env import ROOT


def python_files(*folders: str) -> list:
    return sorted(
        path for folder in folders for path in (ROOT / folder).rglob("*.py") if "__pycache__" not in path.parts
    )


def imports_of(path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_test_module_imports_another_test_module():
    found = {
        str(path.relative_to(ROOT)): sorted(
            name for name in imports_of(path) if name.split(".")[-1].startswith("test_")
        )
        for path in python_files("tests", "bench")
    }
    assert {path: names for path, names in found.items() if names} == {}, "move the helper into tests/support/"


def test_bench_does_not_edit_sys_path():
    edits = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in python_files("bench")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "path"
        and isinstance(node.value, ast.Name) and node.value.id == "sys"
    ]
    assert edits == []


def test_the_chaos_run_starts_as_a_module_from_the_repository_root():
    done = subprocess.run([sys.executable, "-m", "bench.chaos", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--jobs" in done.stdout
