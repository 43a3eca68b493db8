#!/usr/bin/env python3
"""Lay the package out under build/typecheck as it installs, in symlinks, for mypy.

mypy names a module by its path, and the folders are not named as the modules they install
(`app/` is `jobtrail`, `workers/` is `jobtrail.workers`); nor can mypy follow the import hook of
an editable install. The mapping is read from [tool.setuptools] package-dir in pyproject.toml,
so it is declared once. Made afresh on every run: a module added or removed is seen at once.
"""

import shutil
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"

package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
shutil.rmtree(TREE, ignore_errors=True)
for package, folder in sorted(package_dir.items(), key=lambda item: item[0].count(".")):
    target = TREE.joinpath(*package.split("."))
    if package.count(".") == 0:
        # The top package: its folder's entries, so that subpackages mapped from elsewhere fit in.
        target.mkdir(parents=True)
        for entry in (ROOT / folder).iterdir():
            if entry.name != "__pycache__":
                (target / entry.name).symlink_to(entry)
    else:
        target.symlink_to(ROOT / folder, target_is_directory=True)
