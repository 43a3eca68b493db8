"""The core imports nothing above it: read from the source, and seen in a fresh interpreter.

The core (DESIGN.md) is what every other part stands on: events and the transition table,
keys, the event log and its script, the reducer, offsets, the store, the lease, the kind
registry, and the few modules they need (errors, settings, the outage errors, the activity
feed the event log appends to, JobState it returns). It is named here, once. A core module
that imports the API, the worker layer, the client or the migrations, at import time, in a
function or under TYPE_CHECKING, fails the first test; one that imports a module left out
of the core (which might import them in turn) fails the second.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.env import ROOT

CORE = (
    "jobtrail.activity",
    "jobtrail.cluster",
    "jobtrail.config",
    "jobtrail.errors",
    "jobtrail.eventlog",
    "jobtrail.events",
    "jobtrail.jobstate",
    "jobtrail.keys",
    "jobtrail.lease",
    "jobtrail.metrics",
    "jobtrail.offsets",
    "jobtrail.patience",
    "jobtrail.reducer",
    "jobtrail.registry",
    "jobtrail.replay_pages",
    "jobtrail.replicawait",
    "jobtrail.store",
    "jobtrail.topology",
)
ABOVE = ("jobtrail.api", "jobtrail.workers", "jobtrail.client", "jobtrail.migrations")


def source(module: str) -> Path:
    """app/ is installed as `jobtrail`: jobtrail.keys is app/keys.py."""
    return ROOT / "app" / f"{module.removeprefix('jobtrail.')}.py"


def imported(module: str) -> list[tuple[int, str]]:
    """(line, module) of every import in `module`'s source, wherever it stands, `from x import y` as x.y too."""
    tree = ast.parse(source(module).read_text(), str(source(module)))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from .x import y` inside the jobtrail package
                base = ".".join(["jobtrail", *module.split(".")[1:-node.level], *filter(None, [base])])
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif (
            # A module named in a string: importlib.import_module(...), resources.files(...).
            isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("jobtrail")
            and node.value.replace(".", "").replace("_", "").isalnum()
        ):
            found.append((node.lineno, node.value))
    return found


def is_within(name: str, package: str) -> bool:
    return name == package or name.startswith(f"{package}.")


@pytest.mark.parametrize("module", CORE)
def test_a_core_module_imports_neither_the_api_nor_the_workers_nor_the_client_nor_the_migrations(module):
    upward = [f"line {line}: {name}" for line, name in imported(module) if any(is_within(name, p) for p in ABOVE)]
    assert not upward, f"{source(module).relative_to(ROOT)} imports above the core: {upward}"


@pytest.mark.parametrize("module", CORE)
def test_a_core_module_imports_only_core_modules_of_jobtrail(module):
    # `from jobtrail import x` names the package (always loaded) and x; x must be core.
    names = {name for _, name in imported(module) if is_within(name, "jobtrail") and name != "jobtrail"}
    outside = sorted(name for name in names if not any(is_within(name, core) for core in CORE))
    assert not outside, f"{source(module).relative_to(ROOT)} imports jobtrail modules outside the core: {outside}"


def test_every_module_the_core_list_names_exists():
    assert [module for module in CORE if not source(module).is_file()] == []


def test_importing_the_whole_core_loads_nothing_above_it():
    """What the AST says, checked by Python itself: a fresh interpreter imports the core, then lists what came."""
    probe = (
        "import importlib, sys\n"
        f"for name in {CORE!r}: importlib.import_module(name)\n"
        f"print('\\n'.join(sorted(m for m in sys.modules if m.startswith({ABOVE!r}))))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], "importing the core loaded modules above it"
