"""The one loader of job kinds, called at start by the API (create_app) and by `jobtrail worker`.

So both processes know the same kinds, from the same places, in this order:

1. the built-in kinds (`demo`, `export.pdf`, `export.zip`), a package like any other;
2. the entry points of the group `jobtrail.kinds` that installed distributions declare,
   each naming a module (imported) or a callable (called with no arguments), by name;
3. the modules `JOBTRAIL_KINDS` (or `--kinds`) names, comma-separated.

Importing a module registers its kinds (`@jobtrail.kind` runs at import). A module or
entry point that fails (an ImportError, an error raised by its code, a kind declared
wrongly or twice) raises KindsLoadError, whose message names it; the CLI prints that
line, then the traceback, and exits 1, so a worker never runs with half its kinds.

Like `python -m`, uvicorn and taskiq's CLI, the loader lets a module in the current
directory be named: the console script `jobtrail` does not put it on sys.path. It is
appended, so it never shadows an installed package.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from collections.abc import Callable
from functools import partial
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType

from jobtrail.config import Settings
from jobtrail.registry import kinds

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "jobtrail.kinds"
# A name, not a string literal, so it follows the package wherever it is installed
# (`workers.kinds` here, `jobtrail.workers.kinds` once mapped).
BUILTIN_KINDS = f"{__package__}.kinds"

# Sources already loaded in this process: an entry point's callable is called once,
# however many apps a process creates (the tests create many).
_loaded: set[str] = set()


class KindsLoadError(Exception):
    """A source of kinds failed at start; `source` says which, the cause is chained."""

    def __init__(self, source: str, cause: BaseException) -> None:
        super().__init__(f"cannot load job kinds from {source}: {type(cause).__name__}: {cause}")
        self.source = source

    def report(self) -> str:
        """The message, then the cause's traceback from the failing module on: what a person needs to fix it."""
        cause = self.__cause__
        if cause is None:
            return str(self)
        # The loader's and importlib's own frames come first and say nothing about the module.
        tb = cause.__traceback__
        while tb is not None and _is_machinery(tb.tb_frame.f_code.co_filename):
            tb = tb.tb_next
        if tb is None:  # it failed in importlib (no such module): the message says it all
            return str(self)
        return f"{self}\n" + "".join(traceback.format_exception(type(cause), cause, tb)).rstrip()


def module_names(setting: str) -> list[str]:
    """The modules of a `JOBTRAIL_KINDS` value: comma-separated, blanks ignored."""
    return [name.strip() for name in setting.split(",") if name.strip()]


def load_kinds(settings: Settings) -> list[str]:
    """Import every source of kinds (see the module's docstring); the names of the kinds then known.

    Raises KindsLoadError for the first source that fails.
    """
    _load(f"module {BUILTIN_KINDS!r} (the built-in kinds)", partial(importlib.import_module, BUILTIN_KINDS))
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: (p.name, p.value)):
        dist = point.dist.name if point.dist is not None else "?"
        source = f"entry point {point.name!r} = {point.value!r} (group {ENTRY_POINT_GROUP}, distribution {dist})"
        _load(source, partial(_from_entry_point, point))
    names = module_names(settings.kinds)
    if names and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    for name in names:
        _load(f"module {name!r} (named by JOBTRAIL_KINDS or --kinds)", partial(importlib.import_module, name))
    known = sorted(kinds())
    log.info("job kinds: %s", ", ".join(known) or "none")
    return known


def _load(source: str, load: Callable[[], object]) -> None:
    if source in _loaded:
        return
    try:
        load()
    except Exception as exc:
        raise KindsLoadError(source, exc) from exc
    _loaded.add(source)


def _is_machinery(filename: str) -> bool:
    return filename == __file__ or filename.startswith(("<frozen importlib", _IMPORTLIB))


_IMPORTLIB = os.path.dirname(importlib.__file__)


def _from_entry_point(point: EntryPoint) -> None:
    target = point.load()
    if isinstance(target, ModuleType):
        return  # imported: its kinds are registered
    if not callable(target):
        raise TypeError(f"{point.value!r} is neither a module nor a callable")
    target()
