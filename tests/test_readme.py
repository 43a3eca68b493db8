"""The README says what the code does: its error table and its project layout are held to the code.

Both are derived from the code, not from a copy of it: a new error code or a new module
fails here until the README names it, and a README line for something gone fails too.
"""

from __future__ import annotations

import ast
import re

from jobtrail.api.errors import error_codes
from tests.support.env import ROOT

README = (ROOT / "README.md").read_text()
_ERROR_ROW = re.compile(r"^\| (\d{3}|other) \| `([a-z_]+)` \| .+ \|$", re.MULTILINE)


def readme_section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]


def readme_error_codes() -> set[tuple[int | None, str]]:
    """(status, code) of each row of the README's error table; `other` stands for any status."""
    section = readme_section("HTTP API")
    table = section[section.index("| status | `error` | when |"):]
    table = table.split("\n\n")[0].strip()
    rows = _ERROR_ROW.findall(table)
    assert len(rows) == len(table.splitlines()) - 2, "every row of the error table parses"
    return {(None if status == "other" else int(status), code) for status, code in rows}


def test_the_readme_error_table_lists_exactly_the_codes_the_app_can_answer_with():
    documented, emitted = readme_error_codes(), error_codes()
    assert not emitted - documented, f"codes the app answers with that the README does not list: {emitted - documented}"
    assert not documented - emitted, f"codes the README lists that the app never answers with: {documented - emitted}"


def test_error_answers_are_built_only_from_the_codes_errors_py_names():
    """So error_codes() is complete: no handler or module makes up a code of its own."""
    for path in (ROOT / "app").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                continue
            if node.func.id == "ErrorBody" and path.name != "errors.py":
                raise AssertionError(f"{path.relative_to(ROOT)}:{node.lineno} builds an error body itself")
            if node.func.id == "_error" and path.name == "errors.py" and not isinstance(node.args[0], ast.Starred):
                literal = [arg for arg in node.args[:2] if isinstance(arg, ast.Constant)]
                assert not literal, f"{path.relative_to(ROOT)}:{node.lineno}: a status or code not from the registries"


def _only_a_docstring(path) -> bool:
    body = ast.parse(path.read_text()).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def modules() -> set[str]:
    """Every module and script of the packages, the tests' support files and the benchmarks."""
    found = set()
    for package in ("app", "workers", "migrations"):
        for path in (ROOT / package).rglob("*"):
            if path.suffix not in (".py", ".lua", ".md") or "__pycache__" in path.parts:
                continue
            if path.name == "__init__.py" and _only_a_docstring(path):
                continue
            found.add(str(path.relative_to(ROOT)))
    folders = (ROOT / "tests", ROOT / "tests" / "support", ROOT / "bench")
    for path in [path for folder in folders for path in folder.glob("*.py")]:
        if not path.name.startswith("test_") and path.name != "__init__.py":
            found.add(str(path.relative_to(ROOT)))
    return found


def readme_layout() -> set[str]:
    section = readme_section("Project layout")
    block = section[section.index("```\n") + 4:section.rindex("\n```")]
    return {line.split()[0] for line in block.splitlines() if line.strip()}


def test_the_readme_layout_names_every_module_and_nothing_that_is_gone():
    listed = readme_layout()
    files = {entry for entry in listed if not entry.endswith("/")}
    assert not modules() - files, f"modules the README's layout leaves out: {sorted(modules() - files)}"
    gone = {entry for entry in listed if not (ROOT / entry).exists()}
    assert not gone, f"the README's layout names what does not exist: {sorted(gone)}"
